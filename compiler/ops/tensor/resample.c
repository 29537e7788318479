// Resampling shared by Resize and Upsample: nearest, N-linear and N-cubic interpolation with
// ONNX's coordinate transformations (resample.h). Coordinates are computed in double with the same
// operations in the reference kernel and in the loop IR, so both pick the same source positions and
// weights; linear sums run in double in both, in the same order, and are rounded once to the output
// dtype.
#include <math.h>

#include "resample.h"

// (tf_half_pixel_for_nn maps o to o + 0.5 even at scale 1, which some rounding modes move;
// tf_crop_and_resize is the identity only for the whole roi.)
bool kiln_resample_identity_axis(const kiln_resample *r, int axis) {
  bool whole_roi = r->roi_start[axis] == 0 && r->roi_end[axis] == 1;
  return r->in.dim[axis] == r->out.dim[axis] && r->scale[axis] == 1.0 &&
         r->coord != KILN_RS_TF_HALF_PIXEL_FOR_NN &&
         (r->coord != KILN_RS_TF_CROP_AND_RESIZE || whole_roi);
}

// ONNX's output length along axis (in * scale, unrounded, when scales were given).
static double out_len(const kiln_resample *r, int axis) {
  return r->len[axis] > 0 ? r->len[axis] : (double)r->out.dim[axis];
}

static double coord(const kiln_resample *r, int axis, int64_t o) {
  double in = (double)r->in.dim[axis], len = out_len(r, axis), s = r->scale[axis];
  bool many = r->out.dim[axis] > 1;
  double crop = (r->roi_end[axis] - r->roi_start[axis]) * (in - 1);
  switch (r->coord) {
    case KILN_RS_HALF_PIXEL: return ((double)o + 0.5) / s - 0.5;
    case KILN_RS_PYTORCH_HALF_PIXEL: return many ? ((double)o + 0.5) / s - 0.5 : 0.0;
    case KILN_RS_ALIGN_CORNERS: return many ? (double)o * (in - 1) / (len - 1) : 0.0;
    case KILN_RS_TF_HALF_PIXEL_FOR_NN: return ((double)o + 0.5) / s;
    case KILN_RS_TF_CROP_AND_RESIZE:
      return r->roi_start[axis] * (in - 1) + (many ? (double)o * crop / (len - 1) : crop / 2);
    default: return (double)o / s;
  }
}

