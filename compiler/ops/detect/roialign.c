// RoiAlign (ONNX opset 16): average (or max) of bilinearly interpolated samples in each bin of a
// region of interest.
//   X: (N, C, H, W)   rois: (R, 4) [x1, y1, x2, y2]   batch_indices: (R) i64   Y: (R, C, OH, OW)
// Attributes: mode (avg | max), output_height / output_width (1), sampling_ratio (0 = adaptive),
// spatial_scale (1.0), coordinate_transformation_mode (half_pixel | output_half_pixel).
// Per RoI (as onnxruntime; torchvision.ops.roi_align with aligned = mode is half_pixel):
//   offset = 0.5 for half_pixel, else 0; start = x1 * scale - offset, end = x2 * scale - offset;
//   size = end - start, at least 1 for output_half_pixel; bin = size / OW (likewise along H)
//   grid = sampling_ratio if > 0, else ceil(size / OW): samples per bin along that axis
//   sample (iy, ix) of bin (ph, pw): y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
//   value: bilinear interpolation of X; 0 if y < -1, y > H, x < -1 or x > W; y, x clamped to >= 0
//   and the cell to the last row / column
//   avg: sum of the values / max(grid_h * grid_w, 1)
//   max: the max over samples of the max of the four weighted corner terms (onnxruntime's
//        definition, which the ONNX reference follows; 0 without samples)
// A batch index outside [0, N) is clamped into it: generated code has no run-time errors.
#include <math.h>
#include <string.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {
    {"coordinate_transformation_mode", KILN_ATTR_STRING, false},
    {"mode", KILN_ATTR_STRING, false},
    {"output_height", KILN_ATTR_INT, false},
    {"output_width", KILN_ATTR_INT, false},
    {"sampling_ratio", KILN_ATTR_INT, false},
    {"spatial_scale", KILN_ATTR_FLOAT, false},
    {0},
};

typedef struct ra_params {
  bool half_pixel, max_mode;
  int64_t out[2], sampling_ratio;
  double scale;
} ra_params;

static ra_params params_of(const kiln_node *n) {
  return (ra_params){
      .half_pixel = strcmp(kiln_attr_string(n, "coordinate_transformation_mode", "half_pixel"),
                           "half_pixel") == 0,
      .max_mode = strcmp(kiln_attr_string(n, "mode", "avg"), "max") == 0,
      .out = {kiln_attr_int(n, "output_height", 1), kiln_attr_int(n, "output_width", 1)},
      .sampling_ratio = kiln_attr_int(n, "sampling_ratio", 0),
      .scale = kiln_attr_float(n, "spatial_scale", 1.0),
  };
}

static bool check_attrs(const kiln_node *n, kiln_diag *d) {
  const char *ctm = kiln_attr_string(n, "coordinate_transformation_mode", "half_pixel");
  const char *mode = kiln_attr_string(n, "mode", "avg");
  if (strcmp(ctm, "half_pixel") != 0 && strcmp(ctm, "output_half_pixel") != 0) {
    kiln_op_error(d, n,
                  "attrs.coordinate_transformation_mode: expected half_pixel or "
                  "output_half_pixel, got \"%s\"",
                  ctm);
    return false;
  }
  if (strcmp(mode, "avg") != 0 && strcmp(mode, "max") != 0) {
    kiln_op_error(d, n, "attrs.mode: expected avg or max, got \"%s\"", mode);
    return false;
  }
  int64_t v;
  if (!kiln_op_read_int(n, d, "output_height", 1, 1, INT64_MAX, &v) ||
      !kiln_op_read_int(n, d, "output_width", 1, 1, INT64_MAX, &v) ||
      !kiln_op_read_int(n, d, "sampling_ratio", 0, 0, INT64_MAX, &v))
    return false;
  double scale = kiln_attr_float(n, "spatial_scale", 1.0);
  if (!(scale > 0) || !isfinite(scale)) {
    kiln_op_error(d, n, "attrs.spatial_scale: expected a positive number, got %g", scale);
    return false;
  }
  return true;
}

