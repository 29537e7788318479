// ReduceLogSum: log of the sum over the reduced axes; attributes in reduce.c.
#include "../op_internal.h"

// an f32 sum, then logf (1-2 ulp)
KILN_DEFINE_REDUCE_OP(ReduceLogSum, KILN_DT_FLOAT, LB_ADD, KILN_RMAP_NONE, KILN_RFINISH_LOG, 4e-6,
                      2e-6, NULL);
