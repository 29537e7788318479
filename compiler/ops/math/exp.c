// Exp: y = exp(x), elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"
#include "../train/grad_compose.h"

static double exp_ref(double x) { return exp(x); }

static kiln_lexpr *exp_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  (void)t;
  return lx_unary(b, LU_EXP, x);
}

// expf and PyTorch's vectorized exp are each within 1-2 ulp of the exact value.
// Gradient (docs/training.md): dx = dy y.
static bool exp_grad(kiln_grad_ctx *c) { return kiln_gc_chain(c, kiln_gc_y(c)); }

KILN_DEFINE_UNARY_OP_GRAD(Exp, exp_ref, exp_lx, 1e-7, 4e-7, exp_grad);
