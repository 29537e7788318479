// Celu: y = max(0, x) + min(0, alpha * (exp(x / alpha) - 1)), elementwise; alpha defaults to 1.
#include <math.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"alpha", KILN_ATTR_FLOAT, false}, {0}};

static double celu(const kiln_node *n, double x) {
  double alpha = kiln_attr_float(n, "alpha", 1.0);
  return fmax(0, x) + fmin(0, alpha * (exp(x / alpha) - 1));
}

static kiln_lexpr *celu_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr *x) {
  double alpha = kiln_attr_float(n, "alpha", 1.0);
  kiln_lexpr *scaled = lx_bin(b, LB_DIV, kiln_lx_clone(b, x), lx_float(b, t, alpha));
  kiln_lexpr *em1 = lx_bin(b, LB_SUB, lx_unary(b, LU_EXP, scaled), lx_float(b, t, 1));
  kiln_lexpr *neg =
      lx_bin(b, LB_MIN, lx_float(b, t, 0), lx_bin(b, LB_MUL, lx_float(b, t, alpha), em1));
  return lx_bin(b, LB_ADD, lx_bin(b, LB_MAX, lx_float(b, t, 0), x), neg);
}

// As Elu: exp(x / alpha) - 1 cancels near 0 (an ulp of 1 times alpha, absolute).
KILN_DEFINE_UNARY_NODE_OP(Celu, attrs, kiln_unary_infer, celu, celu_lx, 2.5e-7, 4e-7);
