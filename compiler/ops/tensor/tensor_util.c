// Helpers shared by the tensor ops: constant inputs (shapes, axes, pads and scales given as
// params), axis checks, reading integer inputs inside reference kernels, and the strided copy
// loop nest that most data-movement lowerings reduce to.
#include <math.h>
#include <string.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"

static bool is_constant(const kiln_tensor *t) {
  return t && t->kind == KILN_TENSOR_PARAM && t->data;
}

// One element of an integer param, read without going through double (i64 extremes such as
// INT64_MAX, which ONNX exporters use for "to the end", must survive).
static int64_t param_int(const kiln_tensor *t, int64_t i) {
  if (t->dtype == KILN_I64) {
    int64_t v;
    memcpy(&v, (const char *)t->data + i * 8, sizeof v);
    return v;
  }
  int32_t v;
  memcpy(&v, (const char *)t->data + i * 4, sizeof v);
  return v;
}

// Checks input i is a constant scalar or 1-D tensor of at most max elements with an accepted
// dtype; reports what is wrong otherwise.
static bool check_constant(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                           const char *what, bool want_int, int max) {
  const kiln_tensor *t = kiln_in(g, n, i);
  const char *op = kiln_op_get(n->op)->name;
  const char *dtypes = want_int ? "i32 or i64" : "f32 or f64";
  if (!is_constant(t)) {
    kiln_op_error(d, n, "inputs[%d]%s%s%s: %s needs a constant %s (a param with data, dtype %s)", i,
                  t ? " (" : "", t ? t->name : "", t ? ")" : "", op, what, dtypes);
    return false;
  }
  bool dtype_ok =
      want_int ? t->dtype == KILN_I32 || t->dtype == KILN_I64 : kiln_dtype_is_float(t->dtype);
  if (!dtype_ok) {
    kiln_op_error(d, n, "inputs[%d] (%s): %s %s: expected dtype %s, got %s", i, t->name, op, what,
                  dtypes, kiln_dtype_name(t->dtype));
    return false;
  }
  if (t->shape.rank > 1 || kiln_shape_numel(&t->shape) > max) {
    kiln_op_error(d, n,
                  "inputs[%d] (%s): %s %s: expected a 1-D tensor of at most %d values, got %s", i,
                  t->name, op, what, max, kiln_shape_text(&t->shape).text);
    return false;
  }
  return true;
}

int kiln_op_const_ints(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                       const char *what, int64_t *out, int max) {
  if (!check_constant(g, n, d, i, what, true, max)) return -1;
  const kiln_tensor *t = kiln_in(g, n, i);
  int count = (int)kiln_shape_numel(&t->shape);
  for (int k = 0; k < count; k++) out[k] = param_int(t, k);
  return count;
}

int kiln_op_const_floats(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                         const char *what, double *out, int max) {
  if (!check_constant(g, n, d, i, what, false, max)) return -1;
  const kiln_tensor *t = kiln_in(g, n, i);
  int count = (int)kiln_shape_numel(&t->shape);
  for (int k = 0; k < count; k++) out[k] = kiln_tensor_get(t, k);
  return count;
}

int64_t kiln_saturate_i64(double v) {
  if (isnan(v)) return 0;
  if (v >= 9223372036854775807.0) return INT64_MAX;
  if (v <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)v;
}

int kiln_eval_ints(const kiln_eval_tensor *t, int64_t *out, int max) {
  int count = (int)kiln_shape_numel(t->shape);
  if (count > max) count = max;
  for (int k = 0; k < count; k++) out[k] = kiln_saturate_i64(t->data[k]);
  return count;
}

bool kiln_op_check_axis(const kiln_node *n, kiln_diag *d, const char *field, int64_t axis, int rank,
                        int64_t *out) {
  if (axis < -rank || axis >= rank) {
    if (rank == 0)
      kiln_op_error(d, n, "%s: got axis %lld, but the input is a scalar (rank 0)", field,
                    (long long)axis);
    else
      kiln_op_error(d, n, "%s: expected an axis in [%d, %d], got %lld", field, -rank, rank - 1,
                    (long long)axis);
    return false;
  }
  *out = axis < 0 ? axis + rank : axis;
  return true;
}

bool kiln_op_check_dims(const kiln_node *n, kiln_diag *d, const kiln_shape *s, const char *why) {
  for (int i = 0; i < s->rank; i++) {
    if (s->dim[i] < 1) {
      kiln_op_error(d, n, "%s gives an output of shape %s; Kiln needs every dimension >= 1", why,
                    kiln_shape_text(s).text);
      return false;
    }
  }
  return true;
}

void kiln_strided_lower(kiln_lb *b, int src_buf, int dst_buf, const kiln_strided *s) {
  int vars[KILN_MAX_RANK];
  kiln_lower_begin_nest(b, &s->shape, vars);
  kiln_lexpr *src =
      lx_add(b, lx_int(b, s->src_base), kiln_lower_index(b, s->shape.rank, vars, s->src_stride));
  kiln_lexpr *dst =
      lx_add(b, lx_int(b, s->dst_base), kiln_lower_index(b, s->shape.rank, vars, s->dst_stride));
  kiln_lb_store(b, dst_buf, dst, lx_load(b, src_buf, src));
  kiln_lower_end_nest(b, &s->shape);
}

// ---- Squeeze and Unsqueeze ----

int kiln_op_axes_arg(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int64_t *axes) {
  if (kiln_has_input(n, 1) && kiln_node_attr(n, "axes")) {
    kiln_op_error(d, n,
                  "attrs.axes: give axes either as the attribute (opset < 13) or as "
                  "inputs[1] (opset 13+), not both");
    return -2;
  }
  if (kiln_has_input(n, 1)) {
    int count = kiln_op_const_ints(g, n, d, 1, "axes", axes, KILN_MAX_RANK);
    return count < 0 ? -2 : count;
  }
  int count = kiln_attr_ints(n, "axes", axes, KILN_MAX_RANK);
  if (count > KILN_MAX_RANK) {
    kiln_op_error(d, n, "attrs.axes: %d axes; at most %d", count, KILN_MAX_RANK);
    return -2;
  }
  return count;
}

// The data does not move, so dx is dy reshaped to x's shape.
bool kiln_reshape_grad(kiln_grad_ctx *c) {
  c->dx[0] = kiln_gb_reshape(c, c->dy[0], &c->g->tensors[c->node.inputs[0]].shape);
  return c->dx[0] >= 0;
}
