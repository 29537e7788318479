// Weight regularization terms added to the loss, and their gradient:
//   Regularizer(w) -> (1):       l1 sum|w| + l2 sum w^2
//   RegularizerGrad(w, dl (1)):  dl (l1 sign(w) + 2 l2 w), sign(0) = 0 (|w|'(0) = 0)
#include <math.h>

#include "train_internal.h"

static const kiln_attr_spec attrs[] = {
    {"l1", KILN_ATTR_FLOAT, false}, {"l2", KILN_ATTR_FLOAT, false}, {0}};

static bool check(kiln_graph *g, kiln_node *n, kiln_diag *d, int count) {
  if (!kiln_op_check_float_inputs(g, n, count, d)) return false;
  if (kiln_attr_float(n, "l1", 0) < 0 || kiln_attr_float(n, "l2", 0) < 0) {
    kiln_op_error(d, n, "attrs.l1 and attrs.l2: expected numbers >= 0");
    return false;
  }
  return true;
}

static bool reg_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!check(g, n, d, 1)) return false;
  kiln_shape one = kiln_train_scalar_shape();
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &one);
  return true;
}

static bool grad_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!check(g, n, d, 2) ||
      !kiln_train_check_scalar(g, n, d, 1, kiln_in(g, n, 0)->dtype, "loss gradient"))
    return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &kiln_in(g, n, 0)->shape);
  return true;
}

static void reg_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  double l1 = kiln_attr_float(n, "l1", 0), l2 = kiln_attr_float(n, "l2", 0), sum = 0;
  for (int64_t i = 0; i < kiln_shape_numel(in[0].shape); i++)
    sum += l1 * fabs(in[0].data[i]) + l2 * in[0].data[i] * in[0].data[i];
  out->data[0] = sum;
}

static void grad_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  double l1 = kiln_attr_float(n, "l1", 0), l2 = kiln_attr_float(n, "l2", 0), dl = in[1].data[0];
  for (int64_t i = 0; i < kiln_shape_numel(in[0].shape); i++) {
    double w = in[0].data[i], sign = w > 0 ? 1 : w < 0 ? -1 : 0;
    out->data[i] = dl * (l1 * sign + 2 * l2 * w);
  }
}

static void reg_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *w = kiln_lower_in(c, 0);
  kiln_dtype t = w->dtype;
  int wb = kiln_in_buf(c, 0);
  double l1 = kiln_attr_float(c->node, "l1", 0), l2 = kiln_attr_float(c->node, "l2", 0);
  kiln_lb_comment(b, "Regularizer %s: l1 %g, l2 %g of %s", c->node->name, l1, l2,
                  kiln_describe(w).text);
  int acc = kiln_lb_decl(b, "acc", t, lx_float(b, t, 0));
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&w->shape));
  kiln_lexpr *a =
      lx_bin(b, LB_MUL, lx_float(b, t, l1), lx_unary(b, LU_ABS, lx_load(b, wb, lx_var(b, i))));
  kiln_lexpr *q =
      lx_bin(b, LB_MUL, lx_float(b, t, l2),
             lx_bin(b, LB_MUL, lx_load(b, wb, lx_var(b, i)), lx_load(b, wb, lx_var(b, i))));
  kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, lx_var(b, acc), lx_bin(b, LB_ADD, a, q)));
  kiln_lb_end_for(b);
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_int(b, 0), lx_var(b, acc));
}

static void grad_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *w = kiln_lower_in(c, 0);
  kiln_dtype t = w->dtype;
  int wb = kiln_in_buf(c, 0);
  double l1 = kiln_attr_float(c->node, "l1", 0), l2 = kiln_attr_float(c->node, "l2", 0);
  kiln_lb_comment(b, "RegularizerGrad %s: d/d%s", c->node->name, kiln_describe(w).text);
  int dl = kiln_lb_decl(b, "dl", t, lx_load(b, kiln_in_buf(c, 1), lx_int(b, 0)));
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&w->shape));
  kiln_lexpr *sign = lx_select(
      b, lx_bin(b, LB_LT, lx_float(b, t, 0), lx_load(b, wb, lx_var(b, i))), lx_float(b, t, 1),
      lx_select(b, lx_bin(b, LB_LT, lx_load(b, wb, lx_var(b, i)), lx_float(b, t, 0)),
                lx_float(b, t, -1), lx_float(b, t, 0)));
  kiln_lexpr *v = lx_bin(b, LB_ADD, lx_bin(b, LB_MUL, lx_float(b, t, l1), sign),
                         lx_bin(b, LB_MUL, lx_float(b, t, 2 * l2), lx_load(b, wb, lx_var(b, i))));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i), lx_bin(b, LB_MUL, lx_var(b, dl), v));
  kiln_lb_end_for(b);
}

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 4 * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

const kiln_op_def kiln_op_Regularizer = {
    .name = "Regularizer",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_REDUCTION,
    .infer = reg_infer,
    .eval = reg_eval,
    .lower = reg_lower,
    .flops = flops,
    .tol = {1e-7, 2e-5},  // an f32 sum over the weights
};

const kiln_op_def kiln_op_RegularizerGrad = {
    .name = "RegularizerGrad",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = grad_infer,
    .eval = grad_eval,
    .lower = grad_lower,
    .flops = flops,
    .tol = {0, 4e-7},  // a couple of roundings
};
