// Sliding windows over 1 to 3 spatial axes, shared by Conv, MaxPool and AveragePool: the window
// attributes (strides, pads, dilations, auto_pad, ceil_mode), output sizes, and loop bounds
// clamped to the input. Then what MaxPool and AveragePool have in common: shape inference, the
// lowering skeleton, flops.
//
// Output size along one axis (ONNX), with effective kernel ek = (k - 1) * dilation + 1:
//   NOTSET, VALID (pads 0):  out = floor_or_ceil((in + pad_begin + pad_end - ek) / stride) + 1
//                            with ceil_mode, a window must start inside the input or the begin
//                            padding: if (out - 1) * stride >= in + pad_begin, out -= 1
//   SAME_UPPER, SAME_LOWER:  out = ceil(in / stride), total padding
//                            max(0, (out - 1) * stride + ek - in) split evenly; the odd one goes
//                            at the end (UPPER) or the beginning (LOWER)
#include <string.h>

#include "../op_internal.h"

typedef enum { AUTO_PAD_NOTSET, AUTO_PAD_SAME_UPPER, AUTO_PAD_SAME_LOWER, AUTO_PAD_VALID } auto_pad;

static bool read_auto_pad(const kiln_node *n, kiln_diag *d, auto_pad *out) {
  static const char *const names[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"};
  const char *s = kiln_attr_string(n, "auto_pad", "NOTSET");
  for (int i = 0; i < 4; i++) {
    if (strcmp(s, names[i]) == 0) {
      *out = (auto_pad)i;
      return true;
    }
  }
  kiln_op_error(d, n,
                "attrs.auto_pad: expected NOTSET, SAME_UPPER, SAME_LOWER or VALID, got \"%s\"", s);
  return false;
}

const char *kiln_spatial_axis_name(int rank, int axis) {
  static const char *const names[KILN_MAX_SPATIAL][KILN_MAX_SPATIAL] = {
      {"L"}, {"H", "W"}, {"D", "H", "W"}};
  return rank >= 1 && rank <= KILN_MAX_SPATIAL && axis >= 0 && axis < rank ? names[rank - 1][axis]
                                                                           : "?";
}

bool kiln_window_kernel_attr_nd(const kiln_node *n, kiln_diag *d, int rank, bool required,
                                int64_t *kernel, bool *present) {
  *present = kiln_node_attr(n, "kernel_shape") != NULL;
  if (!*present && required) {
    kiln_op_error(d, n, "attrs.kernel_shape: required (%d positive integers)", rank);
    return false;
  }
  return kiln_op_read_ints(n, d, "kernel_shape", rank, KILN_INTS_POSITIVE, kernel);
}

bool kiln_window_kernel_attr(const kiln_node *n, kiln_diag *d, bool required, int64_t kernel[2],
                             bool *present) {
  return kiln_window_kernel_attr_nd(n, d, 2, required, kernel, present);
}

// Output size and pads along one axis; false (after reporting) if the window does not fit.
static bool resolve_axis(const kiln_node *n, kiln_diag *d, int axis, auto_pad mode, bool ceil_mode,
                         kiln_window *w) {
  int64_t in = w->in[axis], s = w->stride[axis];
  int64_t ek = (w->kernel[axis] - 1) * w->dilation[axis] + 1;
  if (mode == AUTO_PAD_SAME_UPPER || mode == AUTO_PAD_SAME_LOWER) {
    int64_t out = (in + s - 1) / s;
    int64_t total = (out - 1) * s + ek - in;
    if (total < 0) total = 0;
    w->pad_begin[axis] = mode == AUTO_PAD_SAME_UPPER ? total / 2 : total - total / 2;
    w->pad_end[axis] = total - w->pad_begin[axis];
    w->out[axis] = out;
    return true;
  }
  if (mode == AUTO_PAD_VALID) w->pad_begin[axis] = w->pad_end[axis] = 0;
  int64_t padded = in + w->pad_begin[axis] + w->pad_end[axis];
  if (padded < ek) {
    kiln_op_error(d, n,
                  "attrs.kernel_shape: the window (%lld with dilation) is larger than the padded "
                  "input (%lld) along %s",
                  (long long)ek, (long long)padded, kiln_spatial_axis_name(w->rank, axis));
    return false;
  }
  int64_t out = (padded - ek + (ceil_mode ? s - 1 : 0)) / s + 1;
  if (ceil_mode && (out - 1) * s >= in + w->pad_begin[axis]) out--;
  w->out[axis] = out;
  return true;
}

// Reads the INTS attributes of the window into w and pads[2 * rank]; false after reporting.
static bool read_window_attrs(const kiln_node *n, kiln_diag *d, kiln_window_opts opts,
                              kiln_window *w, int64_t *pads, int64_t *ceil_mode, auto_pad *mode) {
  int r = w->rank;
  bool ok = kiln_op_read_ints(n, d, "strides", r, KILN_INTS_POSITIVE, w->stride);
  ok &= kiln_op_read_ints(n, d, "pads", 2 * r, KILN_INTS_NONNEGATIVE, pads);
  if (opts.dilations)
    ok &= kiln_op_read_ints(n, d, "dilations", r, KILN_INTS_POSITIVE, w->dilation);
  if (opts.ceil_mode) ok &= kiln_op_read_int(n, d, "ceil_mode", 0, 0, 1, ceil_mode);
  ok &= read_auto_pad(n, d, mode);
  return ok;
}

bool kiln_window_resolve_nd(const kiln_node *n, kiln_diag *d, int rank, const int64_t *in,
                            const int64_t *kernel, kiln_window_opts opts, kiln_window *w) {
  *w = (kiln_window){.rank = rank};
  for (int i = 0; i < rank; i++) {
    w->in[i] = in[i], w->kernel[i] = kernel[i];
    w->stride[i] = w->dilation[i] = 1;
  }
  int64_t pads[2 * KILN_MAX_SPATIAL] = {0}, ceil_mode = 0;
  auto_pad mode = AUTO_PAD_NOTSET;
  if (!read_window_attrs(n, d, opts, w, pads, &ceil_mode, &mode)) return false;
  bool any_pad = false;
  for (int i = 0; i < 2 * rank; i++) any_pad |= pads[i] != 0;
  if (mode != AUTO_PAD_NOTSET && any_pad) {
    kiln_op_error(d, n, "attrs.pads: must be absent or zero when auto_pad is %s",
                  kiln_attr_string(n, "auto_pad", ""));
    return false;
  }
  for (int i = 0; i < rank; i++) {
    w->pad_begin[i] = pads[i], w->pad_end[i] = pads[rank + i];
    if (!resolve_axis(n, d, i, mode, ceil_mode, w)) return false;
  }
  return true;
}

bool kiln_window_resolve(const kiln_node *n, kiln_diag *d, const int64_t in[2],
                         const int64_t kernel[2], kiln_window_opts opts, kiln_window *w) {
  return kiln_window_resolve_nd(n, d, 2, in, kernel, opts, w);
}

static int64_t product(const int64_t *v, int count) {
  int64_t p = 1;
  for (int i = 0; i < count; i++) p *= v[i];
  return p;
}

int64_t kiln_window_taps(const kiln_window *w) { return product(w->kernel, w->rank); }
int64_t kiln_window_out_size(const kiln_window *w) { return product(w->out, w->rank); }
int64_t kiln_window_in_size(const kiln_window *w) { return product(w->in, w->rank); }

bool kiln_window_tap(const kiln_window *w, int64_t o, int64_t t, int64_t *at) {
  int64_t pos[KILN_MAX_SPATIAL];
  for (int i = w->rank - 1; i >= 0; i--) {  // unravel o and t, last axis fastest
    int64_t oi = o % w->out[i], ki = t % w->kernel[i];
    o /= w->out[i], t /= w->kernel[i];
    pos[i] = oi * w->stride[i] - w->pad_begin[i] + ki * w->dilation[i];
    if (pos[i] < 0 || pos[i] >= w->in[i]) return false;  // padding
  }
  *at = 0;
  for (int i = 0; i < w->rank; i++) *at = *at * w->in[i] + pos[i];
  return true;
}

// Whether some output position has a window reaching before / past the input along axis.
static bool clips_begin(const kiln_window *w, int axis) { return w->pad_begin[axis] > 0; }

static bool clips_end(const kiln_window *w, int axis) {
  int64_t last = (w->out[axis] - 1) * w->stride[axis] - w->pad_begin[axis] +
                 (w->kernel[axis] - 1) * w->dilation[axis];
  return last >= w->in[axis];
}

kiln_lexpr *kiln_window_lower_pos(kiln_lb *b, const kiln_window *w, int axis, int o_var,
                                  int k_var) {
  kiln_lexpr *pos = lx_mul(b, lx_var(b, o_var), lx_int(b, w->stride[axis]));
  if (w->pad_begin[axis]) pos = lx_bin(b, LB_SUB, pos, lx_int(b, w->pad_begin[axis]));
  return lx_add(b, pos, lx_mul(b, lx_var(b, k_var), lx_int(b, w->dilation[axis])));
}

// ceil(x / d) for d >= 1, exact for x >= 0; for x < 0 it gives a value <= 0, which is all the
// clamped bounds below need (division truncates toward zero).
static kiln_lexpr *ceil_div(kiln_lb *b, kiln_lexpr *x, int64_t d) {
  if (d == 1) return x;
  return lx_bin(b, LB_DIV, lx_add(b, x, lx_int(b, d - 1)), lx_int(b, d));
}

// c - o * s
static kiln_lexpr *minus_scaled(kiln_lb *b, int64_t c, int o_var, int64_t s) {
  return lx_bin(b, LB_SUB, lx_int(b, c), lx_mul(b, lx_var(b, o_var), lx_int(b, s)));
}

kiln_krange kiln_window_lower_range(kiln_lb *b, const kiln_window *w, int axis, int o_var,
                                    const char *k_name) {
  int64_t s = w->stride[axis], p = w->pad_begin[axis], dil = w->dilation[axis];
  kiln_krange r = {.lo_var = -1, .hi_var = -1, .lo = 0, .hi = w->kernel[axis]};
  char name[64];
  // Input position o*s - p + k*dil must be >= 0: k >= ceil((p - o*s) / dil).
  if (clips_begin(w, axis)) {
    kiln_lexpr *first = ceil_div(b, minus_scaled(b, p, o_var, s), dil);
    snprintf(name, sizeof name, "%s_lo", k_name);
    r.lo_var = kiln_lb_decl(b, name, KILN_I64, lx_bin(b, LB_MAX, lx_int(b, 0), first));
  }
  // ... and < in: k < ceil((in + p - o*s) / dil).
  if (clips_end(w, axis)) {
    kiln_lexpr *end = ceil_div(b, minus_scaled(b, w->in[axis] + p, o_var, s), dil);
    snprintf(name, sizeof name, "%s_hi", k_name);
    r.hi_var = kiln_lb_decl(b, name, KILN_I64, lx_bin(b, LB_MIN, lx_int(b, r.hi), end));
  }
  return r;
}

void kiln_window_lower_cols(kiln_lb *b, const kiln_window *w, int axis, int k_var,
                            const char *o_name, kiln_lexpr **lo, kiln_lexpr **hi) {
  int64_t s = w->stride[axis], p = w->pad_begin[axis];
  kiln_lexpr *shift = lx_mul(b, lx_var(b, k_var), lx_int(b, w->dilation[axis]));  // k * dil
  char name[64];
  *lo = lx_int(b, 0);
  *hi = lx_int(b, w->out[axis]);
  // o*s - p + k*dil >= 0  <=>  o >= ceil((p - k*dil) / s)
  if (clips_begin(w, axis)) {
    kiln_lexpr *first = ceil_div(b, lx_bin(b, LB_SUB, lx_int(b, p), shift), s);
    snprintf(name, sizeof name, "%s_lo", o_name);
    *lo = lx_var(b, kiln_lb_decl(b, name, KILN_I64, lx_bin(b, LB_MAX, *lo, first)));
  }
  // o*s - p + k*dil < in  <=>  o < ceil((in + p - k*dil) / s)
  if (clips_end(w, axis)) {
    kiln_lexpr *rest = lx_bin(b, LB_SUB, lx_int(b, w->in[axis] + p), kiln_lx_clone(b, shift));
    snprintf(name, sizeof name, "%s_hi", o_name);
    *hi = lx_var(b, kiln_lb_decl(b, name, KILN_I64, lx_bin(b, LB_MIN, *hi, ceil_div(b, rest, s))));
  }
}

kiln_lexpr *kiln_krange_lo(kiln_lb *b, const kiln_krange *r) {
  return r->lo_var >= 0 ? lx_var(b, r->lo_var) : lx_int(b, r->lo);
}

kiln_lexpr *kiln_krange_hi(kiln_lb *b, const kiln_krange *r) {
  return r->hi_var >= 0 ? lx_var(b, r->hi_var) : lx_int(b, r->hi);
}

bool kiln_window_grad_is_2d(kiln_grad_ctx *c, int input) {
  const kiln_shape *x = &c->g->tensors[c->node.inputs[input]].shape;
  if (x->rank == 4) return true;
  kiln_op_error(c->d, &c->node,
                "training: the gradient of %s is 2-D only (inputs[%d] (N, C, H, W)), got %s",
                kiln_op_get(c->node.op)->name, input, kiln_shape_text(x).text);
  return false;
}

// ---- MaxPool and AveragePool ----

// The spatial rank of a pool: kernel_shape's length (1..3), which x's rank must match.
static bool pool_rank(const kiln_node *n, kiln_diag *d, const kiln_tensor *x, int *rank) {
  const kiln_attr *k = kiln_node_attr(n, "kernel_shape");
  if (!k || k->type != KILN_ATTR_INTS) {
    kiln_op_error(d, n, "attrs.kernel_shape: required (1 to %d positive integers)",
                  KILN_MAX_SPATIAL);
    return false;
  }
  *rank = (int)k->count;
  if (*rank < 1 || *rank > KILN_MAX_SPATIAL) {
    kiln_op_error(d, n, "attrs.kernel_shape: expected 1 to %d positive integers, got %d values",
                  KILN_MAX_SPATIAL, *rank);
    return false;
  }
  if (x->shape.rank == *rank + 2) return true;
  kiln_op_error(d, n,
                "inputs[0] (%s): expected a %d-D tensor (N, C and the %d spatial axes of "
                "kernel_shape), got %s",
                x->name, *rank + 2, *rank, kiln_shape_text(&x->shape).text);
  return false;
}

bool kiln_pool_infer(kiln_graph *g, kiln_node *n, kiln_diag *d, kiln_window_opts opts) {
  unsigned quantized = KILN_DT_FLOAT | KILN_DT(KILN_I8) | KILN_DT(KILN_U8);
  if (!(opts.quantized ? kiln_op_check_dtypes(g, n, 0, 1, quantized, false, d)
                       : kiln_op_check_float_inputs(g, n, 1, d)))
    return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  int rank;
  int64_t kernel[KILN_MAX_SPATIAL];
  bool present;
  if (!pool_rank(n, d, x, &rank) || !kiln_window_kernel_attr_nd(n, d, rank, true, kernel, &present))
    return false;
  kiln_window w;
  if (!kiln_window_resolve_nd(n, d, rank, &x->shape.dim[2], kernel, opts, &w)) return false;
  kiln_shape out = x->shape;  // out: (N, C, OD1, ..., ODk)
  for (int i = 0; i < rank; i++) out.dim[2 + i] = w.out[i];
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

kiln_window kiln_pool_window(const kiln_node *n, const kiln_shape *x, kiln_window_opts opts) {
  int rank = x->rank - 2;
  int64_t kernel[KILN_MAX_SPATIAL] = {1, 1, 1};
  bool present;
  kiln_window w;
  kiln_window_kernel_attr_nd(n, NULL, rank, true, kernel, &present);
  kiln_window_resolve_nd(n, NULL, rank, &x->dim[2], kernel, opts, &w);
  return w;
}

void kiln_pool_open_outputs(const kiln_lower_ctx *c, const kiln_window *w, kiln_pool_vars *v) {
  static const char *const o_names[] = {"od", "oh", "ow"}, *const k_names[] = {"kd", "kh", "kw"};
  kiln_lb *b = c->b;
  const kiln_shape *xs = &kiln_lower_in(c, 0)->shape;
  int first = KILN_MAX_SPATIAL - w->rank;  // 2-D: oh, ow
  v->n = kiln_lb_for_n(b, "n", xs->dim[0]);
  v->c = kiln_lb_for_n(b, "c", xs->dim[1]);
  for (int i = 0; i < w->rank; i++) {
    v->o[i] = kiln_lb_for_n(b, o_names[first + i], w->out[i]);
    v->k[i] = kiln_window_lower_range(b, w, i, v->o[i], k_names[first + i]);
  }
}

void kiln_pool_open_taps(const kiln_lower_ctx *c, const kiln_window *w, const kiln_pool_vars *v,
                         int *k_vars) {
  static const char *const k_names[] = {"kd", "kh", "kw"};
  kiln_lb *b = c->b;
  int first = KILN_MAX_SPATIAL - w->rank;
  for (int i = 0; i < w->rank; i++)
    k_vars[i] = kiln_lb_for(b, k_names[first + i], kiln_krange_lo(b, &v->k[i]),
                            kiln_krange_hi(b, &v->k[i]));
}

kiln_lexpr *kiln_pool_x_index(const kiln_lower_ctx *c, const kiln_window *w,
                              const kiln_pool_vars *v, const int *k_vars) {
  kiln_lb *b = c->b;
  kiln_lexpr *pos[KILN_MAX_SPATIAL];
  for (int i = 0; i < w->rank; i++) pos[i] = kiln_window_lower_pos(b, w, i, v->o[i], k_vars[i]);
  return kiln_lx_ncx(b, lx_var(b, v->n), lx_var(b, v->c), &kiln_lower_in(c, 0)->shape, pos);
}

kiln_lexpr *kiln_pool_y_index(const kiln_lower_ctx *c, const kiln_pool_vars *v, int output) {
  kiln_lb *b = c->b;
  const kiln_shape *ys = &kiln_lower_out(c, output)->shape;
  kiln_lexpr *pos[KILN_MAX_SPATIAL];
  for (int i = 0; i < ys->rank - 2; i++) pos[i] = lx_var(b, v->o[i]);
  return kiln_lx_ncx(b, lx_var(b, v->n), lx_var(b, v->c), ys, pos);
}

// "3x3" / "2x3x3"
static const char *dims_text(const int64_t *v, int count, char *buf, size_t size) {
  size_t len = 0;
  buf[0] = 0;
  for (int i = 0; i < count && len < size; i++)
    len += (size_t)snprintf(buf + len, size - len, "%s%lld", i ? "x" : "", (long long)v[i]);
  return buf;
}

void kiln_pool_lower(const kiln_lower_ctx *c, kiln_window_opts opts, double init, kiln_lbin combine,
                     kiln_pool_finish finish) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  kiln_window w = kiln_pool_window(c->node, &x->shape, opts);
  char kernel[64], stride[64];
  kiln_lb_comment(b, "%s %s: %s, kernel %s, stride %s -> %s", kiln_op_get(c->node->op)->name,
                  c->node->name, kiln_describe(x).text,
                  dims_text(w.kernel, w.rank, kernel, sizeof kernel),
                  dims_text(w.stride, w.rank, stride, sizeof stride), kiln_describe(y).text);
  kiln_dtype t = y->dtype;
  kiln_pool_vars v;
  kiln_pool_open_outputs(c, &w, &v);
  v.acc = kiln_lb_decl(b, "acc", t, lx_float(b, t, init));
  int k[KILN_MAX_SPATIAL];
  kiln_pool_open_taps(c, &w, &v, k);
  kiln_lexpr *xv = lx_load(b, kiln_in_buf(c, 0), kiln_pool_x_index(c, &w, &v, k));
  kiln_lb_assign(b, v.acc, lx_bin(b, combine, lx_var(b, v.acc), xv));
  for (int i = 0; i < w.rank; i++) kiln_lb_end_for(b);  // the kernel loops
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_pool_y_index(c, &v, 0),
                finish ? finish(c, &w, &v) : lx_var(b, v.acc));
  for (int i = 0; i < w.rank + 2; i++) kiln_lb_end_for(b);  // the output loops, c, n
}

