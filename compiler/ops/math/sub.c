// Sub: C = A - B, elementwise with numpy broadcasting (binary.c).
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static double sub(double a, double b) { return a - b; }

// Gradient (docs/training.md): dA = dy, dB = -dy, each summed to its input's shape.
static bool sub_grad(kiln_grad_ctx *c) {
  kiln_shape as = c->g->tensors[c->node.inputs[0]].shape;  // copies: adding nodes moves tensors
  kiln_shape bs = c->g->tensors[c->node.inputs[1]].shape;
  if (c->need[0] && (c->dx[0] = kiln_gb_sum_to(c, c->dy[0], &as)) < 0) return false;
  if (c->need[1]) {
    int neg = kiln_gb_unary(c, "Neg", c->dy[0]);
    if (neg < 0 || (c->dx[1] = kiln_gb_sum_to(c, neg, &bs)) < 0) return false;
  }
  return true;
}

KILN_DEFINE_BINARY_OP_GRAD(Sub, sub, LB_SUB, 1e-7, 1.2e-7, sub_grad);
