// Softmax (ONNX opset 13): y = exp(x - max) / sum(exp(x - max)) along one axis (default -1).
// The shape is viewed as (outer, A, inner): A is the softmax axis, element j of row (o, i) at
// (o * A + j) * inner + i.
#include <math.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"axis", KILN_ATTR_INT, false}, {0}};

typedef struct softmax_view {
  int64_t outer, axis, inner;
} softmax_view;

static softmax_view view_of(const kiln_node *n, const kiln_shape *s) {
  int64_t axis = kiln_attr_int(n, "axis", -1);
  if (axis < 0) axis += s->rank;
  softmax_view v = {1, s->dim[axis], 1};
  for (int i = 0; i < axis; i++) v.outer *= s->dim[i];
  for (int i = axis + 1; i < s->rank; i++) v.inner *= s->dim[i];
  return v;
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
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  softmax_view v = view_of(n, in[0].shape);
  const double *x = in[0].data;
  double *y = out->data;
  for (int64_t o = 0; o < v.outer; o++)
    for (int64_t i = 0; i < v.inner; i++) {
      int64_t base = o * v.axis * v.inner + i;
      double max = x[base];
      for (int64_t j = 1; j < v.axis; j++) max = fmax(max, x[base + j * v.inner]);
      double sum = 0;
      for (int64_t j = 0; j < v.axis; j++) sum += exp(x[base + j * v.inner] - max);
      for (int64_t j = 0; j < v.axis; j++)
        y[base + j * v.inner] = exp(x[base + j * v.inner] - max) / sum;
    }
}

// x[(o * A + j) * inner + i]; loops of extent 1 are left out (var -1).
static kiln_lexpr *element(kiln_lb *b, const softmax_view *v, int o, int i, kiln_lexpr *j) {
  kiln_lexpr *e = o >= 0 ? lx_mul(b, lx_var(b, o), lx_int(b, v->axis)) : lx_int(b, 0);
  e = lx_mul(b, lx_add(b, e, j), lx_int(b, v->inner));
  return i >= 0 ? lx_add(b, e, lx_var(b, i)) : e;
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  softmax_view v = view_of(c->node, &x->shape);
  int64_t axis = kiln_attr_int(c->node, "axis", -1);
  kiln_lb_comment(b, "Softmax %s: %s along axis %lld (rows of %lld) -> %s", c->node->name,
                  kiln_describe(x).text, (long long)axis, (long long)v.axis, kiln_describe(y).text);
  kiln_dtype t = y->dtype;
  int xb = kiln_in_buf(c, 0), yb = kiln_out_buf(c, 0);
  int o = v.outer > 1 ? kiln_lb_for_n(b, "o", v.outer) : -1;
  int i = v.inner > 1 ? kiln_lb_for_n(b, "i", v.inner) : -1;
  // max = max_j x[j], starting from x[0]
  int max = kiln_lb_decl(b, "max", t, lx_load(b, xb, element(b, &v, o, i, lx_int(b, 0))));
  int j = kiln_lb_for(b, "j", lx_int(b, 1), lx_int(b, v.axis));
  kiln_lb_assign(
      b, max,
      lx_bin(b, LB_MAX, lx_var(b, max), lx_load(b, xb, element(b, &v, o, i, lx_var(b, j)))));
  kiln_lb_end_for(b);
  // sum = sum_j exp(x[j] - max)
  int sum = kiln_lb_decl(b, "sum", t, lx_float(b, t, 0));
  j = kiln_lb_for_n(b, "j", v.axis);
  kiln_lexpr *shifted =
      lx_bin(b, LB_SUB, lx_load(b, xb, element(b, &v, o, i, lx_var(b, j))), lx_var(b, max));
  kiln_lb_assign(b, sum, lx_bin(b, LB_ADD, lx_var(b, sum), lx_unary(b, LU_EXP, shifted)));
  kiln_lb_end_for(b);
  // y[j] = exp(x[j] - max) / sum
  j = kiln_lb_for_n(b, "j", v.axis);
  shifted = lx_bin(b, LB_SUB, lx_load(b, xb, element(b, &v, o, i, lx_var(b, j))), lx_var(b, max));
  kiln_lb_store(b, yb, element(b, &v, o, i, lx_var(b, j)),
                lx_bin(b, LB_DIV, lx_unary(b, LU_EXP, shifted), lx_var(b, sum)));
  kiln_lb_end_for(b);
  if (i >= 0) kiln_lb_end_for(b);
  if (o >= 0) kiln_lb_end_for(b);
}

// Gradient (docs/training.md): dx = y (dy - sum(dy y)) along the axis (SoftmaxGrad).
static bool grad(kiln_grad_ctx *c) {
  int in[2] = {c->node.outputs[0], c->dy[0]};
  kiln_gb_attr attrs[] = {KILN_GB_INT("axis", kiln_attr_int(&c->node, "axis", -1)), KILN_GB_END};
  c->dx[0] = kiln_gb_op(c, "SoftmaxGrad", in, 2, attrs, 1);
  return c->dx[0] >= 0;
}

// Per element: a compare, a subtract and exp, an add, then exp again and a divide.
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 6 * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

const kiln_op_def kiln_op_Softmax = {
    .name = "Softmax",
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
    .tol = {1e-7, 1e-6},
    .grad = grad,
};