// The row form (2-D, no finish): output rows combined in place, the innermost loop running over
// output columns, so it vectorizes; no bound checks (row and column ranges are clamped).
//   for nc, oh [kh range]:
//     y[nc][oh][:] = init
//     for kh in range, kw: for ow in [ow_lo(kw), ow_hi(kw)):
//       y[nc][oh][ow] = combine(y[nc][oh][ow], x[nc][oh*sh - pt + kh*dh][ow*sw - pl + kw*dw])
// Each output combines the same taps as kiln_pool_lower, in the same kh-major order.
void kiln_pool_lower_rows(const kiln_lower_ctx *c, kiln_window_opts opts, double init,
                          kiln_lbin combine) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  // (N, C, H, W) and (N, C, OH, OW): the planar views; E values per pixel (L when NCHWc)
  kiln_shape xs = kiln_nchw_shape(&x->shape), ys = kiln_nchw_shape(&y->shape);
  const int64_t *xd = xs.dim, *yd = ys.dim;
  int64_t E = x->shape.rank == 5 ? x->shape.dim[4] : 1;
  kiln_window w = kiln_pool_window(c->node, &xs, opts);
  kiln_lb_comment(b, "%s %s (rows): %s, kernel %lldx%lld -> %s", kiln_op_get(c->node->op)->name,
                  c->node->name, kiln_describe(x).text, (long long)w.kernel[0],
                  (long long)w.kernel[1], kiln_describe(y).text);
  kiln_dtype t = y->dtype;
  int nc = kiln_lb_for_n(b, "nc", xd[0] * xd[1] / E), oh = kiln_lb_for_n(b, "oh", yd[2]);
  kiln_krange rh = kiln_window_lower_range(b, &w, 0, oh, "kh");
  kiln_lexpr *row = lx_madd(b, lx_var(b, nc), yd[2], lx_var(b, oh));
  int ow = kiln_lb_for_n(b, "ow", yd[3] * E);
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_madd(b, row, yd[3] * E, lx_var(b, ow)),
                lx_float(b, t, init));
  kiln_lb_end_for(b);
  int kh = kiln_lb_for(b, "kh", kiln_krange_lo(b, &rh), kiln_krange_hi(b, &rh));
  int kw = kiln_lb_for_n(b, "kw", w.kernel[1]);
  kiln_lexpr *lo, *hi;
  kiln_window_lower_cols(b, &w, 1, kw, "ow", &lo, &hi);
  ow = kiln_lb_for(b, "ow", lo, hi);
  int e = E > 1 ? kiln_lb_for_n(b, "e", E) : -1;  // the lanes of an NCHWc pixel
  kiln_lexpr *in_row = lx_madd(b, lx_var(b, nc), xd[2], kiln_window_lower_pos(b, &w, 0, oh, kh));
  kiln_lexpr *xi = lx_madd(b, in_row, xd[3], kiln_window_lower_pos(b, &w, 1, ow, kw));
  kiln_lexpr *yi = lx_madd(b, kiln_lx_clone(b, row), yd[3], lx_var(b, ow));
  if (e >= 0) xi = lx_madd(b, xi, E, lx_var(b, e)), yi = lx_madd(b, yi, E, lx_var(b, e));
  kiln_lexpr *v =
      lx_bin(b, combine, lx_load(b, kiln_out_buf(c, 0), yi), lx_load(b, kiln_in_buf(c, 0), xi));
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_lx_clone(b, yi), v);
  if (e >= 0) kiln_lb_end_for(b);                  // e
  for (int i = 0; i < 5; i++) kiln_lb_end_for(b);  // ow, kw, kh, oh, nc
}

