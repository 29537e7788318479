// Softmax and LogSoftmax (ONNX opset 13) along one axis (default -1; negative counts from the end):
//   Softmax:    y = exp(x - max) / sum(exp(x - max))
//   LogSoftmax: y = x - max - ln(sum(exp(x - max)))
// Subtracting the row maximum keeps exp from overflowing. The shape is viewed as (outer, A, inner)
// (reduce.c). The two share everything but the last step; logsoftmax.c holds LogSoftmax's op.
#include <math.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"

const kiln_attr_spec kiln_softmax_attrs[] = {{"axis", KILN_ATTR_INT, false}, {0}};

static int axis_of(const kiln_node *n, int rank) {
  int64_t axis = kiln_attr_int(n, "axis", -1);
  return (int)(axis < 0 ? axis + rank : axis);
}

static bool is_log(const kiln_node *n) { return n->op == KILN_OP_LogSoftmax; }

bool kiln_softmax_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
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

void kiln_softmax_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_axis_view v = kiln_axis_view_of(in[0].shape, axis_of(n, in[0].shape->rank));
  const double *x = in[0].data;
  bool log_form = is_log(n);
  for (int64_t o = 0; o < v.outer; o++)
    for (int64_t i = 0; i < v.inner; i++) {
      int64_t base = o * v.axis * v.inner + i;
      double max = x[base];
      for (int64_t j = 1; j < v.axis; j++) max = fmax(max, x[base + j * v.inner]);
      double sum = 0;
      for (int64_t j = 0; j < v.axis; j++) sum += exp(x[base + j * v.inner] - max);
      for (int64_t j = 0; j < v.axis; j++) {
        double centered = x[base + j * v.inner] - max;
        out->data[base + j * v.inner] = log_form ? centered - log(sum) : exp(centered) / sum;
      }
    }
}

// for o, i: max = max_j x[j]; sum = sum_j exp(x[j] - max)
//   Softmax:    y[j] = exp(x[j] - max) / sum
//   LogSoftmax: log_sum = log(sum); y[j] = (x[j] - max) - log_sum
void kiln_softmax_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  int axis = axis_of(c->node, x->shape.rank);
  kiln_axis_view v = kiln_axis_view_of(&x->shape, axis);
  bool log_form = is_log(c->node);
  kiln_lb_comment(b, "%s %s: %s along axis %d (rows of %lld) -> %s", kiln_op_get(c->node->op)->name,
                  c->node->name, kiln_describe(x).text, axis, (long long)v.axis,
                  kiln_describe(y).text);
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
  int log_sum = log_form ? kiln_lb_decl(b, "log_sum", t, lx_unary(b, LU_LOG, lx_var(b, sum))) : -1;
  j = kiln_lb_for_n(b, "j", v.axis);
  xj = lx_load(b, xb, kiln_axis_element(b, &v, o, i, lx_var(b, j)));
  kiln_lexpr *centered = lx_bin(b, LB_SUB, xj, lx_var(b, max));
  kiln_lexpr *value = log_form ? lx_bin(b, LB_SUB, centered, lx_var(b, log_sum))
                               : lx_bin(b, LB_DIV, lx_unary(b, LU_EXP, centered), lx_var(b, sum));
  kiln_lb_store(b, yb, kiln_axis_element(b, &v, o, i, lx_var(b, j)), value);
  kiln_lb_end_for(b);
  if (i >= 0) kiln_lb_end_for(b);
  if (o >= 0) kiln_lb_end_for(b);
}

// Per element: a compare, a subtract and exp, an add, then exp and a divide (or two subtracts).
int64_t kiln_softmax_flops(const kiln_graph *g, const kiln_node *n) {
  return 6 * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

// Gradient (docs/training.md): dx = y (dy - sum(dy y)) along the axis (SoftmaxGrad).
static bool grad(kiln_grad_ctx *c) {
  int in[2] = {c->node.outputs[0], c->dy[0]};
  kiln_gb_attr attrs[] = {KILN_GB_INT("axis", kiln_attr_int(&c->node, "axis", -1)), KILN_GB_END};
  c->dx[0] = kiln_gb_op(c, "SoftmaxGrad", in, 2, attrs, 1);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Softmax = {
    .name = "Softmax",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = kiln_softmax_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = kiln_softmax_infer,
    .eval = kiln_softmax_eval,
    .lower = kiln_softmax_lower,
    .flops = kiln_softmax_flops,
    .tol = {1e-7, 1e-6},
    .grad = grad,
};
