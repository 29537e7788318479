// Sqrt: y = sqrt(x), elementwise (unary.c); NaN for x < 0.
#include <math.h>

#include "../op_internal.h"

static double sqrt_ref(double x) { return sqrt(x); }

static kiln_lexpr *sqrt_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_SQRT, x);
}

KILN_DEFINE_UNARY_OP(Sqrt, sqrt_ref, sqrt_lx, 0, 1.2e-7);  // sqrtf is correctly rounded
