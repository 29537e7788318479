// BatchNormTrainGrad (internal): the gradient of BatchNormTrain (batchnorm_train.c) in one
// kernel, for any value of the mode flag f. Per channel c, over the M elements x[:, c, ...], with
// m = f * mean_b + (1 - f) * input_mean (the mean the forward used), s = inv[c], xhat = (x - m) s,
// g = dy * scale[c]:
//   dscale = sum(dy xhat)   dB = sum(dy)
//   dx = s (g - f mean(g) - f mean(g xhat) (xhat - f mean(xhat))),  mean(xhat) = (mean_b - m) s
// (the mean and the variance each depend on x through their weight f). With f = 1 this is the
// usual dx = s scale (dy - mean(dy) - xhat mean(dy xhat)); with f = 0 the affine map's dy s scale.
// With the optional input y (BatchNormTrain's output when it fused a Relu), dy is first masked:
// dy = y > 0 ? dy : 0 (Relu's gradient).
//   dy, x, y: (N, C, D1, ..., Dk)   scale, mean_b, input_mean, inv: (C)   f: (1)
//   dx: like x   dscale, dB: (C)
// Two passes over dy and x per channel: the two sums (one vectorized loop, two accumulators),
// then dx.
#include <stdlib.h>

#include "../op_internal.h"
#include "batchnorm_train.h"

static const kiln_attr_spec attrs[] = {{0}};

static const char *const input_names[] = {"dY",         "X",       "scale", "mean_b",
                                          "input_mean", "inv_std", "mode",  "Y"};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  static const int per_channel[] = {2, 3, 4, 5};
  const kiln_tensor *x = kiln_in(g, n, 1);
  for (int i = 0; i < n->n_inputs; i += 7) {  // dY and the optional Y
    const kiln_tensor *v = kiln_in(g, n, i);
    if (v && x && (!kiln_shape_equal(&v->shape, &x->shape) || v->dtype != x->dtype)) {
      kiln_op_error(d, n, "inputs[%d] (%s): expected %s of X's shape %s and dtype %s, got %s %s", i,
                    v->name, input_names[i], kiln_shape_text(&x->shape).text,
                    kiln_dtype_name(x->dtype), kiln_dtype_name(v->dtype),
                    kiln_shape_text(&v->shape).text);
      return false;
    }
  }
  if (!kiln_bn_check_inputs(g, n, d, per_channel, 4, 6, input_names)) return false;
  kiln_shape x_shape = x->shape, stat = {.rank = 1, .dim = {x->shape.dim[1]}};
  kiln_dtype t = x->dtype;
  kiln_op_set_output(g, n, 0, t, &x_shape);  // dx: like x
  kiln_op_set_output(g, n, 1, t, &stat);     // dscale: (C)
  kiln_op_set_output(g, n, 2, t, &stat);     // dB: (C)
  return true;
}

// dy masked by the optional y (Relu's gradient): a copy the caller frees.
static double *masked_dy(const kiln_node *n, const kiln_eval_tensor *in) {
  int64_t numel = kiln_shape_numel(in[0].shape);
  double *dy = kiln_xmalloc(sizeof(double) * (size_t)(numel ? numel : 1));
  for (int64_t i = 0; i < numel; i++)
    dy[i] = kiln_has_input(n, 7) && !(in[7].data[i] > 0) ? 0 : in[0].data[i];
  return dy;
}

