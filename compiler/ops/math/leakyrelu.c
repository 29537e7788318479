// LeakyRelu: y = x if x >= 0 else alpha * x, elementwise; alpha defaults to 0.01.
#include "../op_internal.h"
#include "../train/grad_compose.h"

static const kiln_attr_spec attrs[] = {{"alpha", KILN_ATTR_FLOAT, false}, {0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: same shape as x
  return true;
}

static double leaky_relu(const kiln_node *n, double x) {
  return x >= 0 ? x : kiln_attr_float(n, "alpha", 0.01) * x;
}

// x < 0 ? alpha * x : x (a select, so the loop vectorizes)
static kiln_lexpr *leaky_relu_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *negative = lx_bin(b, LB_LT, kiln_lx_clone(b, x), lx_float(b, t, 0));
  kiln_lexpr *scaled =
      lx_bin(b, LB_MUL, lx_float(b, t, kiln_attr_float(n, "alpha", 0.01)), kiln_lx_clone(b, x));
  return lx_select(b, negative, scaled, x);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_unary_node_eval(n, in, out, leaky_relu);
}

static void lower(const kiln_lower_ctx *c) { kiln_unary_node_lower(c, leaky_relu_lx); }

// Gradient (docs/training.md): dx = x < 0 ? alpha dy : dy (slope 1 at x = 0, as the forward).
static bool leaky_relu_grad(kiln_grad_ctx *c) {
  int x = kiln_gc_x(c, 0), dy = c->dy[0];
  int negative = kiln_gc_scalar_op(c, "Less", x, 0);
  int scaled = kiln_gc_scalar_op(c, "Mul", dy, kiln_attr_float(&c->node, "alpha", 0.01));
  if (negative < 0 || scaled < 0) return false;
  int in[3] = {negative, scaled, dy};
  c->dx[0] = kiln_gb_op(c, "Where", in, 3, NULL, 1);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_LeakyRelu = {
    .name = "LeakyRelu",
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
    .tol = {0, 1.2e-7},  // one rounding of alpha * x (alpha itself rounded to f32 in PyTorch)
    .grad = leaky_relu_grad,
};