static bool check_inputs(const kiln_graph *g, const kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0), *rois = kiln_in(g, n, 1), *bi = kiln_in(g, n, 2);
  if (x->shape.rank != 4) {
    kiln_op_error(d, n, "inputs[0] (%s): expected a 4-D tensor (N, C, H, W), got %s", x->name,
                  kiln_shape_text(&x->shape).text);
    return false;
  }
  if (rois->shape.rank != 2 || rois->shape.dim[1] != 4) {
    kiln_op_error(d, n, "inputs[1] (%s): expected rois of shape (R, 4) [x1, y1, x2, y2], got %s",
                  rois->name, kiln_shape_text(&rois->shape).text);
    return false;
  }
  if (bi->dtype != KILN_I64 || bi->shape.rank != 1 || bi->shape.dim[0] != rois->shape.dim[0]) {
    kiln_op_error(d, n,
                  "inputs[2] (%s): expected batch_indices of dtype i64 and shape (%lld), "
                  "got %s %s",
                  bi->name, (long long)rois->shape.dim[0], kiln_dtype_name(bi->dtype),
                  kiln_shape_text(&bi->shape).text);
    return false;
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 2, d) || !kiln_in(g, n, 2) || !check_inputs(g, n, d) ||
      !check_attrs(n, d))
    return false;
  ra_params p = params_of(n);
  const kiln_tensor *x = kiln_in(g, n, 0);
  // out: (R, C, OH, OW)
  kiln_shape out = {.rank = 4,
                    .dim = {kiln_in(g, n, 1)->shape.dim[0], x->shape.dim[1], p.out[0], p.out[1]}};
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

// ---- Reference ----

// One axis of a RoI: start, bin size, samples per bin.
typedef struct ra_axis {
  double start, bin;
  int64_t grid;
} ra_axis;

static ra_axis axis_of(const ra_params *p, double lo, double hi, int64_t out) {
  double offset = p->half_pixel ? 0.5 : 0;
  double start = lo * p->scale - offset, size = hi * p->scale - offset - start;
  if (!p->half_pixel) size = fmax(size, 1.0);
  ra_axis a = {start, size / (double)out, p->sampling_ratio};
  if (a.grid <= 0) a.grid = (int64_t)ceil(size / (double)out);
  return a;
}

// The bilinear sample of plane (H, W) at (y, x) as its four weighted corner terms.
static void sample_terms(const double *plane, int64_t H, int64_t W, double y, double x,
                         double terms[4]) {
  memset(terms, 0, 4 * sizeof(double));
  if (y < -1.0 || y > (double)H || x < -1.0 || x > (double)W) return;
  y = fmax(y, 0), x = fmax(x, 0);
  int64_t y0 = (int64_t)y, x0 = (int64_t)x, y1 = y0 + 1, x1 = x0 + 1;
  if (y0 >= H - 1) y0 = y1 = H - 1, y = (double)y0;
  if (x0 >= W - 1) x0 = x1 = W - 1, x = (double)x0;
  double ly = y - (double)y0, lx = x - (double)x0, hy = 1 - ly, hx = 1 - lx;
  terms[0] = hy * hx * plane[y0 * W + x0];
  terms[1] = hy * lx * plane[y0 * W + x1];
  terms[2] = ly * hx * plane[y1 * W + x0];
  terms[3] = ly * lx * plane[y1 * W + x1];
}

// Y for one bin of one plane.
static double bin_value(const ra_params *p, const double *plane, int64_t H, int64_t W,
                        const ra_axis *ay, const ra_axis *ax, int64_t ph, int64_t pw) {
  double acc = 0;
  bool first = true;
  for (int64_t iy = 0; iy < ay->grid; iy++)
    for (int64_t ix = 0; ix < ax->grid; ix++) {
      double y = ay->start + (double)ph * ay->bin + ((double)iy + 0.5) * ay->bin / (double)ay->grid;
      double x = ax->start + (double)pw * ax->bin + ((double)ix + 0.5) * ax->bin / (double)ax->grid;
      double t[4];
      sample_terms(plane, H, W, y, x, t);
      double v = p->max_mode ? fmax(fmax(t[0], t[1]), fmax(t[2], t[3])) : t[0] + t[1] + t[2] + t[3];
      acc = p->max_mode && !first ? fmax(acc, v) : p->max_mode ? v : acc + v;
      first = false;
    }
  if (p->max_mode) return acc;
  int64_t count = ay->grid * ax->grid;
  return acc / (double)(count > 1 ? count : 1);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  ra_params p = params_of(n);
  const int64_t *xd = in[0].shape->dim;
  int64_t N = xd[0], C = xd[1], H = xd[2], W = xd[3], R = out->shape->dim[0];
  for (int64_t r = 0; r < R; r++) {
    const double *roi = in[1].data + r * 4;
    int64_t batch = (int64_t)in[2].data[r];
    batch = batch < 0 ? 0 : batch >= N ? N - 1 : batch;
    ra_axis ay = axis_of(&p, roi[1], roi[3], p.out[0]), ax = axis_of(&p, roi[0], roi[2], p.out[1]);
    for (int64_t c = 0; c < C; c++)
      for (int64_t ph = 0; ph < p.out[0]; ph++)
        for (int64_t pw = 0; pw < p.out[1]; pw++)
          out->data[((r * C + c) * p.out[0] + ph) * p.out[1] + pw] =
              bin_value(&p, in[0].data + (batch * C + c) * H * W, H, W, &ay, &ax, ph, pw);
  }
}

