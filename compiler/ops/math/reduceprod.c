// ReduceProd: the product over the reduced axes; attributes in reduce.c.
#include "../op_internal.h"

// products of up to ~100 f32 values: one rounding each
KILN_DEFINE_REDUCE_OP(ReduceProd, KILN_DT_FLOAT, LB_MUL, KILN_RMAP_NONE, KILN_RFINISH_NONE, 1e-7,
                      2e-6, NULL);
