// Resampling shared by Resize and Upsample: nearest and N-linear interpolation with ONNX's
// coordinate transformations. Coordinates are computed in double with the same operations in
// the reference kernel and in the loop IR, so both pick the same source positions and weights;
// linear sums run in double in both, in the same order, and are rounded once to the output dtype.
#include <math.h>

#include "resample.h"

// (tf_half_pixel_for_nn maps o to o + 0.5 even at scale 1, which some rounding modes move.)
bool kiln_resample_identity_axis(const kiln_resample *r, int axis) {
  return r->in.dim[axis] == r->out.dim[axis] && r->scale[axis] == 1.0 &&
         r->coord != KILN_RS_TF_HALF_PIXEL_FOR_NN;
}

static double coord(const kiln_resample *r, int axis, int64_t o) {
  double in = (double)r->in.dim[axis], out = (double)r->out.dim[axis], s = r->scale[axis];
  switch (r->coord) {
    case KILN_RS_HALF_PIXEL: return ((double)o + 0.5) / s - 0.5;
    case KILN_RS_PYTORCH_HALF_PIXEL: return out > 1 ? ((double)o + 0.5) / s - 0.5 : 0.0;
    case KILN_RS_ALIGN_CORNERS: return out > 1 ? (double)o * (in - 1) / (out - 1) : 0.0;
    case KILN_RS_TF_HALF_PIXEL_FOR_NN: return ((double)o + 0.5) / s;
    default: return (double)o / s;
  }
}

static int64_t clamp_index(double v, int64_t in) {
  if (v < 0) return 0;
  if (v > (double)(in - 1)) return in - 1;
  return (int64_t)v;
}

static double round_nearest(kiln_rs_round mode, double x) {
  switch (mode) {
    case KILN_RS_ROUND_PREFER_FLOOR: return ceil(x - 0.5);
    case KILN_RS_ROUND_PREFER_CEIL: return floor(x + 0.5);
    case KILN_RS_FLOOR: return floor(x);
    default: return ceil(x);
  }
}

// The linear axes (those that are not identities), in order; returns their count.
static int linear_axes(const kiln_resample *r, int *axes) {
  int k = 0;
  for (int i = 0; i < r->in.rank; i++)
    if (!kiln_resample_identity_axis(r, i)) axes[k++] = i;
  return k;
}

static void eval_nearest(const kiln_resample *r, const double *x, double *y) {
  int64_t idx[KILN_MAX_RANK], strides[KILN_MAX_RANK];
  kiln_contiguous_strides(&r->in, strides);
  for (int64_t flat = 0; flat < kiln_shape_numel(&r->out); flat++) {
    kiln_unravel(flat, &r->out, idx);
    for (int i = 0; i < r->in.rank; i++)
      if (!kiln_resample_identity_axis(r, i))
        idx[i] = clamp_index(round_nearest(r->round, coord(r, i, idx[i])), r->in.dim[i]);
    y[flat] = x[kiln_dot_index(r->in.rank, idx, strides)];
  }
}

// y = sum over the 2^k corners of the product of per-axis weights (1 - lambda at the lower
// neighbour floor(x), lambda at the upper one floor(x) + 1; both clamped into the input) times x.
static void eval_linear(const kiln_resample *r, const double *x, double *y) {
  int axes[KILN_MAX_RANK], k = linear_axes(r, axes);
  int64_t idx[KILN_MAX_RANK], src[KILN_MAX_RANK], lo[KILN_MAX_RANK], hi[KILN_MAX_RANK];
  int64_t strides[KILN_MAX_RANK];
  double lambda[KILN_MAX_RANK];
  kiln_contiguous_strides(&r->in, strides);
  for (int64_t flat = 0; flat < kiln_shape_numel(&r->out); flat++) {
    kiln_unravel(flat, &r->out, idx);
    for (int t = 0; t < k; t++) {
      double xo = coord(r, axes[t], idx[axes[t]]), fl = floor(xo);
      lambda[t] = xo - fl;
      lo[t] = clamp_index(fl, r->in.dim[axes[t]]);
      hi[t] = clamp_index(fl + 1, r->in.dim[axes[t]]);
    }
    double sum = 0;
    for (int corner = 0; corner < (1 << k); corner++) {
      double w = 1;
      for (int i = 0; i < r->in.rank; i++) src[i] = idx[i];
      for (int t = 0; t < k; t++) {
        bool upper = (corner >> (k - 1 - t)) & 1;
        w = t == 0 ? (upper ? lambda[t] : 1 - lambda[t]) : w * (upper ? lambda[t] : 1 - lambda[t]);
        src[axes[t]] = upper ? hi[t] : lo[t];
      }
      double term = w * x[kiln_dot_index(r->in.rank, src, strides)];
      sum = corner == 0 ? term : sum + term;
    }
    y[flat] = sum;
  }
}

