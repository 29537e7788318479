// Mean: y = the elementwise mean of 1..16 float inputs, numpy broadcasting: their sum (left to
// right) divided by the count. Shared code: binary.c.
#include "../op_internal.h"

// As Sum, plus one rounding of the division.
KILN_DEFINE_FOLD_OP(Mean, KILN_DT_FLOAT, LB_ADD, true, 1e-6, 1e-6);