static bool outside(const kiln_resample *r, int axis, double x) {
  return r->coord == KILN_RS_TF_CROP_AND_RESIZE && (x < 0 || x > (double)(r->in.dim[axis] - 1));
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

// The resized axes (those that are not identities), in order; returns their count.
static int resized_axes(const kiln_resample *r, int *axes) {
  int k = 0;
  for (int i = 0; i < r->in.rank; i++)
    if (!kiln_resample_identity_axis(r, i)) axes[k++] = i;
  return k;
}

static int taps_of(const kiln_resample *r) { return r->mode == KILN_RS_CUBIC ? 4 : 2; }

static void eval_nearest(const kiln_resample *r, const double *x, double *y) {
  int64_t idx[KILN_MAX_RANK], strides[KILN_MAX_RANK];
  kiln_contiguous_strides(&r->in, strides);
  for (int64_t flat = 0; flat < kiln_shape_numel(&r->out); flat++) {
    kiln_unravel(flat, &r->out, idx);
    bool out_of_roi = false;
    for (int i = 0; i < r->in.rank; i++) {
      if (kiln_resample_identity_axis(r, i)) continue;
      double xo = coord(r, i, idx[i]);
      out_of_roi |= outside(r, i, xo);
      idx[i] = clamp_index(round_nearest(r->round, xo), r->in.dim[i]);
    }
    y[flat] = out_of_roi ? r->extrapolation : x[kiln_dot_index(r->in.rank, idx, strides)];
  }
}

// Keys' cubic kernel near (s <= 1) and far (1 < s < 2) branches, as the lowering computes them.
static double cubic_near(double a, double s) { return ((a + 2) * s - (a + 3)) * s * s + 1; }
static double cubic_far(double a, double s) { return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a; }

// One resized axis at one output position: the input positions read and their weights.
typedef struct rs_taps {
  int64_t at[4];
  double w[4];
} rs_taps;

static void axis_taps(const kiln_resample *r, int axis, double xo, rs_taps *t) {
  double fl = floor(xo), l = xo - fl;
  int64_t in = r->in.dim[axis];
  if (r->mode == KILN_RS_LINEAR) {
    t->at[0] = clamp_index(fl, in), t->at[1] = clamp_index(fl + 1, in);
    t->w[0] = 1 - l, t->w[1] = l;
    return;
  }
  double a = r->cubic_a, sum = 0;
  t->w[0] = cubic_far(a, l + 1), t->w[1] = cubic_near(a, l);
  t->w[2] = cubic_near(a, 1 - l), t->w[3] = cubic_far(a, 2 - l);
  for (int j = 0; j < 4; j++) {
    double raw = fl - 1 + j;
    t->at[j] = clamp_index(raw, in);
    if (r->exclude_outside && (raw < 0 || raw > (double)(in - 1))) t->w[j] = 0;
    sum = j == 0 ? t->w[j] : sum + t->w[j];
  }
  for (int j = 0; r->exclude_outside && j < 4; j++) t->w[j] = t->w[j] / sum;
}

// y = sum over the n^k tap combinations (n taps on each of the k resized axes) of the product of
// the per-axis weights times x there; extrapolation_value where an axis is outside the roi.
static void eval_interpolate(const kiln_resample *r, const double *x, double *y) {
  int axes[KILN_MAX_RANK], k = resized_axes(r, axes), n = taps_of(r);
  int64_t idx[KILN_MAX_RANK], src[KILN_MAX_RANK], strides[KILN_MAX_RANK], combos = 1;
  rs_taps taps[KILN_MAX_RANK];
  for (int t = 0; t < k; t++) combos *= n;
  kiln_contiguous_strides(&r->in, strides);
  for (int64_t flat = 0; flat < kiln_shape_numel(&r->out); flat++) {
    kiln_unravel(flat, &r->out, idx);
    bool out_of_roi = false;
    for (int t = 0; t < k; t++) {
      double xo = coord(r, axes[t], idx[axes[t]]);
      out_of_roi |= outside(r, axes[t], xo);
      axis_taps(r, axes[t], xo, &taps[t]);
    }
    double sum = 0;
    for (int64_t combo = 0; combo < combos; combo++) {
      double w = 1;
      for (int i = 0; i < r->in.rank; i++) src[i] = idx[i];
      for (int t = 0, rest = (int)combo; t < k; t++) {
        int64_t place = 1;
        for (int u = t + 1; u < k; u++) place *= n;
        int j = (int)(rest / place);
        rest -= (int)(j * place);
        w = t == 0 ? taps[t].w[j] : w * taps[t].w[j];
        src[axes[t]] = taps[t].at[j];
      }
      double term = w * x[kiln_dot_index(r->in.rank, src, strides)];
      sum = combo == 0 ? term : sum + term;
    }
    y[flat] = out_of_roi ? r->extrapolation : sum;
  }
}

void kiln_resample_eval(const kiln_resample *r, const double *x, double *y) {
  if (r->mode == KILN_RS_NEAREST)
    eval_nearest(r, x, y);
  else
    eval_interpolate(r, x, y);
}

// ---- Lowering ----

static kiln_lexpr *f64(kiln_lb *b, double v) { return lx_float(b, KILN_F64, v); }

// x_original (f64) for the loop variable o along axis; the same operations as coord().
static kiln_lexpr *lower_coord(kiln_lb *b, const kiln_resample *r, int axis, int o) {
  double in = (double)r->in.dim[axis], len = out_len(r, axis), s = r->scale[axis];
  double crop = (r->roi_end[axis] - r->roi_start[axis]) * (in - 1);
  bool many = r->out.dim[axis] > 1;
  kiln_lexpr *of = lx_cast(b, KILN_F64, lx_var(b, o));
  kiln_lexpr *half = lx_bin(
      b, LB_SUB, lx_bin(b, LB_DIV, lx_bin(b, LB_ADD, of, f64(b, 0.5)), f64(b, s)), f64(b, 0.5));
  switch (r->coord) {
    case KILN_RS_HALF_PIXEL: return half;
    case KILN_RS_PYTORCH_HALF_PIXEL: return many ? half : f64(b, 0);
    case KILN_RS_ALIGN_CORNERS:
      if (!many) return f64(b, 0);
      return lx_bin(b, LB_DIV, lx_bin(b, LB_MUL, of, f64(b, in - 1)), f64(b, len - 1));
    case KILN_RS_TF_HALF_PIXEL_FOR_NN:
      return lx_bin(b, LB_DIV, lx_bin(b, LB_ADD, lx_cast(b, KILN_F64, lx_var(b, o)), f64(b, 0.5)),
                    f64(b, s));
    case KILN_RS_TF_CROP_AND_RESIZE: {
      kiln_lexpr *part =
          many ? lx_bin(b, LB_DIV, lx_bin(b, LB_MUL, of, f64(b, crop)), f64(b, len - 1))
               : f64(b, crop / 2);
      return lx_bin(b, LB_ADD, f64(b, r->roi_start[axis] * (in - 1)), part);
    }
    default: return lx_bin(b, LB_DIV, of, f64(b, s));
  }
}

// clamp((i64)v, 0, in - 1) for an f64 expression v holding an integral value.
static kiln_lexpr *lower_clamp(kiln_lb *b, kiln_lexpr *v, int64_t in) {
  kiln_lexpr *lo = lx_bin(b, LB_MAX, v, f64(b, 0));
  kiln_lexpr *both = lx_bin(b, LB_MIN, lo, f64(b, (double)(in - 1)));
  return lx_cast(b, KILN_I64, both);
}

// 0 <= v && v <= in - 1 for an f64 value given twice (v, v_again: loop-IR expressions are trees,
// never shared).
static kiln_lexpr *lower_inside(kiln_lb *b, kiln_lexpr *v, kiln_lexpr *v_again, int64_t in) {
  return lx_bin(b, LB_AND, lx_bin(b, LB_LE, f64(b, 0), v),
                lx_bin(b, LB_LE, v_again, f64(b, (double)(in - 1))));
}

static kiln_lexpr *lower_round(kiln_lb *b, kiln_rs_round mode, kiln_lexpr *x) {
  switch (mode) {
    case KILN_RS_ROUND_PREFER_FLOOR: return lx_unary(b, LU_CEIL, lx_bin(b, LB_SUB, x, f64(b, 0.5)));
    case KILN_RS_ROUND_PREFER_CEIL: return lx_unary(b, LU_FLOOR, lx_bin(b, LB_ADD, x, f64(b, 0.5)));
    case KILN_RS_FLOOR: return lx_unary(b, LU_FLOOR, x);
    default: return lx_unary(b, LU_CEIL, x);
  }
}

static int open_loop(kiln_lb *b, const kiln_resample *r, int axis) {
  char name[16];
  snprintf(name, sizeof name, "o%d", axis);
  return kiln_lb_for_n(b, name, r->out.dim[axis]);
}

// value, or extrapolation_value (as y's dtype) when `inside` (NULL: always) is false.
static kiln_lexpr *lower_roi_select(const kiln_lower_ctx *c, const kiln_resample *r,
                                    kiln_lexpr *inside, kiln_lexpr *value) {
  if (!inside) return value;
  return lx_select(c->b, inside, value,
                   lx_float(c->b, kiln_lower_out(c, 0)->dtype, r->extrapolation));
}

static kiln_lexpr *and_inside(kiln_lb *b, kiln_lexpr *all, kiln_lexpr *one) {
  return all ? lx_bin(b, LB_AND, all, one) : one;
}

// for each output position: src[i] = clamp(round(x_original)) per resized axis (a local declared
// as soon as its loop opens), y = x[src].
static void lower_nearest(const kiln_lower_ctx *c, const kiln_resample *r) {
  kiln_lb *b = c->b;
  int rank = r->in.rank, vars[KILN_MAX_RANK], src[KILN_MAX_RANK];
  int64_t xs[KILN_MAX_RANK], ys[KILN_MAX_RANK];
  kiln_lexpr *inside = NULL;
  kiln_contiguous_strides(&r->in, xs);
  kiln_contiguous_strides(&r->out, ys);
  for (int i = 0; i < rank; i++) {
    vars[i] = src[i] = open_loop(b, r, i);
    if (kiln_resample_identity_axis(r, i)) continue;
    char name[16];
    snprintf(name, sizeof name, "x%d", i);
    int xo = kiln_lb_decl(b, name, KILN_F64, lower_coord(b, r, i, vars[i]));
    if (r->coord == KILN_RS_TF_CROP_AND_RESIZE)
      inside = and_inside(b, inside, lower_inside(b, lx_var(b, xo), lx_var(b, xo), r->in.dim[i]));
    snprintf(name, sizeof name, "s%d", i);
    kiln_lexpr *at = lower_clamp(b, lower_round(b, r->round, lx_var(b, xo)), r->in.dim[i]);
    src[i] = kiln_lb_decl(b, name, KILN_I64, at);
  }
  kiln_lexpr *v = lx_load(b, kiln_in_buf(c, 0), kiln_lower_index(b, rank, src, xs));
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_lower_index(b, rank, vars, ys),
                lower_roi_select(c, r, inside, v));
  for (int i = 0; i < rank; i++) kiln_lb_end_for(b);
}

