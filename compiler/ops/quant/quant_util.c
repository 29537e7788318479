// Shared pieces of the quantization ops (quant.h): quantized ranges, scale / zero-point checks and
// loads, and the two rounding steps every op uses (quantize: x / scale; requantize: acc * m).
// Reference and lowering are written side by side so that they visibly compute the same thing.
// Also what the fast integer kernels ask of a node (constant params, derived weights, multipliers
// computed at compile time, i8 operands made unsigned, the kernel's scratch split in two).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

void kiln_quant_range(kiln_dtype t, int64_t *lo, int64_t *hi) {
  *lo = t == KILN_I8 ? -128 : 0;
  *hi = t == KILN_I8 ? 127 : 255;
}

static bool check_shape(const kiln_node *n, kiln_diag *d, int i, const kiln_tensor *p,
                        const char *what, int64_t channels, const char *axis_text) {
  if (kiln_shape_numel(&p->shape) == 1) return true;
  if (channels > 0 && p->shape.rank == 1 && p->shape.dim[0] == channels) return true;
  if (channels > 0)
    kiln_op_error(d, n,
                  "inputs[%d] (%s): expected the %s as one value (per tensor) or %lld values "
                  "(one per %s), got %s",
                  i, p->name, what, (long long)channels, axis_text, kiln_describe(p).text);
  else
    kiln_op_error(d, n, "inputs[%d] (%s): expected the %s as one value, got %s", i, p->name, what,
                  kiln_describe(p).text);
  return false;
}

bool kiln_quant_check_param(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                            const char *what, unsigned dtypes, int64_t channels,
                            const char *axis_text) {
  if (!kiln_has_input(n, i)) return true;
  if (!kiln_op_check_dtypes(g, n, i, 1, dtypes, false, d)) return false;
  return check_shape(n, d, i, kiln_in(g, n, i), what, channels, axis_text);
}

bool kiln_quant_check_same_dtype(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                                 int data) {
  if (!kiln_has_input(n, i)) return true;
  const kiln_tensor *zp = kiln_in(g, n, i), *x = kiln_in(g, n, data);
  if (zp->dtype == x->dtype) return true;
  kiln_op_error(d, n, "inputs[%d] (%s): expected dtype %s (the dtype of inputs[%d] %s), got %s", i,
                zp->name, kiln_dtype_name(x->dtype), data, x->name, kiln_dtype_name(zp->dtype));
  return false;
}

bool kiln_quant_per_channel(const kiln_graph *g, const kiln_node *n, int i) {
  return kiln_has_input(n, i) && kiln_shape_numel(&kiln_in(g, n, i)->shape) > 1;
}

double kiln_quant_param_ref(const kiln_node *n, const kiln_eval_tensor *in, int i, int64_t k) {
  if (!kiln_has_input(n, i)) return 0;
  return kiln_shape_numel(in[i].shape) == 1 ? in[i].data[0] : in[i].data[k];
}

kiln_lexpr *kiln_quant_param_lx(const kiln_lower_ctx *c, int i, kiln_lexpr *ch, kiln_dtype t) {
  kiln_lb *b = c->b;
  if (!kiln_has_input(c->node, i)) return lx_float(b, t, 0);
  kiln_lexpr *index = kiln_quant_per_channel(c->g, c->node, i) ? ch : lx_int(b, 0);
  return lx_cast(b, t, lx_load(b, kiln_in_buf(c, i), index));
}

// The f32 steps are written as (double)(float)(a op b): a double operation on two floats, then one
// rounding to float, equals the correctly rounded float operation (53 >= 2 * 24 + 2 bits).
double kiln_quant_multiplier_ref(double x_scale, double w_scale, double y_scale) {
  float xw = (float)(x_scale * w_scale);
  return (double)(float)((double)xw / y_scale);
}

kiln_lexpr *kiln_quant_multiplier_lx(kiln_lb *b, kiln_lexpr *x_scale, kiln_lexpr *w_scale,
                                     kiln_lexpr *y_scale) {
  return lx_bin(b, LB_DIV, lx_bin(b, LB_MUL, x_scale, w_scale), y_scale);
}

// fmin(fmax(v, lo), hi): a NaN becomes lo, as LB_MAX / LB_MIN (fmax / fmin) do in the lowering.
static double saturate(double v, kiln_dtype t) {
  int64_t lo, hi;
  kiln_quant_range(t, &lo, &hi);
  return fmin(fmax(v, (double)lo), (double)hi);
}

static kiln_lexpr *saturate_lx(kiln_lb *b, kiln_lexpr *v, kiln_dtype t) {
  int64_t lo, hi;
  kiln_quant_range(t, &lo, &hi);
  kiln_dtype ft = v->dtype;
  v = lx_bin(b, LB_MAX, v, lx_float(b, ft, (double)lo));
  return lx_cast(b, t, lx_bin(b, LB_MIN, v, lx_float(b, ft, (double)hi)));
}

