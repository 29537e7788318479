// Tan: y = tan(x) = sin(x) / cos(x), elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"

static kiln_lexpr *tan_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_bin(b, LB_DIV, lx_unary(b, LU_SIN, kiln_lx_clone(b, x)), lx_unary(b, LU_COS, x));
}

// sinf and cosf (1-2 ulp each) and a division: a few ulp, more where cos(x) is near 0.
KILN_DEFINE_UNARY_OP(Tan, tan, tan_lx, 5e-7, 1e-6);
