// LogSoftmax (ONNX opset 13): y = x - max - ln(sum(exp(x - max))) along one axis (default -1;
// negative counts from the end). Subtracting the row maximum keeps exp from overflowing, so large
// logits are fine. The shape is viewed as (outer, A, inner) (reduce.c).
#include <math.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"axis", KILN_ATTR_INT, false}, {0}};

static int axis_of(const kiln_node *n, int rank) {
  int64_t axis = kiln_attr_int(n, "axis", -1);
  return (int)(axis < 0 ? axis + rank : axis);
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  int rank = x->shape.rank;
  int64_t axis;
  if (rank < 1) {
    kiln_op_error(d, n, "inputs[0] (%s): expected at least 1 dimension, got a scalar", x->name);
    return false;
  }
  if (!kiln_op_read_int(n, d, "axis", -1, -rank, rank - 1, &axis)) return false;
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: same shape as x
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_axis_view v = kiln_axis_view_of(in[0].shape, axis_of(n, in[0].shape->rank));
  const double *x = in[0].data;
  for (int64_t o = 0; o < v.outer; o++)
    for (int64_t i = 0; i < v.inner; i++) {
      int64_t base = o * v.axis * v.inner + i;
      double max = x[base];
      for (int64_t j = 1; j < v.axis; j++) max = fmax(max, x[base + j * v.inner]);
      double sum = 0;
      for (int64_t j = 0; j < v.axis; j++) sum += exp(x[base + j * v.inner] - max);
      double log_sum = log(sum);
      for (int64_t j = 0; j < v.axis; j++)
        out->data[base + j * v.inner] = x[base + j * v.inner] - max - log_sum;
    }
}

// for o, i: max = max_j x[j]; sum = sum_j exp(x[j] - max); shift = max + log(sum)
//   y[j] = x[j] - shift
static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  int axis = axis_of(c->node, x->shape.rank);
  kiln_axis_view v = kiln_axis_view_of(&x->shape, axis);
  kiln_lb_comment(b, "LogSoftmax %s: %s along axis %d (rows of %lld) -> %s", c->node->name,
                  kiln_describe(x).text, axis, (long long)v.axis, kiln_describe(y).text);
  kiln_dtype t = y->dtype;
  int xb = kiln_in_buf(c, 0), yb = kiln_out_buf(c, 0);
  int o = v.outer > 1 ? kiln_lb_for_n(b, "o", v.outer) : -1;
  int i = v.inner > 1 ? kiln_lb_for_n(b, "i", v.inner) : -1;
  int max = kiln_lb_decl(b, "max", t, lx_load(b, xb, kiln_axis_element(b, &v, o, i, lx_int(b, 0))));
  int j = kiln_lb_for(b, "j", lx_int(b, 1), lx_int(b, v.axis));
  kiln_lexpr *xj = lx_load(b, xb, kiln_axis_element(b, &v, o, i, lx_var(b, j)));
  kiln_lb_assign(b, max, lx_bin(b, LB_MAX, lx_var(b, max), xj));
  kiln_lb_end_for(b);
  int sum = kiln_lb_decl(b, "sum", t, lx_float(b, t, 0));
  j = kiln_lb_for_n(b, "j", v.axis);
  xj = lx_load(b, xb, kiln_axis_element(b, &v, o, i, lx_var(b, j)));
  kiln_lexpr *e = lx_unary(b, LU_EXP, lx_bin(b, LB_SUB, xj, lx_var(b, max)));
  kiln_lb_assign(b, sum, lx_bin(b, LB_ADD, lx_var(b, sum), e));
  kiln_lb_end_for(b);
  int shift = kiln_lb_decl(b, "log_sum", t, lx_unary(b, LU_LOG, lx_var(b, sum)));
  j = kiln_lb_for_n(b, "j", v.axis);
  xj = lx_load(b, xb, kiln_axis_element(b, &v, o, i, lx_var(b, j)));
  kiln_lexpr *centered = lx_bin(b, LB_SUB, xj, lx_var(b, max));
  kiln_lb_store(b, yb, kiln_axis_element(b, &v, o, i, lx_var(b, j)),
                lx_bin(b, LB_SUB, centered, lx_var(b, shift)));
  kiln_lb_end_for(b);
  if (i >= 0) kiln_lb_end_for(b);
  if (o >= 0) kiln_lb_end_for(b);
}

// Per element: a compare, a subtract and exp, an add, then two subtracts.
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 6 * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

const kiln_op_def kiln_op_LogSoftmax = {
    .name = "LogSoftmax",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // f32: x - max is exact or one rounding; log(sum) is within an ulp of a value >= 1 (the
    // sum's rounding adds ~n ulp relative, i.e. ~1e-6 absolute after log); rows of large logits
    // give |y| up to ~100: a relative term.
    .tol = {2e-6, 1e-6},
};