double kiln_quant_requantize_ref(double acc, double m, double zp, kiln_dtype t) {
  return saturate(nearbyint(acc * m) + zp, t);
}

kiln_lexpr *kiln_quant_requantize_lx(kiln_lb *b, kiln_lexpr *acc, kiln_lexpr *m, kiln_lexpr *zp,
                                     kiln_dtype t) {
  kiln_lexpr *prod = lx_bin(b, LB_MUL, lx_cast(b, KILN_F64, acc), lx_cast(b, KILN_F64, m));
  kiln_lexpr *v = lx_bin(b, LB_ADD, lx_unary(b, LU_ROUND, prod), lx_cast(b, KILN_F64, zp));
  return saturate_lx(b, v, t);
}

// Below 2^30 in magnitude, a value rounded to an integer plus a zero point fits an i32.
static const double small_limit = 1073741824.0;

bool kiln_quant_small(double m, double bound) {
  return isfinite(m) && fabs(m) * bound < small_limit;
}

// (t)min(max((i32)round_half_even(v) + zp, lo), hi): with |v| < 2^30 the conversion is exact and
// cannot overflow, so this is saturate(round_half_even(v) + zp) on integers.
kiln_lexpr *kiln_quant_saturate_small_lx(kiln_lb *b, kiln_lexpr *v, kiln_lexpr *zp, kiln_dtype t) {
  int64_t lo, hi;
  kiln_quant_range(t, &lo, &hi);
  kiln_lexpr *r = lx_bin(b, LB_ADD, lx_cast(b, KILN_I32, lx_unary(b, LU_ROUND, v)), zp);
  r = lx_bin(b, LB_MAX, r, lx_cast(b, KILN_I32, lx_int(b, lo)));
  return lx_cast(b, t, lx_bin(b, LB_MIN, r, lx_cast(b, KILN_I32, lx_int(b, hi))));
}

double kiln_quant_quantize_ref(double x, double scale, double zp, kiln_dtype t) {
  double q = (double)(float)(x / scale);                   // f32 division
  return saturate((double)(float)(nearbyint(q) + zp), t);  // f32 addition
}

kiln_lexpr *kiln_quant_quantize_lx(kiln_lb *b, kiln_lexpr *x, kiln_lexpr *scale, kiln_lexpr *zp,
                                   kiln_dtype t) {
  kiln_lexpr *q = lx_unary(b, LU_ROUND, lx_bin(b, LB_DIV, x, scale));
  return saturate_lx(b, lx_bin(b, LB_ADD, q, zp), t);
}

kiln_lexpr *kiln_quant_ch(kiln_lb *b, int ch_var) {
  return ch_var >= 0 ? lx_var(b, ch_var) : lx_int(b, 0);
}

static kiln_axis_view channel_view(const kiln_shape *s, int axis) {
  if (axis >= 0) return kiln_axis_view_of(s, axis);
  return (kiln_axis_view){1, 1, kiln_shape_numel(s)};
}

void kiln_quant_channel_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out,
                             int axis, kiln_quant_elem_ref fn) {
  kiln_axis_view v = channel_view(in[0].shape, axis);
  for (int64_t o = 0; o < v.outer; o++)
    for (int64_t k = 0; k < v.axis; k++)
      for (int64_t i = 0; i < v.inner; i++) {
        int64_t e = (o * v.axis + k) * v.inner + i;
        out->data[e] = fn(n, in, in[0].data[e], axis >= 0 ? k : 0);
      }
}

// for o, ch, i (loops of extent 1 left out): y[e] = fn(x[e], ch)
void kiln_quant_channel_lower(const kiln_lower_ctx *c, int axis, kiln_quant_elem_lx fn) {
  kiln_lb *b = c->b;
  kiln_axis_view v = channel_view(&kiln_lower_in(c, 0)->shape, axis);
  int o = v.outer > 1 ? kiln_lb_for_n(b, "o", v.outer) : -1;
  int ch = v.axis > 1 ? kiln_lb_for_n(b, "ch", v.axis) : -1;
  int i = v.inner > 1 ? kiln_lb_for_n(b, "i", v.inner) : -1;
  kiln_lexpr *x =
      lx_load(b, kiln_in_buf(c, 0), kiln_axis_element(b, &v, o, i, kiln_quant_ch(b, ch)));
  kiln_lexpr *y = fn(c, x, ch);
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_axis_element(b, &v, o, i, kiln_quant_ch(b, ch)), y);
  if (i >= 0) kiln_lb_end_for(b);
  if (ch >= 0) kiln_lb_end_for(b);
  if (o >= 0) kiln_lb_end_for(b);
}

const kiln_attr_spec kiln_quant_linear_attrs[] = {
    {"axis", KILN_ATTR_INT, false},
    {"saturate", KILN_ATTR_INT, false},  // opset 19: float8 targets only; integers always saturate
    {0},
};

