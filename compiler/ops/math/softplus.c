// Softplus: y = ln(exp(x) + 1), elementwise (unary.c), computed as max(x, 0) + ln(1 + exp(-|x|))
// so that large x neither overflows exp nor loses the result.
#include <math.h>

#include "../op_internal.h"
#include "../train/grad_compose.h"

static double softplus(double x) { return fmax(x, 0) + log1p(exp(-fabs(x))); }

// max(x, 0) + log(1 + exp(-abs(x)))
static kiln_lexpr *softplus_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *positive = lx_bin(b, LB_MAX, kiln_lx_clone(b, x), lx_float(b, t, 0));
  kiln_lexpr *e = lx_unary(b, LU_EXP, lx_unary(b, LU_NEG, lx_unary(b, LU_ABS, x)));
  kiln_lexpr *tail = lx_unary(b, LU_LOG, lx_bin(b, LB_ADD, lx_float(b, t, 1), e));
  return lx_bin(b, LB_ADD, positive, tail);
}

// ln(1 + e) in f32 loses up to an ulp of 1 (6e-8) when e is tiny, where y is tiny too: the
// absolute term; otherwise exp, log and the add round a few times (and PyTorch returns x itself
// above x = 20, 2e-9 relative away).
// Gradient (docs/training.md): dx = dy sigmoid(x).
static bool softplus_grad(kiln_grad_ctx *c) {
  return kiln_gc_chain(c, kiln_gc_unary(c, "Sigmoid", kiln_gc_x(c, 0)));
}

KILN_DEFINE_UNARY_OP_GRAD(Softplus, softplus, softplus_lx, 1.5e-7, 4e-7, softplus_grad);
