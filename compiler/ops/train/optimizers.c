// Optimizer updates (PyTorch 1.13's definitions, so step parity is testable). Side-effect ops: no
// outputs; they write the param w and their state (STATE tensors) in place (`writes_inputs`).
// Inputs: w, its gradient g (same shape), the learning rate lr (1) and the step counter step (1,
// i64, the number of updates done before this one), then the state.
//   SGDUpdate(w, g, lr, step[, buf])   momentum, dampening, nesterov, weight_decay
//     d = g + wd w;  buf = step == 0 ? d : momentum buf + (1 - dampening) d   (when momentum > 0)
//     w -= lr (nesterov ? d + momentum buf : buf)     (w -= lr d without momentum)
//   AdamUpdate(w, g, lr, step, m, v)   beta1, beta2, eps, weight_decay, decoupled (AdamW)
//     t = step + 1;  AdamW: w *= 1 - lr wd;  Adam: g += wd w
//     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//     w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//   AdagradUpdate(w, g, lr, step, sum)  eps, weight_decay
//     g += wd w;  sum += g^2;  w -= lr g / (sqrt(sum) + eps)
//   RMSpropUpdate(w, g, lr, step, sq)  alpha, eps, weight_decay (PyTorch's, no momentum, not
//     centered):  g += wd w;  sq = alpha sq + (1 - alpha) g^2;  w -= lr g / (sqrt(sq) + eps)
//   WeightClip(w)  min, max: w = min(max(w, min), max) (WGAN's weight clipping, after the update)
#include <math.h>

#include "train_internal.h"

enum { W, G, LR, STEP, S0, S1 };

static const kiln_attr_spec sgd_attrs[] = {{"momentum", KILN_ATTR_FLOAT, false},
                                           {"dampening", KILN_ATTR_FLOAT, false},
                                           {"nesterov", KILN_ATTR_INT, false},
                                           {"weight_decay", KILN_ATTR_FLOAT, false},
                                           {0}};
static const kiln_attr_spec adam_attrs[] = {
    {"beta1", KILN_ATTR_FLOAT, false},   {"beta2", KILN_ATTR_FLOAT, false},
    {"eps", KILN_ATTR_FLOAT, false},     {"weight_decay", KILN_ATTR_FLOAT, false},
    {"decoupled", KILN_ATTR_INT, false}, {0}};
static const kiln_attr_spec adagrad_attrs[] = {
    {"eps", KILN_ATTR_FLOAT, false}, {"weight_decay", KILN_ATTR_FLOAT, false}, {0}};
static const kiln_attr_spec rmsprop_attrs[] = {{"alpha", KILN_ATTR_FLOAT, false},
                                               {"eps", KILN_ATTR_FLOAT, false},
                                               {"weight_decay", KILN_ATTR_FLOAT, false},
                                               {0}};
static const kiln_attr_spec clip_attrs[] = {
    {"min", KILN_ATTR_FLOAT, true}, {"max", KILN_ATTR_FLOAT, true}, {0}};

// w, g and the n_state state tensors: one float dtype and w's shape; lr (1) of that dtype; step.
static bool check(kiln_graph *g, kiln_node *n, kiln_diag *d, int n_state) {
  if (!kiln_op_check_float_inputs(g, n, 2, d)) return false;
  const kiln_tensor *w = kiln_in(g, n, W);
  if (!kiln_train_check_shape(g, n, d, G, &w->shape, "the param (inputs[0])") ||
      !kiln_train_check_scalar(g, n, d, LR, w->dtype, "learning rate") ||
      !kiln_train_check_scalar(g, n, d, STEP, KILN_I64, "step counter"))
    return false;
  for (int i = 0; i < n_state; i++) {
    const kiln_tensor *s = kiln_in(g, n, S0 + i);
    if (!s || s->dtype != w->dtype) {
      kiln_op_error(d, n, "inputs[%d]: expected optimizer state of dtype %s", S0 + i,
                    kiln_dtype_name(w->dtype));
      return false;
    }
    if (!kiln_train_check_shape(g, n, d, S0 + i, &w->shape, "the param (inputs[0])")) return false;
  }
  return true;
}

static bool nonnegative(const kiln_node *n, kiln_diag *d, const char *attr, double dflt) {
  double v = kiln_attr_float(n, attr, dflt);
  if (v >= 0 && isfinite(v)) return true;
  kiln_op_error(d, n, "attrs.%s: expected a number >= 0, got %g", attr, v);
  return false;
}

