// QLinearAveragePool (Kiln's own op set; onnxruntime's com.microsoft op of that name, NCHW): the
// windowed mean of a quantized tensor, requantized to the output's scale. The window is
// AveragePool's (kernel_shape, strides, pads, auto_pad, ceil_mode, count_include_pad; 1-D to 3-D):
//   acc   = sum over the window's elements inside x of (x - x_zp)      (exact, i32; the padding
//           adds real zeros)
//   count = AveragePool's divisor: the elements inside x (count_include_pad = 0), or inside
//           x + pads (count_include_pad = 1; with ceil_mode the overhang past the pads not counted)
//   y     = saturate(round_half_even(acc * m / count) + y_zp),  m = f32(x_scale / y_scale)
// exactly QLinearGlobalAveragePool's arithmetic with S = count (acc * m exact in f64, one rounding
// of the quotient, no false ties). Inputs x, x_scale, x_zero_point, y_scale, y_zero_point, all
// required, one value each.
//   x: (N, C, D1, ..., Dk) i8/u8, k = 1..3   y: (N, C, OD1, ..., ODk), y_zero_point's dtype
#include "../op_internal.h"
#include "qgraph.h"

enum { X, X_SCALE, X_ZP, Y_SCALE, Y_ZP };
static const kiln_window_opts opts = {.dilations = false, .ceil_mode = true, .quantized = true};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int64_t include_pad;
  if (!kiln_op_read_int(n, d, "count_include_pad", 0, 0, 1, &include_pad) ||
      !kiln_qgraph_check_operand(g, n, d, X, "x") || !kiln_qgraph_check_output(g, n, d, Y_SCALE) ||
      !kiln_pool_infer(g, n, d, opts))
    return false;
  kiln_shape out = kiln_out(g, n, 0)->shape;  // out: (N, C, OD1, ..., ODk)
  kiln_op_set_output(g, n, 0, kiln_in(g, n, Y_ZP)->dtype, &out);
  return true;
}

// The divisor at output position o (flat over w->out), counting window elements one by one:
// those inside x, or (include_pad) inside x + pads.
static int64_t window_count(const kiln_window *w, int64_t o, bool include_pad) {
  int64_t count = 0, at;
  for (int64_t t = 0; t < kiln_window_taps(w); t++) {
    bool inside = true;
    for (int64_t i = w->rank - 1, rest_o = o, rest_t = t; i >= 0; i--) {
      int64_t pos = rest_o % w->out[i] * w->stride[i] - w->pad_begin[i] + rest_t % w->kernel[i];
      inside = inside && pos >= -w->pad_begin[i] && pos < w->in[i] + w->pad_end[i];
      rest_o /= w->out[i], rest_t /= w->kernel[i];
    }
    count += include_pad ? inside : kiln_window_tap(w, o, t, &at);
  }
  return count;
}

// x: (N, C, D1, ..., Dk), y: (N, C, OD1, ..., ODk)
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_window w = kiln_pool_window(n, in[X].shape, opts);
  int64_t planes = in[X].shape->dim[0] * in[X].shape->dim[1];
  int64_t in_size = kiln_window_in_size(&w), out_size = kiln_window_out_size(&w);
  bool include_pad = kiln_attr_int(n, "count_include_pad", 0) != 0;
  double m = kiln_qgraph_ratio_ref(in, X_SCALE, Y_SCALE), x_zp = in[X_ZP].data[0];
  for (int64_t p = 0; p < planes; p++)
    for (int64_t o = 0; o < out_size; o++) {
      double acc = 0;
      int64_t at;
      for (int64_t t = 0; t < kiln_window_taps(&w); t++)
        if (kiln_window_tap(&w, o, t, &at)) acc += in[X].data[p * in_size + at] - x_zp;
      double mean = acc * m / (double)window_count(&w, o, include_pad);
      out->data[p * out_size + o] =
          kiln_quant_requantize_ref(mean, 1, in[Y_ZP].data[0], out->dtype);
    }
}

