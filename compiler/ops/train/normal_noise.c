// NormalNoise(seed (1) i64, step (1) i64) -> y of `shape`, dtype `dtype` ("f32" or "f64"):
// draws from N(mean, scale^2), fresh every training step and reproducible. It is the training
// graph's reparameterization noise (docs/training.md §8): `training.noise` inputs and
// RandomNormalLike nodes become NormalNoise(kiln.seed, kiln.step) in training builds.
//
// Counter-based, so the interpreter and the generated code draw the same values bit for bit
// (both compute in f64 with the C library's log, sqrt and cos):
//   s  = mix64(mix64(mix64(seed ^ 0x9e3779b97f4a7c15) ^ step) ^ salt)
//   h1 = mix64(s ^ 2i),  h2 = mix64(s ^ (2i + 1))
//   u1 = ((h1 >> 11) + 1) * 2^-53  in (0, 1],  u2 = (h2 >> 11) * 2^-53  in [0, 1)
//   y[i] = mean + scale * sqrt(-2 log u1) * cos(2 pi u2)      (Box-Muller), rounded to dtype
// with mix64 the SplitMix64 finalizer (LU_MIX64) and >> the logical shift. No gradient rule: the
// inputs are integer state, and the noise itself is a constant of the step.
#include <math.h>

#include "train_internal.h"

static const kiln_attr_spec attrs[] = {
    {"shape", KILN_ATTR_INTS, true},    {"salt", KILN_ATTR_INT, false},
    {"mean", KILN_ATTR_FLOAT, false},   {"scale", KILN_ATTR_FLOAT, false},
    {"dtype", KILN_ATTR_STRING, false}, {0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_train_check_scalar(g, n, d, 0, KILN_I64, "noise seed") ||
      !kiln_train_check_scalar(g, n, d, 1, KILN_I64, "step counter"))
    return false;
  kiln_dtype t;
  if (!kiln_dtype_parse(kiln_attr_string(n, "dtype", "f32"), &t) || !kiln_dtype_is_float(t)) {
    kiln_op_error(d, n, "attrs.dtype: expected \"f32\" or \"f64\"");
    return false;
  }
  kiln_shape s;
  s.rank = kiln_attr_ints(n, "shape", s.dim, KILN_MAX_RANK);
  if (s.rank < 1) {
    kiln_op_error(d, n, "attrs.shape: expected 1 to %d dims", KILN_MAX_RANK);
    return false;
  }
  for (int i = 0; i < s.rank; i++)
    if (s.dim[i] < 1) {
      kiln_op_error(d, n, "attrs.shape[%d]: expected a dim >= 1, got %lld", i, (long long)s.dim[i]);
      return false;
    }
  kiln_op_set_output(g, n, 0, t, &s);  // y: (shape)
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  uint64_t seed = (uint64_t)(int64_t)in[0].data[0], step = (uint64_t)(int64_t)in[1].data[0];
  uint64_t key = kiln_train_stream_key(seed, step, (uint64_t)kiln_attr_int(n, "salt", 0));
  kiln_normal_fill(key, kiln_attr_float(n, "mean", 0), kiln_attr_float(n, "scale", 1), out->data,
                   kiln_shape_numel(out->shape));
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *y = kiln_lower_out(c, 0);
  const kiln_node *n = c->node;
  double mean = kiln_attr_float(n, "mean", 0), scale = kiln_attr_float(n, "scale", 1);
  kiln_lb_comment(b, "NormalNoise %s: %s ~ N(%g, %g^2) (Box-Muller on mix64 of seed, step, salt)",
                  n->name, kiln_describe(y).text, mean, scale);
  int key = kiln_lower_train_stream_key(c);
  kiln_lower_normal_fill(b, key, kiln_out_buf(c, 0), y->dtype, kiln_shape_numel(&y->shape), mean,
                         scale);
}

// Per element: two hashes, log, sqrt, cos and a few multiply/adds.
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 20 * kiln_shape_numel(&kiln_out(g, n, 0)->shape);
}

const kiln_op_def kiln_op_NormalNoise = {
    .name = "NormalNoise",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // Exact: the same f64 operations in the same order with the same C library, one rounding.
    .tol = {0, 0},
};