static bool sgd_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  bool momentum = kiln_attr_float(n, "momentum", 0) > 0;
  if (momentum && !kiln_has_input(n, S0)) {
    kiln_op_error(d, n, "inputs[4]: momentum needs the momentum buffer");
    return false;
  }
  return check(g, n, d, momentum ? 1 : 0) && nonnegative(n, d, "momentum", 0) &&
         nonnegative(n, d, "dampening", 0) && nonnegative(n, d, "weight_decay", 0);
}

static bool adam_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  return check(g, n, d, 2) && nonnegative(n, d, "beta1", 0.9) &&
         nonnegative(n, d, "beta2", 0.999) && nonnegative(n, d, "eps", 1e-8) &&
         nonnegative(n, d, "weight_decay", 0);
}

static bool adagrad_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  return check(g, n, d, 1) && nonnegative(n, d, "eps", 1e-10) &&
         nonnegative(n, d, "weight_decay", 0);
}

static bool rmsprop_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  double alpha = kiln_attr_float(n, "alpha", 0.99);
  if (!(alpha >= 0 && alpha <= 1)) {
    kiln_op_error(d, n, "attrs.alpha: expected a number in [0, 1], got %g", alpha);
    return false;
  }
  return check(g, n, d, 1) && nonnegative(n, d, "eps", 1e-8) &&
         nonnegative(n, d, "weight_decay", 0);
}

static bool clip_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  double lo = kiln_attr_float(n, "min", 0), hi = kiln_attr_float(n, "max", 0);
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  if (!(lo <= hi)) {
    kiln_op_error(d, n, "attrs: expected min <= max, got min %g, max %g", lo, hi);
    return false;
  }
  return true;
}

// ---- Reference kernels (they write their inputs: the interpreter keeps STATE values) ----

static void sgd_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)out;
  double mom = kiln_attr_float(n, "momentum", 0), damp = kiln_attr_float(n, "dampening", 0);
  double wd = kiln_attr_float(n, "weight_decay", 0), lr = in[LR].data[0];
  bool nesterov = kiln_attr_int(n, "nesterov", 0) != 0, first = in[STEP].data[0] == 0;
  double *w = in[W].data, *buf = in[S0].data;
  for (int64_t i = 0; i < kiln_shape_numel(in[W].shape); i++) {
    double dp = in[G].data[i] + wd * w[i];
    if (mom > 0) {
      buf[i] = first ? dp : mom * buf[i] + (1 - damp) * dp;
      dp = nesterov ? dp + mom * buf[i] : buf[i];
    }
    w[i] -= lr * dp;
  }
}

static void adam_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)out;
  double b1 = kiln_attr_float(n, "beta1", 0.9), b2 = kiln_attr_float(n, "beta2", 0.999);
  double eps = kiln_attr_float(n, "eps", 1e-8), wd = kiln_attr_float(n, "weight_decay", 0);
  bool decoupled = kiln_attr_int(n, "decoupled", 0) != 0;
  double lr = in[LR].data[0], t = in[STEP].data[0] + 1;
  double step_size = lr / (1 - pow(b1, t)), bc2_sqrt = sqrt(1 - pow(b2, t));
  double *w = in[W].data, *m = in[S0].data, *v = in[S1].data;
  for (int64_t i = 0; i < kiln_shape_numel(in[W].shape); i++) {
    double g = in[G].data[i];
    if (decoupled)
      w[i] *= 1 - lr * wd;
    else
      g += wd * w[i];
    m[i] = b1 * m[i] + (1 - b1) * g;
    v[i] = b2 * v[i] + (1 - b2) * g * g;
    w[i] -= step_size * m[i] / (sqrt(v[i]) / bc2_sqrt + eps);
  }
}

static void adagrad_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)out;
  double eps = kiln_attr_float(n, "eps", 1e-10), wd = kiln_attr_float(n, "weight_decay", 0);
  double lr = in[LR].data[0], *w = in[W].data, *sum = in[S0].data;
  for (int64_t i = 0; i < kiln_shape_numel(in[W].shape); i++) {
    double g = in[G].data[i] + wd * w[i];
    sum[i] += g * g;
    w[i] -= lr * g / (sqrt(sum[i]) + eps);
  }
}

static void rmsprop_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)out;
  double alpha = kiln_attr_float(n, "alpha", 0.99), eps = kiln_attr_float(n, "eps", 1e-8);
  double wd = kiln_attr_float(n, "weight_decay", 0), lr = in[LR].data[0];
  double *w = in[W].data, *sq = in[S0].data;
  for (int64_t i = 0; i < kiln_shape_numel(in[W].shape); i++) {
    double g = in[G].data[i] + wd * w[i];
    sq[i] = alpha * sq[i] + (1 - alpha) * g * g;
    w[i] -= lr * g / (sqrt(sq[i]) + eps);
  }
}

