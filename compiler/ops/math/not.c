// Not: y = !x, elementwise on bool.
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, KILN_DT(KILN_BOOL), true, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  kiln_op_set_output(g, n, 0, KILN_BOOL, &x->shape);  // y: same shape as x
  return true;
}

static double not_ref(const kiln_node *n, double x) {
  (void)n;
  return x == 0;
}

static kiln_lexpr *not_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr *x) {
  (void)n;
  return lx_bin(b, LB_EQ, x, lx_float(b, t, 0));  // x == 0
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_unary_node_eval(n, in, out, not_ref);
}

static void lower(const kiln_lower_ctx *c) { kiln_unary_node_lower(c, not_lx); }

const kiln_op_def kiln_op_Not = {
    .name = "Not",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_ELEMENTWISE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_output_numel_flops,
    .tol = {0, 0},  // exact
};
