// ReduceL2: sqrt of the sum of x^2 over the reduced axes; attributes in reduce.c.
#include "../op_internal.h"

// an f32 sum, then sqrtf (correctly rounded)
KILN_DEFINE_REDUCE_OP(ReduceL2, KILN_DT_FLOAT, LB_ADD, KILN_RMAP_SQUARE, KILN_RFINISH_SQRT, 4e-6,
                      1e-6, NULL);