// ---- Lowering ----

typedef struct ra_lower_axis {
  int start, bin, grid;  // locals per RoI: start and bin (dtype t), grid (i64)
} ra_lower_axis;

// Declares start, bin and grid of one axis from rois[r][lo_k], rois[r][hi_k].
static ra_lower_axis lower_axis(const kiln_lower_ctx *c, const ra_params *p, int r, int lo_k,
                                int hi_k, int64_t out, const char *name) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_out(c, 0)->dtype;
  char buf[32];
  double offset = p->half_pixel ? 0.5 : 0;
  kiln_lexpr *coord[2];
  for (int i = 0; i < 2; i++) {
    kiln_lexpr *v =
        lx_load(b, kiln_in_buf(c, 1), lx_madd(b, lx_var(b, r), 4, lx_int(b, i ? hi_k : lo_k)));
    coord[i] =
        lx_bin(b, LB_SUB, lx_bin(b, LB_MUL, v, lx_float(b, t, p->scale)), lx_float(b, t, offset));
  }
  ra_lower_axis a;
  snprintf(buf, sizeof buf, "start_%s", name);
  a.start = kiln_lb_decl(b, buf, t, coord[0]);
  kiln_lexpr *size = lx_bin(b, LB_SUB, coord[1], lx_var(b, a.start));
  if (!p->half_pixel) size = lx_bin(b, LB_MAX, size, lx_float(b, t, 1));
  snprintf(buf, sizeof buf, "size_%s", name);
  int sz = kiln_lb_decl(b, buf, t, size);
  snprintf(buf, sizeof buf, "bin_%s", name);
  a.bin = kiln_lb_decl(b, buf, t, lx_bin(b, LB_DIV, lx_var(b, sz), lx_float(b, t, (double)out)));
  kiln_lexpr *grid = p->sampling_ratio > 0
                         ? lx_int(b, p->sampling_ratio)
                         : lx_cast(b, KILN_I64, lx_unary(b, LU_CEIL, lx_var(b, a.bin)));
  snprintf(buf, sizeof buf, "grid_%s", name);
  a.grid = kiln_lb_decl(b, buf, KILN_I64, grid);
  return a;
}

// Sample position along an axis: start + p * bin + (i + 0.5) * bin / grid
static kiln_lexpr *sample_pos(kiln_lb *b, kiln_dtype t, const ra_lower_axis *a, int p, int i) {
  kiln_lexpr *bin_start = lx_bin(b, LB_ADD, lx_var(b, a->start),
                                 lx_bin(b, LB_MUL, lx_cast(b, t, lx_var(b, p)), lx_var(b, a->bin)));
  kiln_lexpr *frac = lx_bin(b, LB_ADD, lx_cast(b, t, lx_var(b, i)), lx_float(b, t, 0.5));
  kiln_lexpr *step = lx_bin(b, LB_DIV, lx_var(b, a->bin), lx_cast(b, t, lx_var(b, a->grid)));
  return lx_bin(b, LB_ADD, bin_start, lx_bin(b, LB_MUL, frac, step));
}

typedef struct ra_sample_axis {
  int valid, lo, hi, frac;  // -1 <= pos <= in; the two cells; the weight of hi
} ra_sample_axis;

