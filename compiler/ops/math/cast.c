// Cast: y = x converted to the dtype `to` (an ONNX TensorProto code: 1 f32, 11 f64, 3 i8, 2 u8,
// 6 i32, 7 i64, 9 bool). ONNX leaves out-of-range float -> integer casts undefined; Kiln defines:
//   float -> integer: truncate toward zero after clamping to the target's range; NaN -> the lowest
//                     value (the clamp is fmin(fmax(x, lo), hi) in f64, in eval and lowering alike)
//   integer -> narrower integer: two's-complement wrap-around (numpy's astype)
//   anything -> bool: x != 0 (NaN -> true); bool -> anything: 0 or 1
//   to a float: the nearest value (f64 -> f32 rounds to nearest even)
#include <math.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"to", KILN_ATTR_INT, true}, {0}};

static const struct {
  int64_t onnx;
  kiln_dtype dtype;
} onnx_dtypes[] = {{1, KILN_F32}, {11, KILN_F64}, {3, KILN_I8},  {2, KILN_U8},
                   {6, KILN_I32}, {7, KILN_I64},  {9, KILN_BOOL}};

static bool target_of(const kiln_node *n, kiln_dtype *out) {
  int64_t to = kiln_attr_int(n, "to", -1);
  for (size_t k = 0; k < sizeof onnx_dtypes / sizeof onnx_dtypes[0]; k++)
    if (onnx_dtypes[k].onnx == to) {
      *out = onnx_dtypes[k].dtype;
      return true;
    }
  return false;
}

// The float range an integer dtype's values span; both ends are exact doubles whose truncation
// fits the type (for i64, the largest double below 2^63).
static void int_range(kiln_dtype t, double *lo, double *hi) {
  switch (t) {
    case KILN_I8: *lo = -128, *hi = 127; return;
    case KILN_U8: *lo = 0, *hi = 255; return;
    case KILN_I32: *lo = -2147483648.0, *hi = 2147483647.0; return;
    default: *lo = -9223372036854775808.0, *hi = 9223372036854774784.0; return;
  }
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  kiln_dtype to;
  if (!target_of(n, &to)) {
    kiln_op_error(d, n,
                  "attrs.to: expected an ONNX data type code: 1 (f32), 11 (f64), 3 (i8), 2 (u8), "
                  "6 (i32), 7 (i64) or 9 (bool), got %lld",
                  (long long)kiln_attr_int(n, "to", -1));
    return false;
  }
  if (!kiln_op_check_dtypes(g, n, 0, 1, KILN_DT_ANY, true, d)) return false;
  kiln_op_set_output(g, n, 0, to, &kiln_in(g, n, 0)->shape);  // y: x's shape, dtype `to`
  return true;
}

static double cast_value(kiln_dtype from, kiln_dtype to, double x) {
  if (to == KILN_BOOL) return x != 0;
  if (kiln_dtype_is_float(from) && !kiln_dtype_is_float(to)) {
    double lo, hi;
    int_range(to, &lo, &hi);
    return trunc(fmin(fmax(x, lo), hi));
  }
  return x;  // the interpreter rounds to `to`: f32 rounding, integer wrap-around
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)n;
  int64_t numel = kiln_shape_numel(out->shape);
  for (int64_t i = 0; i < numel; i++)
    out->data[i] = cast_value(in[0].dtype, out->dtype, in[0].data[i]);
}

// (to)fmin(fmax((double)x, lo), hi) from a float to an integer; a plain C conversion otherwise.
static kiln_lexpr *cast_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr *x) {
  (void)n;
  if (!kiln_dtype_is_float(x->dtype) || kiln_dtype_is_float(t) || t == KILN_BOOL)
    return lx_cast(b, t, x);
  double lo, hi;
  int_range(t, &lo, &hi);
  kiln_lexpr *v = lx_bin(b, LB_MAX, lx_cast(b, KILN_F64, x), lx_float(b, KILN_F64, lo));
  return lx_cast(b, t, lx_bin(b, LB_MIN, v, lx_float(b, KILN_F64, hi)));
}

static void lower(const kiln_lower_ctx *c) { kiln_unary_node_lower(c, cast_lx); }

const kiln_op_def kiln_op_Cast = {
    .name = "Cast",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_ELEMENTWISE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // exact: one conversion, defined the same way in eval and lowering
};
