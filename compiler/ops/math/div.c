// Div: C = A / B, elementwise with numpy broadcasting (binary.c). Floats divide; integers (i32,
// i64, as in ONNX shape arithmetic) truncate toward zero like C. Integer division by zero is
// undefined in ONNX; Kiln gives 0 rather than trapping (INT_MIN / -1 is still undefined).
#include <math.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"

static double divide(const kiln_node *n, const double *v, int count) {
  (void)n, (void)count;
  return v[0] / v[1];
}

static double divide_int(const kiln_node *n, const double *v, int count) {
  (void)n, (void)count;
  return v[1] == 0 ? 0 : trunc(v[0] / v[1]);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_nary_eval(n, in, out, kiln_dtype_is_float(out->dtype) ? divide : divide_int);
}

// floats: a / b; integers: b == 0 ? 0 : a / b (C's `/` truncates toward zero).
static kiln_lexpr *divide_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr **v,
                             int count) {
  (void)n, (void)count;
  if (kiln_dtype_is_float(t)) return lx_bin(b, LB_DIV, v[0], v[1]);
  kiln_lexpr *zero_divisor = lx_bin(b, LB_EQ, kiln_lx_clone(b, v[1]), lx_float(b, t, 0));
  return lx_select(b, zero_divisor, lx_float(b, t, 0), lx_bin(b, LB_DIV, v[0], v[1]));
}

static void lower(const kiln_lower_ctx *c) { kiln_nary_lower(c, divide_lx); }

// Gradient (docs/training.md): dA = dy / B, dB = -dy C / B (C = A / B, this node's output), each
// summed to its input's shape.
static bool grad(kiln_grad_ctx *c) {
  int b = c->node.inputs[1], dy = c->dy[0];
  if (c->need[0]) {
    int q = kiln_gb_binary(c, "Div", dy, b);
    if (q < 0 || (c->dx[0] = kiln_gb_sum_to(c, q, &c->g->tensors[c->node.inputs[0]].shape)) < 0)
      return false;
  }
  if (c->need[1]) {
    int p = kiln_gb_binary(c, "Mul", dy, c->node.outputs[0]);
    int q = p < 0 ? -1 : kiln_gb_binary(c, "Div", p, b);
    int neg = q < 0 ? -1 : kiln_gb_unary(c, "Neg", q);
    if (neg < 0 || (c->dx[1] = kiln_gb_sum_to(c, neg, &c->g->tensors[b].shape)) < 0) return false;
  }
  return true;
}

const kiln_op_def kiln_op_Div = {
    .name = "Div",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = kiln_binary_attrs,
    .fuse = KILN_FUSE_BROADCAST,
    .infer = kiln_binary_infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_output_numel_flops,
    .tol = {0, 2.4e-7},  // floats: one f32 rounding each side; integers are exact
    .grad = grad,
    .elementwise = divide_lx,  // fuse-elementwise (floats only)
};
