// Backward kernels of the 2-D pools (the forward node's attributes):
//   MaxPoolGrad(x (N, C, H, W), dy (N, C, OH, OW)) -> dx: each window's dy goes to the window's
//     first maximal element in window order (kh, then kw); ties go to that one element
//   AveragePoolGrad(dy) -> dx (`input_shape` = x's): each window's dy / count goes to every
//     element of the window inside x (count as in AveragePool: count_include_pad)
// Both scatter into dx one (n, c) plane at a time, so planes run in parallel.
#include "train_internal.h"

static const kiln_window_opts max_opts = {.dilations = true, .ceil_mode = true};
static const kiln_window_opts avg_opts = {.dilations = false, .ceil_mode = true};

static const kiln_attr_spec max_attrs[] = {
    {"auto_pad", KILN_ATTR_STRING, false}, {"ceil_mode", KILN_ATTR_INT, false},
    {"dilations", KILN_ATTR_INTS, false},  {"kernel_shape", KILN_ATTR_INTS, true},
    {"pads", KILN_ATTR_INTS, false},       {"storage_order", KILN_ATTR_INT, false},
    {"strides", KILN_ATTR_INTS, false},    {0},
};
static const kiln_attr_spec avg_attrs[] = {
    {"auto_pad", KILN_ATTR_STRING, false},
    {"ceil_mode", KILN_ATTR_INT, false},
    {"count_include_pad", KILN_ATTR_INT, false},
    {"kernel_shape", KILN_ATTR_INTS, true},
    {"pads", KILN_ATTR_INTS, false},
    {"strides", KILN_ATTR_INTS, false},
    {"input_shape", KILN_ATTR_INTS, true},
    {0},
};

static bool check_dy(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                     const kiln_shape *x, const kiln_window *w) {
  kiln_shape y = {.rank = 4, .dim = {x->dim[0], x->dim[1], w->out[0], w->out[1]}};
  return kiln_train_check_shape(g, n, d, i, &y, "the pool's output");
}

static bool window_of(const kiln_node *n, kiln_diag *d, const kiln_shape *x, kiln_window_opts o,
                      kiln_window *w) {
  int64_t kernel[2];
  bool present;
  if (x->rank != 4) {
    kiln_op_error(d, n, "expected x (N, C, H, W), got %s", kiln_shape_text(x).text);
    return false;
  }
  return kiln_window_kernel_attr(n, d, true, kernel, &present) &&
         kiln_window_resolve(n, d, &x->dim[2], kernel, o, w);
}

static bool max_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 2, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  kiln_window w;
  if (!window_of(n, d, &x->shape, max_opts, &w) || !check_dy(g, n, d, 1, &x->shape, &w))
    return false;
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);
  return true;
}

static bool avg_shape(const kiln_node *n, kiln_diag *d, kiln_shape *x) {
  x->rank = 4;
  if (kiln_attr_ints(n, "input_shape", x->dim, 4) == 4) return true;
  kiln_op_error(d, n, "attrs.input_shape: expected 4 integers (N, C, H, W)");
  return false;
}

static bool avg_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  kiln_shape x;
  kiln_window w;
  int64_t cip;
  if (!avg_shape(n, d, &x) || !kiln_op_read_int(n, d, "count_include_pad", 0, 0, 1, &cip) ||
      !window_of(n, d, &x, avg_opts, &w) || !check_dy(g, n, d, 0, &x, &w))
    return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &x);
  return true;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// ---- Reference kernels ----

static void max_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_window w;
  window_of(n, NULL, in[0].shape, max_opts, &w);
  const int64_t *xd = in[0].shape->dim;
  int64_t H = xd[2], W = xd[3], OH = w.out[0], OW = w.out[1];
  for (int64_t i = 0; i < kiln_shape_numel(out->shape); i++) out->data[i] = 0;
  for (int64_t p = 0; p < xd[0] * xd[1]; p++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        int64_t best = -1;
        for (int64_t kh = 0; kh < w.kernel[0]; kh++)
          for (int64_t kw = 0; kw < w.kernel[1]; kw++) {
            int64_t ih = oh * w.stride[0] - w.pad_begin[0] + kh * w.dilation[0];
            int64_t iw = ow * w.stride[1] - w.pad_begin[1] + kw * w.dilation[1];
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            int64_t at = p * H * W + ih * W + iw;
            if (best < 0 || in[0].data[at] > in[0].data[best]) best = at;
          }
        if (best >= 0) out->data[best] += in[1].data[(p * OH + oh) * OW + ow];
      }
}