// Per resized axis t: locals at[t][j] (i64) and w[t][j] (f64) for each tap j, declared when its
// loop opens; inside: the roi condition so far (tf_crop_and_resize).
typedef struct tap_vars {
  int at[KILN_MAX_RANK][4], w[KILN_MAX_RANK][4];
  kiln_lexpr *inside;
} tap_vars;

// Tap j's weight from the fraction l (the same operations as axis_taps).
static kiln_lexpr *lower_weight(kiln_lb *b, const kiln_resample *r, int l, int j) {
  kiln_lexpr *lv = lx_var(b, l);
  if (r->mode == KILN_RS_LINEAR) return j ? lv : lx_bin(b, LB_SUB, f64(b, 1), lv);
  double a = r->cubic_a;
  kiln_lexpr *s = j == 0   ? lx_bin(b, LB_ADD, lv, f64(b, 1))
                  : j == 1 ? lv
                           : lx_bin(b, LB_SUB, f64(b, j == 2 ? 1 : 2), lv);
  int sv = kiln_lb_decl(b, "s", KILN_F64, s);
  kiln_lexpr *S = lx_var(b, sv);
  if (j == 1 || j == 2) {  // ((a + 2) * s - (a + 3)) * s * s + 1
    kiln_lexpr *p = lx_bin(b, LB_SUB, lx_bin(b, LB_MUL, f64(b, a + 2), S), f64(b, a + 3));
    p = lx_bin(b, LB_MUL, lx_bin(b, LB_MUL, p, lx_var(b, sv)), lx_var(b, sv));
    return lx_bin(b, LB_ADD, p, f64(b, 1));
  }
  // ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
  kiln_lexpr *p = lx_bin(b, LB_SUB, lx_bin(b, LB_MUL, f64(b, a), S), f64(b, 5 * a));
  p = lx_bin(b, LB_ADD, lx_bin(b, LB_MUL, p, lx_var(b, sv)), f64(b, 8 * a));
  return lx_bin(b, LB_SUB, lx_bin(b, LB_MUL, p, lx_var(b, sv)), f64(b, 4 * a));
}

