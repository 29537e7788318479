// Sqrt: y = sqrt(x), elementwise (unary.c); NaN for x < 0.
#include <math.h>

#include "../op_internal.h"
#include "../train/grad_compose.h"

static double sqrt_ref(double x) { return sqrt(x); }

static kiln_lexpr *sqrt_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_SQRT, x);
}

// Gradient (docs/training.md): dx = dy / (2 y) = (0.5 dy) / y.
static bool sqrt_grad(kiln_grad_ctx *c) {
  int half_dy = kiln_gc_scalar_op(c, "Mul", c->dy[0], 0.5);
  c->dx[0] = kiln_gc_binary(c, "Div", half_dy, kiln_gc_y(c));
  return c->dx[0] >= 0;
}

// sqrtf is correctly rounded
KILN_DEFINE_UNARY_OP_GRAD(Sqrt, sqrt_ref, sqrt_lx, 0, 1.2e-7, sqrt_grad);
