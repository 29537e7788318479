// Relu: y = max(x, 0), elementwise (unary.c). NaN propagates, as in ONNX Runtime and PyTorch.
#include "../op_internal.h"

static double relu(double x) { return x < 0 ? 0 : x; }

// y = x < 0 ? 0 : x
static kiln_lexpr *relu_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  return lx_select(b, lx_bin(b, LB_LT, x, lx_float(b, t, 0)), lx_float(b, t, 0), x);
}

KILN_DEFINE_UNARY_OP(Relu, relu, relu_lx, 0, 0);