// With exclude_outside: weights of taps outside the input become 0, then all are divided by
// their sum (the order of axis_taps).
static void lower_exclude_outside(kiln_lb *b, const kiln_resample *r, int axis, int fl, int t,
                                  tap_vars *v) {
  kiln_lexpr *sum = NULL;
  for (int j = 0; j < 4; j++) {
    kiln_lexpr *raw = lx_bin(b, LB_ADD, lx_var(b, fl), f64(b, j - 1));
    kiln_lexpr *raw2 = lx_bin(b, LB_ADD, lx_var(b, fl), f64(b, j - 1));
    kiln_lexpr *in = lower_inside(b, raw, raw2, r->in.dim[axis]);
    kiln_lb_assign(b, v->w[t][j], lx_select(b, in, lx_var(b, v->w[t][j]), f64(b, 0)));
    sum = j == 0 ? lx_var(b, v->w[t][j]) : lx_bin(b, LB_ADD, sum, lx_var(b, v->w[t][j]));
  }
  int total = kiln_lb_decl(b, "wsum", KILN_F64, sum);
  for (int j = 0; j < 4; j++)
    kiln_lb_assign(b, v->w[t][j], lx_bin(b, LB_DIV, lx_var(b, v->w[t][j]), lx_var(b, total)));
}

