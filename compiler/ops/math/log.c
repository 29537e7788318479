// Log: y = ln(x), elementwise (unary.c); log(0) = -inf and log(x < 0) = NaN, as in C and ONNX.
#include <math.h>

#include "../op_internal.h"

static double log_ref(double x) { return log(x); }

static kiln_lexpr *log_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_LOG, x);
}

// logf is within 1 ulp; near x = 1 the result is small, so an absolute term covers the ulp of x.
KILN_DEFINE_UNARY_OP(Log, log_ref, log_lx, 1e-7, 2.4e-7);
