// Mul: C = A * B, elementwise with numpy broadcasting (binary.c).
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static double mul(double a, double b) { return a * b; }

// Gradient (docs/training.md): dA = dy B, dB = dy A, each summed to its input's shape.
static bool mul_grad(kiln_grad_ctx *c) {
  for (int i = 0; i < 2; i++) {
    if (!c->need[i]) continue;
    int other = c->node.inputs[1 - i];
    int prod = kiln_gb_binary(c, "Mul", c->dy[0], other);
    if (prod < 0 ||
        (c->dx[i] = kiln_gb_sum_to(c, prod, &c->g->tensors[c->node.inputs[i]].shape)) < 0)
      return false;
  }
  return true;
}

KILN_DEFINE_BINARY_OP_GRAD(Mul, mul, LB_MUL, 0, 1.2e-7, mul_grad);
