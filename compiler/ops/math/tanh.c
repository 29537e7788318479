// Tanh: y = tanh(x), elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"

static double tanh_ref(double x) { return tanh(x); }

static kiln_lexpr *tanh_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_TANH, x);
}

KILN_DEFINE_UNARY_OP(Tanh, tanh_ref, tanh_lx, 1e-7, 4e-7);
