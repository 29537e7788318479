// RandomNormalLike: y has x's shape (x's values are not read) and holds draws from
// N(mean, scale^2); attributes mean (0), scale (1), seed (0 when absent; an integral value with
// |seed| <= 2^53) and dtype (1 f32 or 11 f64; default: x's dtype, which must then be a float).
//
// Element i comes from a counter-based generator, so the interpreter and the generated code give
// the same values bit for bit (both compute in f64 with the C library's log, sqrt and cos):
//   base = mix64(seed_bits ^ 0x9e3779b97f4a7c15)      seed_bits: seed as a 64-bit integer
//   h1 = mix64(base ^ 2i),  h2 = mix64(base ^ (2i + 1))
//   u1 = ((h1 >> 11) + 1) * 2^-53                     in (0, 1], so log(u1) is finite
//   u2 = (h2 >> 11) * 2^-53                           in [0, 1)
//   y[i] = mean + scale * (sqrt(-2 * log(u1)) * cos(2 * pi * u2))   (Box-Muller), then rounded
// where mix64 is the SplitMix64 finalizer (LU_MIX64 in ir/loop.h) and >> is the logical shift of
// the 64-bit pattern.
#include <math.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"dtype", KILN_ATTR_INT, false},
                                       {"mean", KILN_ATTR_FLOAT, false},
                                       {"scale", KILN_ATTR_FLOAT, false},
                                       {"seed", KILN_ATTR_FLOAT, false},
                                       {0}};

static uint64_t base_of(const kiln_node *n) {
  return kiln_seed_key((uint64_t)(int64_t)kiln_attr_float(n, "seed", 0));
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, KILN_DT_ANY, true, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  double seed = kiln_attr_float(n, "seed", 0);
  if (!(fabs(seed) <= 0x1p53) || seed != trunc(seed)) {
    kiln_op_error(d, n, "attrs.seed: expected an integral value with |seed| <= 2^53, got %g", seed);
    return false;
  }
  int64_t code = kiln_attr_int(n, "dtype", x->dtype == KILN_F64 ? 11 : 1);
  if (!kiln_node_attr(n, "dtype") && !kiln_dtype_is_float(x->dtype)) {
    kiln_op_error(d, n, "attrs.dtype: needed when x is not a float (x is %s); 1 (f32) or 11 (f64)",
                  kiln_dtype_name(x->dtype));
    return false;
  }
  if (code != 1 && code != 11) {
    kiln_op_error(d, n, "attrs.dtype: expected 1 (f32) or 11 (f64), got %lld", (long long)code);
    return false;
  }
  kiln_op_set_output(g, n, 0, code == 11 ? KILN_F64 : KILN_F32, &x->shape);  // y: x's shape
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)in;
  kiln_normal_fill(base_of(n), kiln_attr_float(n, "mean", 0), kiln_attr_float(n, "scale", 1),
                   out->data, kiln_shape_numel(out->shape));
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *y = kiln_lower_out(c, 0);
  const kiln_node *n = c->node;
  double mean = kiln_attr_float(n, "mean", 0), scale = kiln_attr_float(n, "scale", 1);
  kiln_lb_comment(b, "RandomNormalLike %s: %s ~ N(%g, %g^2), seed %g (Box-Muller on mix64)",
                  n->name, kiln_describe(y).text, mean, scale, kiln_attr_float(n, "seed", 0));
  int key = kiln_lb_decl(b, "key", KILN_I64, lx_int(b, (int64_t)base_of(n)));
  kiln_lower_normal_fill(b, key, kiln_out_buf(c, 0), y->dtype, kiln_shape_numel(&y->shape), mean,
                         scale);
}

// Per element: two hashes, log, sqrt, cos and a few multiply/adds.
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 20 * kiln_shape_numel(&kiln_out(g, n, 0)->shape);
}

const kiln_op_def kiln_op_RandomNormalLike = {
    .name = "RandomNormalLike",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // Exact: the same f64 operations in the same order with the same C library, one final
    // rounding (the golden is tools/goldens_math.py's numpy copy of the generator, with Python's
    // math module, i.e. the same libm).
    .tol = {0, 0},
};
