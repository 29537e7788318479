// Reciprocal: y = 1 / x, elementwise (unary.c); 1/0 = inf.
#include "../op_internal.h"
#include "../train/grad_compose.h"

static double reciprocal(double x) { return 1 / x; }

static kiln_lexpr *reciprocal_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_RECIP, x);
}

// Gradient (docs/training.md): dx = -dy y^2 (y = 1 / x).
static bool reciprocal_grad(kiln_grad_ctx *c) {
  int y2 = kiln_gc_binary(c, "Mul", kiln_gc_y(c), kiln_gc_y(c));
  c->dx[0] = kiln_gc_unary(c, "Neg", kiln_gc_binary(c, "Mul", c->dy[0], y2));
  return c->dx[0] >= 0;
}

// one f32 rounding
KILN_DEFINE_UNARY_OP_GRAD(Reciprocal, reciprocal, reciprocal_lx, 0, 1.2e-7, reciprocal_grad);
