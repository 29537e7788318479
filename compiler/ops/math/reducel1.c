// ReduceL1: the sum of |x| over the reduced axes; attributes in reduce.c.
#include "../op_internal.h"

// f32 sums in another order, as ReduceSum
KILN_DEFINE_REDUCE_OP(ReduceL1, KILN_DT_FLOAT, LB_ADD, KILN_RMAP_ABS, KILN_RFINISH_NONE, 4e-6, 1e-6,
                      NULL);
