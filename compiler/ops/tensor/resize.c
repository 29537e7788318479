// Resize (ONNX opset 11-18): nearest, linear (N-linear over every resized axis; bilinear on
// the H, W of NCHW) or cubic (4 taps per resized axis, cubic_coeff_a, exclude_outside) resampling
// of x. The output size comes from the constant `scales` input 2 (out = floor(in * scale)) or the
// constant `sizes` input 3 (scale = out / in), over every axis or the `axes` attribute (opset 18).
// Coordinate transformations half_pixel (default), asymmetric, align_corners, pytorch_half_pixel,
// tf_half_pixel_for_nn and tf_crop_and_resize (the constant roi input 1, [starts..., ends...]
// normalized; extrapolation_value outside the input); nearest_mode round_prefer_floor (default),
// round_prefer_ceil, floor, ceil. As in ONNX's reference, align_corners and tf_crop_and_resize
// divide by the unrounded output length in * scale when scales are given. antialias and
// keep_aspect_ratio_policy other than stretch are not supported.
// Nearest works on every dtype, linear and cubic on f32/f64.
#include <string.h>

#include "resample.h"

static const kiln_attr_spec attrs[] = {{"mode", KILN_ATTR_STRING, false},
                                       {"coordinate_transformation_mode", KILN_ATTR_STRING, false},
                                       {"nearest_mode", KILN_ATTR_STRING, false},
                                       {"cubic_coeff_a", KILN_ATTR_FLOAT, false},
                                       {"exclude_outside", KILN_ATTR_INT, false},
                                       {"extrapolation_value", KILN_ATTR_FLOAT, false},
                                       {"antialias", KILN_ATTR_INT, false},
                                       {"axes", KILN_ATTR_INTS, false},
                                       {"keep_aspect_ratio_policy", KILN_ATTR_STRING, false},
                                       {0}};

// Looks `attr` (default dflt) up in names[]; reports the choices otherwise.
static bool read_choice(const kiln_node *n, kiln_diag *d, const char *attr, const char *dflt,
                        const char *const *names, int count, int *out) {
  const char *v = kiln_attr_string(n, attr, dflt);
  for (int i = 0; i < count; i++) {
    if (strcmp(v, names[i]) == 0) {
      *out = i;
      return true;
    }
  }
  char list[256] = "";
  for (int i = 0; i < count; i++)
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? ", " : "", names[i]);
  kiln_op_error(d, n, "attrs.%s: expected one of %s, got \"%s\"", attr, list, v);
  return false;
}

// Reads and checks the attributes Kiln supports only in one form.
static bool check_unsupported(const kiln_node *n, kiln_diag *d) {
  const char *keep = kiln_attr_string(n, "keep_aspect_ratio_policy", "stretch");
  int64_t v;
  if (strcmp(keep, "stretch") != 0) {
    kiln_op_error(d, n, "attrs.keep_aspect_ratio_policy: only \"stretch\" is supported, got \"%s\"",
                  keep);
    return false;
  }
  return kiln_op_read_int(n, d, "antialias", 0, 0, 0, &v);
}

