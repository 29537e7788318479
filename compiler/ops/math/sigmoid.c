// Sigmoid: y = 1 / (1 + exp(-x)), elementwise (unary.c).
#include <math.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

static kiln_lexpr *sigmoid_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_SIGMOID, x);
}

// Gradient (docs/training.md): dx = dy y (1 - y), from the output y.
static bool sigmoid_grad(kiln_grad_ctx *c) {
  int in[2] = {c->node.outputs[0], c->dy[0]};
  kiln_gb_attr attrs[] = {KILN_GB_STRING("kind", "sigmoid"), KILN_GB_END};
  c->dx[0] = kiln_gb_op(c, "ActivationGrad", in, 2, attrs, 1);
  return c->dx[0] >= 0;
}

KILN_DEFINE_UNARY_OP_GRAD(Sigmoid, sigmoid, sigmoid_lx, 1e-7, 4e-7, sigmoid_grad);
