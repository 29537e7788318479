// Gelu (ONNX opset 20), elementwise; attribute approximate = "none" (default) or "tanh":
//   none: y = 0.5 * x * (1 + erf(x / sqrt(2)))
//   tanh: y = 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
#include <math.h>
#include <string.h>

#include "../op_internal.h"
#include "../train/grad_compose.h"

static const kiln_attr_spec attrs[] = {{"approximate", KILN_ATTR_STRING, false}, {0}};

static const double sqrt_half = 0.70710678118654752440;       // 1 / sqrt(2)
static const double sqrt_2_over_pi = 0.79788456080286535588;  // sqrt(2 / pi)
static const double cubic = 0.044715;

static bool is_tanh(const kiln_node *n) {
  return strcmp(kiln_attr_string(n, "approximate", "none"), "tanh") == 0;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const char *approximate = kiln_attr_string(n, "approximate", "none");
  if (strcmp(approximate, "none") != 0 && strcmp(approximate, "tanh") != 0) {
    kiln_op_error(d, n, "attrs.approximate: expected \"none\" or \"tanh\", got \"%s\"",
                  approximate);
    return false;
  }
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: same shape as x
  return true;
}

static double gelu(const kiln_node *n, double x) {
  if (is_tanh(n)) return 0.5 * x * (1 + tanh(sqrt_2_over_pi * (x + cubic * x * x * x)));
  return 0.5 * x * (1 + erf(x * sqrt_half));
}

// The smooth factor: erf(x / sqrt(2)) or tanh(sqrt(2 / pi) * (x + 0.044715 * x * x * x)).
static kiln_lexpr *gate(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr *x) {
  if (!is_tanh(n)) return lx_unary(b, LU_ERF, lx_bin(b, LB_MUL, x, lx_float(b, t, sqrt_half)));
  kiln_lexpr *x3 = lx_bin(b, LB_MUL, lx_bin(b, LB_MUL, kiln_lx_clone(b, x), kiln_lx_clone(b, x)),
                          kiln_lx_clone(b, x));
  kiln_lexpr *inner = lx_bin(b, LB_ADD, x, lx_bin(b, LB_MUL, lx_float(b, t, cubic), x3));
  return lx_unary(b, LU_TANH, lx_bin(b, LB_MUL, lx_float(b, t, sqrt_2_over_pi), inner));
}

// 0.5 * x * (1 + gate(x))
static kiln_lexpr *gelu_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *half_x = lx_bin(b, LB_MUL, lx_float(b, t, 0.5), kiln_lx_clone(b, x));
  return lx_bin(b, LB_MUL, half_x, lx_bin(b, LB_ADD, lx_float(b, t, 1), gate(b, n, t, x)));
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_unary_node_eval(n, in, out, gelu);
}

static void lower(const kiln_lower_ctx *c) { kiln_unary_node_lower(c, gelu_lx); }

// Per element: about 5 multiply/adds and one erf or tanh.
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 6 * kiln_shape_numel(&kiln_out(g, n, 0)->shape);
}

// Gradient (docs/training.md), erf form: dx = dy (Phi(x) + x phi(x)), with
// Phi(x) = 0.5 (1 + erf(x / sqrt(2))) and phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
static bool gelu_grad(kiln_grad_ctx *c) {
  if (is_tanh(&c->node)) {
    kiln_op_error(c->d, &c->node, "attrs.approximate: \"tanh\" Gelu is not differentiable yet");
    return false;
  }
  int x = kiln_gc_x(c, 0);
  int erf = kiln_gc_unary(c, "Erf", kiln_gc_scalar_op(c, "Mul", x, sqrt_half));
  int cdf = kiln_gc_scalar_op(c, "Mul", kiln_gc_scalar_op(c, "Add", erf, 1), 0.5);
  int half_x2 = kiln_gc_scalar_op(c, "Mul", kiln_gc_binary(c, "Mul", x, x), -0.5);
  int pdf = kiln_gc_scalar_op(c, "Mul", kiln_gc_unary(c, "Exp", half_x2), 0.39894228040143267794);
  return kiln_gc_chain(c, kiln_gc_binary(c, "Add", cdf, kiln_gc_binary(c, "Mul", x, pdf)));
}

const kiln_op_def kiln_op_Gelu = {
    .name = "Gelu",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_ELEMENTWISE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // f32: erf/tanh within a few ulp, then 1 + g cancels for negative x, where y is small: the
    // absolute term is a few ulp of 1 times |0.5 x| (|x| <= 4 in the goldens); the relative
    // term is about 5 roundings.
    .tol = {5e-7, 6e-7},
    .grad = gelu_grad,
};
