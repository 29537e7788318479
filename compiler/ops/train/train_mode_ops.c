// Ops behind the training-mode rewrites and gradients of the tensor ops (docs/training.md):
//   GatherGrad(dy, indices) -> dx of `data_shape`: the scatter-add transpose of Gather along
//     `axis`: dx[a, v, b] = sum over index positions k with indices[k] = v of dy[a, k, b]
//     (indices read as Gather reads them: negative from the end, clamped into [0, dim)), so
//     repeated indices accumulate. Lowered as a gather over v (each store to its own row).
//   DropoutMask(seed (1) i64, step (1) i64) -> mask of `shape`, dtype `dtype`: element i is
//     1 / (1 - ratio) when kept, else 0. Counter-based, so the interpreter and the generated
//     code draw the same mask bit for bit:
//       s = mix64(mix64(mix64(seed ^ 0x9e3779b97f4a7c15) ^ step) ^ salt)
//       kept_i = (mix64(s ^ i) >> 11) < round((1 - ratio) * 2^53)
//     with mix64 the SplitMix64 finalizer (LU_MIX64) and >> the logical shift.
//   RunningStatUpdate(running (C) STATE, batch stat (numel C)): running = running * momentum +
//     batch * unbias * (1 - momentum), in place (ONNX's momentum: PyTorch's is 1 - momentum;
//     unbias = n / (n - 1) for the variance, PyTorch's unbiased running variance).
#include <math.h>

#include "train_internal.h"

// ---- GatherGrad ----

static const kiln_attr_spec gather_attrs[] = {
    {"axis", KILN_ATTR_INT, false}, {"data_shape", KILN_ATTR_INTS, true}, {0}};

// The data shape and the normalized axis.
static bool gather_geom(const kiln_node *n, kiln_diag *d, kiln_shape *data, int *axis) {
  data->rank = kiln_attr_ints(n, "data_shape", data->dim, KILN_MAX_RANK);
  int64_t a = kiln_attr_int(n, "axis", 0);
  if (data->rank < 1) {
    kiln_op_error(d, n, "attrs.data_shape: expected 1 to %d dims", KILN_MAX_RANK);
    return false;
  }
  if (a < -data->rank || a >= data->rank) {
    kiln_op_error(d, n, "attrs.axis: %lld is outside [-%d, %d)", (long long)a, data->rank,
                  data->rank);
    return false;
  }
  *axis = (int)(a < 0 ? a + data->rank : a);
  return true;
}

static bool gather_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  if (!kiln_op_check_dtypes(g, n, 1, 1, KILN_DT(KILN_I32) | KILN_DT(KILN_I64), false, d))
    return false;
  kiln_shape data;
  int axis;
  if (!gather_geom(n, d, &data, &axis)) return false;
  const kiln_tensor *idx = kiln_in(g, n, 1);
  kiln_shape want = {.rank = 0};  // dy: data[:axis] + indices + data[axis+1:]
  for (int i = 0; i < axis; i++) want.dim[want.rank++] = data.dim[i];
  for (int i = 0; i < idx->shape.rank && want.rank < KILN_MAX_RANK; i++)
    want.dim[want.rank++] = idx->shape.dim[i];
  for (int i = axis + 1; i < data.rank && want.rank < KILN_MAX_RANK; i++)
    want.dim[want.rank++] = data.dim[i];
  if (!kiln_train_check_shape(g, n, d, 0, &want, "the Gather's output")) return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &data);
  return true;
}

// data viewed as (outer, dim, inner) around the axis; m index positions.
typedef struct gather_dims {
  int64_t outer, dim, inner, m;
} gather_dims;

static gather_dims gather_dims_of(const kiln_shape *data, int axis, const kiln_shape *idx) {
  gather_dims g = {.outer = 1, .dim = data->dim[axis], .inner = 1, .m = kiln_shape_numel(idx)};
  for (int i = 0; i < axis; i++) g.outer *= data->dim[i];
  for (int i = axis + 1; i < data->rank; i++) g.inner *= data->dim[i];
  return g;
}

static int64_t clamp_index(double v, int64_t dim) {
  int64_t k = kiln_saturate_i64(v);
  if (k < 0) k += dim;
  return k < 0 ? 0 : k >= dim ? dim - 1 : k;
}

static void gather_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_shape data;
  int axis;
  gather_geom(n, NULL, &data, &axis);
  gather_dims g = gather_dims_of(&data, axis, in[1].shape);
  for (int64_t i = 0; i < kiln_shape_numel(&data); i++) out->data[i] = 0;
  for (int64_t o = 0; o < g.outer; o++)
    for (int64_t k = 0; k < g.m; k++) {
      int64_t v = clamp_index(in[1].data[k], g.dim);
      for (int64_t r = 0; r < g.inner; r++)
        out->data[(o * g.dim + v) * g.inner + r] += in[0].data[(o * g.m + k) * g.inner + r];
    }
}

