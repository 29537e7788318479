// Backward kernels of the activations and of Softmax:
//   ActivationGrad(v, dy) -> dx, elementwise, `kind` (Relu's gradient is ReluGrad, relu_grad.c):
//     sigmoid  v = y:  dx = dy y (1 - y)
//     tanh     v = y:  dx = dy (1 - y^2)
//   SoftmaxGrad(y, dy) -> dx along `axis`: dx = y (dy - sum_j dy_j y_j)
#include "train_internal.h"

enum { SIGMOID, TANH };
static const char *const kinds[] = {"sigmoid", "tanh"};

static const kiln_attr_spec act_attrs[] = {{"kind", KILN_ATTR_STRING, true}, {0}};
static const kiln_attr_spec softmax_attrs[] = {{"axis", KILN_ATTR_INT, false}, {0}};

static bool act_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 2, d)) return false;
  const kiln_tensor *v = kiln_in(g, n, 0);
  if (kiln_train_read_choice(n, d, "kind", kinds, 2, 0) < 0 ||
      !kiln_train_check_shape(g, n, d, 1, &v->shape, "inputs[0]"))
    return false;
  kiln_op_set_output(g, n, 0, v->dtype, &v->shape);
  return true;
}

static double act(int kind, double v, double dy) {
  if (kind == SIGMOID) return dy * v * (1 - v);
  return dy * (1 - v * v);
}

static void act_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  int kind = kiln_train_read_choice(n, NULL, "kind", kinds, 2, 0);
  for (int64_t i = 0; i < kiln_shape_numel(out->shape); i++)
    out->data[i] = act(kind, in[0].data[i], in[1].data[i]);
}

static void act_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *v = kiln_lower_in(c, 0);
  kiln_dtype t = v->dtype;
  int kind = kiln_train_read_choice(c->node, NULL, "kind", kinds, 2, 0);
  int vb = kiln_in_buf(c, 0), db = kiln_in_buf(c, 1);
  kiln_lb_comment(b, "ActivationGrad %s (%s): %s", c->node->name, kinds[kind],
                  kiln_describe(v).text);
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&v->shape));
#define V lx_load(b, vb, lx_var(b, i))
#define DY lx_load(b, db, lx_var(b, i))
  kiln_lexpr *e;
  if (kind == SIGMOID)
    e = lx_bin(b, LB_MUL, DY, lx_bin(b, LB_MUL, V, lx_bin(b, LB_SUB, lx_float(b, t, 1), V)));
  else
    e = lx_bin(b, LB_MUL, DY, lx_bin(b, LB_SUB, lx_float(b, t, 1), lx_bin(b, LB_MUL, V, V)));
#undef V
#undef DY
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i), e);
  kiln_lb_end_for(b);
}

static bool softmax_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 2, d)) return false;
  const kiln_tensor *y = kiln_in(g, n, 0);
  int64_t axis;
  if (!kiln_train_check_shape(g, n, d, 1, &y->shape, "inputs[0]") ||
      !kiln_op_read_int(n, d, "axis", -1, -y->shape.rank, y->shape.rank - 1, &axis))
    return false;
  kiln_op_set_output(g, n, 0, y->dtype, &y->shape);
  return true;
}

static kiln_axis_view softmax_view(const kiln_node *n, const kiln_shape *s) {
  int64_t axis = kiln_attr_int(n, "axis", -1);
  return kiln_axis_view_of(s, (int)(axis < 0 ? axis + s->rank : axis));
}

static void softmax_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_axis_view v = softmax_view(n, in[0].shape);
  const double *y = in[0].data, *dy = in[1].data;
  for (int64_t o = 0; o < v.outer; o++)
    for (int64_t i = 0; i < v.inner; i++) {
      int64_t base = o * v.axis * v.inner + i;
      double dot = 0;
      for (int64_t j = 0; j < v.axis; j++) dot += dy[base + j * v.inner] * y[base + j * v.inner];
      for (int64_t j = 0; j < v.axis; j++)
        out->data[base + j * v.inner] = y[base + j * v.inner] * (dy[base + j * v.inner] - dot);
    }
}

static void softmax_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *y = kiln_lower_in(c, 0);
  kiln_dtype t = y->dtype;
  kiln_axis_view v = softmax_view(c->node, &y->shape);
  int yb = kiln_in_buf(c, 0), db = kiln_in_buf(c, 1);
  kiln_lb_comment(b, "SoftmaxGrad %s: %s", c->node->name, kiln_describe(y).text);
  int o = v.outer > 1 ? kiln_lb_for_n(b, "o", v.outer) : -1;
  int i = v.inner > 1 ? kiln_lb_for_n(b, "i", v.inner) : -1;
  int dot = kiln_lb_decl(b, "dot", t, lx_float(b, t, 0));
  int j = kiln_lb_for_n(b, "j", v.axis);
  kiln_lexpr *p = lx_bin(b, LB_MUL, lx_load(b, db, kiln_axis_element(b, &v, o, i, lx_var(b, j))),
                         lx_load(b, yb, kiln_axis_element(b, &v, o, i, lx_var(b, j))));
  kiln_lb_assign(b, dot, lx_bin(b, LB_ADD, lx_var(b, dot), p));
  kiln_lb_end_for(b);
  j = kiln_lb_for_n(b, "j", v.axis);
  kiln_lexpr *diff = lx_bin(b, LB_SUB, lx_load(b, db, kiln_axis_element(b, &v, o, i, lx_var(b, j))),
                            lx_var(b, dot));
  kiln_lb_store(
      b, kiln_out_buf(c, 0), kiln_axis_element(b, &v, o, i, lx_var(b, j)),
      lx_bin(b, LB_MUL, lx_load(b, yb, kiln_axis_element(b, &v, o, i, lx_var(b, j))), diff));
  kiln_lb_end_for(b);
  if (i >= 0) kiln_lb_end_for(b);
  if (o >= 0) kiln_lb_end_for(b);
}

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 3 * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

const kiln_op_def kiln_op_ActivationGrad = {
    .name = "ActivationGrad",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = act_attrs,
    .fuse = KILN_FUSE_ELEMENTWISE,
    .infer = act_infer,
    .eval = act_eval,
    .lower = act_lower,
    .flops = flops,
    .tol = {0, 4e-7},  // two or three roundings
};

const kiln_op_def kiln_op_SoftmaxGrad = {
    .name = "SoftmaxGrad",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = softmax_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = softmax_infer,
    .eval = softmax_eval,
    .lower = softmax_lower,
    .flops = flops,
    .tol = {1e-7, 2e-6},  // an f32 dot product over the axis
};
