// Atanh: y = atanh(x) = log((1 + x) / (1 - x)) / 2 for -1 < x < 1, elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"

static kiln_lexpr *atanh_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *num = lx_bin(b, LB_ADD, lx_float(b, t, 1), kiln_lx_clone(b, x));
  kiln_lexpr *den = lx_bin(b, LB_SUB, lx_float(b, t, 1), x);
  return lx_bin(b, LB_MUL, lx_float(b, t, 0.5), lx_unary(b, LU_LOG, lx_bin(b, LB_DIV, num, den)));
}

// logf (1-2 ulp) of a rounded quotient; near 0, log(1 + small) loses an ulp of 1, absolute.
KILN_DEFINE_UNARY_OP(Atanh, atanh, atanh_lx, 2.5e-7, 1e-6);