static void declare_taps(kiln_lb *b, const kiln_resample *r, int axis, int o, int t, tap_vars *v) {
  char name[16];
  snprintf(name, sizeof name, "x%d", axis);
  int xo = kiln_lb_decl(b, name, KILN_F64, lower_coord(b, r, axis, o));
  if (r->coord == KILN_RS_TF_CROP_AND_RESIZE)
    v->inside =
        and_inside(b, v->inside, lower_inside(b, lx_var(b, xo), lx_var(b, xo), r->in.dim[axis]));
  snprintf(name, sizeof name, "f%d", axis);
  int fl = kiln_lb_decl(b, name, KILN_F64, lx_unary(b, LU_FLOOR, lx_var(b, xo)));
  snprintf(name, sizeof name, "l%d", axis);
  int l = kiln_lb_decl(b, name, KILN_F64, lx_bin(b, LB_SUB, lx_var(b, xo), lx_var(b, fl)));
  int n = taps_of(r), first = r->mode == KILN_RS_CUBIC ? -1 : 0;
  for (int j = 0; j < n; j++) {
    snprintf(name, sizeof name, "w%d_%d", axis, j);
    v->w[t][j] = kiln_lb_decl(b, name, KILN_F64, lower_weight(b, r, l, j));
    snprintf(name, sizeof name, "at%d_%d", axis, j);
    kiln_lexpr *raw = lx_bin(b, LB_ADD, lx_var(b, fl), f64(b, first + j));
    v->at[t][j] = kiln_lb_decl(b, name, KILN_I64, lower_clamp(b, raw, r->in.dim[axis]));
  }
  if (r->mode == KILN_RS_CUBIC && r->exclude_outside) lower_exclude_outside(b, r, axis, fl, t, v);
}

// One tap combination's term: weight product (same order as eval_interpolate) times x there.
static kiln_lexpr *combo_term(const kiln_lower_ctx *c, const kiln_resample *r, const int *vars,
                              const int *axes, int k, const tap_vars *v, int64_t combo) {
  kiln_lb *b = c->b;
  int src[KILN_MAX_RANK], n = taps_of(r);
  int64_t xs[KILN_MAX_RANK];
  kiln_contiguous_strides(&r->in, xs);
  for (int i = 0; i < r->in.rank; i++) src[i] = vars[i];
  kiln_lexpr *w = NULL;
  for (int t = 0; t < k; t++) {
    int64_t place = 1;
    for (int u = t + 1; u < k; u++) place *= n;
    int j = (int)((combo / place) % n);
    w = t == 0 ? lx_var(b, v->w[t][j]) : lx_bin(b, LB_MUL, w, lx_var(b, v->w[t][j]));
    src[axes[t]] = v->at[t][j];
  }
  kiln_lexpr *xv =
      lx_cast(b, KILN_F64, lx_load(b, kiln_in_buf(c, 0), kiln_lower_index(b, r->in.rank, src, xs)));
  return w ? lx_bin(b, LB_MUL, w, xv) : xv;  // no resized axis: a copy
}

