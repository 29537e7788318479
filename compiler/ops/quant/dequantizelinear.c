// DequantizeLinear (ONNX opsets 10-13): y = (x - x_zero_point) * x_scale, in f32.
//   x: i8, u8 or i32, any shape   x_scale: f32, one value or (D) with D = x.shape[axis]
//   x_zero_point: x's dtype, like x_scale (optional: 0; must be 0 for i32)   y: f32, x's shape
// x - x_zero_point is exact in i32; the product is one f32 multiplication.
#include "quant.h"

static bool check_i32_zero_point(const kiln_graph *g, const kiln_node *n, kiln_diag *d) {
  if (kiln_in(g, n, 0)->dtype != KILN_I32 || !kiln_has_input(n, 2)) return true;
  const kiln_tensor *zp = kiln_in(g, n, 2);
  if (zp->kind != KILN_TENSOR_PARAM || !zp->data) return true;  // a run-time input: not checked
  const int32_t *v = zp->data;
  for (int64_t i = 0; i < kiln_shape_numel(&zp->shape); i++)
    if (v[i] != 0) {
      kiln_op_error(d, n, "inputs[2] (%s): an i32 x needs a zero point of 0, got %d", zp->name,
                    (int)v[i]);
      return false;
    }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  unsigned xt = KILN_DT_QUANT | KILN_DT(KILN_I32);
  if (!kiln_op_check_dtypes(g, n, 0, 1, xt, false, d)) return false;
  int axis;
  if (!kiln_quant_linear_params(g, n, d, xt, &axis)) return false;
  if (!kiln_quant_check_same_dtype(g, n, d, 2, 0) || !check_i32_zero_point(g, n, d)) return false;
  kiln_op_set_output(g, n, 0, KILN_F32, &kiln_in(g, n, 0)->shape);  // y: x's shape, f32
  return true;
}

static double dequantize_ref(const kiln_node *n, const kiln_eval_tensor *in, double x, int64_t k) {
  float diff = (float)(x - kiln_quant_param_ref(n, in, 2, k));
  return (double)(float)((double)diff * kiln_quant_param_ref(n, in, 1, k));  // f32 product
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  bool per_channel = kiln_shape_numel(in[1].shape) > 1;
  kiln_quant_channel_eval(n, in, out, kiln_quant_linear_axis(n, in[0].shape, per_channel),
                          dequantize_ref);
}

static kiln_lexpr *dequantize_lx(const kiln_lower_ctx *c, kiln_lexpr *x, int ch) {
  kiln_lb *b = c->b;
  kiln_lexpr *zp = kiln_quant_param_lx(c, 2, kiln_quant_ch(b, ch), KILN_I32);
  kiln_lexpr *diff = lx_cast(b, KILN_F32, lx_bin(b, LB_SUB, lx_cast(b, KILN_I32, x), zp));
  return lx_bin(b, LB_MUL, diff, kiln_quant_param_lx(c, 1, kiln_quant_ch(b, ch), KILN_F32));
}

static void lower(const kiln_lower_ctx *c) {
  const kiln_tensor *x = kiln_lower_in(c, 0);
  kiln_lb_comment(c->b, "DequantizeLinear %s: %s (%s) -> f32", c->node->name, kiln_describe(x).text,
                  kiln_dtype_name(x->dtype));
  int axis = kiln_quant_linear_axis(c->node, &x->shape, kiln_quant_per_channel(c->g, c->node, 1));
  kiln_quant_channel_lower(c, axis, dequantize_lx);
}

const kiln_op_def kiln_op_DequantizeLinear = {
    .name = "DequantizeLinear",
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
    .tol = {0, 0},  // exact: an exact integer difference and one f32 product, in both
};
