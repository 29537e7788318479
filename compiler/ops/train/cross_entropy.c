// SoftmaxCrossEntropy and its gradient: softmax cross-entropy of logits against integer class
// labels, optionally weighted per sample (PyTorch's cross_entropy with reduction "none", times
// the weight, then summed or averaged over the batch):
//   l_n = w_n (logsumexp_c x[n, c] - x[n, label_n])
//   loss = sum_n l_n (reduction "sum") or sum_n l_n / N ("mean")
//   dx[n, c] = dloss * s * w_n (softmax(x[n])_c - [c == label_n]),  s = 1 or 1 / N
// A label outside [0, C) is clamped (the trainer rejects such data before it gets here).
//   SoftmaxCrossEntropy(x (N, C), label (N) i32/i64[, w (N)]) -> loss (1)
//   SoftmaxCrossEntropyGrad(x, label, dloss (1)[, w]) -> dx (N, C)
#include <math.h>

#include "train_internal.h"

static const kiln_attr_spec attrs[] = {{"reduction", KILN_ATTR_STRING, false}, {0}};

enum { LOSS_W = 2, GRAD_W = 3 };  // index of the optional weights input

static bool check(kiln_graph *g, kiln_node *n, kiln_diag *d, int wi) {
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0), *w = kiln_in(g, n, wi);
  if (x->shape.rank != 2) {
    kiln_op_error(d, n, "inputs[0] (%s): expected logits (N, C), got %s", x->name,
                  kiln_shape_text(&x->shape).text);
    return false;
  }
  kiln_shape batch = {.rank = 1, .dim = {x->shape.dim[0]}};
  if (!kiln_op_check_dtypes(g, n, 1, 1, KILN_DT(KILN_I32) | KILN_DT(KILN_I64), false, d) ||
      !kiln_train_check_shape(g, n, d, 1, &batch, "the batch of logits"))
    return false;
  if (w && w->dtype != x->dtype) {
    kiln_op_error(d, n, "inputs[%d] (%s): expected dtype %s like the logits, got %s", wi, w->name,
                  kiln_dtype_name(x->dtype), kiln_dtype_name(w->dtype));
    return false;
  }
  if (w && !kiln_train_check_shape(g, n, d, wi, &batch, "the batch of logits")) return false;
  return kiln_train_read_choice(n, d, "reduction", kiln_train_reductions, 2, 0) >= 0;
}

static bool loss_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!check(g, n, d, LOSS_W)) return false;
  kiln_shape one = kiln_train_scalar_shape();
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &one);  // out: (1)
  return true;
}

static bool grad_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!check(g, n, d, GRAD_W)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  if (!kiln_train_check_scalar(g, n, d, 2, x->dtype, "loss gradient")) return false;
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // out: (N, C)
  return true;
}

static double batch_scale(const kiln_node *n, int64_t N) {
  return kiln_train_read_choice(n, NULL, "reduction", kiln_train_reductions, 2, 0) == 1
             ? 1.0
             : 1.0 / (double)N;
}

static int64_t clamp_label(double v, int64_t C) {
  int64_t l = (int64_t)v;
  return l < 0 ? 0 : l >= C ? C - 1 : l;
}

// logsumexp of row x[0..C).
static double logsumexp(const double *x, int64_t C) {
  double max = x[0], sum = 0;
  for (int64_t c = 1; c < C; c++) max = fmax(max, x[c]);
  for (int64_t c = 0; c < C; c++) sum += exp(x[c] - max);
  return max + log(sum);
}

static void loss_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  int64_t N = in[0].shape->dim[0], C = in[0].shape->dim[1];
  double total = 0;
  for (int64_t i = 0; i < N; i++) {
    const double *x = in[0].data + i * C;
    double w = in[LOSS_W].data ? in[LOSS_W].data[i] : 1.0;
    total += w * (logsumexp(x, C) - x[clamp_label(in[1].data[i], C)]);
  }
  out->data[0] = total * batch_scale(n, N);
}

static void grad_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  int64_t N = in[0].shape->dim[0], C = in[0].shape->dim[1];
  double s = in[2].data[0] * batch_scale(n, N);
  for (int64_t i = 0; i < N; i++) {
    const double *x = in[0].data + i * C;
    double w = in[GRAD_W].data ? in[GRAD_W].data[i] : 1.0, lse = logsumexp(x, C);
    int64_t label = clamp_label(in[1].data[i], C);
    for (int64_t c = 0; c < C; c++)
      out->data[i * C + c] = s * w * (exp(x[c] - lse) - (c == label ? 1.0 : 0.0));
  }
}

// ---- Lowering: per sample, max and log-sum-exp over the row ----

typedef struct row_vars {
  int n, max, lse, label;
} row_vars;

