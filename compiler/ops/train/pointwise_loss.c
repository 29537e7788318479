// PointwiseLoss and PointwiseLossGrad: losses that are a sum of one term per element of the
// prediction p against the target t (same shape), PyTorch's definitions:
//   mse              (p - t)^2
//   mae              |p - t|                               d/dp: sign(p - t), 0 at 0
//   huber            |e| < delta ? e^2 / 2 : delta (|e| - delta / 2),   e = p - t
//   bce              -(t log p + (1 - t) log(1 - p)), each log clamped at -100 (p: probabilities)
//   bce_with_logits  max(p, 0) - p t + log(1 + exp(-|p|))  (p: logits)
//   kl_div           t > 0 ? t (log t - p) : 0             (p: log-probabilities)
//   clipped_mse      min((p - t)^2, clip)                  d/dp: 0 where clipped
// then reduced: `reduction` mean (over every element), sum, or batchmean (over dim 0).
//   PointwiseLoss(p, t) -> loss (1)      PointwiseLossGrad(p, t, dloss (1)) -> dp (shape of p)
#include <math.h>

#include "train_internal.h"

enum { MSE, MAE, HUBER, BCE, BCE_LOGITS, KL_DIV, CLIPPED_MSE, N_KINDS };
static const char *const kinds[N_KINDS] = {
    "mse", "mae", "huber", "bce", "bce_with_logits", "kl_div", "clipped_mse"};

static const kiln_attr_spec attrs[] = {{"kind", KILN_ATTR_STRING, true},
                                       {"reduction", KILN_ATTR_STRING, false},
                                       {"delta", KILN_ATTR_FLOAT, false},
                                       {"clip", KILN_ATTR_FLOAT, false},
                                       {0}};

typedef struct loss_params {
  int kind;
  double delta, clip;
} loss_params;

static loss_params params_of(const kiln_node *n) {
  return (loss_params){kiln_train_read_choice(n, NULL, "kind", kinds, N_KINDS, 0),
                       kiln_attr_float(n, "delta", 1.0), kiln_attr_float(n, "clip", 1.0)};
}

static double sign(double x) { return x > 0 ? 1 : x < 0 ? -1 : 0; }

// The loss term of one element.
static double term(const loss_params *q, double p, double t) {
  double e = p - t;
  switch (q->kind) {
    case MSE: return e * e;
    case MAE: return fabs(e);
    case HUBER: return fabs(e) < q->delta ? 0.5 * e * e : q->delta * (fabs(e) - 0.5 * q->delta);
    case BCE: return -(t * fmax(log(p), -100) + (1 - t) * fmax(log(1 - p), -100));
    case BCE_LOGITS: return fmax(p, 0) - p * t + log1p(exp(-fabs(p)));
    case KL_DIV: return t > 0 ? t * (log(t) - p) : 0;
    default: return fmin(e * e, q->clip);
  }
}

// d term / dp.
static double term_grad(const loss_params *q, double p, double t) {
  double e = p - t;
  switch (q->kind) {
    case MSE: return 2 * e;
    case MAE: return sign(e);
    case HUBER: return fabs(e) < q->delta ? e : q->delta * sign(e);
    case BCE: return e / fmax(p * (1 - p), 1e-12);
    case BCE_LOGITS: return 1 / (1 + exp(-p)) - t;
    case KL_DIV: return -t;
    default: return e * e < q->clip ? 2 * e : 0;
  }
}

static bool check(kiln_graph *g, kiln_node *n, kiln_diag *d, int n_float) {
  if (!kiln_op_check_float_inputs(g, n, n_float, d)) return false;
  const kiln_tensor *p = kiln_in(g, n, 0);
  if (kiln_train_read_choice(n, d, "kind", kinds, N_KINDS, 0) < 0 ||
      kiln_train_read_choice(n, d, "reduction", kiln_train_reductions, 3, 0) < 0)
    return false;
  if (kiln_attr_float(n, "delta", 1.0) <= 0 || kiln_attr_float(n, "clip", 1.0) <= 0) {
    kiln_op_error(d, n, "attrs.delta and attrs.clip: expected numbers > 0");
    return false;
  }
  return kiln_train_check_shape(g, n, d, 1, &p->shape, "the prediction (inputs[0])");
}

