// The training step's scalars:
//   LearningRate(step (1) i64) -> lr (1) of `dtype` (f32, default, or f64): the schedule of the
//   step counter (the number of
//     updates done so far), PyTorch's StepLR and CosineAnnealingLR stepped once per update:
//       constant  lr
//       step      lr * gamma^floor(step / step_size)
//       cosine    min_lr + (lr - min_lr) (1 + cos(pi step / total_steps)) / 2
//   StepIncrement(step): step += 1, in place (a side effect, run last).
//   GradNormScale(sumsq (1)) -> scale (1): min(1, max_norm / (sqrt(sumsq) + 1e-6)), the factor
//     torch.nn.utils.clip_grad_norm_ multiplies every gradient by (sumsq: the sum of squares of
//     all gradients).
#include <math.h>

#include "train_internal.h"

static const char *const schedules[] = {"constant", "step", "cosine"};

static const kiln_attr_spec lr_attrs[] = {
    {"lr", KILN_ATTR_FLOAT, true},         {"schedule", KILN_ATTR_STRING, false},
    {"step_size", KILN_ATTR_INT, false},   {"gamma", KILN_ATTR_FLOAT, false},
    {"total_steps", KILN_ATTR_INT, false}, {"min_lr", KILN_ATTR_FLOAT, false},
    {"dtype", KILN_ATTR_STRING, false},    {0}};

// The lr's dtype (attribute `dtype`); false if it is not f32 or f64.
static bool lr_dtype(const kiln_node *n, kiln_dtype *t) {
  if (!kiln_dtype_parse(kiln_attr_string(n, "dtype", "f32"), t)) return false;
  return kiln_dtype_is_float(*t);
}
static const kiln_attr_spec no_attrs[] = {{0}};
static const kiln_attr_spec clip_attrs[] = {{"max_norm", KILN_ATTR_FLOAT, true}, {0}};

static bool lr_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_train_check_scalar(g, n, d, 0, KILN_I64, "step counter")) return false;
  if (kiln_train_read_choice(n, d, "schedule", schedules, 3, 0) < 0) return false;
  int64_t v;
  if (!kiln_op_read_int(n, d, "step_size", 1, 1, INT64_MAX, &v) ||
      !kiln_op_read_int(n, d, "total_steps", 1, 1, INT64_MAX, &v))
    return false;
  kiln_dtype t;
  if (!lr_dtype(n, &t)) {
    kiln_op_error(d, n, "attrs.dtype: expected \"f32\" or \"f64\"");
    return false;
  }
  kiln_shape one = kiln_train_scalar_shape();
  kiln_op_set_output(g, n, 0, t, &one);
  return true;
}

static double schedule(const kiln_node *n, double step) {
  double lr = kiln_attr_float(n, "lr", 0);
  switch (kiln_train_read_choice(n, NULL, "schedule", schedules, 3, 0)) {
    case 1:
      return lr * pow(kiln_attr_float(n, "gamma", 0.1),
                      floor(step / (double)kiln_attr_int(n, "step_size", 1)));
    case 2: {
      double min_lr = kiln_attr_float(n, "min_lr", 0);
      double total = (double)kiln_attr_int(n, "total_steps", 1);
      return min_lr + (lr - min_lr) * (1 + cos(M_PI * step / total)) / 2;
    }
    default: return lr;
  }
}

static void lr_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  out->data[0] = schedule(n, in[0].data[0]);
}

