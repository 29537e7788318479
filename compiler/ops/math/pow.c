// Pow: z = x ^ y, elementwise with numpy broadcasting. x is any numeric dtype (the output's); the
// exponent y may be any numeric dtype. A float x takes y converted to its dtype. An integer x
// (ONNX Pow-12+) is raised in double and truncated back to its dtype, exact while the result fits
// in 53 bits (pow of integral doubles is exact there); a negative exponent truncates toward zero
// (2^-1 = 0), as C would. A negative base with an integral exponent is fine (pow(-2, 3) = -8);
// with a fractional one a float x gives NaN, as in C and ONNX.
#include <math.h>

#include "../op_internal.h"
#include "../train/grad_compose.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, KILN_DT_NUMERIC, true, d)) return false;
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
  if (kiln_dtype_is_float(t)) return lx_bin(b, LB_POW, v[0], lx_cast(b, t, v[1]));
  kiln_lexpr *z = lx_bin(b, LB_POW, lx_cast(b, KILN_F64, v[0]), lx_cast(b, KILN_F64, v[1]));
  return lx_cast(b, t, z);  // integer x: in double, truncated
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_nary_eval(n, in, out, pow_ref);
}

static void lower(const kiln_lower_ctx *c) { kiln_nary_lower(c, pow_lx); }

// Gradient (docs/training.md): dx = dy e x^(e - 1), de = dy z ln(x) (z = x^e, this node's output),
// each summed to its input's shape. An integer exponent is cast to x's dtype (and gets none).
static bool pow_grad(kiln_grad_ctx *c) {
  int x = kiln_gc_x(c, 0), e = kiln_gc_x(c, 1), dy = c->dy[0];
  kiln_dtype t = c->g->tensors[x].dtype;
  if (c->g->tensors[e].dtype != t) {
    kiln_gb_attr to[] = {KILN_GB_INT("to", t == KILN_F64 ? 11 : 1), KILN_GB_END};
    e = kiln_gb_op(c, "Cast", &e, 1, to, 1);
  }
  if (c->need[0]) {
    int power = kiln_gc_binary(c, "Pow", x, kiln_gc_scalar_op(c, "Sub", e, 1));
    int d = kiln_gc_binary(c, "Mul", kiln_gc_binary(c, "Mul", dy, e), power);
    if (d < 0 || (c->dx[0] = kiln_gb_sum_to(c, d, &c->g->tensors[x].shape)) < 0) return false;
  }
  if (c->need[1]) {
    int d = kiln_gc_binary(c, "Mul", kiln_gc_binary(c, "Mul", dy, kiln_gc_y(c)),
                           kiln_gc_unary(c, "Log", x));
    if (d < 0 || (c->dx[1] = kiln_gb_sum_to(c, d, &c->g->tensors[e].shape)) < 0) return false;
  }
  return true;
}

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
    .grad = pow_grad,
};
