// ReduceSumSquare: the sum of x^2 over the reduced axes; attributes in reduce.c.
#include "../op_internal.h"

// f32 sums in another order, as ReduceSum
KILN_DEFINE_REDUCE_OP(ReduceSumSquare, KILN_DT_FLOAT, LB_ADD, KILN_RMAP_SQUARE, KILN_RFINISH_NONE,
                      4e-6, 1e-6, NULL);
