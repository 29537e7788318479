// PRelu: y = x if x >= 0 else slope * x, elementwise. slope broadcasts to x (ONNX unidirectional
// broadcasting: numpy rules, and the result has x's shape), e.g. slope (C, 1, 1) for x (N, C, H,
// W).
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 2, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0), *slope = kiln_in(g, n, 1);
  kiln_shape out;
  if (!kiln_broadcast_inputs(g, n, d, &out)) return false;
  if (!kiln_shape_equal(&out, &x->shape)) {
    char slope_shape[128], x_shape[128], out_shape[128];
    kiln_shape_str(&slope->shape, slope_shape, sizeof slope_shape);
    kiln_shape_str(&x->shape, x_shape, sizeof x_shape);
    kiln_shape_str(&out, out_shape, sizeof out_shape);
    kiln_op_error(d, n,
                  "inputs[1] (%s): slope %s must broadcast to x's shape %s (unidirectionally), "
                  "not widen it to %s",
                  slope->name, slope_shape, x_shape, out_shape);
    return false;
  }
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: same shape as x
  return true;
}

static double prelu(const kiln_node *n, const double *v, int count) {
  (void)n, (void)count;
  return v[0] >= 0 ? v[0] : v[1] * v[0];
}

// x < 0 ? slope * x : x
static kiln_lexpr *prelu_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr **v,
                            int count) {
  (void)n, (void)count;
  kiln_lexpr *negative = lx_bin(b, LB_LT, kiln_lx_clone(b, v[0]), lx_float(b, t, 0));
  kiln_lexpr *scaled = lx_bin(b, LB_MUL, v[1], kiln_lx_clone(b, v[0]));
  return lx_select(b, negative, scaled, v[0]);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_nary_eval(n, in, out, prelu);
}

static void lower(const kiln_lower_ctx *c) { kiln_nary_lower(c, prelu_lx); }

const kiln_op_def kiln_op_PRelu = {
    .name = "PRelu",
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
    .tol = {0, 1.2e-7},  // one f32 rounding of slope * x
};