static bool loss_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!check(g, n, d, 2)) return false;
  kiln_shape one = kiln_train_scalar_shape();
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &one);  // out: (1)
  return true;
}

static bool grad_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!check(g, n, d, 3)) return false;
  if (!kiln_train_check_scalar(g, n, d, 2, kiln_in(g, n, 0)->dtype, "loss gradient")) return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &kiln_in(g, n, 0)->shape);
  return true;
}

static void loss_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  loss_params q = params_of(n);
  int64_t count = kiln_shape_numel(in[0].shape);
  double sum = 0;
  for (int64_t i = 0; i < count; i++) sum += term(&q, in[0].data[i], in[1].data[i]);
  out->data[0] = sum * kiln_train_reduction_scale(n, in[0].shape);
}

static void grad_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  loss_params q = params_of(n);
  int64_t count = kiln_shape_numel(in[0].shape);
  double scale = in[2].data[0] * kiln_train_reduction_scale(n, in[0].shape);
  for (int64_t i = 0; i < count; i++)
    out->data[i] = scale * term_grad(&q, in[0].data[i], in[1].data[i]);
}

// ---- Lowering: one flat loop over the elements ----

static kiln_lexpr *f(kiln_lb *b, kiln_dtype t, double v) { return lx_float(b, t, v); }
static kiln_lexpr *bin(kiln_lb *b, kiln_lbin op, kiln_lexpr *x, kiln_lexpr *y) {
  return lx_bin(b, op, x, y);
}
static kiln_lexpr *sign_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *e) {
  kiln_lexpr *e2 = kiln_lx_clone(b, e);
  return lx_select(b, bin(b, LB_LT, f(b, t, 0), e), f(b, t, 1),
                   lx_select(b, bin(b, LB_LT, e2, f(b, t, 0)), f(b, t, -1), f(b, t, 0)));
}

// The loss term (grad false) or its derivative (grad true) of p and t (fresh loads each call).
static kiln_lexpr *term_lx(const kiln_lower_ctx *c, const loss_params *q, int i, bool grad) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_out(c, 0)->dtype;
  int pb = kiln_in_buf(c, 0), tb = kiln_in_buf(c, 1);