static void clip_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)out;
  double lo = kiln_attr_float(n, "min", 0), hi = kiln_attr_float(n, "max", 0), *w = in[W].data;
  for (int64_t i = 0; i < kiln_shape_numel(in[W].shape); i++) w[i] = fmin(fmax(w[i], lo), hi);
}

// ---- Lowering: scalars first (in f64, like PyTorch's Python floats), then one flat loop ----

typedef struct upd {
  kiln_lb *b;
  kiln_dtype t;
  int i;  // the element loop variable
} upd;

static kiln_lexpr *ld(const kiln_lower_ctx *c, const upd *u, int input) {
  return lx_load(u->b, kiln_in_buf(c, input), lx_var(u->b, u->i));
}
static kiln_lexpr *num(const upd *u, double v) { return lx_float(u->b, u->t, v); }
static kiln_lexpr *op(const upd *u, kiln_lbin o, kiln_lexpr *x, kiln_lexpr *y) {
  return lx_bin(u->b, o, x, y);
}
static void st(const kiln_lower_ctx *c, const upd *u, int input, int var) {
  kiln_lb_store(u->b, kiln_in_buf(c, input), lx_var(u->b, u->i), lx_var(u->b, var));
}

static int lr_var(const kiln_lower_ctx *c, kiln_lb *b, kiln_dtype t) {
  return kiln_lb_decl(b, "lr", t, lx_load(b, kiln_in_buf(c, LR), lx_int(b, 0)));
}

static upd open_loop(const kiln_lower_ctx *c) {
  const kiln_tensor *w = kiln_lower_in(c, W);
  upd u = {.b = c->b, .t = w->dtype};
  u.i = kiln_lb_for_n(c->b, "i", kiln_shape_numel(&w->shape));
  return u;
}

static void sgd_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_node *n = c->node;
  kiln_dtype t = kiln_lower_in(c, W)->dtype;
  double mom = kiln_attr_float(n, "momentum", 0), damp = kiln_attr_float(n, "dampening", 0);
  double wd = kiln_attr_float(n, "weight_decay", 0);
  kiln_lb_comment(b, "SGDUpdate %s: %s", n->name, kiln_describe(kiln_lower_in(c, W)).text);
  int lr = lr_var(c, b, t), first = -1;
  if (mom > 0)  // the momentum buffer starts as the first step's gradient
    first = kiln_lb_decl(
        b, "first", KILN_BOOL,
        lx_bin(b, LB_EQ, lx_load(b, kiln_in_buf(c, STEP), lx_int(b, 0)), lx_int(b, 0)));
  upd u = open_loop(c);
  int dp = kiln_lb_decl(b, "dp", t,
                        op(&u, LB_ADD, ld(c, &u, G), op(&u, LB_MUL, num(&u, wd), ld(c, &u, W))));
  int step = dp;
  if (mom > 0) {
    kiln_lexpr *later = op(&u, LB_ADD, op(&u, LB_MUL, num(&u, mom), ld(c, &u, S0)),
                           op(&u, LB_MUL, num(&u, 1 - damp), lx_var(b, dp)));
    int buf = kiln_lb_decl(b, "buf", t, lx_select(b, lx_var(b, first), lx_var(b, dp), later));
    st(c, &u, S0, buf);
    step = buf;
    if (kiln_attr_int(n, "nesterov", 0))
      step = kiln_lb_decl(
          b, "nes", t, op(&u, LB_ADD, lx_var(b, dp), op(&u, LB_MUL, num(&u, mom), lx_var(b, buf))));
  }
  int neww = kiln_lb_decl(
      b, "w", t, op(&u, LB_SUB, ld(c, &u, W), op(&u, LB_MUL, lx_var(b, lr), lx_var(b, step))));
  st(c, &u, W, neww);
  kiln_lb_end_for(b);
}

