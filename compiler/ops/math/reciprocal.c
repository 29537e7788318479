// Reciprocal: y = 1 / x, elementwise (unary.c); 1/0 = inf.
#include "../op_internal.h"

static double reciprocal(double x) { return 1 / x; }

static kiln_lexpr *reciprocal_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_RECIP, x);
}

KILN_DEFINE_UNARY_OP(Reciprocal, reciprocal, reciprocal_lx, 0, 1.2e-7);  // one f32 rounding
