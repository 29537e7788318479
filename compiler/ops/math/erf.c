// Erf: y = erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"
#include "../train/grad_compose.h"

static double erf_ref(double x) { return erf(x); }

static kiln_lexpr *erf_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_ERF, x);
}

// erff and PyTorch's erf are within a few ulp; near 0 the result is small: an absolute term.
// Gradient (docs/training.md): dx = dy 2/sqrt(pi) exp(-x^2).
static bool erf_grad(kiln_grad_ctx *c) {
  int x = kiln_gc_x(c, 0);
  int minus_x2 = kiln_gc_scalar_op(c, "Mul", kiln_gc_binary(c, "Mul", x, x), -1);
  int e = kiln_gc_unary(c, "Exp", minus_x2);
  return kiln_gc_chain(c, kiln_gc_scalar_op(c, "Mul", e, 1.12837916709551257390));
}

KILN_DEFINE_UNARY_OP_GRAD(Erf, erf_ref, erf_lx, 1e-7, 4e-7, erf_grad);
