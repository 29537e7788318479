// Pow: z = x ^ y, elementwise with numpy broadcasting. x is f32 or f64 (the output's dtype); the
// exponent y may be any numeric dtype and is converted to x's. A negative base with an integral
// exponent is fine (pow(-2, 3) = -8); with a fractional one it gives NaN, as in C and ONNX.
#include <math.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, KILN_DT_FLOAT, true, d)) return false;
  if (!kiln_op_check_dtypes(g, n, 1, 1, KILN_DT_NUMERIC, true, d)) return false;
  kiln_shape out;
  if (!kiln_broadcast_inputs(g, n, d, &out)) return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &out);
  return true;
}

static double pow_ref(const kiln_node *n, const double *v, int count) {
  (void)n, (void)count;
  return pow(v[0], v[1]);
}

static kiln_lexpr *pow_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr **v, int count) {
  (void)n, (void)count;
  return lx_bin(b, LB_POW, v[0], lx_cast(b, t, v[1]));
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_nary_eval(n, in, out, pow_ref);
}

static void lower(const kiln_lower_ctx *c) { kiln_nary_lower(c, pow_lx); }

const kiln_op_def kiln_op_Pow = {
    .name = "Pow",
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
    // powf is within 1 ulp, PyTorch's within a few: a relative error, but near |z| = 0 from a
    // tiny base an absolute term.
    .tol = {1e-7, 5e-7},
};