static void avg_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_window w;
  window_of(n, NULL, out->shape, avg_opts, &w);
  const int64_t *xd = out->shape->dim;
  int64_t H = xd[2], W = xd[3], OH = w.out[0], OW = w.out[1];
  bool include_pad = kiln_attr_int(n, "count_include_pad", 0) != 0;
  for (int64_t i = 0; i < kiln_shape_numel(out->shape); i++) out->data[i] = 0;
  for (int64_t p = 0; p < xd[0] * xd[1]; p++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        // The window clipped to input + pads (count_include_pad), then to the input.
        int64_t h0 = oh * w.stride[0] - w.pad_begin[0], w0 = ow * w.stride[1] - w.pad_begin[1];
        int64_t h1 = min64(h0 + w.kernel[0], H + w.pad_end[0]);
        int64_t w1 = min64(w0 + w.kernel[1], W + w.pad_end[1]);
        int64_t padded = (h1 - h0) * (w1 - w0);
        h0 = max64(h0, 0), w0 = max64(w0, 0), h1 = min64(h1, H), w1 = min64(w1, W);
        double share = in[0].data[(p * OH + oh) * OW + ow] /
                       (double)(include_pad ? padded : (h1 - h0) * (w1 - w0));
        for (int64_t ih = h0; ih < h1; ih++)
          for (int64_t iw = w0; iw < w1; iw++) out->data[p * H * W + ih * W + iw] += share;
      }
}

// ---- Lowering ----

typedef struct plane_loops {
  int p, oh, ow;
  kiln_krange kh, kw;
} plane_loops;

// for p (planes): dx[p] = 0 (the loop over p stays open); returns p.
static int open_zeroed_plane(const kiln_lower_ctx *c, const kiln_shape *x) {
  kiln_lb *b = c->b;
  int64_t HW = x->dim[2] * x->dim[3];
  int p = kiln_lb_for_n(b, "p", x->dim[0] * x->dim[1]);
  int i = kiln_lb_for_n(b, "i", HW);
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_madd(b, lx_var(b, p), HW, lx_var(b, i)),
                lx_float(b, kiln_lower_out(c, 0)->dtype, 0));
  kiln_lb_end_for(b);
  return p;
}

// for p (planes): dx[p] = 0; for oh [kh range] for ow [kw range] ... (closed by close_plane)
static plane_loops open_plane(const kiln_lower_ctx *c, const kiln_window *w, const kiln_shape *x) {
  kiln_lb *b = c->b;
  plane_loops v;
  v.p = open_zeroed_plane(c, x);
  v.oh = kiln_lb_for_n(b, "oh", w->out[0]);
  v.kh = kiln_window_lower_range(b, w, 0, v.oh, "kh");
  v.ow = kiln_lb_for_n(b, "ow", w->out[1]);
  v.kw = kiln_window_lower_range(b, w, 1, v.ow, "kw");
  return v;
}

static void close_plane(kiln_lb *b) {
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);
}

// Offset in a plane: ih * W + iw.
static kiln_lexpr *plane_offset(kiln_lb *b, const kiln_shape *x, kiln_lexpr *ih, kiln_lexpr *iw) {
  return lx_add(b, lx_mul(b, ih, lx_int(b, x->dim[3])), iw);
}

// Flat index of `offset` in plane p: p * H * W + offset.
static kiln_lexpr *in_plane(kiln_lb *b, const kiln_shape *x, int p, kiln_lexpr *offset) {
  return lx_madd(b, lx_var(b, p), x->dim[2] * x->dim[3], offset);
}

// Flat index in the plane: p * H * W + ih * W + iw.
static kiln_lexpr *plane_index(kiln_lb *b, const kiln_shape *x, int p, kiln_lexpr *ih,
                               kiln_lexpr *iw) {
  return lx_add(b, lx_mul(b, lx_var(b, p), lx_int(b, x->dim[2] * x->dim[3])),
                plane_offset(b, x, ih, iw));
}

// dy[p, oh, ow]
static kiln_lexpr *dy_at(const kiln_lower_ctx *c, int dy_input, const kiln_window *w,
                         const plane_loops *v) {
  kiln_lb *b = c->b;
  kiln_lexpr *i = lx_madd(b, lx_madd(b, lx_var(b, v->p), w->out[0], lx_var(b, v->oh)), w->out[1],
                          lx_var(b, v->ow));
  return lx_load(b, kiln_in_buf(c, dy_input), i);
}

static void add_to(const kiln_lower_ctx *c, kiln_lexpr *index, kiln_lexpr *v) {
  kiln_lb *b = c->b;
  kiln_lexpr *again = kiln_lx_clone(b, index);
  kiln_lb_store(b, kiln_out_buf(c, 0), index,
                lx_bin(b, LB_ADD, lx_load(b, kiln_out_buf(c, 0), again), v));
}

