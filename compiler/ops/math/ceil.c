// Ceil: y = the smallest integer >= x, elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"

static kiln_lexpr *ceil_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_CEIL, x);
}

KILN_DEFINE_UNARY_OP(Ceil, ceil, ceil_lx, 0, 0);  // exact
