// QLinearAdd (Kiln's own op set; the semantics of onnxruntime's com.microsoft QLinearAdd): the sum
// of two quantized tensors, requantized to the output's scale and zero point,
//   y = saturate(round_half_even((a - a_zp) * ma + (b - b_zp) * mb) + y_zp)
//   ma = f32(a_scale / y_scale), mb = f32(b_scale / y_scale)
// the products and their sum in f64, the rounding and saturation QLinearConv's requantize (with a
// multiplier of 1). Inputs a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale,
// y_zero_point, all required, the scales f32 and the zero points one value each.
//   a, b: i8/u8 (any shapes, numpy broadcasting)   y: broadcast(a, b), y_zero_point's dtype
// The quantize pass fuses a Relu after the Add by giving y the range [0, hi]: zero point 0, so the
// saturation at 0 is the Relu.
// Exact: (a - a_zp) * ma is exact in f64 (a 9-bit integer times a 24-bit significand), so whether
// the C compiler contracts the sum into an fma or not, it rounds the same f64 value as eval.
#include <math.h>

#include "qgraph.h"

enum { A, A_SCALE, A_ZP, B, B_SCALE, B_ZP, Y_SCALE, Y_ZP };
static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_qgraph_check_operand(g, n, d, A, "a") || !kiln_qgraph_check_operand(g, n, d, B, "b") ||
      !kiln_qgraph_check_output(g, n, d, Y_SCALE))
    return false;
  const kiln_tensor *a = kiln_in(g, n, A), *b = kiln_in(g, n, B);
  kiln_shape out;  // out: broadcast(a, b)
  if (!kiln_broadcast_shapes(&a->shape, &b->shape, &out)) {
    kiln_op_error(d, n, "inputs[0] (%s) and inputs[3] (%s): shapes %s and %s do not broadcast",
                  a->name, b->name, kiln_shape_text(&a->shape).text,
                  kiln_shape_text(&b->shape).text);
    return false;
  }
  kiln_op_set_output(g, n, 0, kiln_in(g, n, Y_ZP)->dtype, &out);
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)n;
  const kiln_shape *ys = out->shape;
  int64_t a_strides[KILN_MAX_RANK], b_strides[KILN_MAX_RANK], idx[KILN_MAX_RANK];
  kiln_broadcast_strides(in[A].shape, ys, a_strides);
  kiln_broadcast_strides(in[B].shape, ys, b_strides);
  double ma = kiln_qgraph_ratio_ref(in, A_SCALE, Y_SCALE);
  double mb = kiln_qgraph_ratio_ref(in, B_SCALE, Y_SCALE);
  for (int64_t i = 0; i < kiln_shape_numel(ys); i++) {
    kiln_unravel(i, ys, idx);
    double va = in[A].data[kiln_dot_index(ys->rank, idx, a_strides)] - in[A_ZP].data[0];
    double vb = in[B].data[kiln_dot_index(ys->rank, idx, b_strides)] - in[B_ZP].data[0];
    out->data[i] = kiln_quant_requantize_ref(va * ma + vb * mb, 1, in[Y_ZP].data[0], out->dtype);
  }
}

// (x[i] - zp) * m in f64, x's element at the nest's position: the nest runs over ys, y's shape,
// or with `flat` (x of y's shape) one loop over all elements.
static kiln_lexpr *scaled(const kiln_lower_ctx *c, const kiln_shape *ys, bool flat, int input,
                          const int *vars, int zp, int m) {
  kiln_lb *b = c->b;
  int64_t strides[KILN_MAX_RANK];
  kiln_broadcast_strides(flat ? ys : &kiln_lower_in(c, input)->shape, ys, strides);
  kiln_lexpr *x = lx_load(b, kiln_in_buf(c, input), kiln_lower_index(b, ys->rank, vars, strides));
  kiln_lexpr *centered = lx_cast(b, KILN_F64, kiln_qgraph_centered(b, x, zp));
  return lx_bin(b, LB_MUL, centered, lx_cast(b, KILN_F64, lx_var(b, m)));
}

