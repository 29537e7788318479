// MaxRoiPool (ONNX): max pooling over regions of interest (Fast R-CNN's RoI pooling).
//   X: (N, C, H, W)   rois: (R, 5), rows [batch_index, x1, y1, x2, y2]   Y: (R, C, PH, PW)
// Attributes: pooled_shape [PH, PW] (required), spatial_scale (1.0). Per RoI, as in onnxruntime
// and torchvision.ops.roi_pool:
//   start_w = round(x1 * scale), start_h = round(y1 * scale), end_w, end_h likewise (round half
//   away from zero); roi_h = max(end_h - start_h + 1, 1), roi_w likewise
//   bin ph covers rows [floor(ph * roi_h / PH), ceil((ph + 1) * roi_h / PH)) + start_h, clipped to
//   [0, H) (likewise columns); Y = max over the bin, 0 for an empty bin.
// Kiln computes the bin bounds in exact integer arithmetic (the float products of the other
// implementations agree except when rounding error crosses an integer). A batch index outside
// [0, N) is clamped into it: generated code has no run-time errors.
#include <math.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {
    {"pooled_shape", KILN_ATTR_INTS, true},
    {"spatial_scale", KILN_ATTR_FLOAT, false},
    {0},
};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 2, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0), *rois = kiln_in(g, n, 1);
  if (x->shape.rank != 4) {
    kiln_op_error(d, n, "inputs[0] (%s): expected a 4-D tensor (N, C, H, W), got %s", x->name,
                  kiln_shape_text(&x->shape).text);
    return false;
  }
  if (rois->shape.rank != 2 || rois->shape.dim[1] != 5) {
    kiln_op_error(d, n,
                  "inputs[1] (%s): expected rois of shape (R, 5) [batch_index, x1, y1, x2, y2], "
                  "got %s",
                  rois->name, kiln_shape_text(&rois->shape).text);
    return false;
  }
  int64_t pooled[2];
  if (!kiln_node_attr(n, "pooled_shape")) {
    kiln_op_error(d, n, "attrs.pooled_shape: required (2 positive integers)");
    return false;
  }
  if (!kiln_op_read_ints(n, d, "pooled_shape", 2, KILN_INTS_POSITIVE, pooled)) return false;
  double scale = kiln_attr_float(n, "spatial_scale", 1.0);
  if (!(scale > 0) || !isfinite(scale)) {
    kiln_op_error(d, n, "attrs.spatial_scale: expected a positive number, got %g", scale);
    return false;
  }
  // out: (R, C, PH, PW)
  kiln_shape out = {.rank = 4, .dim = {rois->shape.dim[0], x->shape.dim[1], pooled[0], pooled[1]}};
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

// One RoI in feature-map cells.
typedef struct roi_cells {
  int64_t batch, start[2], size[2];  // axis 0 = H, 1 = W
} roi_cells;

static roi_cells roi_of(const double *r, double scale, int64_t N) {
  roi_cells c = {.batch = clamp64((int64_t)r[0], 0, N - 1)};
  for (int axis = 0; axis < 2; axis++) {
    int64_t start = (int64_t)round(r[2 - axis] * scale), end = (int64_t)round(r[4 - axis] * scale);
    c.start[axis] = start;
    c.size[axis] = end - start + 1 > 1 ? end - start + 1 : 1;
  }
  return c;
}