static void lower_interpolate(const kiln_lower_ctx *c, const kiln_resample *r) {
  kiln_lb *b = c->b;
  const kiln_tensor *y = kiln_lower_out(c, 0);
  int rank = r->in.rank, vars[KILN_MAX_RANK], axes[KILN_MAX_RANK], k = resized_axes(r, axes);
  int64_t ys[KILN_MAX_RANK], combos = 1;
  tap_vars v = {.inside = NULL};
  for (int t = 0; t < k; t++) combos *= taps_of(r);
  kiln_contiguous_strides(&r->out, ys);
  for (int i = 0, t = 0; i < rank; i++) {
    vars[i] = open_loop(b, r, i);
    if (t < k && axes[t] == i) declare_taps(b, r, i, vars[i], t++, &v);
  }
  kiln_lexpr *sum = NULL;
  for (int64_t combo = 0; combo < combos; combo++) {
    kiln_lexpr *term = combo_term(c, r, vars, axes, k, &v, combo);
    sum = combo == 0 ? term : lx_bin(b, LB_ADD, sum, term);
  }
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_lower_index(b, rank, vars, ys),
                lower_roi_select(c, r, v.inside, lx_cast(b, y->dtype, sum)));
  for (int i = 0; i < rank; i++) kiln_lb_end_for(b);
}

void kiln_resample_lower(const kiln_lower_ctx *c, const kiln_resample *r) {
  kiln_lb_comment(c->b, "%s %s (%s): %s -> %s", kiln_op_get(c->node->op)->name, c->node->name,
                  r->mode == KILN_RS_NEAREST  ? "nearest"
                  : r->mode == KILN_RS_LINEAR ? "linear"
                                              : "cubic",
                  kiln_describe(kiln_lower_in(c, 0)).text,
                  kiln_describe(kiln_lower_out(c, 0)).text);
  if (r->mode == KILN_RS_NEAREST)
    lower_nearest(c, r);
  else
    lower_interpolate(c, r);
}

int64_t kiln_resample_flops(const kiln_resample *r) {
  if (r->mode == KILN_RS_NEAREST) return 0;
  int axes[KILN_MAX_RANK], k = resized_axes(r, axes);
  int64_t combos = 1;
  for (int t = 0; t < k; t++) combos *= taps_of(r);
  return kiln_shape_numel(&r->out) * 3 * combos;  // per tap combination: weight, multiply, add
}

// ---- The op parts Resize and Upsample share ----

bool kiln_resample_node_infer(kiln_graph *g, kiln_node *n, kiln_diag *d,
                              kiln_resample_plan_fn plan) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  if (!x) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  kiln_resample r = {.cubic_a = 0};
  if (!plan(g, n, d, &r)) return false;
  if (r.mode != KILN_RS_NEAREST && !kiln_dtype_is_float(x->dtype)) {
    kiln_op_error(d, n, "inputs[0] (%s): mode \"%s\" needs dtype f32 or f64, got %s", x->name,
                  r.mode == KILN_RS_LINEAR ? "linear" : "cubic", kiln_dtype_name(x->dtype));
    return false;
  }
  kiln_op_set_output(g, n, 0, x->dtype, &r.out);  // out: r.out, floor(in * scale) or sizes
  return true;
}

void kiln_resample_node_lower(const kiln_lower_ctx *c, kiln_resample_plan_fn plan) {
  kiln_resample r = {.cubic_a = 0};
  plan(c->g, c->node, NULL, &r);
  kiln_resample_lower(c, &r);
}

int64_t kiln_resample_node_flops(const kiln_graph *g, const kiln_node *n,
                                 kiln_resample_plan_fn plan) {
  kiln_resample r = {.cubic_a = 0};
  return plan(g, n, NULL, &r) ? kiln_resample_flops(&r) : 0;
}
