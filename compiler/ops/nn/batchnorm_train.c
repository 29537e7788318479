// BatchNormTrain (internal, training builds: compiler/autodiff/train_mode.c): BatchNormalization
// with the batch statistics, blended with its inference behaviour by the mode flag f, in one
// kernel. Per channel c, over the M = N * D1 * ... * Dk elements x[:, c, ...]:
//   mean_b = sum(x) / M                          the batch mean (output 1)
//   m      = f * mean_b + (1 - f) * input_mean   the mean used
//   var_b  = sum((x - m)^2) / M                  biased, around m (output 2)
//   inv    = 1 / sqrt(f * var_b + (1 - f) * input_var + epsilon)   (output 3, for the gradient)
//   y      = (x - m) * inv * scale + B, then max(y, 0) with relu = 1 (a Relu after it, fused)
// With f = 1 (training steps) m = mean_b and var_b is the batch's biased variance; with f = 0
// (evaluation) y is BatchNormalization's inference output. The statistics are computed mean
// first, then centred squares (never E[x^2] - E[x]^2).
//   x: (N, C, D1, ..., Dk), k >= 0   scale, B, input_mean, input_var: (C)   f: (1)
//   y: like x   mean_b, var_b, inv: (C)   all in x's dtype
// Attributes: epsilon (1e-5), relu (0). The gradient is BatchNormTrainGrad
// (batchnorm_train_grad.c).
#include <math.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"
#include "batchnorm_train.h"

static const kiln_attr_spec attrs[] = {
    {"epsilon", KILN_ATTR_FLOAT, false}, {"relu", KILN_ATTR_INT, false}, {0}};

static const char *const input_names[] = {"X", "scale", "B", "input_mean", "input_var", "mode"};

kiln_bn_view kiln_bn_view_of(const kiln_shape *x) {
  kiln_bn_view v = {.N = x->dim[0], .C = x->dim[1], .S = 1};
  for (int i = 2; i < x->rank; i++) v.S *= x->dim[i];
  return v;
}

bool kiln_bn_check_channels(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                            const int *per_channel, int count, const char *const *names) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  if (x->shape.rank < 2) {
    kiln_op_error(d, n, "inputs[0] (%s): expected at least 2 dimensions (N, C, ...), got %s",
                  x->name, kiln_shape_text(&x->shape).text);
    return false;
  }
  int64_t C = x->shape.dim[1];
  for (int k = 0; k < count; k++) {
    int i = per_channel[k];
    const kiln_tensor *p = kiln_in(g, n, i);
    if (p->shape.rank != 1 || p->shape.dim[0] != C) {
      kiln_op_error(d, n, "inputs[%d] (%s): expected %s of shape (%lld) (one per channel), got %s",
                    i, p->name, names[i], (long long)C, kiln_shape_text(&p->shape).text);
      return false;
    }
  }
  return true;
}

bool kiln_bn_check_inputs(kiln_graph *g, kiln_node *n, kiln_diag *d, const int *per_channel,
                          int count, int mode, const char *const *names) {
  if (!kiln_op_check_float_inputs(g, n, mode + 1, d) ||
      !kiln_bn_check_channels(g, n, d, per_channel, count, names))
    return false;
  const kiln_tensor *f = kiln_in(g, n, mode);
  if (kiln_shape_numel(&f->shape) != 1) {
    kiln_op_error(d, n, "inputs[%d] (%s): expected the mode flag, one value, got %s", mode, f->name,
                  kiln_shape_text(&f->shape).text);
    return false;
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  static const int per_channel[] = {1, 2, 3, 4};
  int64_t relu;
  if (!kiln_bn_check_inputs(g, n, d, per_channel, 4, 5, input_names) ||
      !kiln_op_read_int(n, d, "relu", 0, 0, 1, &relu))
    return false;
  double eps = kiln_attr_float(n, "epsilon", 1e-5);
  if (!(eps >= 0)) {
    kiln_op_error(d, n, "attrs.epsilon: expected a value >= 0, got %g", eps);
    return false;
  }
  const kiln_tensor *x = kiln_in(g, n, 0);
  kiln_shape x_shape = x->shape, stat = {.rank = 1, .dim = {x->shape.dim[1]}};
  kiln_dtype t = x->dtype;
  kiln_op_set_output(g, n, 0, t, &x_shape);                           // y: like x
  for (int i = 1; i < 4; i++) kiln_op_set_output(g, n, i, t, &stat);  // mean_b, var_b, inv: (C)
  return true;
}

// in: x, scale, B, input_mean, input_var, f; out: y, mean_b, var_b, inv.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_bn_view v = kiln_bn_view_of(in[0].shape);
  double eps = kiln_attr_float(n, "epsilon", 1e-5), f = in[5].data[0], M = (double)(v.N * v.S);
  bool relu = kiln_attr_int(n, "relu", 0);
  for (int64_t c = 0; c < v.C; c++) {
    double sum = 0, sq = 0;
    for (int64_t b = 0; b < v.N; b++)
      for (int64_t s = 0; s < v.S; s++) sum += in[0].data[(b * v.C + c) * v.S + s];
    double mean_b = sum / M, m = f * mean_b + (1 - f) * in[3].data[c];
    for (int64_t b = 0; b < v.N; b++)
      for (int64_t s = 0; s < v.S; s++) {
        double xc = in[0].data[(b * v.C + c) * v.S + s] - m;
        sq += xc * xc;
      }
    double var_b = sq / M, inv = 1 / sqrt(f * var_b + (1 - f) * in[4].data[c] + eps);
    for (int64_t b = 0; b < v.N; b++)
      for (int64_t s = 0; s < v.S; s++) {
        int64_t i = (b * v.C + c) * v.S + s;
        double y = (in[0].data[i] - m) * inv * in[1].data[c] + in[2].data[c];
        out[0].data[i] = relu && !(y > 0) ? 0 : y;
      }
    out[1].data[c] = mean_b;
    out[2].data[c] = var_b;
    out[3].data[c] = inv;
  }
}