// in: dy, x, scale, mean_b, input_mean, inv, f[, y]; out: dx, dscale, dB.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_bn_view v = kiln_bn_view_of(in[1].shape);
  double f = in[6].data[0], M = (double)(v.N * v.S);
  double *dy = masked_dy(n, in);
  const double *x = in[1].data;
  for (int64_t c = 0; c < v.C; c++) {
    double m = f * in[3].data[c] + (1 - f) * in[4].data[c], s = in[5].data[c];
    double sdy = 0, sdyx = 0;
    for (int64_t b = 0; b < v.N; b++)
      for (int64_t k = 0; k < v.S; k++) {
        int64_t i = (b * v.C + c) * v.S + k;
        sdy += dy[i];
        sdyx += dy[i] * (x[i] - m) * s;
      }
    double scale = in[2].data[c], mean_g = scale * sdy / M, mean_gx = scale * sdyx / M;
    double mean_xhat = (in[3].data[c] - m) * s;
    for (int64_t b = 0; b < v.N; b++)
      for (int64_t k = 0; k < v.S; k++) {
        int64_t i = (b * v.C + c) * v.S + k;
        double xhat = (x[i] - m) * s;
        out[0].data[i] = s * (dy[i] * scale - f * mean_g - f * mean_gx * (xhat - f * mean_xhat));
      }
    out[1].data[c] = sdyx;
    out[2].data[c] = sdy;
  }
  free(dy);
}

typedef struct grad_lower {
  const kiln_lower_ctx *c;
  kiln_bn_view v;
  int m;  // the mean the forward used (a local)
} grad_lower;

// dy[n, c, s], or y > 0 ? dy : 0 with the optional y
static kiln_lexpr *dy_term(kiln_lb *b, const void *arg, int n, int c, int s) {
  const grad_lower *l = arg;
  kiln_lexpr *dy = kiln_bn_at(b, kiln_in_buf(l->c, 0), &l->v, n, c, s);
  if (!kiln_has_input(l->c->node, 7)) return dy;
  kiln_dtype t = kiln_lower_in(l->c, 0)->dtype;
  kiln_lexpr *on =
      lx_bin(b, LB_LT, lx_float(b, t, 0), kiln_bn_at(b, kiln_in_buf(l->c, 7), &l->v, n, c, s));
  return lx_select(b, on, dy, lx_float(b, t, 0));
}

// x[n, c, s] - m
static kiln_lexpr *centred(kiln_lb *b, const grad_lower *l, int n, int c, int s) {
  return lx_bin(b, LB_SUB, kiln_bn_at(b, kiln_in_buf(l->c, 1), &l->v, n, c, s), lx_var(b, l->m));
}

// sdy = sum(dy), sdyx = sum(dy (x - m)) over n < N, s < S, in one loop (two reductions: each
// sum's terms added in the same order as alone).
static void sums(kiln_lb *b, const grad_lower *l, int c, kiln_dtype t, int *sdy, int *sdyx) {
  *sdy = kiln_lb_decl(b, "sdy", t, lx_float(b, t, 0));
  *sdyx = kiln_lb_decl(b, "sdyx", t, lx_float(b, t, 0));
  int n = kiln_lb_for_n(b, "n", l->v.N);
  int s = kiln_lb_for_n(b, "s", l->v.S);
  int dy = kiln_lb_decl(b, "dy", t, dy_term(b, l, n, c, s));
  kiln_lb_assign(b, *sdy, lx_bin(b, LB_ADD, lx_var(b, *sdy), lx_var(b, dy)));
  kiln_lexpr *dyx = lx_bin(b, LB_MUL, lx_var(b, dy), centred(b, l, n, c, s));
  kiln_lb_assign(b, *sdyx, lx_bin(b, LB_ADD, lx_var(b, *sdyx), dyx));
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
}

// dx[n, c, s] = kx * (x - m) + (a * dy + k0)
static void dx_loop(kiln_lb *b, const grad_lower *l, int c, int a, int kx, int k0) {
  int n = kiln_lb_for_n(b, "n", l->v.N);
  int s = kiln_lb_for_n(b, "s", l->v.S);
  kiln_lexpr *affine = lx_muladd(b, lx_var(b, a), dy_term(b, l, n, c, s), lx_var(b, k0));
  kiln_lexpr *row = lx_madd(b, lx_var(b, n), l->v.C, lx_var(b, c));
  kiln_lb_store(b, kiln_out_buf(l->c, 0), lx_madd(b, row, l->v.S, lx_var(b, s)),
                lx_muladd(b, lx_var(b, kx), centred(b, l, n, c, s), affine));
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
}

static kiln_lexpr *mul(kiln_lb *b, kiln_lexpr *x, kiln_lexpr *y) { return lx_bin(b, LB_MUL, x, y); }