static bool read_modes(const kiln_node *n, kiln_diag *d, kiln_resample *r) {
  static const char *const modes[] = {"nearest", "linear", "cubic"};
  static const char *const coords[] = {"half_pixel", "pytorch_half_pixel",   "align_corners",
                                       "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"};
  static const char *const rounds[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
  int mode, coord, round;
  int64_t exclude;
  if (!check_unsupported(n, d) || !read_choice(n, d, "mode", "nearest", modes, 3, &mode) ||
      !read_choice(n, d, "coordinate_transformation_mode", "half_pixel", coords, 6, &coord) ||
      !read_choice(n, d, "nearest_mode", "round_prefer_floor", rounds, 4, &round) ||
      !kiln_op_read_int(n, d, "exclude_outside", 0, 0, 1, &exclude))
    return false;
  r->mode = (kiln_rs_mode)mode, r->coord = (kiln_rs_coord)coord, r->round = (kiln_rs_round)round;
  r->cubic_a = kiln_attr_float(n, "cubic_coeff_a", -0.75);
  r->exclude_outside = exclude != 0;
  r->extrapolation = kiln_attr_float(n, "extrapolation_value", 0.0);
  return true;
}

// The axes scales/sizes refer to: `axes` (checked, non-negative) or all of x's.
static int read_axes(const kiln_node *n, kiln_diag *d, int rank, int64_t *axes) {
  int count = kiln_attr_ints(n, "axes", axes, KILN_MAX_RANK);
  if (count < 0) {
    for (int i = 0; i < rank; i++) axes[i] = i;
    return rank;
  }
  bool seen[KILN_MAX_RANK] = {false};
  if (count > rank) {
    kiln_op_error(d, n, "attrs.axes: %d axes for an input of rank %d", count, rank);
    return -1;
  }
  for (int i = 0; i < count; i++) {
    if (!kiln_op_check_axis(n, d, "attrs.axes", axes[i], rank, &axes[i])) return -1;
    if (seen[axes[i]]) {
      kiln_op_error(d, n, "attrs.axes: axis %lld appears twice", (long long)axes[i]);
      return -1;
    }
    seen[axes[i]] = true;
  }
  return count;
}

// Sizes and scales from `scales` (count values) or `sizes` (count values), one per axes[i].
static bool plan_sizes(const kiln_node *n, kiln_diag *d, const double *scales, const int64_t *sizes,
                       int count, const int64_t *axes, int n_axes, kiln_resample *r) {
  if (count != n_axes) {
    kiln_op_error(d, n, "inputs[%d] (%s): expected %d values (one per axis), got %d",
                  scales ? 2 : 3, scales ? "scales" : "sizes", n_axes, count);
    return false;
  }
  r->out = r->in;
  for (int i = 0; i < r->in.rank; i++) r->scale[i] = 1.0, r->len[i] = (double)r->in.dim[i];
  for (int i = 0; i < count; i++) {
    int a = (int)axes[i];
    double in = (double)r->in.dim[a];
    if (scales && !(scales[i] > 0)) {
      kiln_op_error(d, n, "inputs[2] (scales): expected positive scales, got %g", scales[i]);
      return false;
    }
    r->scale[a] = scales ? scales[i] : (double)sizes[i] / in;
    r->out.dim[a] = scales ? (int64_t)(in * scales[i]) : sizes[i];
    r->len[a] = scales ? in * scales[i] : (double)sizes[i];
  }
  return kiln_op_check_dims(n, d, &r->out, "this resize");
}

// roi (tf_crop_and_resize only; otherwise the whole input): `count` values, starts then ends, one
// pair per axes[i].
static bool plan_roi(const kiln_node *n, kiln_diag *d, const double *roi, int count,
                     const int64_t *axes, int n_axes, kiln_resample *r) {
  for (int i = 0; i < r->in.rank; i++) r->roi_start[i] = 0, r->roi_end[i] = 1;
  if (r->coord != KILN_RS_TF_CROP_AND_RESIZE) return true;
  if (count != 2 * n_axes) {
    kiln_op_error(d, n,
                  "inputs[1] (roi): tf_crop_and_resize needs a constant roi of %d values (starts, "
                  "then ends, one per axis), got %d",
                  2 * n_axes, count);
    return false;
  }
  for (int i = 0; i < n_axes; i++)
    r->roi_start[axes[i]] = roi[i], r->roi_end[axes[i]] = roi[n_axes + i];
  return true;
}

static bool graph_plan(const kiln_graph *g, const kiln_node *n, kiln_diag *d, kiln_resample *r) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  int64_t axes[KILN_MAX_RANK], sizes[KILN_MAX_RANK];
  double scales[KILN_MAX_RANK];
  r->in = x->shape;
  if (!read_modes(n, d, r)) return false;
  int n_axes = read_axes(n, d, x->shape.rank, axes);
  if (n_axes < 0) return false;
  if (kiln_has_input(n, 2) == kiln_has_input(n, 3)) {
    kiln_op_error(d, n,
                  "inputs: Resize needs exactly one of scales (inputs[2]) and sizes "
                  "(inputs[3]); pass \"\" for the other");
    return false;
  }
  double roi[2 * KILN_MAX_RANK];
  int n_roi = 0;
  if (r->coord == KILN_RS_TF_CROP_AND_RESIZE) {
    n_roi =
        kiln_has_input(n, 1) ? kiln_op_const_floats(g, n, d, 1, "roi", roi, 2 * KILN_MAX_RANK) : 0;
    if (n_roi < 0) return false;
  }
  if (!plan_roi(n, d, roi, n_roi, axes, n_axes, r)) return false;
  if (kiln_has_input(n, 2)) {
    int count = kiln_op_const_floats(g, n, d, 2, "scales", scales, KILN_MAX_RANK);
    return count >= 0 && plan_sizes(n, d, scales, NULL, count, axes, n_axes, r);
  }
  int count = kiln_op_const_ints(g, n, d, 3, "sizes", sizes, KILN_MAX_RANK);
  return count >= 0 && plan_sizes(n, d, NULL, sizes, count, axes, n_axes, r);
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  return kiln_resample_node_infer(g, n, d, graph_plan);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_resample r = {.in = *in[0].shape};
  int64_t axes[KILN_MAX_RANK], sizes[KILN_MAX_RANK];
  double scales[KILN_MAX_RANK];
  read_modes(n, NULL, &r);
  int n_axes = read_axes(n, NULL, r.in.rank, axes);
  double roi[2 * KILN_MAX_RANK];
  int n_roi = kiln_has_input(n, 1) ? (int)kiln_shape_numel(in[1].shape) : 0;
  for (int i = 0; i < n_roi && i < 2 * KILN_MAX_RANK; i++) roi[i] = in[1].data[i];
  plan_roi(n, NULL, roi, n_roi, axes, n_axes, &r);
  if (kiln_has_input(n, 2)) {
    int count = (int)kiln_shape_numel(in[2].shape);
    for (int i = 0; i < count && i < KILN_MAX_RANK; i++) scales[i] = in[2].data[i];
    plan_sizes(n, NULL, scales, NULL, count, axes, n_axes, &r);
  } else {
    int count = kiln_eval_ints(&in[3], sizes, KILN_MAX_RANK);
    plan_sizes(n, NULL, NULL, sizes, count, axes, n_axes, &r);
  }
  kiln_resample_eval(&r, in[0].data, out->data);
}

static void lower(const kiln_lower_ctx *c) { kiln_resample_node_lower(c, graph_plan); }

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return kiln_resample_node_flops(g, n, graph_plan);
}

const kiln_op_def kiln_op_Resize = {
    .name = "Resize",
    .min_inputs = 1,
    .max_inputs = 4,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_INJECTIVE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // Nearest is a copy (exact). Linear and cubic: PyTorch computes source coordinates and
    // weights in f32, Kiln in double; at coordinates up to ~32 a weight differs by up to ~4e-6,
    // times neighbour differences of a few units, plus f32 rounding of the sum.
    .tol = {2e-5, 1e-6},
};
