// Sinh: y = sinh(x) = (exp(x) - exp(-x)) / 2, elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"

static kiln_lexpr *sinh_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *ep = lx_unary(b, LU_EXP, kiln_lx_clone(b, x));
  kiln_lexpr *em = lx_unary(b, LU_EXP, lx_unary(b, LU_NEG, x));
  return lx_bin(b, LB_MUL, lx_float(b, t, 0.5), lx_bin(b, LB_SUB, ep, em));
}

// expf (1-2 ulp); near 0 the difference cancels: an ulp of 1, absolute.
KILN_DEFINE_UNARY_OP(Sinh, sinh, sinh_lx, 2.5e-7, 5e-7);
