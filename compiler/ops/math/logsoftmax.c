// LogSoftmax (ONNX opset 13): y = x - max - ln(sum(exp(x - max))) along one axis (default -1;
// negative counts from the end). Everything but the op's tolerance is shared with Softmax
// (softmax.c).
#include "../op_internal.h"

const kiln_op_def kiln_op_LogSoftmax = {
    .name = "LogSoftmax",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = kiln_softmax_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = kiln_softmax_infer,
    .eval = kiln_softmax_eval,
    .lower = kiln_softmax_lower,
    .flops = kiln_softmax_flops,
    // f32: x - max is exact or one rounding; log(sum) is within an ulp of a value >= 1 (the
    // sum's rounding adds ~n ulp relative, i.e. ~1e-6 absolute after log); rows of large logits
    // give |y| up to ~100: a relative term.
    .tol = {2e-6, 1e-6},
};