// Opens the loop over samples and declares max, lse = max + log(sum exp(x - max)), and the
// clamped label of row n.
static row_vars open_row(const kiln_lower_ctx *c, int64_t N, int64_t C) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_in(c, 0)->dtype;
  int xb = kiln_in_buf(c, 0);
  row_vars v;
  v.n = kiln_lb_for_n(b, "n", N);
  kiln_lexpr *row = lx_mul(b, lx_var(b, v.n), lx_int(b, C));
  v.max = kiln_lb_decl(b, "max", t, lx_load(b, xb, row));
  int j = kiln_lb_for(b, "c", lx_int(b, 1), lx_int(b, C));
  kiln_lb_assign(b, v.max,
                 lx_bin(b, LB_MAX, lx_var(b, v.max),
                        lx_load(b, xb, lx_madd(b, lx_var(b, v.n), C, lx_var(b, j)))));
  kiln_lb_end_for(b);
  int sum = kiln_lb_decl(b, "sum", t, lx_float(b, t, 0));
  j = kiln_lb_for_n(b, "c", C);
  kiln_lexpr *e =
      lx_unary(b, LU_EXP,
               lx_bin(b, LB_SUB, lx_load(b, xb, lx_madd(b, lx_var(b, v.n), C, lx_var(b, j))),
                      lx_var(b, v.max)));
  kiln_lb_assign(b, sum, lx_bin(b, LB_ADD, lx_var(b, sum), e));
  kiln_lb_end_for(b);
  v.lse = kiln_lb_decl(b, "lse", t,
                       lx_bin(b, LB_ADD, lx_var(b, v.max), lx_unary(b, LU_LOG, lx_var(b, sum))));
  kiln_lexpr *l = lx_cast(b, KILN_I64, lx_load(b, kiln_in_buf(c, 1), lx_var(b, v.n)));
  l = lx_bin(b, LB_MIN, lx_bin(b, LB_MAX, l, lx_int(b, 0)), lx_int(b, C - 1));
  v.label = kiln_lb_decl(b, "label", KILN_I64, l);
  return v;
}

static kiln_lexpr *weight(const kiln_lower_ctx *c, int wi, int n) {
  kiln_dtype t = kiln_lower_in(c, 0)->dtype;
  if (!kiln_has_input(c->node, wi)) return lx_float(c->b, t, 1.0);
  return lx_load(c->b, kiln_in_buf(c, wi), lx_var(c->b, n));
}

static void loss_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0);
  int64_t N = x->shape.dim[0], C = x->shape.dim[1];
  kiln_dtype t = x->dtype;
  kiln_lb_comment(b, "SoftmaxCrossEntropy %s: logits %s -> (1)", c->node->name,
                  kiln_describe(x).text);
  int total = kiln_lb_decl(b, "total", t, lx_float(b, t, 0));
  row_vars v = open_row(c, N, C);
  kiln_lexpr *picked =
      lx_load(b, kiln_in_buf(c, 0), lx_madd(b, lx_var(b, v.n), C, lx_var(b, v.label)));
  kiln_lexpr *l =
      lx_bin(b, LB_MUL, weight(c, LOSS_W, v.n), lx_bin(b, LB_SUB, lx_var(b, v.lse), picked));
  kiln_lb_assign(b, total, lx_bin(b, LB_ADD, lx_var(b, total), l));
  kiln_lb_end_for(b);
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_int(b, 0),
                lx_bin(b, LB_MUL, lx_var(b, total), lx_float(b, t, batch_scale(c->node, N))));
}

static void grad_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0);
  int64_t N = x->shape.dim[0], C = x->shape.dim[1];
  kiln_dtype t = x->dtype;
  kiln_lb_comment(b, "SoftmaxCrossEntropyGrad %s: d/dlogits %s", c->node->name,
                  kiln_describe(x).text);
  int s = kiln_lb_decl(b, "s", t,
                       lx_bin(b, LB_MUL, lx_load(b, kiln_in_buf(c, 2), lx_int(b, 0)),
                              lx_float(b, t, batch_scale(c->node, N))));
  row_vars v = open_row(c, N, C);
  int sw = kiln_lb_decl(b, "sw", t, lx_bin(b, LB_MUL, lx_var(b, s), weight(c, GRAD_W, v.n)));
  int j = kiln_lb_for_n(b, "c", C);
  kiln_lexpr *p = lx_unary(
      b, LU_EXP,
      lx_bin(b, LB_SUB, lx_load(b, kiln_in_buf(c, 0), lx_madd(b, lx_var(b, v.n), C, lx_var(b, j))),
             lx_var(b, v.lse)));
  kiln_lexpr *hit = lx_select(b, lx_bin(b, LB_EQ, lx_var(b, j), lx_var(b, v.label)),
                              lx_float(b, t, 1), lx_float(b, t, 0));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_madd(b, lx_var(b, v.n), C, lx_var(b, j)),
                lx_bin(b, LB_MUL, lx_var(b, sw), lx_bin(b, LB_SUB, p, hit)));
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
}

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 5 * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

const kiln_op_def kiln_op_SoftmaxCrossEntropy = {
    .name = "SoftmaxCrossEntropy",
    .min_inputs = 2,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_REDUCTION,
    .infer = loss_infer,
    .eval = loss_eval,
    .lower = loss_lower,
    .flops = flops,
    // expf/logf per element and an f32 sum over the batch: a few ulp of the total.
    .tol = {2e-6, 1e-5},
};

const kiln_op_def kiln_op_SoftmaxCrossEntropyGrad = {
    .name = "SoftmaxCrossEntropyGrad",
    .min_inputs = 3,
    .max_inputs = 4,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = grad_infer,
    .eval = grad_eval,
    .lower = grad_lower,
    .flops = flops,
    // softmax in f32 (expf of x - lse), times the scale: a few ulp.
    .tol = {1e-7, 2e-6},
};
