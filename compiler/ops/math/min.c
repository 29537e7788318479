// Min: y = the elementwise minimum of 1..16 inputs of one numeric dtype, numpy broadcasting.
// Like C's fmin, a NaN loses to a number (ONNX does not say).
#include <math.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  return kiln_nary_infer(g, n, d, KILN_DT_NUMERIC, -1);
}

static double min_ref(const kiln_node *n, const double *v, int count) {
  (void)n;
  double m = v[0];
  for (int k = 1; k < count; k++) m = fmin(m, v[k]);
  return m;
}

// min(min(v0, v1), v2) ...
static kiln_lexpr *min_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr **v, int count) {
  (void)n, (void)t;
  kiln_lexpr *m = v[0];
  for (int k = 1; k < count; k++) m = lx_bin(b, LB_MIN, m, v[k]);
  return m;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_nary_eval(n, in, out, min_ref);
}

static void lower(const kiln_lower_ctx *c) { kiln_nary_lower(c, min_lx); }

const kiln_op_def kiln_op_Min = {
    .name = "Min",
    .min_inputs = 1,
    .max_inputs = 16,
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
