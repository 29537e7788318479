// QLinearConv (ONNX opset 10): a 2-D convolution of quantized tensors, requantized:
//   y = saturate(round_half_even(acc * (x_scale * w_scale[oc] / y_scale)) + y_zero_point)
// with acc the exact integer convolution of (x - x_zero_point) and (w - w_zero_point[oc]) plus
// the i32 bias B (qconv.c). Inputs: x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale,
// y_zero_point[, B]; the attributes are Conv's.
//   x: (N, C, H, W) i8/u8   w: (M, C / group, kH, kW) i8/u8   B: (M) i32   y: (N, M, OH, OW)
// The multiplier is computed in f32 and the product acc * multiplier in f64, as ONNX's reference
// does; y has y_zero_point's dtype.
#include "quant.h"

enum { X, X_SCALE, X_ZP, W, W_SCALE, W_ZP, Y_SCALE, Y_ZP, BIAS };
static const kiln_qconv_inputs inputs = {.x = X,
                                         .x_zp = X_ZP,
                                         .w = W,
                                         .w_zp = W_ZP,
                                         .bias = BIAS,
                                         .x_scale = X_SCALE,
                                         .w_scale = W_SCALE,
                                         .y_scale = Y_SCALE,
                                         .y_zp = Y_ZP};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  for (int i = X; i <= Y_ZP; i++)
    if (!kiln_has_input(n, i)) {
      kiln_op_error(d, n,
                    "inputs[%d]: required (x, x_scale, x_zero_point, w, w_scale, "
                    "w_zero_point, y_scale, y_zero_point), got none",
                    i);
      return false;
    }
  kiln_shape out;
  if (!kiln_qconv_check(g, n, d, &inputs, &out)) return false;
  int64_t M = kiln_in(g, n, W)->shape.dim[0];
  unsigned f32 = KILN_DT(KILN_F32);
  if (!kiln_quant_check_param(g, n, d, X_SCALE, "scale of x", f32, 0, "") ||
      !kiln_quant_check_param(g, n, d, W_SCALE, "scale of w", f32, M, "output channel") ||
      !kiln_quant_check_param(g, n, d, Y_SCALE, "scale of y", f32, 0, "") ||
      !kiln_quant_check_param(g, n, d, Y_ZP, "zero point of y", KILN_DT_QUANT, 0, ""))
    return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, Y_ZP)->dtype, &out);  // y: (N, M, OH, OW)
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_qconv_accumulate_ref(n, in, &inputs, out->data);  // acc, requantized in place
  const int64_t *yd = out->shape->dim;
  int64_t plane = yd[2] * yd[3];
  double x_scale = kiln_quant_param_ref(n, in, X_SCALE, 0), y_scale = in[Y_SCALE].data[0];
  for (int64_t b = 0; b < yd[0]; b++)
    for (int64_t oc = 0; oc < yd[1]; oc++) {
      double w_scale = kiln_quant_param_ref(n, in, W_SCALE, oc);
      double m = kiln_quant_multiplier_ref(x_scale, w_scale, y_scale);
      double *y = out->data + (b * yd[1] + oc) * plane;
      for (int64_t i = 0; i < plane; i++)
        y[i] = kiln_quant_requantize_ref(y[i], m, in[Y_ZP].data[0], out->dtype);
    }
}

// m = x_scale * w_scale[oc] / y_scale, an f32 local per output channel.
static int multiplier(const kiln_lower_ctx *c, int oc) {
  kiln_lb *b = c->b;
  kiln_lexpr *m =
      kiln_quant_multiplier_lx(b, kiln_quant_param_lx(c, X_SCALE, lx_int(b, 0), KILN_F32),
                               kiln_quant_param_lx(c, W_SCALE, lx_var(b, oc), KILN_F32),
                               kiln_quant_param_lx(c, Y_SCALE, lx_int(b, 0), KILN_F32));
  return kiln_lb_decl(b, "m", KILN_F32, m);
}

static kiln_lexpr *requantize(const kiln_lower_ctx *c, kiln_lexpr *acc, int oc, int m) {
  (void)oc;
  kiln_lb *b = c->b;
  kiln_lexpr *zp = kiln_quant_param_lx(c, Y_ZP, lx_int(b, 0), KILN_I32);
  return kiln_quant_requantize_lx(b, acc, lx_var(b, m), zp, kiln_lower_out(c, 0)->dtype);
}

static void lower(const kiln_lower_ctx *c) {
  if (!kiln_qconv_lower_fast(c, &inputs)) kiln_qconv_lower(c, &inputs, multiplier, requantize);
}

const kiln_op_def kiln_op_QLinearConv = {
    .name = "QLinearConv",
    .min_inputs = 8,
    .max_inputs = 9,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = kiln_qconv_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_qconv_flops,
    // Exact: integer sums, then the same f32 multiplier, f64 product and rounding in both.
    .tol = {0, 0},
};