int64_t kiln_pool_flops(const kiln_graph *g, const kiln_node *n, kiln_window_opts opts) {
  kiln_window w = kiln_pool_window(n, &kiln_in(g, n, 0)->shape, opts);
  return kiln_shape_numel(&kiln_out(g, n, 0)->shape) * kiln_window_taps(&w);
}

// ---- GlobalMaxPool and GlobalAveragePool ----
// x: (N, C, D1, ..., Dk) viewed as (N * C, S) with S = D1 * ... * Dk; y: (N, C, 1, ..., 1).

bool kiln_global_pool_shape(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                            kiln_shape *out) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  if (x->shape.rank < 3) {
    kiln_op_error(d, n, "inputs[0] (%s): expected at least 3 dimensions (N, C, D1, ...), got %s",
                  x->name, kiln_shape_text(&x->shape).text);
    return false;
  }
  *out = x->shape;  // out: (N, C, 1, ..., 1)
  for (int i = 2; i < out->rank; i++) out->dim[i] = 1;
  return true;
}

bool kiln_global_pool_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  kiln_shape out;
  if (!kiln_op_check_float_inputs(g, n, 1, d) || !kiln_global_pool_shape(g, n, d, &out))
    return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &out);
  return true;
}

int64_t kiln_global_pool_size(const kiln_shape *x) {
  int64_t s = 1;
  for (int i = 2; i < x->rank; i++) s *= x->dim[i];
  return s;
}

