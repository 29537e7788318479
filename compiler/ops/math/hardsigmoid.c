// HardSigmoid: y = max(0, min(1, alpha * x + beta)), elementwise; alpha 0.2, beta 0.5 by default.
#include <math.h>

#include "../op_internal.h"
#include "../train/grad_compose.h"

static const kiln_attr_spec attrs[] = {
    {"alpha", KILN_ATTR_FLOAT, false}, {"beta", KILN_ATTR_FLOAT, false}, {0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: same shape as x
  return true;
}

static double hard_sigmoid(const kiln_node *n, double x) {
  double v = kiln_attr_float(n, "alpha", 0.2) * x + kiln_attr_float(n, "beta", 0.5);
  return fmax(0, fmin(1, v));
}

// max(min(alpha * x + beta, 1), 0)
static kiln_lexpr *hard_sigmoid_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *v = lx_bin(b, LB_MUL, lx_float(b, t, kiln_attr_float(n, "alpha", 0.2)), x);
  v = lx_bin(b, LB_ADD, v, lx_float(b, t, kiln_attr_float(n, "beta", 0.5)));
  return lx_bin(b, LB_MAX, lx_bin(b, LB_MIN, v, lx_float(b, t, 1)), lx_float(b, t, 0));
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_unary_node_eval(n, in, out, hard_sigmoid);
}

static void lower(const kiln_lower_ctx *c) { kiln_unary_node_lower(c, hard_sigmoid_lx); }

// Gradient (docs/training.md): dx = alpha dy where 0 < alpha x + beta < 1 (read from 0 < y < 1),
// 0 elsewhere (the kinks get 0, as in PyTorch).
static bool hard_sigmoid_grad(kiln_grad_ctx *c) {
  int y = kiln_gc_y(c);
  int inside = kiln_gc_binary(c, "And", kiln_gc_scalar_op(c, "Greater", y, 0),
                              kiln_gc_scalar_op(c, "Less", y, 1));
  int scaled = kiln_gc_scalar_op(c, "Mul", c->dy[0], kiln_attr_float(&c->node, "alpha", 0.2));
  c->dx[0] = kiln_gc_where_else(c, inside, scaled, 0);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_HardSigmoid = {
    .name = "HardSigmoid",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_ELEMENTWISE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_output_numel_flops,
    // two f32 roundings (multiply, add) of a value in [0, 1]: absolute
    .tol = {1.2e-7, 1.2e-7},
    .grad = hard_sigmoid_grad,
};