#define P lx_load(b, pb, lx_var(b, i))
#define T lx_load(b, tb, lx_var(b, i))
#define E bin(b, LB_SUB, P, T)
  switch (q->kind) {
    case MSE: return grad ? bin(b, LB_MUL, f(b, t, 2), E) : bin(b, LB_MUL, E, E);
    case MAE: return grad ? sign_lx(b, t, E) : lx_unary(b, LU_ABS, E);
    case HUBER: {
      kiln_lexpr *small = bin(b, LB_LT, lx_unary(b, LU_ABS, E), f(b, t, q->delta));
      if (grad) return lx_select(b, small, E, bin(b, LB_MUL, f(b, t, q->delta), sign_lx(b, t, E)));
      kiln_lexpr *quad = bin(b, LB_MUL, f(b, t, 0.5), bin(b, LB_MUL, E, E));
      kiln_lexpr *lin = bin(b, LB_MUL, f(b, t, q->delta),
                            bin(b, LB_SUB, lx_unary(b, LU_ABS, E), f(b, t, 0.5 * q->delta)));
      return lx_select(b, small, quad, lin);
    }
    case BCE: {
      if (grad)
        return bin(
            b, LB_DIV, E,
            bin(b, LB_MAX, bin(b, LB_MUL, P, bin(b, LB_SUB, f(b, t, 1), P)), f(b, t, 1e-12)));
      kiln_lexpr *lp = bin(b, LB_MAX, lx_unary(b, LU_LOG, P), f(b, t, -100));
      kiln_lexpr *lq =
          bin(b, LB_MAX, lx_unary(b, LU_LOG, bin(b, LB_SUB, f(b, t, 1), P)), f(b, t, -100));
      return lx_unary(
          b, LU_NEG,
          bin(b, LB_ADD, bin(b, LB_MUL, T, lp), bin(b, LB_MUL, bin(b, LB_SUB, f(b, t, 1), T), lq)));
    }
    case BCE_LOGITS: {
      if (grad) return bin(b, LB_SUB, lx_unary(b, LU_SIGMOID, P), T);
      kiln_lexpr *soft =
          lx_unary(b, LU_LOG,
                   bin(b, LB_ADD, f(b, t, 1),
                       lx_unary(b, LU_EXP, lx_unary(b, LU_NEG, lx_unary(b, LU_ABS, P)))));
      return bin(b, LB_ADD, bin(b, LB_SUB, bin(b, LB_MAX, P, f(b, t, 0)), bin(b, LB_MUL, P, T)),
                 soft);
    }
    case KL_DIV: {
      if (grad) return lx_unary(b, LU_NEG, T);
      kiln_lexpr *pos = bin(b, LB_LT, f(b, t, 0), T);
      // log(max(t, tiny)) keeps the unselected branch finite.
      kiln_lexpr *v = bin(
          b, LB_MUL, T, bin(b, LB_SUB, lx_unary(b, LU_LOG, bin(b, LB_MAX, T, f(b, t, 1e-30))), P));
      return lx_select(b, pos, v, f(b, t, 0));
    }
    default: {
      kiln_lexpr *inside = bin(b, LB_LT, bin(b, LB_MUL, E, E), f(b, t, q->clip));
      if (grad) return lx_select(b, inside, bin(b, LB_MUL, f(b, t, 2), E), f(b, t, 0));
      return bin(b, LB_MIN, bin(b, LB_MUL, E, E), f(b, t, q->clip));
    }
  }
#undef P
#undef T
#undef E
}

static void loss_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *p = kiln_lower_in(c, 0);
  kiln_dtype t = p->dtype;
  loss_params q = params_of(c->node);
  kiln_lb_comment(b, "PointwiseLoss %s (%s): %s -> (1)", c->node->name, kinds[q.kind],
                  kiln_describe(p).text);
  int acc = kiln_lb_decl(b, "acc", t, lx_float(b, t, 0));
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&p->shape));
  kiln_lb_assign(b, acc, bin(b, LB_ADD, lx_var(b, acc), term_lx(c, &q, i, false)));
  kiln_lb_end_for(b);
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_int(b, 0),
                bin(b, LB_MUL, lx_var(b, acc),
                    lx_float(b, t, kiln_train_reduction_scale(c->node, &p->shape))));
}

static void grad_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *p = kiln_lower_in(c, 0);
  kiln_dtype t = p->dtype;
  loss_params q = params_of(c->node);
  kiln_lb_comment(b, "PointwiseLossGrad %s (%s): d/d%s", c->node->name, kinds[q.kind],
                  kiln_describe(p).text);
  kiln_lexpr *scale = bin(b, LB_MUL, lx_load(b, kiln_in_buf(c, 2), lx_int(b, 0)),
                          lx_float(b, t, kiln_train_reduction_scale(c->node, &p->shape)));
  int s = kiln_lb_decl(b, "scale", t, scale);
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&p->shape));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i),
                bin(b, LB_MUL, lx_var(b, s), term_lx(c, &q, i, true)));
  kiln_lb_end_for(b);
}

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 4 * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

const kiln_op_def kiln_op_PointwiseLoss = {
    .name = "PointwiseLoss",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_REDUCTION,
    .infer = loss_infer,
    .eval = loss_eval,
    .lower = loss_lower,
    .flops = flops,
    // An f32 sum of up to a few thousand terms (logs for bce): a few ulp of the sum each.
    .tol = {1e-6, 2e-5},
};

const kiln_op_def kiln_op_PointwiseLossGrad = {
    .name = "PointwiseLossGrad",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = grad_infer,
    .eval = grad_eval,
    .lower = grad_lower,
    .flops = flops,
    // A few roundings per element (a division for bce, exp for bce_with_logits).
    .tol = {1e-7, 2e-6},
};
