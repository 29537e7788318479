// Sum: y = the elementwise sum of 1..16 inputs of one dtype (float, i32 or i64), numpy
// broadcasting, added left to right. Shared code: binary.c.
#include "../op_internal.h"

// A few f32 roundings of the running sum (up to 16 inputs).
KILN_DEFINE_FOLD_OP(Sum, KILN_DT_FLOAT | KILN_DT(KILN_I32) | KILN_DT(KILN_I64), LB_ADD, false, 1e-6,
                    1e-6);
