// QLinearMatMul (ONNX opset 10): a matmul of quantized tensors, requantized:
//   y[t][i][j] = saturate(round_half_even(acc * (a_scale[i] * b_scale[j] / y_scale)) +
//   y_zero_point)
// with acc the exact integer matmul of (a - a_zero_point) and (b - b_zero_point) (qmatmul.c).
// Inputs a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point; a's scale and
// zero point are one value or one per row (M), b's one value or one per column (N).
//   a: (..., M, K) i8/u8   b: (..., K, N) i8/u8   y: (broadcast(...), M, N), y_zero_point's dtype
// The multiplier is computed in f32 and acc * multiplier in f64, as ONNX's reference does.
#include "quant.h"

enum { A, A_SCALE, A_ZP, B, B_SCALE, B_ZP, Y_SCALE, Y_ZP };
static const kiln_qmatmul_inputs inputs = {.a = A,
                                           .a_zp = A_ZP,
                                           .b = B,
                                           .b_zp = B_ZP,
                                           .a_scale = A_SCALE,
                                           .b_scale = B_SCALE,
                                           .y_scale = Y_SCALE,
                                           .y_zp = Y_ZP};
static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  for (int i = A; i <= Y_ZP; i++)
    if (!kiln_has_input(n, i)) {
      kiln_op_error(d, n,
                    "inputs[%d]: required (a, a_scale, a_zero_point, b, b_scale, "
                    "b_zero_point, y_scale, y_zero_point), got none",
                    i);
      return false;
    }
  kiln_shape out;
  if (!kiln_qmatmul_check(g, n, d, &inputs, &out)) return false;
  int64_t M = out.dim[out.rank - 2], N = out.dim[out.rank - 1];
  unsigned f32 = KILN_DT(KILN_F32);
  if (!kiln_quant_check_param(g, n, d, A_SCALE, "scale of a", f32, M, "row of a") ||
      !kiln_quant_check_param(g, n, d, B_SCALE, "scale of b", f32, N, "column of b") ||
      !kiln_quant_check_param(g, n, d, Y_SCALE, "scale of y", f32, 0, "") ||
      !kiln_quant_check_param(g, n, d, Y_ZP, "zero point of y", KILN_DT_QUANT, 0, ""))
    return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, Y_ZP)->dtype, &out);
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_qmatmul_accumulate_ref(n, in, &inputs, out->data);  // acc, requantized in place
  const kiln_shape *s = out->shape;
  int64_t M = s->dim[s->rank - 2], N = s->dim[s->rank - 1], rows = kiln_shape_numel(s) / N;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < N; j++) {
      double m =
          kiln_quant_multiplier_ref(kiln_quant_param_ref(n, in, A_SCALE, r % M),
                                    kiln_quant_param_ref(n, in, B_SCALE, j), in[Y_SCALE].data[0]);
      double *y = &out->data[r * N + j];
      *y = kiln_quant_requantize_ref(*y, m, in[Y_ZP].data[0], out->dtype);
    }
}

static kiln_lexpr *requantize(const kiln_lower_ctx *c, kiln_lexpr *acc, int i, int j) {
  kiln_lb *b = c->b;
  kiln_lexpr *m =
      kiln_quant_multiplier_lx(b, kiln_quant_param_lx(c, A_SCALE, lx_var(b, i), KILN_F32),
                               kiln_quant_param_lx(c, B_SCALE, lx_var(b, j), KILN_F32),
                               kiln_quant_param_lx(c, Y_SCALE, lx_int(b, 0), KILN_F32));
  kiln_lexpr *zp = kiln_quant_param_lx(c, Y_ZP, lx_int(b, 0), KILN_I32);
  return kiln_quant_requantize_lx(b, acc, m, zp, kiln_lower_out(c, 0)->dtype);
}

static void lower(const kiln_lower_ctx *c) {
  if (!kiln_qmatmul_lower_fast(c, &inputs)) kiln_qmatmul_lower(c, &inputs, requantize);
}

const kiln_op_def kiln_op_QLinearMatMul = {
    .name = "QLinearMatMul",
    .min_inputs = 8,
    .max_inputs = 8,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_qmatmul_flops,
    // Exact: integer sums, then the same f32 multiplier, f64 product and rounding in both.
    .tol = {0, 0},
};