// The bin [lo, hi) of pooled position p out of P along an axis of `in` cells.
static void bin_of(const roi_cells *c, int axis, int64_t p, int64_t P, int64_t in, int64_t *lo,
                   int64_t *hi) {
  *lo = clamp64(p * c->size[axis] / P + c->start[axis], 0, in);
  *hi = clamp64(((p + 1) * c->size[axis] + P - 1) / P + c->start[axis], 0, in);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  const int64_t *xd = in[0].shape->dim, *yd = out->shape->dim;
  int64_t C = xd[1], H = xd[2], W = xd[3], R = yd[0], PH = yd[2], PW = yd[3];
  double scale = kiln_attr_float(n, "spatial_scale", 1.0);
  for (int64_t r = 0; r < R; r++) {
    roi_cells roi = roi_of(in[1].data + r * 5, scale, xd[0]);
    for (int64_t c = 0; c < C; c++)
      for (int64_t ph = 0; ph < PH; ph++)
        for (int64_t pw = 0; pw < PW; pw++) {
          int64_t h0, h1, w0, w1;
          bin_of(&roi, 0, ph, PH, H, &h0, &h1);
          bin_of(&roi, 1, pw, PW, W, &w0, &w1);
          double m = h1 <= h0 || w1 <= w0 ? 0 : -INFINITY;
          for (int64_t h = h0; h < h1; h++)
            for (int64_t w = w0; w < w1; w++)
              m = fmax(m, in[0].data[((roi.batch * C + c) * H + h) * W + w]);
          out->data[((r * C + c) * PH + ph) * PW + pw] = m;
        }
  }
}

// ---- Lowering ----

// round half away from zero, as an i64: v >= 0 ? floor(v + 0.5) : ceil(v - 0.5)
static kiln_lexpr *round_away(kiln_lb *b, kiln_dtype t, int v) {
  kiln_lexpr *up = lx_unary(b, LU_FLOOR, lx_bin(b, LB_ADD, lx_var(b, v), lx_float(b, t, 0.5)));
  kiln_lexpr *down = lx_unary(b, LU_CEIL, lx_bin(b, LB_SUB, lx_var(b, v), lx_float(b, t, 0.5)));
  kiln_lexpr *pos = lx_bin(b, LB_LE, lx_float(b, t, 0), lx_var(b, v));
  return lx_cast(b, KILN_I64, lx_select(b, pos, up, down));
}

static kiln_lexpr *clamp_lx(kiln_lb *b, kiln_lexpr *v, int64_t lo, int64_t hi) {
  return lx_bin(b, LB_MIN, lx_bin(b, LB_MAX, v, lx_int(b, lo)), lx_int(b, hi));
}

// rois[r][k] * spatial_scale, rounded: a local i64.
static int scaled_coord(const kiln_lower_ctx *c, int r, int k, const char *name) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_in(c, 1)->dtype;
  kiln_lexpr *v = lx_load(b, kiln_in_buf(c, 1), lx_madd(b, lx_var(b, r), 5, lx_int(b, k)));
  double scale = kiln_attr_float(c->node, "spatial_scale", 1.0);
  char fname[32];
  snprintf(fname, sizeof fname, "%s_f", name);
  int f = kiln_lb_decl(b, fname, t, lx_bin(b, LB_MUL, v, lx_float(b, t, scale)));
  return kiln_lb_decl(b, name, KILN_I64, round_away(b, t, f));
}

// max(end - start + 1, 1)
static int roi_size(kiln_lb *b, int start, int end, const char *name) {
  kiln_lexpr *len = lx_add(b, lx_bin(b, LB_SUB, lx_var(b, end), lx_var(b, start)), lx_int(b, 1));
  return kiln_lb_decl(b, name, KILN_I64, lx_bin(b, LB_MAX, len, lx_int(b, 1)));
}

