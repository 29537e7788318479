// Relu: y = max(x, 0), elementwise (unary.c).
#include "op_internal.h"

static double relu(double x) { return x > 0 ? x : 0; }

static kiln_lexpr *relu_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  return lx_bin(b, LB_MAX, x, lx_float(b, t, 0));
}

KILN_DEFINE_UNARY_OP(Relu, relu, relu_lx);
