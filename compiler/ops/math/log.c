// Log: y = ln(x), elementwise (unary.c); log(0) = -inf and log(x < 0) = NaN, as in C and ONNX.
#include <math.h>

#include "../op_internal.h"
#include "../train/grad_compose.h"

static double log_ref(double x) { return log(x); }

static kiln_lexpr *log_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_LOG, x);
}

// logf is within 1 ulp; near x = 1 the result is small, so an absolute term covers the ulp of x.
// Gradient (docs/training.md): dx = dy / x.
static bool log_grad(kiln_grad_ctx *c) {
  c->dx[0] = kiln_gc_binary(c, "Div", c->dy[0], kiln_gc_x(c, 0));
  return c->dx[0] >= 0;
}

KILN_DEFINE_UNARY_OP_GRAD(Log, log_ref, log_lx, 1e-7, 2.4e-7, log_grad);