// Tap k of axis `axis`'s window clamped into the window's part inside x, [lo, hi): a tap in the
// padding repeats the nearest inside one, which ties with it and so never replaces it.
static int clamped_tap(kiln_lb *b, const char *name, const kiln_krange *r, int k) {
  kiln_lexpr *above_lo = lx_bin(b, LB_MAX, lx_var(b, k), kiln_krange_lo(b, r));
  kiln_lexpr *hi_last = lx_bin(b, LB_SUB, kiln_krange_hi(b, r), lx_int(b, 1));
  return kiln_lb_decl(b, name, KILN_I64, lx_bin(b, LB_MIN, above_lo, hi_last));
}

// The output columns [lo, hi) whose windows lie inside x along W (no clamping needed there).
static void inner_cols(const kiln_window *w, int64_t *lo, int64_t *hi) {
  int64_t s = w->stride[1], last = (w->kernel[1] - 1) * w->dilation[1];
  int64_t room = w->in[1] - 1 + w->pad_begin[1] - last;  // (last inside column) * s
  *lo = min64((w->pad_begin[1] + s - 1) / s, w->out[1]);
  *hi = room < 0 ? *lo : max64(*lo, min64(room / s + 1, w->out[1]));
}

typedef struct max_row {
  int p, oh, arg;  // arg: i64 local array, per column the offset of its window's maximum
  kiln_krange kh;
} max_row;

// for ow in [lo, hi): arg[ow] = the offset in plane p of window (oh, ow)'s first maximum in window
// order. Branch-free (selects over every tap, clamped taps where `clamp_cols`) so the columns
// vectorize.
static void scan_windows(const kiln_lower_ctx *c, const kiln_window *w, const kiln_shape *x,
                         const max_row *r, int64_t lo, int64_t hi, bool clamp_cols) {
  if (lo >= hi) return;
  kiln_lb *b = c->b;
  int xbuf = kiln_in_buf(c, 0);
  int ow = kiln_lb_for(b, "ow", lx_int(b, lo), lx_int(b, hi));
  kiln_krange kw_range = {.lo_var = -1, .hi_var = -1, .lo = 0, .hi = w->kernel[1]};
  if (clamp_cols) kw_range = kiln_window_lower_range(b, w, 1, ow, "kw");
  int kh0 = kiln_lb_decl(b, "kh0", KILN_I64, kiln_krange_lo(b, &r->kh));
  int kw0 = kiln_lb_decl(b, "kw0", KILN_I64, kiln_krange_lo(b, &kw_range));
  int at = kiln_lb_decl(b, "at", KILN_I64,
                        plane_offset(b, x, kiln_window_lower_pos(b, w, 0, r->oh, kh0),
                                     kiln_window_lower_pos(b, w, 1, ow, kw0)));
  int best = kiln_lb_decl(b, "best", kiln_lower_in(c, 0)->dtype,
                          lx_load(b, xbuf, in_plane(b, x, r->p, lx_var(b, at))));
  int kh = kiln_lb_for_n(b, "kh", w->kernel[0]);
  kiln_lb_unroll(b, (int)w->kernel[0]);
  int khc = clamped_tap(b, "khc", &r->kh, kh);
  int kw = kiln_lb_for_n(b, "kw", w->kernel[1]);
  kiln_lb_unroll(b, (int)w->kernel[1]);
  int kwc = clamp_cols ? clamped_tap(b, "kwc", &kw_range, kw) : kw;
  int here = kiln_lb_decl(b, "here", KILN_I64,
                          plane_offset(b, x, kiln_window_lower_pos(b, w, 0, r->oh, khc),
                                       kiln_window_lower_pos(b, w, 1, ow, kwc)));
  int val = kiln_lb_decl(b, "val", kiln_lower_in(c, 0)->dtype,
                         lx_load(b, xbuf, in_plane(b, x, r->p, lx_var(b, here))));
  kiln_lb_assign(b, at,
                 lx_select(b, lx_bin(b, LB_LT, lx_var(b, best), lx_var(b, val)), lx_var(b, here),
                           lx_var(b, at)));
  kiln_lb_assign(b, best,
                 lx_select(b, lx_bin(b, LB_LT, lx_var(b, best), lx_var(b, val)), lx_var(b, val),
                           lx_var(b, best)));
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
  kiln_lb_store_local(b, r->arg, lx_var(b, ow), lx_var(b, at));
  kiln_lb_end_for(b);
}

