// IsInf: y = (x is +inf and detect_positive) or (x is -inf and detect_negative), elementwise;
// float x, bool y; both attributes default to 1.
#include <math.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {
    {"detect_positive", KILN_ATTR_INT, false}, {"detect_negative", KILN_ATTR_INT, false}, {0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int64_t pos, neg;
  if (!kiln_op_check_float_inputs(g, n, 1, d) ||
      !kiln_op_read_int(n, d, "detect_positive", 1, 0, 1, &pos) ||
      !kiln_op_read_int(n, d, "detect_negative", 1, 0, 1, &neg))
    return false;
  kiln_op_set_output(g, n, 0, KILN_BOOL, &kiln_in(g, n, 0)->shape);  // y: x's shape, bool
  return true;
}

static double isinf_ref(const kiln_node *n, double x) {
  return (x == INFINITY && kiln_attr_int(n, "detect_positive", 1)) ||
         (x == -INFINITY && kiln_attr_int(n, "detect_negative", 1));
}

// (x == inf) || (x == -inf), each side only when detected
static kiln_lexpr *isinf_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr *x) {
  kiln_dtype xt = x->dtype;
  (void)t;
  kiln_lexpr *pos = lx_bin(b, LB_EQ, kiln_lx_clone(b, x), lx_float(b, xt, INFINITY));
  kiln_lexpr *neg = lx_bin(b, LB_EQ, x, lx_float(b, xt, -INFINITY));
  bool want_pos = kiln_attr_int(n, "detect_positive", 1),
       want_neg = kiln_attr_int(n, "detect_negative", 1);
  if (want_pos && want_neg) return lx_bin(b, LB_OR, pos, neg);
  if (want_pos) return pos;
  if (want_neg) return neg;
  return lx_bin(b, LB_AND, pos, neg);  // never: x is not both
}

KILN_DEFINE_UNARY_NODE_OP(IsInf, attrs, infer, isinf_ref, isinf_lx, 0, 0);  // exact