// Declares the bin bounds lo/hi along one axis for pooled position p (see bin_of).
static void declare_bin(kiln_lb *b, int p, int64_t P, int size, int start, int64_t in,
                        const char *lo_name, const char *hi_name, int *lo, int *hi) {
  kiln_lexpr *first = lx_bin(b, LB_DIV, lx_mul(b, lx_var(b, p), lx_var(b, size)), lx_int(b, P));
  *lo = kiln_lb_decl(b, lo_name, KILN_I64, clamp_lx(b, lx_add(b, first, lx_var(b, start)), 0, in));
  kiln_lexpr *num = lx_add(b, lx_mul(b, lx_add(b, lx_var(b, p), lx_int(b, 1)), lx_var(b, size)),
                           lx_int(b, P - 1));
  kiln_lexpr *last = lx_bin(b, LB_DIV, num, lx_int(b, P));
  *hi = kiln_lb_decl(b, hi_name, KILN_I64, clamp_lx(b, lx_add(b, last, lx_var(b, start)), 0, in));
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  const int64_t *xd = x->shape.dim, *yd = y->shape.dim;
  kiln_dtype t = y->dtype;
  kiln_lb_comment(b, "MaxRoiPool %s: %s, %s -> %s", c->node->name, kiln_describe(x).text,
                  kiln_describe(kiln_lower_in(c, 1)).text, kiln_describe(y).text);
  int r = kiln_lb_for_n(b, "r", yd[0]);
  kiln_lexpr *bf = lx_load(b, kiln_in_buf(c, 1), lx_mul(b, lx_var(b, r), lx_int(b, 5)));
  int batch =
      kiln_lb_decl(b, "batch", KILN_I64, clamp_lx(b, lx_cast(b, KILN_I64, bf), 0, xd[0] - 1));
  int sw = scaled_coord(c, r, 1, "start_w"), sh = scaled_coord(c, r, 2, "start_h");
  int ew = scaled_coord(c, r, 3, "end_w"), eh = scaled_coord(c, r, 4, "end_h");
  int rh = roi_size(b, sh, eh, "roi_h"), rw = roi_size(b, sw, ew, "roi_w");
  int ch = kiln_lb_for_n(b, "c", xd[1]);
  int ph = kiln_lb_for_n(b, "ph", yd[2]);
  int h0, h1, w0, w1;
  declare_bin(b, ph, yd[2], rh, sh, xd[2], "h_lo", "h_hi", &h0, &h1);
  int pw = kiln_lb_for_n(b, "pw", yd[3]);
  declare_bin(b, pw, yd[3], rw, sw, xd[3], "w_lo", "w_hi", &w0, &w1);
  int acc = kiln_lb_decl(b, "acc", t, lx_float(b, t, -INFINITY));
  int h = kiln_lb_for(b, "h", lx_var(b, h0), lx_var(b, h1));
  int w = kiln_lb_for(b, "w", lx_var(b, w0), lx_var(b, w1));
  kiln_lexpr *xi = kiln_lx_nchw(b, lx_var(b, batch), lx_var(b, ch), xd, lx_var(b, h), lx_var(b, w));
  kiln_lb_assign(b, acc, lx_bin(b, LB_MAX, lx_var(b, acc), lx_load(b, kiln_in_buf(c, 0), xi)));
  kiln_lb_end_for(b);  // w
  kiln_lb_end_for(b);  // h
  // An empty bin gives 0.
  kiln_lexpr *empty = lx_bin(b, LB_OR, lx_bin(b, LB_LE, lx_var(b, h1), lx_var(b, h0)),
                             lx_bin(b, LB_LE, lx_var(b, w1), lx_var(b, w0)));
  kiln_lexpr *yi = kiln_lx_nchw(b, lx_var(b, r), lx_var(b, ch), yd, lx_var(b, ph), lx_var(b, pw));
  kiln_lb_store(b, kiln_out_buf(c, 0), yi, lx_select(b, empty, lx_float(b, t, 0), lx_var(b, acc)));
  for (int i = 0; i < 4; i++) kiln_lb_end_for(b);  // pw, ph, c, r
}

// Unknown until run time: count one compare per input element per RoI as a bound.
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return kiln_shape_numel(&kiln_in(g, n, 0)->shape) / kiln_in(g, n, 0)->shape.dim[0] *
         kiln_in(g, n, 1)->shape.dim[0];
}

const kiln_op_def kiln_op_MaxRoiPool = {
    .name = "MaxRoiPool",
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
    .tol = {0, 0},  // a max picks one of the inputs (or 0): exact
};