kiln_lexpr *kiln_bn_at(kiln_lb *b, int buf, const kiln_bn_view *v, int n, int c, int s) {
  kiln_lexpr *row = lx_madd(b, lx_var(b, n), v->C, lx_var(b, c));  // n * C + c
  return lx_load(b, buf, lx_madd(b, row, v->S, lx_var(b, s)));
}

int kiln_bn_sum(kiln_lb *b, const char *name, kiln_dtype t, const kiln_bn_view *v, int c,
                kiln_bn_term term, const void *arg) {
  int acc = kiln_lb_decl(b, name, t, lx_float(b, t, 0));
  int n = kiln_lb_for_n(b, "n", v->N);
  int s = kiln_lb_for_n(b, "s", v->S);
  kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, lx_var(b, acc), term(b, arg, n, c, s)));
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
  return acc;
}

kiln_lexpr *kiln_bn_blend(kiln_lb *b, kiln_dtype t, int f_buf, kiln_lexpr *train,
                          kiln_lexpr *infer) {
  kiln_lexpr *f = lx_load(b, f_buf, lx_int(b, 0));
  kiln_lexpr *not_f = lx_bin(b, LB_SUB, lx_float(b, t, 1), lx_load(b, f_buf, lx_int(b, 0)));
  return lx_bin(b, LB_ADD, lx_bin(b, LB_MUL, f, train), lx_bin(b, LB_MUL, not_f, infer));
}

typedef struct fwd_lower {
  const kiln_lower_ctx *c;
  kiln_bn_view v;
  int m;  // the mean used (a local)
} fwd_lower;

static kiln_lexpr *x_term(kiln_lb *b, const void *arg, int n, int c, int s) {
  const fwd_lower *l = arg;
  return kiln_bn_at(b, kiln_in_buf(l->c, 0), &l->v, n, c, s);
}

static kiln_lexpr *centred(kiln_lb *b, const fwd_lower *l, int n, int c, int s) {
  return lx_bin(b, LB_SUB, x_term(b, l, n, c, s), lx_var(b, l->m));
}

static kiln_lexpr *square_term(kiln_lb *b, const void *arg, int n, int c, int s) {
  return lx_bin(b, LB_MUL, centred(b, arg, n, c, s), centred(b, arg, n, c, s));
}

// y[n, c, s] = (x - m) * a + B[c], a = inv * scale[c] (then max(y, 0) with relu = 1)
static void normalize(kiln_lb *b, const fwd_lower *l, int c, int a) {
  kiln_dtype t = kiln_lower_out(l->c, 0)->dtype;
  int n = kiln_lb_for_n(b, "n", l->v.N);
  int s = kiln_lb_for_n(b, "s", l->v.S);
  kiln_lexpr *bias = lx_load(b, kiln_in_buf(l->c, 2), lx_var(b, c));
  kiln_lexpr *row = lx_madd(b, lx_var(b, n), l->v.C, lx_var(b, c));
  kiln_lexpr *y = lx_muladd(b, centred(b, l, n, c, s), lx_var(b, a), bias);
  if (kiln_attr_int(l->c->node, "relu", 0)) y = lx_bin(b, LB_MAX, y, lx_float(b, t, 0));
  kiln_lb_store(b, kiln_out_buf(l->c, 0), lx_madd(b, row, l->v.S, lx_var(b, s)), y);
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
}

