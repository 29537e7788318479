// Selu: y = gamma * (x if x > 0 else alpha * (exp(x) - 1)), elementwise; alpha and gamma default
// to 1.67326319... and 1.05070102... (the ONNX defaults).
#include <math.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {
    {"alpha", KILN_ATTR_FLOAT, false}, {"gamma", KILN_ATTR_FLOAT, false}, {0}};

static double alpha_of(const kiln_node *n) {
  return kiln_attr_float(n, "alpha", 1.67326319217681884765625);
}
static double gamma_of(const kiln_node *n) {
  return kiln_attr_float(n, "gamma", 1.05070102214813232421875);
}

static double selu(const kiln_node *n, double x) {
  return gamma_of(n) * (x > 0 ? x : alpha_of(n) * (exp(x) - 1));
}

// gamma * (0 < x ? x : alpha * (exp(x) - 1))
static kiln_lexpr *selu_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *positive = lx_bin(b, LB_LT, lx_float(b, t, 0), kiln_lx_clone(b, x));
  kiln_lexpr *em1 = lx_bin(b, LB_SUB, lx_unary(b, LU_EXP, kiln_lx_clone(b, x)), lx_float(b, t, 1));
  kiln_lexpr *neg = lx_bin(b, LB_MUL, lx_float(b, t, alpha_of(n)), em1);
  return lx_bin(b, LB_MUL, lx_float(b, t, gamma_of(n)), lx_select(b, positive, x, neg));
}

// As Elu (exp(x) - 1 cancels near 0), times gamma: one more rounding.
KILN_DEFINE_UNARY_NODE_OP(Selu, attrs, kiln_unary_infer, selu, selu_lx, 5e-7, 5e-7);