// Per plane p and output row oh: the maxima's offsets of the row's windows (vectorized over the
// columns: clamped taps at the borders, plain ones inside), then dy scattered to them in column
// order (serial: neighbouring windows can share their maximum).
static void max_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0);
  kiln_window w;
  window_of(c->node, NULL, &x->shape, max_opts, &w);
  kiln_lb_comment(b, "MaxPoolGrad %s: x %s -> dx (ties: first max in window order)", c->node->name,
                  kiln_describe(x).text);
  int64_t lo, hi;
  inner_cols(&w, &lo, &hi);
  max_row r;
  r.p = open_zeroed_plane(c, &x->shape);
  r.oh = kiln_lb_for_n(b, "oh", w.out[0]);
  r.kh = kiln_window_lower_range(b, &w, 0, r.oh, "kh");
  r.arg = kiln_lb_decl_array(b, "arg", KILN_I64, w.out[1]);
  scan_windows(c, &w, &x->shape, &r, 0, lo, true);
  scan_windows(c, &w, &x->shape, &r, lo, hi, false);
  scan_windows(c, &w, &x->shape, &r, hi, w.out[1], true);
  int ow = kiln_lb_for_n(b, "ow", w.out[1]);
  kiln_lb_serial(b);
  plane_loops v = {.p = r.p, .oh = r.oh, .ow = ow};
  add_to(c, in_plane(b, &x->shape, r.p, lx_local(b, r.arg, lx_var(b, ow))), dy_at(c, 1, &w, &v));
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
}

// count along one axis, as AveragePool divides: the window clipped to input + pads
// (count_include_pad) or to the input.
static kiln_lexpr *axis_count(kiln_lb *b, const kiln_window *w, int axis, bool include_pad, int o,
                              const kiln_krange *r) {
  if (!include_pad) return lx_bin(b, LB_SUB, kiln_krange_hi(b, r), kiln_krange_lo(b, r));
  int64_t limit = w->in[axis] + w->pad_begin[axis] + w->pad_end[axis];
  kiln_lexpr *left =
      lx_bin(b, LB_SUB, lx_int(b, limit), lx_mul(b, lx_var(b, o), lx_int(b, w->stride[axis])));
  return lx_bin(b, LB_MIN, lx_int(b, w->kernel[axis]), left);
}

static void avg_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *dx = kiln_lower_out(c, 0);
  kiln_dtype t = dx->dtype;
  kiln_window w;
  window_of(c->node, NULL, &dx->shape, avg_opts, &w);
  bool include_pad = kiln_attr_int(c->node, "count_include_pad", 0) != 0;
  kiln_lb_comment(b, "AveragePoolGrad %s: -> dx %s", c->node->name, kiln_describe(dx).text);
  plane_loops v = open_plane(c, &w, &dx->shape);
  kiln_lexpr *count = lx_mul(b, axis_count(b, &w, 0, include_pad, v.oh, &v.kh),
                             axis_count(b, &w, 1, include_pad, v.ow, &v.kw));
  int share =
      kiln_lb_decl(b, "share", t, lx_bin(b, LB_DIV, dy_at(c, 0, &w, &v), lx_cast(b, t, count)));
  int kh = kiln_lb_for(b, "kh", kiln_krange_lo(b, &v.kh), kiln_krange_hi(b, &v.kh));
  int kw = kiln_lb_for(b, "kw", kiln_krange_lo(b, &v.kw), kiln_krange_hi(b, &v.kw));
  add_to(c,
         plane_index(b, &dx->shape, v.p, kiln_window_lower_pos(b, &w, 0, v.oh, kh),
                     kiln_window_lower_pos(b, &w, 1, v.ow, kw)),
         lx_var(b, share));
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
  close_plane(b);
}

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  const kiln_tensor *dx = kiln_out(g, n, 0);
  int64_t k[2] = {1, 1};
  kiln_attr_ints(n, "kernel_shape", k, 2);
  return kiln_shape_numel(&dx->shape) * k[0] * k[1];
}

const kiln_op_def kiln_op_MaxPoolGrad = {
    .name = "MaxPoolGrad",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = max_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = max_infer,
    .eval = max_eval,
    .lower = max_lower,
    .flops = flops,
    .tol = {1e-7, 4e-7},  // sums of a few dy values where windows overlap
};

const kiln_op_def kiln_op_AveragePoolGrad = {
    .name = "AveragePoolGrad",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = avg_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = avg_infer,
    .eval = avg_eval,
    .lower = avg_lower,
    .flops = flops,
    .tol = {1e-7, 1e-6},  // a division and a few sums
};