// for o, v: dx[o, v, :] = 0; for k with index k == v: dx[o, v, :] += dy[o, k, :]
static void gather_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *idx = kiln_lower_in(c, 1), *dx = kiln_lower_out(c, 0);
  kiln_shape data;
  int axis;
  gather_geom(c->node, NULL, &data, &axis);
  gather_dims g = gather_dims_of(&data, axis, &idx->shape);
  kiln_lb_comment(b, "GatherGrad %s: scatter-add into %s along axis %d", c->node->name,
                  kiln_describe(dx).text, axis);
  int o = kiln_lb_for_n(b, "o", g.outer), v = kiln_lb_for_n(b, "v", g.dim);
  int r = kiln_lb_for_n(b, "r", g.inner);
  kiln_lb_store(b, kiln_out_buf(c, 0),
                lx_madd(b, lx_madd(b, lx_var(b, o), g.dim, lx_var(b, v)), g.inner, lx_var(b, r)),
                lx_float(b, dx->dtype, 0));
  kiln_lb_end_for(b);
  int k = kiln_lb_for_n(b, "k", g.m);
  int at = kiln_lb_decl(b, "at", KILN_I64,
                        lx_cast(b, KILN_I64, lx_load(b, kiln_in_buf(c, 1), lx_var(b, k))));
  kiln_lexpr *wrapped = lx_select(b, lx_bin(b, LB_LT, lx_var(b, at), lx_int(b, 0)),
                                  lx_add(b, lx_var(b, at), lx_int(b, g.dim)), lx_var(b, at));
  kiln_lb_assign(b, at,
                 lx_bin(b, LB_MIN, lx_bin(b, LB_MAX, wrapped, lx_int(b, 0)), lx_int(b, g.dim - 1)));
  kiln_lb_if(b, lx_bin(b, LB_EQ, lx_var(b, at), lx_var(b, v)));
  r = kiln_lb_for_n(b, "r", g.inner);
  kiln_lexpr *to = lx_madd(b, lx_madd(b, lx_var(b, o), g.dim, lx_var(b, v)), g.inner, lx_var(b, r));
  kiln_lexpr *from = lx_madd(b, lx_madd(b, lx_var(b, o), g.m, lx_var(b, k)), g.inner, lx_var(b, r));
  kiln_lexpr *sum =
      lx_bin(b, LB_ADD, lx_load(b, kiln_out_buf(c, 0), to), lx_load(b, kiln_in_buf(c, 0), from));
  to = lx_madd(b, lx_madd(b, lx_var(b, o), g.dim, lx_var(b, v)), g.inner, lx_var(b, r));
  kiln_lb_store(b, kiln_out_buf(c, 0), to, sum);
  kiln_lb_end_for(b);  // r
  kiln_lb_end_if(b);
  kiln_lb_end_for(b);  // k
  kiln_lb_end_for(b);  // v
  kiln_lb_end_for(b);  // o
}

const kiln_op_def kiln_op_GatherGrad = {
    .name = "GatherGrad",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = gather_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = gather_infer,
    .eval = gather_eval,
    .lower = gather_lower,
    .flops = kiln_no_flops,
    .tol = {1e-6, 1e-6},  // sums of the repeated rows, in index order
};

// ---- DropoutMask ----

static const kiln_attr_spec mask_attrs[] = {{"shape", KILN_ATTR_INTS, true},
                                            {"ratio", KILN_ATTR_FLOAT, true},
                                            {"salt", KILN_ATTR_INT, false},
                                            {"dtype", KILN_ATTR_STRING, false},
                                            {0}};

// Kept when the top 53 bits of the hash are below this.
static int64_t keep_threshold(const kiln_node *n) {
  return (int64_t)llround((1.0 - kiln_attr_float(n, "ratio", 0)) * 0x1p53);
}

static bool mask_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_train_check_scalar(g, n, d, 0, KILN_I64, "dropout seed") ||
      !kiln_train_check_scalar(g, n, d, 1, KILN_I64, "step counter"))
    return false;
  double ratio = kiln_attr_float(n, "ratio", 0);
  if (!(ratio >= 0 && ratio < 1)) {
    kiln_op_error(d, n, "attrs.ratio: expected a number in [0, 1), got %g", ratio);
    return false;
  }
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
  kiln_op_set_output(g, n, 0, t, &s);
  return true;
}

