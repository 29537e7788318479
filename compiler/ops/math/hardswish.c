// HardSwish: y = x * max(0, min(1, x / 6 + 1 / 2)), elementwise (unary.c).
#include <math.h>

#include "../op_internal.h"

static double hardswish_ref(double x) { return x * fmax(0, fmin(1, x / 6 + 0.5)); }

static kiln_lexpr *hardswish_lx(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  kiln_lexpr *lin =
      lx_bin(b, LB_ADD, lx_bin(b, LB_MUL, kiln_lx_clone(b, x), lx_float(b, t, 1.0 / 6)),
             lx_float(b, t, 0.5));
  kiln_lexpr *gate =
      lx_bin(b, LB_MAX, lx_float(b, t, 0), lx_bin(b, LB_MIN, lx_float(b, t, 1), lin));
  return lx_bin(b, LB_MUL, x, gate);
}

// A few roundings; PyTorch computes x * relu6(x + 3) / 6, rounding differently near the gate's
// ends, where the result is near 0.
KILN_DEFINE_UNARY_OP(HardSwish, hardswish_ref, hardswish_lx, 2e-7, 5e-7);