static void lower(const kiln_lower_ctx *cx) {
  kiln_lb *b = cx->b;
  const kiln_tensor *x = kiln_lower_in(cx, 0);
  kiln_dtype t = x->dtype;
  fwd_lower l = {.c = cx, .v = kiln_bn_view_of(&x->shape)};
  double M = (double)(l.v.N * l.v.S), eps = kiln_attr_float(cx->node, "epsilon", 1e-5);
  kiln_lb_comment(b, "BatchNormTrain %s: %s, %lld channels of %lld x %lld", cx->node->name,
                  kiln_describe(x).text, (long long)l.v.C, (long long)l.v.N, (long long)l.v.S);
  int c = kiln_lb_for_n(b, "c", l.v.C);
  int sum = kiln_bn_sum(b, "sum", t, &l.v, c, x_term, &l);
  int mean_b = kiln_lb_decl(b, "mean_b", t, lx_bin(b, LB_DIV, lx_var(b, sum), lx_float(b, t, M)));
  l.m = kiln_lb_decl(b, "m", t,
                     kiln_bn_blend(b, t, kiln_in_buf(cx, 5), lx_var(b, mean_b),
                                   lx_load(b, kiln_in_buf(cx, 3), lx_var(b, c))));
  int sq = kiln_bn_sum(b, "sq", t, &l.v, c, square_term, &l);
  int var_b = kiln_lb_decl(b, "var_b", t, lx_bin(b, LB_DIV, lx_var(b, sq), lx_float(b, t, M)));
  kiln_lexpr *var = kiln_bn_blend(b, t, kiln_in_buf(cx, 5), lx_var(b, var_b),
                                  lx_load(b, kiln_in_buf(cx, 4), lx_var(b, c)));
  kiln_lexpr *sd = lx_unary(b, LU_SQRT, lx_bin(b, LB_ADD, var, lx_float(b, t, eps)));
  int inv = kiln_lb_decl(b, "inv", t, lx_unary(b, LU_RECIP, sd));
  kiln_lb_store(b, kiln_out_buf(cx, 1), lx_var(b, c), lx_var(b, mean_b));
  kiln_lb_store(b, kiln_out_buf(cx, 2), lx_var(b, c), lx_var(b, var_b));
  kiln_lb_store(b, kiln_out_buf(cx, 3), lx_var(b, c), lx_var(b, inv));
  int a = kiln_lb_decl(
      b, "a", t, lx_bin(b, LB_MUL, lx_var(b, inv), lx_load(b, kiln_in_buf(cx, 1), lx_var(b, c))));
  normalize(b, &l, c, a);
  kiln_lb_end_for(b);  // c
}

// Per element: an add (mean), a subtract and multiply-add (variance), a subtract and a
// multiply-add (normalize).
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 6 * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

// Gradient: BatchNormTrainGrad(dy, x, scale, mean_b, input_mean, inv, f[, y]) -> dx, dscale, dB
// (with relu = 1, y, the Relu's output, masks dy).
// Only y is differentiated (the statistics feed the running averages; inv the gradient); the
// running statistics and the flag are STATE tensors, never trained.
static bool grad(kiln_grad_ctx *c) {
  for (int i = 1; i < 4; i++)
    if (c->dy[i] >= 0) {
      kiln_op_error(c->d, &c->node,
                    "outputs[%d]: a gradient flows into it; BatchNormTrain is differentiated only "
                    "through Y",
                    i);
      return false;
    }
  for (int i = 3; i < 6; i++)
    if (c->need[i]) {
      kiln_op_error(c->d, &c->node,
                    "inputs[%d] (%s): a gradient is wanted; BatchNormTrain differentiates X, "
                    "scale and B only",
                    i, input_names[i]);
      return false;
    }
  if (c->dy[0] < 0) return true;
  const kiln_node *n = &c->node;
  int in[8] = {c->dy[0],     n->inputs[0],  n->inputs[1], n->outputs[1],
               n->inputs[3], n->outputs[3], n->inputs[5], n->outputs[0]};
  int dx = kiln_gb_op(c, "BatchNormTrainGrad", in, kiln_attr_int(n, "relu", 0) ? 8 : 7, NULL, 3);
  if (dx < 0) return false;
  for (int i = 0; i < 3; i++) c->dx[i] = c->need[i] ? dx + i : -1;
  return true;
}

const kiln_op_def kiln_op_BatchNormTrain = {
    .name = "BatchNormTrain",
    .min_inputs = 6,
    .max_inputs = 6,
    .min_outputs = 4,
    .max_outputs = 4,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // Two f32 sums over up to ~1e3 elements per channel in the cases, then a normalization to
    // unit variance: outputs O(1) carrying ~1e-6 of accumulated rounding (as LayerNormalization).
    .tol = {1e-5, 1e-5},
    .grad = grad,
};