void kiln_global_pool_lower(const kiln_lower_ctx *c, double init, kiln_lbin combine, bool mean) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  int64_t rows = x->shape.dim[0] * x->shape.dim[1], size = kiln_global_pool_size(&x->shape);
  kiln_dtype t = y->dtype;
  kiln_lb_comment(b, "%s %s: %s over %lld elements per channel -> %s",
                  kiln_op_get(c->node->op)->name, c->node->name, kiln_describe(x).text,
                  (long long)size, kiln_describe(y).text);
  int r = kiln_lb_for_n(b, "nc", rows);
  int acc = kiln_lb_decl(b, "acc", t, lx_float(b, t, init));
  int i = kiln_lb_for_n(b, "i", size);
  kiln_lexpr *xv = lx_load(b, kiln_in_buf(c, 0), lx_madd(b, lx_var(b, r), size, lx_var(b, i)));
  kiln_lb_assign(b, acc, lx_bin(b, combine, lx_var(b, acc), xv));
  kiln_lb_end_for(b);  // i
  kiln_lexpr *v = lx_var(b, acc);
  if (mean) v = lx_bin(b, LB_DIV, v, lx_float(b, t, (double)size));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, r), v);
  kiln_lb_end_for(b);  // nc
}

int64_t kiln_global_pool_flops(const kiln_graph *g, const kiln_node *n) {
  return kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}