// Declares the interpolation cells and weight along one axis for the position in local pos.
static ra_sample_axis sample_axis(kiln_lb *b, kiln_dtype t, int pos, int64_t in, const char *name) {
  ra_sample_axis s;
  char buf[32];
  snprintf(buf, sizeof buf, "in_%s", name);
  s.valid = kiln_lb_decl(b, buf, KILN_BOOL,
                         lx_bin(b, LB_AND, lx_bin(b, LB_LE, lx_float(b, t, -1), lx_var(b, pos)),
                                lx_bin(b, LB_LE, lx_var(b, pos), lx_float(b, t, (double)in))));
  // Clamped to [0, in] (beyond that the sample is invalid anyway) so the cast stays in range.
  kiln_lexpr *clamped = lx_bin(b, LB_MIN, lx_bin(b, LB_MAX, lx_var(b, pos), lx_float(b, t, 0)),
                               lx_float(b, t, (double)in));
  snprintf(buf, sizeof buf, "%s_c", name);
  int pc = kiln_lb_decl(b, buf, t, clamped);
  snprintf(buf, sizeof buf, "%s_cell", name);
  int cell = kiln_lb_decl(b, buf, KILN_I64, lx_cast(b, KILN_I64, lx_var(b, pc)));
  snprintf(buf, sizeof buf, "%s_lo", name);
  s.lo = kiln_lb_decl(b, buf, KILN_I64, lx_bin(b, LB_MIN, lx_var(b, cell), lx_int(b, in - 1)));
  snprintf(buf, sizeof buf, "%s_hi", name);
  s.hi =
      kiln_lb_decl(b, buf, KILN_I64,
                   lx_bin(b, LB_MIN, lx_add(b, lx_var(b, cell), lx_int(b, 1)), lx_int(b, in - 1)));
  // In the last cell the position snaps to it: weight 0 for hi.
  kiln_lexpr *last = lx_bin(b, LB_LE, lx_int(b, in - 1), lx_var(b, cell));
  kiln_lexpr *f = lx_bin(b, LB_SUB, lx_var(b, pc), lx_cast(b, t, lx_var(b, cell)));
  snprintf(buf, sizeof buf, "%s_w", name);
  s.frac = kiln_lb_decl(b, buf, t, lx_select(b, last, lx_float(b, t, 0), f));
  return s;
}

// weight (1 - f or f) of one side along an axis
static kiln_lexpr *side_weight(kiln_lb *b, kiln_dtype t, const ra_sample_axis *s, bool hi) {
  if (hi) return lx_var(b, s->frac);
  return lx_bin(b, LB_SUB, lx_float(b, t, 1), lx_var(b, s->frac));
}

