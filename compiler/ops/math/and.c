// And: y = a && b, elementwise on bool with numpy broadcasting.
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  return kiln_nary_infer(g, n, d, KILN_DT(KILN_BOOL), KILN_BOOL);
}

static double and_ref(const kiln_node *n, const double *v, int count) {
  (void)n, (void)count;
  return v[0] != 0 && v[1] != 0;
}

static kiln_lexpr *and_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr **v, int count) {
  (void)n, (void)t, (void)count;
  return lx_bin(b, LB_AND, v[0], v[1]);  // a && b
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_nary_eval(n, in, out, and_ref);
}

static void lower(const kiln_lower_ctx *c) { kiln_nary_lower(c, and_lx); }

const kiln_op_def kiln_op_And = {
    .name = "And",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_BROADCAST,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_output_numel_flops,
    .tol = {0, 0},  // exact
};
