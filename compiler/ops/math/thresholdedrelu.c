// ThresholdedRelu: y = x if x > alpha else 0, elementwise; alpha defaults to 1.
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"alpha", KILN_ATTR_FLOAT, false}, {0}};

static double thresholded_relu(const kiln_node *n, double x) {
  return x > kiln_attr_float(n, "alpha", 1.0) ? x : 0;
}

// alpha < x ? x : 0
static kiln_lexpr *thresholded_relu_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t,
                                       kiln_lexpr *x) {
  kiln_lexpr *above =
      lx_bin(b, LB_LT, lx_float(b, t, kiln_attr_float(n, "alpha", 1.0)), kiln_lx_clone(b, x));
  return lx_select(b, above, x, lx_float(b, t, 0));
}

KILN_DEFINE_UNARY_NODE_OP(ThresholdedRelu, attrs, kiln_unary_infer, thresholded_relu,
                          thresholded_relu_lx, 0, 0);
