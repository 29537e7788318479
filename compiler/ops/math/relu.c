// Relu: y = max(x, 0), elementwise (unary.c). NaN propagates, as in ONNX Runtime and PyTorch.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static double relu(double x) { return x < 0 ? 0 : x; }

// y = x < 0 ? 0 : x
static kiln_lexpr *relu_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  return lx_select(b, lx_bin(b, LB_LT, x, lx_float(b, t, 0)), lx_float(b, t, 0), x);
}

// Gradient (docs/training.md): dx = x > 0 ? dy : 0, so ReLU'(0) = 0, as ReluGrad(y, dy): y > 0
// exactly where x > 0 (NaN included), so x can die at the Relu and fuse with the op before it (a
// residual Add) instead of staying in memory for the backward pass.
static bool relu_grad(kiln_grad_ctx *c) {
  int in[2] = {c->node.outputs[0], c->dy[0]};
  c->dx[0] = kiln_gb_op(c, "ReluGrad", in, 2, NULL, 1);
  return c->dx[0] >= 0;
}

KILN_DEFINE_UNARY_OP_GRAD(Relu, relu, relu_lx, 0, 0, relu_grad);