void kiln_resample_eval(const kiln_resample *r, const double *x, double *y) {
  if (r->mode == KILN_RS_NEAREST)
    eval_nearest(r, x, y);
  else
    eval_linear(r, x, y);
}

// ---- Lowering ----

// x_original (f64) for the loop variable o along axis; the same operations as coord().
static kiln_lexpr *lower_coord(kiln_lb *b, const kiln_resample *r, int axis, int o) {
  double in = (double)r->in.dim[axis], out = (double)r->out.dim[axis], s = r->scale[axis];
  kiln_lexpr *of = lx_cast(b, KILN_F64, lx_var(b, o));
  kiln_lexpr *half = lx_bin(b, LB_SUB,
                            lx_bin(b, LB_DIV, lx_bin(b, LB_ADD, of, lx_float(b, KILN_F64, 0.5)),
                                   lx_float(b, KILN_F64, s)),
                            lx_float(b, KILN_F64, 0.5));
  switch (r->coord) {
    case KILN_RS_HALF_PIXEL: return half;
    case KILN_RS_PYTORCH_HALF_PIXEL: return out > 1 ? half : lx_float(b, KILN_F64, 0);
    case KILN_RS_ALIGN_CORNERS:
      if (out <= 1) return lx_float(b, KILN_F64, 0);
      return lx_bin(b, LB_DIV, lx_bin(b, LB_MUL, of, lx_float(b, KILN_F64, in - 1)),
                    lx_float(b, KILN_F64, out - 1));
    case KILN_RS_TF_HALF_PIXEL_FOR_NN:
      return lx_bin(
          b, LB_DIV,
          lx_bin(b, LB_ADD, lx_cast(b, KILN_F64, lx_var(b, o)), lx_float(b, KILN_F64, 0.5)),
          lx_float(b, KILN_F64, s));
    default: return lx_bin(b, LB_DIV, of, lx_float(b, KILN_F64, s));
  }
}

// clamp((i64)v, 0, in - 1) for an f64 expression v holding an integral value.
static kiln_lexpr *lower_clamp(kiln_lb *b, kiln_lexpr *v, int64_t in) {
  kiln_lexpr *lo = lx_bin(b, LB_MAX, v, lx_float(b, KILN_F64, 0));
  kiln_lexpr *both = lx_bin(b, LB_MIN, lo, lx_float(b, KILN_F64, (double)(in - 1)));
  return lx_cast(b, KILN_I64, both);
}

static kiln_lexpr *lower_round(kiln_lb *b, kiln_rs_round mode, kiln_lexpr *x) {
  switch (mode) {
    case KILN_RS_ROUND_PREFER_FLOOR:
      return lx_unary(b, LU_CEIL, lx_bin(b, LB_SUB, x, lx_float(b, KILN_F64, 0.5)));
    case KILN_RS_ROUND_PREFER_CEIL:
      return lx_unary(b, LU_FLOOR, lx_bin(b, LB_ADD, x, lx_float(b, KILN_F64, 0.5)));
    case KILN_RS_FLOOR: return lx_unary(b, LU_FLOOR, x);
    default: return lx_unary(b, LU_CEIL, x);
  }
}