static void lr_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_node *n = c->node;
  int sched = kiln_train_read_choice(n, NULL, "schedule", schedules, 3, 0);
  kiln_lb_comment(b, "LearningRate %s: %s schedule of %s", n->name, schedules[sched],
                  kiln_lower_in(c, 0)->name);
  double lr = kiln_attr_float(n, "lr", 0);
  // In f64, like PyTorch's Python floats; rounded to f32 once.
  kiln_lexpr *step = lx_load(b, kiln_in_buf(c, 0), lx_int(b, 0)), *v = lx_float(b, KILN_F64, lr);
  if (sched == 1) {
    kiln_lexpr *k =
        lx_cast(b, KILN_F64, lx_bin(b, LB_DIV, step, lx_int(b, kiln_attr_int(n, "step_size", 1))));
    v = lx_bin(b, LB_MUL, v,
               lx_bin(b, LB_POW, lx_float(b, KILN_F64, kiln_attr_float(n, "gamma", 0.1)), k));
  } else if (sched == 2) {
    double min_lr = kiln_attr_float(n, "min_lr", 0);
    double w = M_PI / (double)kiln_attr_int(n, "total_steps", 1);
    kiln_lexpr *cosine = lx_unary(
        b, LU_COS, lx_bin(b, LB_MUL, lx_float(b, KILN_F64, w), lx_cast(b, KILN_F64, step)));
    v = lx_bin(b, LB_ADD, lx_float(b, KILN_F64, min_lr),
               lx_bin(b, LB_MUL, lx_float(b, KILN_F64, (lr - min_lr) / 2),
                      lx_bin(b, LB_ADD, lx_float(b, KILN_F64, 1), cosine)));
  } else {
    (void)step;
  }
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_int(b, 0), lx_cast(b, kiln_lower_out(c, 0)->dtype, v));
}

static bool inc_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  return kiln_train_check_scalar(g, n, d, 0, KILN_I64, "step counter");
}

static void inc_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)n;
  (void)out;
  in[0].data[0] += 1;
}

static void inc_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  kiln_lb_comment(b, "StepIncrement %s: %s += 1", c->node->name, kiln_lower_in(c, 0)->name);
  int s = kiln_in_buf(c, 0);
  kiln_lb_store(b, s, lx_int(b, 0), lx_bin(b, LB_ADD, lx_load(b, s, lx_int(b, 0)), lx_int(b, 1)));
}

static bool clip_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  if (!kiln_train_check_scalar(g, n, d, 0, kiln_in(g, n, 0)->dtype, "sum of squares")) return false;
  if (!(kiln_attr_float(n, "max_norm", 0) > 0)) {
    kiln_op_error(d, n, "attrs.max_norm: expected a number > 0");
    return false;
  }
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &kiln_in(g, n, 0)->shape);
  return true;
}

static void clip_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  out->data[0] = fmin(1.0, kiln_attr_float(n, "max_norm", 1) / (sqrt(in[0].data[0]) + 1e-6));
}

static void clip_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_out(c, 0)->dtype;
  kiln_lb_comment(b, "GradNormScale %s", c->node->name);
  kiln_lexpr *norm =
      lx_bin(b, LB_ADD, lx_unary(b, LU_SQRT, lx_load(b, kiln_in_buf(c, 0), lx_int(b, 0))),
             lx_float(b, t, 1e-6));
  kiln_lexpr *coef =
      lx_bin(b, LB_DIV, lx_float(b, t, kiln_attr_float(c->node, "max_norm", 1)), norm);
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_int(b, 0), lx_bin(b, LB_MIN, coef, lx_float(b, t, 1)));
}

static int64_t one_flop(const kiln_graph *g, const kiln_node *n) {
  (void)g;
  (void)n;
  return 1;
}

const kiln_op_def kiln_op_LearningRate = {
    .name = "LearningRate",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = lr_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = lr_infer,
    .eval = lr_eval,
    .lower = lr_lower,
    .flops = one_flop,
    .tol = {0, 1.2e-7},  // computed in f64, rounded to f32 once
};

const kiln_op_def kiln_op_StepIncrement = {
    .name = "StepIncrement",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 0,
    .max_outputs = 0,
    .attrs = no_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = inc_infer,
    .eval = inc_eval,
    .lower = inc_lower,
    .flops = one_flop,
    .tol = {0, 0},  // integer
    .writes_inputs = 1u,
};

const kiln_op_def kiln_op_GradNormScale = {
    .name = "GradNormScale",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = clip_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = clip_infer,
    .eval = clip_eval,
    .lower = clip_lower,
    .flops = one_flop,
    .tol = {0, 4e-7},  // sqrtf, a division
};
