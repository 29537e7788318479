// Cosh: y = cosh(x) = (exp(x) + exp(-x)) / 2, elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"

static kiln_lexpr *cosh_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *ep = lx_unary(b, LU_EXP, kiln_lx_clone(b, x));
  kiln_lexpr *em = lx_unary(b, LU_EXP, lx_unary(b, LU_NEG, x));
  return lx_bin(b, LB_MUL, lx_float(b, t, 0.5), lx_bin(b, LB_ADD, ep, em));
}

KILN_DEFINE_UNARY_OP(Cosh, cosh, cosh_lx, 0, 5e-7);  // expf (1-2 ulp) and a sum of positives
