// Floor: y = the largest integer <= x, elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"

static kiln_lexpr *floor_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_FLOOR, x);
}

KILN_DEFINE_UNARY_OP(Floor, floor, floor_lx, 0, 0);  // exact
