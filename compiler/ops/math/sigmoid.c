// Sigmoid: y = 1 / (1 + exp(-x)), elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

static kiln_lexpr *sigmoid_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_SIGMOID, x);
}

KILN_DEFINE_UNARY_OP(Sigmoid, sigmoid, sigmoid_lx, 1e-7, 4e-7);
