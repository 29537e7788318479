// Softsign: y = x / (1 + |x|), elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"

static double softsign_ref(double x) { return x / (1 + fabs(x)); }

static kiln_lexpr *softsign_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *den = lx_bin(b, LB_ADD, lx_float(b, t, 1), lx_unary(b, LU_ABS, kiln_lx_clone(b, x)));
  return lx_bin(b, LB_DIV, x, den);
}

KILN_DEFINE_UNARY_OP(Softsign, softsign_ref, softsign_lx, 0, 2.5e-7);  // two roundings