static void adam_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_node *n = c->node;
  kiln_dtype t = kiln_lower_in(c, W)->dtype;
  double b1 = kiln_attr_float(n, "beta1", 0.9), b2 = kiln_attr_float(n, "beta2", 0.999);
  double eps = kiln_attr_float(n, "eps", 1e-8), wd = kiln_attr_float(n, "weight_decay", 0);
  bool decoupled = kiln_attr_int(n, "decoupled", 0) != 0;
  kiln_lb_comment(b, "AdamUpdate %s: %s", n->name, kiln_describe(kiln_lower_in(c, W)).text);
  int lr = lr_var(c, b, t);
  kiln_lexpr *tt = lx_cast(
      b, KILN_F64, lx_bin(b, LB_ADD, lx_load(b, kiln_in_buf(c, STEP), lx_int(b, 0)), lx_int(b, 1)));
  int step64 = kiln_lb_decl(b, "t", KILN_F64, tt);
  kiln_lexpr *bc1 = lx_bin(b, LB_SUB, lx_float(b, KILN_F64, 1),
                           lx_bin(b, LB_POW, lx_float(b, KILN_F64, b1), lx_var(b, step64)));
  kiln_lexpr *bc2 = lx_bin(b, LB_SUB, lx_float(b, KILN_F64, 1),
                           lx_bin(b, LB_POW, lx_float(b, KILN_F64, b2), lx_var(b, step64)));
  int step_size =
      kiln_lb_decl(b, "step_size", t,
                   lx_cast(b, t, lx_bin(b, LB_DIV, lx_cast(b, KILN_F64, lx_var(b, lr)), bc1)));
  int bc2_sqrt = kiln_lb_decl(b, "bc2_sqrt", t, lx_cast(b, t, lx_unary(b, LU_SQRT, bc2)));
  int decay =
      kiln_lb_decl(b, "decay", t,
                   lx_bin(b, LB_SUB, lx_float(b, t, 1),
                          lx_bin(b, LB_MUL, lx_var(b, lr), lx_float(b, t, decoupled ? wd : 0))));
  upd u = open_loop(c);
  int w = kiln_lb_decl(b, "w", t, op(&u, LB_MUL, ld(c, &u, W), lx_var(b, decay)));
  int g = kiln_lb_decl(
      b, "g", t,
      op(&u, LB_ADD, ld(c, &u, G), op(&u, LB_MUL, num(&u, decoupled ? 0 : wd), lx_var(b, w))));
  int m = kiln_lb_decl(b, "m", t,
                       op(&u, LB_ADD, op(&u, LB_MUL, num(&u, b1), ld(c, &u, S0)),
                          op(&u, LB_MUL, num(&u, 1 - b1), lx_var(b, g))));
  int v =
      kiln_lb_decl(b, "v", t,
                   op(&u, LB_ADD, op(&u, LB_MUL, num(&u, b2), ld(c, &u, S1)),
                      op(&u, LB_MUL, num(&u, 1 - b2), op(&u, LB_MUL, lx_var(b, g), lx_var(b, g)))));
  st(c, &u, S0, m);
  st(c, &u, S1, v);
  kiln_lexpr *denom =
      op(&u, LB_ADD, op(&u, LB_DIV, lx_unary(b, LU_SQRT, lx_var(b, v)), lx_var(b, bc2_sqrt)),
         num(&u, eps));
  int neww =
      kiln_lb_decl(b, "nw", t,
                   op(&u, LB_SUB, lx_var(b, w),
                      op(&u, LB_MUL, lx_var(b, step_size), op(&u, LB_DIV, lx_var(b, m), denom))));
  st(c, &u, W, neww);
  kiln_lb_end_for(b);
}

static void adagrad_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_node *n = c->node;
  kiln_dtype t = kiln_lower_in(c, W)->dtype;
  double eps = kiln_attr_float(n, "eps", 1e-10), wd = kiln_attr_float(n, "weight_decay", 0);
  kiln_lb_comment(b, "AdagradUpdate %s: %s", n->name, kiln_describe(kiln_lower_in(c, W)).text);
  int lr = lr_var(c, b, t);
  upd u = open_loop(c);
  int g = kiln_lb_decl(b, "g", t,
                       op(&u, LB_ADD, ld(c, &u, G), op(&u, LB_MUL, num(&u, wd), ld(c, &u, W))));
  int s = kiln_lb_decl(b, "sum", t,
                       op(&u, LB_ADD, ld(c, &u, S0), op(&u, LB_MUL, lx_var(b, g), lx_var(b, g))));
  st(c, &u, S0, s);
  kiln_lexpr *denom = op(&u, LB_ADD, lx_unary(b, LU_SQRT, lx_var(b, s)), num(&u, eps));
  int neww = kiln_lb_decl(b, "w", t,
                          op(&u, LB_SUB, ld(c, &u, W),
                             op(&u, LB_DIV, op(&u, LB_MUL, lx_var(b, lr), lx_var(b, g)), denom)));
  st(c, &u, W, neww);
  kiln_lb_end_for(b);
}

