// Tanh: y = tanh(x), elementwise (unary.c).
#include <math.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"

static double tanh_ref(double x) { return tanh(x); }

static kiln_lexpr *tanh_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_TANH, x);
}

// Gradient (docs/training.md): dx = dy (1 - y^2), from the output y.
static bool tanh_grad(kiln_grad_ctx *c) {
  int in[2] = {c->node.outputs[0], c->dy[0]};
  kiln_gb_attr attrs[] = {KILN_GB_STRING("kind", "tanh"), KILN_GB_END};
  c->dx[0] = kiln_gb_op(c, "ActivationGrad", in, 2, attrs, 1);
  return c->dx[0] >= 0;
}

KILN_DEFINE_UNARY_OP_GRAD(Tanh, tanh_ref, tanh_lx, 1e-7, 4e-7, tanh_grad);
