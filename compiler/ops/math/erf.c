// Erf: y = erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"

static double erf_ref(double x) { return erf(x); }

static kiln_lexpr *erf_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_ERF, x);
}

// erff and PyTorch's erf are within a few ulp; near 0 the result is small: an absolute term.
KILN_DEFINE_UNARY_OP(Erf, erf_ref, erf_lx, 1e-7, 4e-7);