static void mask_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  uint64_t seed = (uint64_t)(int64_t)in[0].data[0], step = (uint64_t)(int64_t)in[1].data[0];
  uint64_t s = kiln_train_stream_key(seed, step, (uint64_t)kiln_attr_int(n, "salt", 0));
  int64_t threshold = keep_threshold(n);
  double scale = 1.0 / (1.0 - kiln_attr_float(n, "ratio", 0));
  for (int64_t i = 0; i < kiln_shape_numel(out->shape); i++)
    out->data[i] = (int64_t)(kiln_mix64(s ^ (uint64_t)i) >> 11) < threshold ? scale : 0.0;
}

static void mask_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *m = kiln_lower_out(c, 0);
  const kiln_node *n = c->node;
  double ratio = kiln_attr_float(n, "ratio", 0);
  kiln_lb_comment(b, "DropoutMask %s: %s, ratio %g (mix64 of seed, step, salt, i)", n->name,
                  kiln_describe(m).text, ratio);
  int sv = kiln_lower_train_stream_key(c);
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&m->shape));
  kiln_lexpr *h = lx_unary(b, LU_MIX64, lx_bin(b, LB_XOR, lx_var(b, sv), lx_var(b, i)));
  kiln_lexpr *kept =
      lx_bin(b, LB_LT, lx_bin(b, LB_SHR, h, lx_int(b, 11)), lx_int(b, keep_threshold(n)));
  kiln_lexpr *v =
      lx_select(b, kept, lx_float(b, m->dtype, 1.0 / (1.0 - ratio)), lx_float(b, m->dtype, 0));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i), v);
  kiln_lb_end_for(b);
}

const kiln_op_def kiln_op_DropoutMask = {
    .name = "DropoutMask",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = mask_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = mask_infer,
    .eval = mask_eval,
    .lower = mask_lower,
    .flops = kiln_output_numel_flops,
    // Exact: integer hashing; the scale 1 / (1 - ratio) is rounded once to the dtype.
    .tol = {0, 0},
};

// ---- RunningStatUpdate ----

static const kiln_attr_spec stat_attrs[] = {
    {"momentum", KILN_ATTR_FLOAT, true}, {"unbias", KILN_ATTR_FLOAT, false}, {0}};

static bool stat_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 2, d)) return false;
  const kiln_tensor *run = kiln_in(g, n, 0), *batch = kiln_in(g, n, 1);
  if (kiln_shape_numel(&run->shape) != kiln_shape_numel(&batch->shape)) {
    kiln_op_error(d, n, "inputs[1] (%s): expected %lld values like %s, got %s", batch->name,
                  (long long)kiln_shape_numel(&run->shape), kiln_describe(run).text,
                  kiln_shape_text(&batch->shape).text);
    return false;
  }
  double m = kiln_attr_float(n, "momentum", 0.9);
  if (!(m >= 0 && m <= 1)) {
    kiln_op_error(d, n, "attrs.momentum: expected a number in [0, 1], got %g", m);
    return false;
  }
  return true;
}

static void stat_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)out;
  double m = kiln_attr_float(n, "momentum", 0.9), u = kiln_attr_float(n, "unbias", 1);
  for (int64_t i = 0; i < kiln_shape_numel(in[0].shape); i++)
    in[0].data[i] = in[0].data[i] * m + in[1].data[i] * u * (1 - m);
}

static void stat_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *run = kiln_lower_in(c, 0);
  kiln_dtype t = run->dtype;
  double m = kiln_attr_float(c->node, "momentum", 0.9), u = kiln_attr_float(c->node, "unbias", 1);
  kiln_lb_comment(b, "RunningStatUpdate %s: %s = %s * %g + batch * %g", c->node->name, run->name,
                  run->name, m, u * (1 - m));
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&run->shape));
  kiln_lexpr *old =
      lx_bin(b, LB_MUL, lx_load(b, kiln_in_buf(c, 0), lx_var(b, i)), lx_float(b, t, m));
  kiln_lexpr *add =
      lx_bin(b, LB_MUL, lx_load(b, kiln_in_buf(c, 1), lx_var(b, i)), lx_float(b, t, u * (1 - m)));
  kiln_lb_store(b, kiln_in_buf(c, 0), lx_var(b, i), lx_bin(b, LB_ADD, old, add));
  kiln_lb_end_for(b);
}

const kiln_op_def kiln_op_RunningStatUpdate = {
    .name = "RunningStatUpdate",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 0,
    .max_outputs = 0,
    .attrs = stat_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = stat_infer,
    .eval = stat_eval,
    .lower = stat_lower,
    .flops = kiln_no_flops,
    .tol = {1e-6, 1e-6},  // two products and a sum in f32
    .writes_inputs = 1u,
};
