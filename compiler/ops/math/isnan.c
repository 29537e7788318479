// IsNaN: y = (x is NaN), elementwise; float x, bool y.
#include <math.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  kiln_op_set_output(g, n, 0, KILN_BOOL, &kiln_in(g, n, 0)->shape);  // y: x's shape, bool
  return true;
}

static double isnan_ref(const kiln_node *n, double x) {
  (void)n;
  return isnan(x);
}

static kiln_lexpr *isnan_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr *x) {
  (void)n, (void)t;
  return lx_bin(b, LB_NE, kiln_lx_clone(b, x), x);  // x != x
}

KILN_DEFINE_UNARY_NODE_OP(IsNaN, attrs, infer, isnan_ref, isnan_lx, 0, 0);  // exact
