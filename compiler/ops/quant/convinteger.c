// ConvInteger (ONNX opset 10): the exact integer 2-D convolution of (x - x_zero_point) and
// (w - w_zero_point), accumulated in i32 (qconv.c). Inputs x, w[, x_zero_point[, w_zero_point]]
// (zero points default to 0; w_zero_point may be one per output channel); Conv's attributes.
//   x: (N, C, H, W) i8/u8   w: (M, C / group, kH, kW) i8/u8   y: (N, M, OH, OW) i32
#include "quant.h"

static const kiln_qconv_inputs inputs = {.x = 0,
                                         .w = 1,
                                         .x_zp = 2,
                                         .w_zp = 3,
                                         .bias = -1,
                                         .x_scale = -1,
                                         .w_scale = -1,
                                         .y_scale = -1,
                                         .y_zp = -1};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  kiln_shape out;
  if (!kiln_qconv_check(g, n, d, &inputs, &out)) return false;
  kiln_op_set_output(g, n, 0, KILN_I32, &out);  // y: (N, M, OH, OW) i32
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_qconv_accumulate_ref(n, in, &inputs, out->data);
}

static kiln_lexpr *store_acc(const kiln_lower_ctx *c, kiln_lexpr *acc, int oc, int scale) {
  (void)c, (void)oc, (void)scale;
  return acc;
}

static void lower(const kiln_lower_ctx *c) {
  if (!kiln_qconv_lower_fast(c, &inputs)) kiln_qconv_lower(c, &inputs, NULL, store_acc);
}

const kiln_op_def kiln_op_ConvInteger = {
    .name = "ConvInteger",
    .min_inputs = 2,
    .max_inputs = 4,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = kiln_qconv_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_qconv_flops,
    .tol = {0, 0},  // exact integer arithmetic
};
