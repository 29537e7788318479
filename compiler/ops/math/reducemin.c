// ReduceMin: the minimum over the reduced axes (fmin: a NaN loses to a number); attributes in
// reduce.c.
#include "../op_internal.h"

KILN_DEFINE_REDUCE_OP(ReduceMin, KILN_DT_FLOAT | KILN_DT(KILN_I32) | KILN_DT(KILN_I64), LB_MIN,
                      KILN_RMAP_NONE, KILN_RFINISH_NONE, 0, 0, NULL);  // exact: comparisons only
