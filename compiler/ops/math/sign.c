// Sign: y = 1 if x > 0, -1 if x < 0, else x (0, -0 or NaN), elementwise (unary.c).
#include "../op_internal.h"

static double sign_ref(double x) { return x > 0 ? 1 : x < 0 ? -1 : x; }

// x > 0 ? 1 : (x < 0 ? -1 : x)
static kiln_lexpr *sign_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *positive = lx_bin(b, LB_LT, lx_float(b, t, 0), kiln_lx_clone(b, x));
  kiln_lexpr *negative = lx_bin(b, LB_LT, kiln_lx_clone(b, x), lx_float(b, t, 0));
  return lx_select(b, positive, lx_float(b, t, 1), lx_select(b, negative, lx_float(b, t, -1), x));
}

KILN_DEFINE_UNARY_OP(Sign, sign_ref, sign_lx, 0, 0);  // exact
