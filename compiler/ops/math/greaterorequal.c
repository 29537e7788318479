// GreaterOrEqual: y = (a >= b), elementwise with numpy broadcasting; bool output.
// Both inputs have one dtype; any comparison with NaN is false.
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  return kiln_nary_infer(g, n, d, KILN_DT_NUMERIC, KILN_BOOL);
}

static double greaterorequal_ref(const kiln_node *n, const double *v, int count) {
  (void)n, (void)count;
  return v[0] >= v[1];
}

static kiln_lexpr *greaterorequal_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr **v,
                                     int count) {
  (void)n, (void)t, (void)count;
  return lx_bin(b, LB_LE, v[1], v[0]);  // b <= a
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_nary_eval(n, in, out, greaterorequal_ref);
}

static void lower(const kiln_lower_ctx *c) { kiln_nary_lower(c, greaterorequal_lx); }

const kiln_op_def kiln_op_GreaterOrEqual = {
    .name = "GreaterOrEqual",
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
