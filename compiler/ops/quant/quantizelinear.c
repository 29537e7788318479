// QuantizeLinear (ONNX opsets 10-13): y = saturate(round_half_even(x / y_scale) + y_zero_point).
//   x: f32, any shape   y_scale: f32, one value or (D) with D = x.shape[axis]
//   y_zero_point: i8 or u8 like y_scale (optional: 0, u8)   y: x's shape, the zero point's dtype
// The quotient is an f32 division, as ONNX's reference computes it; saturation clamps to the
// dtype's range ([-128, 127] or [0, 255]). axis (default 1) matters only per channel.
#include "quant.h"

static kiln_dtype output_dtype(const kiln_graph *g, const kiln_node *n) {
  return kiln_has_input(n, 2) ? kiln_in(g, n, 2)->dtype : KILN_U8;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, KILN_DT(KILN_F32), false, d)) return false;
  int axis;
  if (!kiln_quant_linear_params(g, n, d, KILN_DT_QUANT, &axis)) return false;
  kiln_op_set_output(g, n, 0, output_dtype(g, n), &kiln_in(g, n, 0)->shape);  // y: x's shape
  return true;
}

static double quantize_ref(const kiln_node *n, const kiln_eval_tensor *in, double x, int64_t k) {
  kiln_dtype t = kiln_has_input(n, 2) ? in[2].dtype : KILN_U8;
  return kiln_quant_quantize_ref(x, kiln_quant_param_ref(n, in, 1, k),
                                 kiln_quant_param_ref(n, in, 2, k), t);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  bool per_channel = kiln_shape_numel(in[1].shape) > 1;
  kiln_quant_channel_eval(n, in, out, kiln_quant_linear_axis(n, in[0].shape, per_channel),
                          quantize_ref);
}

static kiln_lexpr *quantize_lx(const kiln_lower_ctx *c, kiln_lexpr *x, int ch) {
  kiln_lb *b = c->b;
  kiln_lexpr *scale = kiln_quant_param_lx(c, 1, kiln_quant_ch(b, ch), KILN_F32);
  kiln_lexpr *zp = kiln_quant_param_lx(c, 2, kiln_quant_ch(b, ch), KILN_F32);
  return kiln_quant_quantize_lx(b, x, scale, zp, kiln_lower_out(c, 0)->dtype);
}

static void lower(const kiln_lower_ctx *c) {
  const kiln_tensor *x = kiln_lower_in(c, 0);
  kiln_lb_comment(c->b, "QuantizeLinear %s: %s -> %s", c->node->name, kiln_describe(x).text,
                  kiln_dtype_name(kiln_lower_out(c, 0)->dtype));
  int axis = kiln_quant_linear_axis(c->node, &x->shape, kiln_quant_per_channel(c->g, c->node, 1));
  kiln_quant_channel_lower(c, axis, quantize_lx);
}

const kiln_op_def kiln_op_QuantizeLinear = {
    .name = "QuantizeLinear",
    .min_inputs = 2,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = kiln_quant_linear_attrs,
    .fuse = KILN_FUSE_BROADCAST,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_output_numel_flops,
    // Exact: the same f32 division, rounding and clamp in eval and the generated code. PyTorch's
    // quantize_per_tensor multiplies by 1 / scale instead of dividing, which can move a value that
    // lands within an ulp of a half; the goldens avoid such values.
    .tol = {0, 0},
};
