// ReluGrad(y, dy) -> dx = y > 0 ? dy : 0, elementwise (y, dy and dx of one shape). y is the Relu's
// output, positive exactly where its input is: ReLU'(0) = 0, and NaN gives 0. Relu's gradient rule
// (compiler/ops/math/relu.c). It has no attributes, so fuse-elementwise merges it with what
// computes dy (a residual block's gradient sum: one pass instead of an Add and a mask).
#include "train_internal.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 2, d)) return false;
  const kiln_tensor *y = kiln_in(g, n, 0);
  if (!kiln_train_check_shape(g, n, d, 1, &y->shape, "inputs[0]")) return false;
  kiln_op_set_output(g, n, 0, y->dtype, &y->shape);
  return true;
}

static double relu_grad(const kiln_node *n, const double *v, int count) {
  (void)n, (void)count;
  return v[0] > 0 ? v[1] : 0;
}

// 0 < y ? dy : 0
static kiln_lexpr *relu_grad_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr **v,
                                int count) {
  (void)n, (void)count;
  return lx_select(b, lx_bin(b, LB_LT, lx_float(b, t, 0), v[0]), v[1], lx_float(b, t, 0));
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_nary_eval(n, in, out, relu_grad);
}

static void lower(const kiln_lower_ctx *c) { kiln_nary_lower(c, relu_grad_lx); }

const kiln_op_def kiln_op_ReluGrad = {
    .name = "ReluGrad",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_ELEMENTWISE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_output_numel_flops,
    .tol = {0, 0},  // a selection: exact
    .elementwise = relu_grad_lx,
};