int kiln_quant_linear_axis(const kiln_node *n, const kiln_shape *x, bool per_channel) {
  if (!per_channel) return -1;
  int64_t axis = kiln_attr_int(n, "axis", 1);
  return (int)(axis < 0 ? axis + x->rank : axis);
}

bool kiln_quant_linear_params(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                              unsigned zp_dtypes, int *axis) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  bool per_channel = kiln_quant_per_channel(g, n, 1);
  int64_t channels = 0, norm;
  char axis_text[64] = "";
  if (per_channel) {
    if (!kiln_op_check_axis(n, d, "attrs.axis", kiln_attr_int(n, "axis", 1), x->shape.rank, &norm))
      return false;
    channels = x->shape.dim[norm];
    snprintf(axis_text, sizeof axis_text, "element along axis %lld of %s", (long long)norm,
             x->name);
  }
  if (!kiln_quant_check_param(g, n, d, 1, "scale", KILN_DT(KILN_F32), channels, axis_text))
    return false;
  if (!kiln_quant_check_param(g, n, d, 2, "zero point", zp_dtypes, channels,
                              per_channel ? axis_text : ""))
    return false;
  *axis = kiln_quant_linear_axis(n, &x->shape, per_channel);
  return true;
}

// ---- Constant parameters and derived weights (the fast lowerings) ----

bool kiln_quant_is_const(const kiln_graph *g, const kiln_node *n, int i) {
  if (i < 0 || !kiln_has_input(n, i)) return false;
  const kiln_tensor *t = kiln_in(g, n, i);
  return t->kind == KILN_TENSOR_PARAM && t->data;
}

bool kiln_quant_zero_or_absent(const kiln_graph *g, const kiln_node *n, int i) {
  if (!kiln_has_input(n, i)) return true;
  if (!kiln_quant_is_const(g, n, i)) return false;
  const kiln_tensor *t = kiln_in(g, n, i);
  for (int64_t e = 0; e < kiln_shape_numel(&t->shape); e++)
    if (kiln_tensor_get(t, e) != 0) return false;
  return true;
}

bool kiln_quant_scales_const(const kiln_graph *g, const kiln_node *n, int x_scale, int w_scale,
                             int y_scale) {
  return kiln_quant_is_const(g, n, x_scale) && kiln_quant_is_const(g, n, w_scale) &&
         kiln_quant_is_const(g, n, y_scale) &&
         kiln_shape_numel(&kiln_in(g, n, x_scale)->shape) == 1;
}

int kiln_quant_multipliers(const kiln_lower_ctx *c, int x_scale, int w_scale, int y_scale,
                           int64_t cols, bool *small) {
  *small = false;
  if (!kiln_quant_scales_const(c->g, c->node, x_scale, w_scale, y_scale)) return -1;
  const kiln_tensor *xs = kiln_lower_in(c, x_scale), *ws = kiln_lower_in(c, w_scale);
  const kiln_tensor *ys = kiln_lower_in(c, y_scale);
  bool per_column = kiln_shape_numel(&ws->shape) > 1;
  float *m = kiln_xcalloc((size_t)cols, sizeof(float));
  *small = true;
  for (int64_t j = 0; j < cols; j++) {
    m[j] = (float)kiln_quant_multiplier_ref(
        kiln_tensor_get(xs, 0), kiln_tensor_get(ws, per_column ? j : 0), kiln_tensor_get(ys, 0));
    *small = *small && kiln_quant_small(m[j], 2147483648.0);  // |an i32 sum| <= 2^31
  }
  int buf = kiln_lower_derived_weight(c, "mult", m, cols);
  free(m);
  return buf;
}

kiln_lexpr *kiln_quant_unsigned_lx(kiln_lb *b, kiln_lexpr *x, kiln_dtype t) {
  if (t == KILN_U8) return x;
  return lx_cast(b, KILN_U8,
                 lx_bin(b, LB_ADD, lx_cast(b, KILN_I32, x), lx_cast(b, KILN_I32, lx_int(b, 128))));
}

int kiln_quant_unsigned_zp(const kiln_lower_ctx *c, int zp, kiln_dtype t) {
  kiln_lb *b = c->b;
  kiln_lexpr *v = kiln_quant_param_lx(c, zp, lx_int(b, 0), KILN_I32);
  if (t == KILN_I8) v = lx_bin(b, LB_ADD, v, lx_cast(b, KILN_I32, lx_int(b, 128)));
  return kiln_lb_decl(b, "xzp", KILN_I32, v);
}

void kiln_quant_scratch(const kiln_lower_ctx *c, int64_t acc_count, int64_t u8_bytes, int *acc,
                        int *bytes) {
  *acc = acc_count ? kiln_lower_scratch(c, KILN_I32, acc_count) : -1;
  *bytes = u8_bytes ? kiln_lower_scratch(c, KILN_U8, u8_bytes) : -1;
}