static void rmsprop_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_node *n = c->node;
  kiln_dtype t = kiln_lower_in(c, W)->dtype;
  double alpha = kiln_attr_float(n, "alpha", 0.99), eps = kiln_attr_float(n, "eps", 1e-8);
  double wd = kiln_attr_float(n, "weight_decay", 0);
  kiln_lb_comment(b, "RMSpropUpdate %s: %s", n->name, kiln_describe(kiln_lower_in(c, W)).text);
  int lr = lr_var(c, b, t);
  upd u = open_loop(c);
  int g = kiln_lb_decl(b, "g", t,
                       op(&u, LB_ADD, ld(c, &u, G), op(&u, LB_MUL, num(&u, wd), ld(c, &u, W))));
  int sq = kiln_lb_decl(
      b, "sq", t,
      op(&u, LB_ADD, op(&u, LB_MUL, num(&u, alpha), ld(c, &u, S0)),
         op(&u, LB_MUL, num(&u, 1 - alpha), op(&u, LB_MUL, lx_var(b, g), lx_var(b, g)))));
  st(c, &u, S0, sq);
  kiln_lexpr *denom = op(&u, LB_ADD, lx_unary(b, LU_SQRT, lx_var(b, sq)), num(&u, eps));
  int neww = kiln_lb_decl(b, "w", t,
                          op(&u, LB_SUB, ld(c, &u, W),
                             op(&u, LB_DIV, op(&u, LB_MUL, lx_var(b, lr), lx_var(b, g)), denom)));
  st(c, &u, W, neww);
  kiln_lb_end_for(b);
}

static void clip_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_node *n = c->node;
  kiln_lb_comment(b, "WeightClip %s: %s", n->name, kiln_describe(kiln_lower_in(c, W)).text);
  upd u = open_loop(c);
  kiln_lexpr *lo = num(&u, kiln_attr_float(n, "min", 0)),
             *hi = num(&u, kiln_attr_float(n, "max", 0));
  int w = kiln_lb_decl(b, "w", u.t, op(&u, LB_MIN, op(&u, LB_MAX, ld(c, &u, W), lo), hi));
  st(c, &u, W, w);
  kiln_lb_end_for(b);
}

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 8 * kiln_shape_numel(&kiln_in(g, n, W)->shape);
}

// A handful of f32 roundings per element against f64 (the state compounds them over steps).
#define UPDATE_TOL \
  { 1e-7, 4e-6 }

const kiln_op_def kiln_op_SGDUpdate = {
    .name = "SGDUpdate",
    .min_inputs = 4,
    .max_inputs = 5,
    .min_outputs = 0,
    .max_outputs = 0,
    .attrs = sgd_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = sgd_infer,
    .eval = sgd_eval,
    .lower = sgd_lower,
    .flops = flops,
    .tol = UPDATE_TOL,
    .writes_inputs = 1u << W | 1u << S0,
};

const kiln_op_def kiln_op_AdamUpdate = {
    .name = "AdamUpdate",
    .min_inputs = 6,
    .max_inputs = 6,
    .min_outputs = 0,
    .max_outputs = 0,
    .attrs = adam_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = adam_infer,
    .eval = adam_eval,
    .lower = adam_lower,
    .flops = flops,
    .tol = UPDATE_TOL,
    .writes_inputs = 1u << W | 1u << S0 | 1u << S1,
};

const kiln_op_def kiln_op_AdagradUpdate = {
    .name = "AdagradUpdate",
    .min_inputs = 5,
    .max_inputs = 5,
    .min_outputs = 0,
    .max_outputs = 0,
    .attrs = adagrad_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = adagrad_infer,
    .eval = adagrad_eval,
    .lower = adagrad_lower,
    .flops = flops,
    .tol = UPDATE_TOL,
    .writes_inputs = 1u << W | 1u << S0,
};

const kiln_op_def kiln_op_RMSpropUpdate = {
    .name = "RMSpropUpdate",
    .min_inputs = 5,
    .max_inputs = 5,
    .min_outputs = 0,
    .max_outputs = 0,
    .attrs = rmsprop_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = rmsprop_infer,
    .eval = rmsprop_eval,
    .lower = rmsprop_lower,
    .flops = flops,
    .tol = UPDATE_TOL,
    .writes_inputs = 1u << W | 1u << S0,
};

const kiln_op_def kiln_op_WeightClip = {
    .name = "WeightClip",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 0,
    .max_outputs = 0,
    .attrs = clip_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = clip_infer,
    .eval = clip_eval,
    .lower = clip_lower,
    .flops = flops,
    .tol = UPDATE_TOL,
    .writes_inputs = 1u << W,
};