static int open_loop(kiln_lb *b, const kiln_resample *r, int axis) {
  char name[16];
  snprintf(name, sizeof name, "o%d", axis);
  return kiln_lb_for_n(b, name, r->out.dim[axis]);
}

// for each output position: src[i] = clamp(round(x_original)) per resized axis (a local declared
// as soon as its loop opens), y = x[src].
static void lower_nearest(const kiln_lower_ctx *c, const kiln_resample *r) {
  kiln_lb *b = c->b;
  int rank = r->in.rank, vars[KILN_MAX_RANK], src[KILN_MAX_RANK];
  int64_t xs[KILN_MAX_RANK], ys[KILN_MAX_RANK];
  kiln_contiguous_strides(&r->in, xs);
  kiln_contiguous_strides(&r->out, ys);
  for (int i = 0; i < rank; i++) {
    vars[i] = src[i] = open_loop(b, r, i);
    if (kiln_resample_identity_axis(r, i)) continue;
    char name[16];
    snprintf(name, sizeof name, "s%d", i);
    kiln_lexpr *at =
        lower_clamp(b, lower_round(b, r->round, lower_coord(b, r, i, vars[i])), r->in.dim[i]);
    src[i] = kiln_lb_decl(b, name, KILN_I64, at);
  }
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_lower_index(b, rank, vars, ys),
                lx_load(b, kiln_in_buf(c, 0), kiln_lower_index(b, rank, src, xs)));
  for (int i = 0; i < rank; i++) kiln_lb_end_for(b);
}

// Per linear axis t: locals lo (i64), hi (i64), lambda (f64), declared when its loop opens.
typedef struct linear_vars {
  int lo[KILN_MAX_RANK], hi[KILN_MAX_RANK], lambda[KILN_MAX_RANK];
} linear_vars;

static void declare_neighbours(kiln_lb *b, const kiln_resample *r, int axis, int o, int t,
                               linear_vars *v) {
  char name[16];
  snprintf(name, sizeof name, "x%d", axis);
  int xo = kiln_lb_decl(b, name, KILN_F64, lower_coord(b, r, axis, o));
  snprintf(name, sizeof name, "f%d", axis);
  int fl = kiln_lb_decl(b, name, KILN_F64, lx_unary(b, LU_FLOOR, lx_var(b, xo)));
  snprintf(name, sizeof name, "l%d", axis);
  v->lambda[t] = kiln_lb_decl(b, name, KILN_F64, lx_bin(b, LB_SUB, lx_var(b, xo), lx_var(b, fl)));
  snprintf(name, sizeof name, "lo%d", axis);
  v->lo[t] = kiln_lb_decl(b, name, KILN_I64, lower_clamp(b, lx_var(b, fl), r->in.dim[axis]));
  snprintf(name, sizeof name, "hi%d", axis);
  kiln_lexpr *up = lx_bin(b, LB_ADD, lx_var(b, fl), lx_float(b, KILN_F64, 1));
  v->hi[t] = kiln_lb_decl(b, name, KILN_I64, lower_clamp(b, up, r->in.dim[axis]));
}

// One corner's term: weight product (same order as eval_linear) times x at the corner.
static kiln_lexpr *corner_term(const kiln_lower_ctx *c, const kiln_resample *r, const int *vars,
                               const int *axes, int k, const linear_vars *v, int corner) {
  kiln_lb *b = c->b;
  int src[KILN_MAX_RANK];
  int64_t xs[KILN_MAX_RANK];
  kiln_contiguous_strides(&r->in, xs);
  for (int i = 0; i < r->in.rank; i++) src[i] = vars[i];
  kiln_lexpr *w = NULL;
  for (int t = 0; t < k; t++) {
    bool upper = (corner >> (k - 1 - t)) & 1;
    kiln_lexpr *f = upper ? lx_var(b, v->lambda[t])
                          : lx_bin(b, LB_SUB, lx_float(b, KILN_F64, 1), lx_var(b, v->lambda[t]));
    w = t == 0 ? f : lx_bin(b, LB_MUL, w, f);
    src[axes[t]] = upper ? v->hi[t] : v->lo[t];
  }
  kiln_lexpr *xv =
      lx_cast(b, KILN_F64, lx_load(b, kiln_in_buf(c, 0), kiln_lower_index(b, r->in.rank, src, xs)));
  return w ? lx_bin(b, LB_MUL, w, xv) : xv;  // no linear axis: a copy
}

