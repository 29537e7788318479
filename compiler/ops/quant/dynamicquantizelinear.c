// DynamicQuantizeLinear (ONNX opset 11): quantizes x to u8 with a scale and zero point computed
// from x itself, in f32 as ONNX's reference does:
//   lo = min(0, min(x)), hi = max(0, max(x))
//   y_scale = (hi == lo ? 1 : hi - lo) / 255
//   y_zero_point = saturate(round_half_even(0 - lo / y_scale))          (u8)
//   y = saturate(round_half_even(x / y_scale) + y_zero_point)           (u8)
//   x: f32, any shape   y: u8, x's shape   y_scale: f32 ()   y_zero_point: u8 ()
#include <math.h>

#include "quant.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, KILN_DT(KILN_F32), false, d)) return false;
  kiln_shape scalar = {.rank = 0};
  kiln_op_set_output(g, n, 0, KILN_U8, &kiln_in(g, n, 0)->shape);  // y: x's shape
  if (n->n_outputs > 1) kiln_op_set_output(g, n, 1, KILN_F32, &scalar);
  if (n->n_outputs > 2) kiln_op_set_output(g, n, 2, KILN_U8, &scalar);
  return true;
}

// The f32 steps, each rounded once (see quant_util.c).
static double scale_of(double lo, double hi) {
  double range = hi == lo ? 1.0 : (double)(float)(hi - lo);
  return (double)(float)(range / 255.0);
}

static double zero_point_of(double lo, double scale) {
  double shift = (double)(float)(lo / scale);
  return kiln_quant_quantize_ref(0.0 - shift, 1.0, 0.0, KILN_U8);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  int64_t numel = kiln_shape_numel(in[0].shape);
  double lo = 0, hi = 0;
  for (int64_t i = 0; i < numel; i++) {
    lo = fmin(lo, in[0].data[i]);
    hi = fmax(hi, in[0].data[i]);
  }
  double scale = scale_of(lo, hi), zp = zero_point_of(lo, scale);
  for (int64_t i = 0; i < numel; i++)
    out[0].data[i] = kiln_quant_quantize_ref(in[0].data[i], scale, zp, KILN_U8);
  if (n->n_outputs > 1) out[1].data[0] = scale;
  if (n->n_outputs > 2) out[2].data[0] = zp;
}

// lo, hi: f32 locals holding min(0, min x) and max(0, max x).
static void range_lx(const kiln_lower_ctx *c, int *lo, int *hi) {
  kiln_lb *b = c->b;
  *lo = kiln_lb_decl(b, "lo", KILN_F32, lx_float(b, KILN_F32, 0));
  *hi = kiln_lb_decl(b, "hi", KILN_F32, lx_float(b, KILN_F32, 0));
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&kiln_lower_in(c, 0)->shape));
  kiln_lb_assign(b, *lo,
                 lx_bin(b, LB_MIN, lx_var(b, *lo), lx_load(b, kiln_in_buf(c, 0), lx_var(b, i))));
  kiln_lb_end_for(b);
  i = kiln_lb_for_n(b, "i", kiln_shape_numel(&kiln_lower_in(c, 0)->shape));
  kiln_lb_assign(b, *hi,
                 lx_bin(b, LB_MAX, lx_var(b, *hi), lx_load(b, kiln_in_buf(c, 0), lx_var(b, i))));
  kiln_lb_end_for(b);
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0);
  kiln_lb_comment(b, "DynamicQuantizeLinear %s: %s -> u8", c->node->name, kiln_describe(x).text);
  int lo, hi;
  range_lx(c, &lo, &hi);
  // scale = (hi == lo ? 1 : hi - lo) / 255
  kiln_lexpr *range =
      lx_select(b, lx_bin(b, LB_EQ, lx_var(b, hi), lx_var(b, lo)), lx_float(b, KILN_F32, 1),
                lx_bin(b, LB_SUB, lx_var(b, hi), lx_var(b, lo)));
  int scale =
      kiln_lb_decl(b, "scale", KILN_F32, lx_bin(b, LB_DIV, range, lx_float(b, KILN_F32, 255)));
  // zp = saturate(round(0 - lo / scale)), as a u8 and as an f32
  kiln_lexpr *shift = lx_bin(b, LB_SUB, lx_float(b, KILN_F32, 0),
                             lx_bin(b, LB_DIV, lx_var(b, lo), lx_var(b, scale)));
  kiln_lexpr *one = lx_float(b, KILN_F32, 1), *zero = lx_float(b, KILN_F32, 0);
  int zp = kiln_lb_decl(b, "zp", KILN_U8, kiln_quant_quantize_lx(b, shift, one, zero, KILN_U8));
  int zpf = kiln_lb_decl(b, "zpf", KILN_F32, lx_cast(b, KILN_F32, lx_var(b, zp)));
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&x->shape));
  kiln_lexpr *q = kiln_quant_quantize_lx(b, lx_load(b, kiln_in_buf(c, 0), lx_var(b, i)),
                                         lx_var(b, scale), lx_var(b, zpf), KILN_U8);
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i), q);
  kiln_lb_end_for(b);
  if (c->node->n_outputs > 1) kiln_lb_store(b, kiln_out_buf(c, 1), lx_int(b, 0), lx_var(b, scale));
  if (c->node->n_outputs > 2) kiln_lb_store(b, kiln_out_buf(c, 2), lx_int(b, 0), lx_var(b, zp));
}

// min, max, then a division per element
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 3 * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

const kiln_op_def kiln_op_DynamicQuantizeLinear = {
    .name = "DynamicQuantizeLinear",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 3,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    .tol = {0, 0},  // exact: the same f32 steps in eval and the generated code
};
