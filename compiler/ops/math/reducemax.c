// ReduceMax: the maximum over the reduced axes (fmax: a NaN loses to a number); attributes in
// reduce.c.
#include "../op_internal.h"

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  return kiln_reduce_infer(g, n, d, KILN_DT_FLOAT | KILN_DT(KILN_I32) | KILN_DT(KILN_I64));
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_reduce_eval(n, in, out, LB_MAX, false);
}

static void lower(const kiln_lower_ctx *c) { kiln_reduce_lower(c, LB_MAX, false); }

const kiln_op_def kiln_op_ReduceMax = {
    .name = "ReduceMax",
    .min_inputs = 1,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = kiln_reduce_attrs,
    .fuse = KILN_FUSE_REDUCTION,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_reduce_flops,
    .tol = {0, 0},  // exact: comparisons only
};
