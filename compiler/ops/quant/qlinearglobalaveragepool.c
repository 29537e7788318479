// QLinearGlobalAveragePool (Kiln's own op set; onnxruntime's com.microsoft op of that name, NCHW):
// the mean of each channel of a quantized tensor, requantized to the output's scale,
//   acc = sum over the S spatial positions of (x - x_zp)          (exact, i32)
//   y   = saturate(round_half_even(acc * m / S) + y_zp),  m = f32(x_scale / y_scale)
// the ratio in f32 (as QLinearConv's multiplier), acc * m (exact) and / S in f64, the rounding and
// saturation QLinearConv's requantize (with a multiplier of 1). The one f64 rounding of the
// quotient never makes a false tie (acc * m is a multiple of m's last bit, far coarser than the
// quotient's last bit), so y is the real acc * m / S rounded half to even. Inputs x, x_scale,
// x_zero_point, y_scale, y_zero_point, all required, one value each.
//   x: (N, C, D1, ..., Dk) i8/u8, k >= 1   y: (N, C, 1, ..., 1), y_zero_point's dtype
#include "qgraph.h"

enum { X, X_SCALE, X_ZP, Y_SCALE, Y_ZP };
static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  kiln_shape out;  // out: (N, C, 1, ..., 1)
  if (!kiln_qgraph_check_operand(g, n, d, X, "x") || !kiln_qgraph_check_output(g, n, d, Y_SCALE) ||
      !kiln_global_pool_shape(g, n, d, &out))
    return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, Y_ZP)->dtype, &out);
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)n;
  const kiln_shape *xs = in[X].shape;
  int64_t rows = xs->dim[0] * xs->dim[1], size = kiln_global_pool_size(xs);
  double m = kiln_qgraph_ratio_ref(in, X_SCALE, Y_SCALE), zp = in[Y_ZP].data[0];
  for (int64_t r = 0; r < rows; r++) {
    double acc = 0;
    for (int64_t i = 0; i < size; i++) acc += in[X].data[r * size + i] - in[X_ZP].data[0];
    out->data[r] = kiln_quant_requantize_ref(acc * m / (double)size, 1, zp, out->dtype);
  }
}

//   m, x_zp, y_zp: locals
//   for nc: acc = 0; for i < S: acc += x[nc][i]; y[nc] = requantize((acc - S * x_zp) * m / S)
static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, X), *y = kiln_lower_out(c, 0);
  int64_t rows = x->shape.dim[0] * x->shape.dim[1], size = kiln_global_pool_size(&x->shape);
  kiln_lb_comment(b, "QLinearGlobalAveragePool %s: %s over %lld positions -> %s", c->node->name,
                  kiln_describe(x).text, (long long)size, kiln_describe(y).text);
  int m = kiln_qgraph_ratio_var(c, "m", X_SCALE, Y_SCALE);
  int x_zp = kiln_qgraph_zp_var(c, "x_zp", X_ZP), y_zp = kiln_qgraph_zp_var(c, "y_zp", Y_ZP);
  int r = kiln_lb_for_n(b, "nc", rows);
  int acc = kiln_lb_decl(b, "acc", KILN_I32, lx_cast(b, KILN_I32, lx_int(b, 0)));
  int i = kiln_lb_for_n(b, "i", size);
  kiln_lexpr *xv = lx_load(b, kiln_in_buf(c, X), lx_madd(b, lx_var(b, r), size, lx_var(b, i)));
  kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, lx_var(b, acc), lx_cast(b, KILN_I32, xv)));
  kiln_lb_end_for(b);  // i
  kiln_lexpr *shift = lx_bin(b, LB_MUL, lx_cast(b, KILN_I32, lx_int(b, size)), lx_var(b, x_zp));
  kiln_lexpr *centered = lx_cast(b, KILN_F64, lx_bin(b, LB_SUB, lx_var(b, acc), shift));
  kiln_lexpr *scaled = lx_bin(b, LB_MUL, centered, lx_cast(b, KILN_F64, lx_var(b, m)));
  kiln_lexpr *mean = lx_bin(b, LB_DIV, scaled, lx_float(b, KILN_F64, (double)size));
  kiln_lb_store(
      b, kiln_out_buf(c, 0), lx_var(b, r),
      kiln_quant_requantize_lx(b, mean, lx_float(b, KILN_F64, 1), lx_var(b, y_zp), y->dtype));
  kiln_lb_end_for(b);  // nc
}

const kiln_op_def kiln_op_QLinearGlobalAveragePool = {
    .name = "QLinearGlobalAveragePool",
    .min_inputs = 5,
    .max_inputs = 5,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_REDUCTION,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_global_pool_flops,  // numel(x)
    // Exact: an integer sum, then the same f32 ratio, f64 product and quotient, and rounding.
    .tol = {0, 0},
};