static kiln_lexpr *in_c(kiln_lb *b, const kiln_lower_ctx *cx, int i, int c) {
  return lx_load(b, kiln_in_buf(cx, i), lx_var(b, c));
}

static kiln_lexpr *flag(kiln_lb *b, const kiln_lower_ctx *cx) {
  return lx_load(b, kiln_in_buf(cx, 6), lx_int(b, 0));
}

// With sdy = sum(dy), sdyx = sum(dy (x - m)), a = s scale, q = a s sdyx / M (= s mean(g xhat)):
//   dx = a dy + kx (x - m) + k0,  kx = -f q s,  k0 = f (f q mean(xhat) - a sdy / M)
static void lower(const kiln_lower_ctx *cx) {
  kiln_lb *b = cx->b;
  const kiln_tensor *x = kiln_lower_in(cx, 1);
  kiln_dtype t = x->dtype;
  grad_lower l = {.c = cx, .v = kiln_bn_view_of(&x->shape)};
  double M = (double)(l.v.N * l.v.S);
  kiln_lb_comment(b, "BatchNormTrainGrad %s: %s, %lld channels of %lld x %lld", cx->node->name,
                  kiln_describe(x).text, (long long)l.v.C, (long long)l.v.N, (long long)l.v.S);
  int c = kiln_lb_for_n(b, "c", l.v.C);
  l.m = kiln_lb_decl(b, "m", t,
                     kiln_bn_blend(b, t, kiln_in_buf(cx, 6), in_c(b, cx, 3, c), in_c(b, cx, 4, c)));
  int s = kiln_lb_decl(b, "s", t, in_c(b, cx, 5, c));
  int sdy, sdyx;
  sums(b, &l, c, t, &sdy, &sdyx);
  kiln_lb_store(b, kiln_out_buf(cx, 1), lx_var(b, c), mul(b, lx_var(b, sdyx), lx_var(b, s)));
  kiln_lb_store(b, kiln_out_buf(cx, 2), lx_var(b, c), lx_var(b, sdy));
  int a = kiln_lb_decl(b, "a", t, mul(b, lx_var(b, s), in_c(b, cx, 2, c)));
  kiln_lexpr *q_num = mul(b, mul(b, lx_var(b, a), lx_var(b, s)), lx_var(b, sdyx));
  int q = kiln_lb_decl(b, "q", t, lx_bin(b, LB_DIV, q_num, lx_float(b, t, M)));
  int kx = kiln_lb_decl(
      b, "kx", t, lx_unary(b, LU_NEG, mul(b, mul(b, flag(b, cx), lx_var(b, q)), lx_var(b, s))));
  kiln_lexpr *mean_xhat =
      mul(b, lx_bin(b, LB_SUB, in_c(b, cx, 3, c), lx_var(b, l.m)), lx_var(b, s));
  kiln_lexpr *along = mul(b, mul(b, flag(b, cx), lx_var(b, q)), mean_xhat);
  kiln_lexpr *mean_g = lx_bin(b, LB_DIV, mul(b, lx_var(b, a), lx_var(b, sdy)), lx_float(b, t, M));
  int k0 = kiln_lb_decl(b, "k0", t, mul(b, flag(b, cx), lx_bin(b, LB_SUB, along, mean_g)));
  dx_loop(b, &l, c, a, kx, k0);
  kiln_lb_end_for(b);  // c
}

// Per element: two sums (an add; a subtract and a multiply-add), then a subtract and two
// multiply-adds.
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 9 * kiln_shape_numel(&kiln_in(g, n, 1)->shape);
}

const kiln_op_def kiln_op_BatchNormTrainGrad = {
    .name = "BatchNormTrainGrad",
    .min_inputs = 7,
    .max_inputs = 8,
    .min_outputs = 3,
    .max_outputs = 3,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // Two f32 sums per channel (dy and dy (x - m), up to ~1e3 terms in the cases) feed every dx:
    // dx carries the sums' relative rounding, ~1e-6 of its O(|dy| scale inv) size.
    .tol = {1e-5, 1e-5},
};
