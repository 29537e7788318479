// Asinh: y = asinh(x) = sign(x) * log(|x| + sqrt(x^2 + 1)), elementwise (unary.c). The log is
// taken of |x|'s form so nothing cancels for negative x.
#include <math.h>

#include "../op_internal.h"

static kiln_lexpr *asinh_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *sq = lx_bin(b, LB_MUL, kiln_lx_clone(b, x), kiln_lx_clone(b, x));
  kiln_lexpr *root = lx_unary(b, LU_SQRT, lx_bin(b, LB_ADD, sq, lx_float(b, t, 1)));
  kiln_lexpr *mag =
      lx_unary(b, LU_LOG, lx_bin(b, LB_ADD, lx_unary(b, LU_ABS, kiln_lx_clone(b, x)), root));
  kiln_lexpr *negative = lx_bin(b, LB_LT, x, lx_float(b, t, 0));
  return lx_select(b, negative, lx_unary(b, LU_NEG, kiln_lx_clone(b, mag)), mag);
}

// logf (1-2 ulp); near 0, log(1 + small) loses an ulp of 1, absolute.
KILN_DEFINE_UNARY_OP(Asinh, asinh, asinh_lx, 2.5e-7, 1e-6);
