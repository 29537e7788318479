// Sin: y = sin(x), elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"

static kiln_lexpr *sin_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_SIN, x);
}

// sinf is within 1-2 ulp; near a zero of sin that is absolute, an ulp of x.
KILN_DEFINE_UNARY_OP(Sin, sin, sin_lx, 5e-7, 4e-7);
