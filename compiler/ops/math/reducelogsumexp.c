// ReduceLogSumExp: log of the sum of exp(x) over the reduced axes (no max shift, as the ONNX
// definition; large x overflows to inf); attributes in reduce.c.
#include "../op_internal.h"

// expf and logf (1-2 ulp each) around an f32 sum
KILN_DEFINE_REDUCE_OP(ReduceLogSumExp, KILN_DT_FLOAT, LB_ADD, KILN_RMAP_EXP, KILN_RFINISH_LOG, 4e-6,
                      2e-6, NULL);
