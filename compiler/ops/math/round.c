// Round: y = x rounded to the nearest integer, halves to even (ONNX, numpy), elementwise
// (unary.c).
#include <math.h>

#include "../op_internal.h"

static kiln_lexpr *round_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_ROUND, x);
}

// nearbyint in the default rounding mode (to nearest, ties to even): exact.
KILN_DEFINE_UNARY_OP(Round, nearbyint, round_lx, 0, 0);