static void lower_linear(const kiln_lower_ctx *c, const kiln_resample *r) {
  kiln_lb *b = c->b;
  const kiln_tensor *y = kiln_lower_out(c, 0);
  int rank = r->in.rank, vars[KILN_MAX_RANK], axes[KILN_MAX_RANK], k = linear_axes(r, axes);
  int64_t ys[KILN_MAX_RANK];
  linear_vars v;
  kiln_contiguous_strides(&r->out, ys);
  for (int i = 0, t = 0; i < rank; i++) {
    vars[i] = open_loop(b, r, i);
    if (t < k && axes[t] == i) declare_neighbours(b, r, i, vars[i], t++, &v);
  }
  kiln_lexpr *sum = NULL;
  for (int corner = 0; corner < (1 << k); corner++) {
    kiln_lexpr *term = corner_term(c, r, vars, axes, k, &v, corner);
    sum = corner == 0 ? term : lx_bin(b, LB_ADD, sum, term);
  }
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_lower_index(b, rank, vars, ys),
                lx_cast(b, y->dtype, sum));
  for (int i = 0; i < rank; i++) kiln_lb_end_for(b);
}

void kiln_resample_lower(const kiln_lower_ctx *c, const kiln_resample *r) {
  kiln_lb_comment(c->b, "%s %s (%s): %s -> %s", kiln_op_get(c->node->op)->name, c->node->name,
                  r->mode == KILN_RS_NEAREST ? "nearest" : "linear",
                  kiln_describe(kiln_lower_in(c, 0)).text,
                  kiln_describe(kiln_lower_out(c, 0)).text);
  if (r->mode == KILN_RS_NEAREST)
    lower_nearest(c, r);
  else
    lower_linear(c, r);
}

int64_t kiln_resample_flops(const kiln_resample *r) {
  if (r->mode == KILN_RS_NEAREST) return 0;
  int axes[KILN_MAX_RANK], k = linear_axes(r, axes);
  return kiln_shape_numel(&r->out) * ((int64_t)3 << k);  // per corner: weight, multiply, add
}

// ---- The op parts Resize and Upsample share ----

bool kiln_resample_node_infer(kiln_graph *g, kiln_node *n, kiln_diag *d,
                              kiln_resample_plan_fn plan) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  if (!x) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  kiln_resample r;
  if (!plan(g, n, d, &r)) return false;
  if (r.mode == KILN_RS_LINEAR && !kiln_dtype_is_float(x->dtype)) {
    kiln_op_error(d, n, "inputs[0] (%s): mode \"linear\" needs dtype f32 or f64, got %s", x->name,
                  kiln_dtype_name(x->dtype));
    return false;
  }
  kiln_op_set_output(g, n, 0, x->dtype, &r.out);  // out: r.out, floor(in * scale) or sizes
  return true;
}

void kiln_resample_node_lower(const kiln_lower_ctx *c, kiln_resample_plan_fn plan) {
  kiln_resample r;
  plan(c->g, c->node, NULL, &r);
  kiln_resample_lower(c, &r);
}

int64_t kiln_resample_node_flops(const kiln_graph *g, const kiln_node *n,
                                 kiln_resample_plan_fn plan) {
  kiln_resample r;
  return plan(g, n, NULL, &r) ? kiln_resample_flops(&r) : 0;
}
