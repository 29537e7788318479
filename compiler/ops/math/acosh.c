// Acosh: y = acosh(x) = log(x + sqrt((x - 1)(x + 1))) for x >= 1 (NaN below), elementwise
// (unary.c). (x - 1)(x + 1) rather than x^2 - 1: no cancellation near 1.
#include <math.h>

#include "../op_internal.h"

static kiln_lexpr *acosh_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *below = lx_bin(b, LB_SUB, kiln_lx_clone(b, x), lx_float(b, t, 1));
  kiln_lexpr *above = lx_bin(b, LB_ADD, kiln_lx_clone(b, x), lx_float(b, t, 1));
  kiln_lexpr *root = lx_unary(b, LU_SQRT, lx_bin(b, LB_MUL, below, above));
  return lx_unary(b, LU_LOG, lx_bin(b, LB_ADD, x, root));
}

// sqrtf and logf (1-2 ulp); near 1 the result is small: an ulp of 1, absolute.
KILN_DEFINE_UNARY_OP(Acosh, acosh, acosh_lx, 2.5e-7, 1e-6);