// The value of one sample: the sum (avg) or max (max mode) of the four weighted corners, 0 when
// the sample lies outside.
static kiln_lexpr *sample_value(const kiln_lower_ctx *c, const ra_params *p, int batch, int ch,
                                const ra_sample_axis *sy, const ra_sample_axis *sx) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_out(c, 0)->dtype;
  const int64_t *xd = kiln_lower_in(c, 0)->shape.dim;
  kiln_lexpr *v = NULL;
  for (int k = 0; k < 4; k++) {
    bool yh = k >= 2, xh = k % 2;
    kiln_lexpr *xi = kiln_lx_nchw(b, lx_var(b, batch), lx_var(b, ch), xd,
                                  lx_var(b, yh ? sy->hi : sy->lo), lx_var(b, xh ? sx->hi : sx->lo));
    kiln_lexpr *w = lx_bin(b, LB_MUL, side_weight(b, t, sy, yh), side_weight(b, t, sx, xh));
    kiln_lexpr *term = lx_bin(b, LB_MUL, w, lx_load(b, kiln_in_buf(c, 0), xi));
    v = v ? lx_bin(b, p->max_mode ? LB_MAX : LB_ADD, v, term) : term;
  }
  kiln_lexpr *valid = lx_bin(b, LB_AND, lx_var(b, sy->valid), lx_var(b, sx->valid));
  return lx_select(b, valid, v, lx_float(b, t, 0));
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  const int64_t *xd = x->shape.dim;
  kiln_dtype t = y->dtype;
  ra_params p = params_of(c->node);
  kiln_lb_comment(b, "RoiAlign %s (%s, %s): %s, %s -> %s", c->node->name,
                  p.max_mode ? "max" : "avg", p.half_pixel ? "half_pixel" : "output_half_pixel",
                  kiln_describe(x).text, kiln_describe(kiln_lower_in(c, 1)).text,
                  kiln_describe(y).text);
  int r = kiln_lb_for_n(b, "r", y->shape.dim[0]);
  kiln_lexpr *bi = lx_load(b, kiln_in_buf(c, 2), lx_var(b, r));
  int batch =
      kiln_lb_decl(b, "batch", KILN_I64,
                   lx_bin(b, LB_MIN, lx_bin(b, LB_MAX, bi, lx_int(b, 0)), lx_int(b, xd[0] - 1)));
  ra_lower_axis ay = lower_axis(c, &p, r, 1, 3, p.out[0], "h");
  ra_lower_axis ax = lower_axis(c, &p, r, 0, 2, p.out[1], "w");
  kiln_lexpr *samples = lx_mul(b, lx_var(b, ay.grid), lx_var(b, ax.grid));
  int count = kiln_lb_decl(b, "count", t, lx_cast(b, t, lx_bin(b, LB_MAX, samples, lx_int(b, 1))));
  int ch = kiln_lb_for_n(b, "c", xd[1]);
  int ph = kiln_lb_for_n(b, "ph", p.out[0]);
  int pw = kiln_lb_for_n(b, "pw", p.out[1]);
  int acc = kiln_lb_decl(b, "acc", t, lx_float(b, t, p.max_mode ? -INFINITY : 0));
  int iy = kiln_lb_for(b, "iy", lx_int(b, 0), lx_var(b, ay.grid));
  int py = kiln_lb_decl(b, "y", t, sample_pos(b, t, &ay, ph, iy));
  ra_sample_axis sy = sample_axis(b, t, py, xd[2], "y");
  int ix = kiln_lb_for(b, "ix", lx_int(b, 0), lx_var(b, ax.grid));
  int px = kiln_lb_decl(b, "x", t, sample_pos(b, t, &ax, pw, ix));
  ra_sample_axis sx = sample_axis(b, t, px, xd[3], "x");
  kiln_lexpr *v = sample_value(c, &p, batch, ch, &sy, &sx);
  kiln_lb_assign(b, acc, lx_bin(b, p.max_mode ? LB_MAX : LB_ADD, lx_var(b, acc), v));
  kiln_lb_end_for(b);  // ix
  kiln_lb_end_for(b);  // iy
  kiln_lexpr *result;
  if (p.max_mode) {  // no samples: 0
    kiln_lexpr *any = lx_bin(b, LB_AND, lx_bin(b, LB_LT, lx_int(b, 0), lx_var(b, ay.grid)),
                             lx_bin(b, LB_LT, lx_int(b, 0), lx_var(b, ax.grid)));
    result = lx_select(b, any, lx_var(b, acc), lx_float(b, t, 0));
  } else {
    result = lx_bin(b, LB_DIV, lx_var(b, acc), lx_var(b, count));
  }
  kiln_lexpr *yi =
      kiln_lx_nchw(b, lx_var(b, r), lx_var(b, ch), y->shape.dim, lx_var(b, ph), lx_var(b, pw));
  kiln_lb_store(b, kiln_out_buf(c, 0), yi, result);
  for (int i = 0; i < 4; i++) kiln_lb_end_for(b);  // pw, ph, c, r
}

// About 30 operations per sample; the sample count is known only at run time when adaptive
// (counted as 4 per bin then).
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  int64_t ratio = kiln_attr_int(n, "sampling_ratio", 0);
  int64_t samples = ratio > 0 ? ratio * ratio : 4;
  return 30 * samples * kiln_shape_numel(&kiln_out(g, n, 0)->shape);
}

const kiln_op_def kiln_op_RoiAlign = {
    .name = "RoiAlign",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // f32 sample positions and bilinear weights: a few ulp of positions of magnitude ~10 move a
    // sample by ~1e-6 cells, and the average of up to ~16 samples adds its own rounding (2e-5).
    // The ONNX backend tests' expected RoiAlign outputs are stored rounded to 4 decimals
    // (node/test_roialign_aligned_*: every value is a multiple of 1e-4), i.e. off by up to 5e-5
    // from the exact result; atol covers that half unit on top of the 2e-5.
    .tol = {7e-5, 2e-5},
};