// The divisor's factor along one axis (i64) at output position o_var: the kernel range inside x,
// or (include_pad) min(k, in + pads - o * stride), k wherever no window reaches past the pads.
static kiln_lexpr *axis_divisor(kiln_lb *b, const kiln_window *w, int axis, bool include_pad,
                                int o_var, const kiln_krange *r) {
  if (!include_pad) return lx_bin(b, LB_SUB, kiln_krange_hi(b, r), kiln_krange_lo(b, r));
  int64_t k = w->kernel[axis], s = w->stride[axis];
  int64_t padded = w->in[axis] + w->pad_begin[axis] + w->pad_end[axis];
  if ((w->out[axis] - 1) * s + k <= padded) return lx_int(b, k);
  kiln_lexpr *room =
      lx_bin(b, LB_SUB, lx_int(b, padded), lx_mul(b, lx_var(b, o_var), lx_int(b, s)));
  return lx_bin(b, LB_MIN, lx_int(b, k), room);
}

// acc * m / count requantized (f64), acc the i32 sum of x over the taps inside x, centered here:
// acc - taps_inside * x_zp.
static kiln_lexpr *requantized(const kiln_lower_ctx *c, const kiln_window *w,
                               const kiln_pool_vars *v, int m, int x_zp, int y_zp) {
  kiln_lb *b = c->b;
  bool include_pad = kiln_attr_int(c->node, "count_include_pad", 0) != 0;
  kiln_lexpr *inside = lx_int(b, 1), *count = lx_int(b, 1);
  for (int i = 0; i < w->rank; i++) {
    inside = lx_mul(b, inside,
                    lx_bin(b, LB_SUB, kiln_krange_hi(b, &v->k[i]), kiln_krange_lo(b, &v->k[i])));
    count = lx_mul(b, count, axis_divisor(b, w, i, include_pad, v->o[i], &v->k[i]));
  }
  kiln_lexpr *shift = lx_bin(b, LB_MUL, lx_cast(b, KILN_I32, inside), lx_var(b, x_zp));
  kiln_lexpr *centered = lx_cast(b, KILN_F64, lx_bin(b, LB_SUB, lx_var(b, v->acc), shift));
  kiln_lexpr *scaled = lx_bin(b, LB_MUL, centered, lx_cast(b, KILN_F64, lx_var(b, m)));
  kiln_lexpr *mean = lx_bin(b, LB_DIV, scaled, lx_cast(b, KILN_F64, count));
  return kiln_quant_requantize_lx(b, mean, lx_float(b, KILN_F64, 1), lx_var(b, y_zp),
                                  kiln_lower_out(c, 0)->dtype);
}

//   m, x_zp, y_zp: locals
//   for n, c, o...: acc = 0; for taps inside x: acc += x; y = requantize((acc - taps * x_zp) * m /
//   count)
static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, X), *y = kiln_lower_out(c, 0);
  kiln_window w = kiln_pool_window(c->node, &x->shape, opts);
  kiln_lb_comment(b, "QLinearAveragePool %s: %s -> %s", c->node->name, kiln_describe(x).text,
                  kiln_describe(y).text);
  int m = kiln_qgraph_ratio_var(c, "m", X_SCALE, Y_SCALE);
  int x_zp = kiln_qgraph_zp_var(c, "x_zp", X_ZP), y_zp = kiln_qgraph_zp_var(c, "y_zp", Y_ZP);
  kiln_pool_vars v;
  kiln_pool_open_outputs(c, &w, &v);
  v.acc = kiln_lb_decl(b, "acc", KILN_I32, lx_cast(b, KILN_I32, lx_int(b, 0)));
  int k[KILN_MAX_SPATIAL];
  kiln_pool_open_taps(c, &w, &v, k);
  kiln_lexpr *xv = lx_load(b, kiln_in_buf(c, X), kiln_pool_x_index(c, &w, &v, k));
  kiln_lb_assign(b, v.acc, lx_bin(b, LB_ADD, lx_var(b, v.acc), lx_cast(b, KILN_I32, xv)));
  for (int i = 0; i < w.rank; i++) kiln_lb_end_for(b);  // the kernel loops
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_pool_y_index(c, &v, 0),
                requantized(c, &w, &v, m, x_zp, y_zp));
  for (int i = 0; i < w.rank + 2; i++) kiln_lb_end_for(b);  // the output loops, c, n
}

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return kiln_pool_flops(g, n, opts);
}

const kiln_op_def kiln_op_QLinearAveragePool = {
    .name = "QLinearAveragePool",
    .min_inputs = 5,
    .max_inputs = 5,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = kiln_average_pool_attrs,  // AveragePool's (averagepool.c)
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // Exact: an integer sum, then QLinearGlobalAveragePool's f32 ratio, f64 product and quotient,
    // and rounding.
    .tol = {0, 0},
};