// True when the scales are constants whose ratios keep |(a - a_zp) * ma + (b - b_zp) * mb| (each
// difference at most 255 in magnitude) below 2^30: the saturation may then run on integers.
static bool small_sum(const kiln_lower_ctx *c) {
  const kiln_graph *g = c->g;
  const kiln_node *n = c->node;
  if (!kiln_quant_is_const(g, n, A_SCALE) || !kiln_quant_is_const(g, n, B_SCALE) ||
      !kiln_quant_is_const(g, n, Y_SCALE))
    return false;
  double ys = kiln_tensor_get(kiln_lower_in(c, Y_SCALE), 0);
  double ma = kiln_quant_multiplier_ref(kiln_tensor_get(kiln_lower_in(c, A_SCALE), 0), 1, ys);
  double mb = kiln_quant_multiplier_ref(kiln_tensor_get(kiln_lower_in(c, B_SCALE), 0), 1, ys);
  return kiln_quant_small(fabs(ma) + fabs(mb), 255);
}

// a and b of y's shape: the nest is then one loop over all elements (ResNet's residual adds).
static bool no_broadcast(const kiln_lower_ctx *c) {
  const kiln_shape *ys = &kiln_lower_out(c, 0)->shape;
  return kiln_shape_equal(&kiln_lower_in(c, A)->shape, ys) &&
         kiln_shape_equal(&kiln_lower_in(c, B)->shape, ys);
}

//   ma, mb, a_zp, b_zp, y_zp: locals
//   for d0, d1, ... (or i over all elements): y[...] = requantize((a[...] - a_zp) * ma +
//       (b[...] - b_zp) * mb), on integers when small_sum
static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *y = kiln_lower_out(c, 0);
  kiln_lb_comment(b, "QLinearAdd %s: %s + %s -> %s", c->node->name,
                  kiln_describe(kiln_lower_in(c, A)).text, kiln_describe(kiln_lower_in(c, B)).text,
                  kiln_describe(y).text);
  int ma = kiln_qgraph_ratio_var(c, "ma", A_SCALE, Y_SCALE);
  int mb = kiln_qgraph_ratio_var(c, "mb", B_SCALE, Y_SCALE);
  int a_zp = kiln_qgraph_zp_var(c, "a_zp", A_ZP), b_zp = kiln_qgraph_zp_var(c, "b_zp", B_ZP);
  int y_zp = kiln_qgraph_zp_var(c, "y_zp", Y_ZP);
  int vars[KILN_MAX_RANK];
  int64_t y_strides[KILN_MAX_RANK];
  kiln_shape flat = {.rank = 1, .dim = {kiln_shape_numel(&y->shape)}};
  bool same = no_broadcast(c);
  const kiln_shape *ys = same ? &flat : &y->shape;
  kiln_contiguous_strides(ys, y_strides);
  kiln_lower_begin_nest(b, ys, vars);
  kiln_lexpr *sum = lx_bin(b, LB_ADD, scaled(c, ys, same, A, vars, a_zp, ma),
                           scaled(c, ys, same, B, vars, b_zp, mb));
  kiln_lexpr *q = small_sum(c) ? kiln_quant_saturate_small_lx(b, sum, lx_var(b, y_zp), y->dtype)
                               : kiln_quant_requantize_lx(b, sum, lx_float(b, KILN_F64, 1),
                                                          lx_var(b, y_zp), y->dtype);
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_lower_index(b, ys->rank, vars, y_strides), q);
  kiln_lower_end_nest(b, ys);
}

const kiln_op_def kiln_op_QLinearAdd = {
    .name = "QLinearAdd",
    .min_inputs = 8,
    .max_inputs = 8,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_output_numel_flops,
    // Exact: the same f32 ratios, the same f64 value rounded half to even in both.
    .tol = {0, 0},
};
