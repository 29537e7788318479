// Add: C = A + B, elementwise with numpy broadcasting (binary.c).
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static double add(double a, double b) { return a + b; }

// Gradient (docs/training.md): dy to both inputs, summed over the axes each was broadcast along.
static bool add_grad(kiln_grad_ctx *c) {
  for (int i = 0; i < 2; i++)
    if (c->need[i] &&
        (c->dx[i] = kiln_gb_sum_to(c, c->dy[0], &c->g->tensors[c->node.inputs[i]].shape)) < 0)
      return false;
  return true;
}

KILN_DEFINE_BINARY_OP_GRAD(Add, add, LB_ADD, 0, 1.2e-7, add_grad);
