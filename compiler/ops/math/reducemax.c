// ReduceMax: the maximum over the reduced axes (fmax: a NaN loses to a number); attributes in
// reduce.c.
#include "../op_internal.h"

KILN_DEFINE_REDUCE_OP(ReduceMax, KILN_DT_FLOAT | KILN_DT(KILN_I32) | KILN_DT(KILN_I64), LB_MAX,
                      KILN_RMAP_NONE, KILN_RFINISH_NONE, 0, 0, NULL);  // exact: comparisons only
