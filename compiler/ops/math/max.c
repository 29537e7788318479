// Max: y = the elementwise maximum of 1..16 inputs of one numeric dtype, numpy broadcasting.
// Like C's fmax, a NaN loses to a number (ONNX does not say). Shared code: binary.c.
#include "../op_internal.h"

KILN_DEFINE_FOLD_OP(Max, KILN_DT_NUMERIC, LB_MAX, false, 0, 0);  // exact
