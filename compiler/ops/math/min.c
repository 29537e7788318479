// Min: y = the elementwise minimum of 1..16 inputs of one numeric dtype, numpy broadcasting.
// Like C's fmin, a NaN loses to a number (ONNX does not say). Shared code: binary.c.
#include "../op_internal.h"

KILN_DEFINE_FOLD_OP(Min, KILN_DT_NUMERIC, LB_MIN, false, 0, 0);  // exact
