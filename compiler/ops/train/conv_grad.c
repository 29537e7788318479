// Backward kernels of Conv (2-D, groups, strides, pads, dilations; the forward node's attributes
// plus `kernel_shape`, which the gradient rule always sets):
//   ConvGradInput(dy (N, M, OH, OW), w (M, C/g, kH, kW)) -> dx (N, C, H, W), `input_shape` = x's
//     dx[n, c, ih, iw] = sum over m of c's group, kh, kw with ih = oh*s - p + kh*d (same for w)
//                        of dy[n, m, oh, ow] * w[m, c - group base, kh, kw]
//   ConvGradFilter(x (N, C, H, W), dy (N, M, OH, OW)) -> dw (M, C/g, kH, kW)
//     dw[m, ci, kh, kw] = sum over n, oh, ow of dy[n, m, oh, ow] * x[n, c, oh*s - p + kh*d, ...]
// Both are gathers (each output element is one sum), so their outer loops run in parallel. The
// lowerings here go row by row; f32 convs without groups take the register-blocked ones of
// conv_grad_input.c and conv_grad_filter.c instead.
#include "conv_grad_blocked.h"

static const kiln_window_opts opts = {.dilations = true, .ceil_mode = false};

static const kiln_attr_spec input_attrs[] = {
    {"auto_pad", KILN_ATTR_STRING, false}, {"dilations", KILN_ATTR_INTS, false},
    {"group", KILN_ATTR_INT, false},       {"kernel_shape", KILN_ATTR_INTS, true},
    {"pads", KILN_ATTR_INTS, false},       {"strides", KILN_ATTR_INTS, false},
    {"input_shape", KILN_ATTR_INTS, true}, {0},
};
static const kiln_attr_spec filter_attrs[] = {
    {"auto_pad", KILN_ATTR_STRING, false},
    {"dilations", KILN_ATTR_INTS, false},
    {"group", KILN_ATTR_INT, false},
    {"kernel_shape", KILN_ATTR_INTS, true},
    {"pads", KILN_ATTR_INTS, false},
    {"strides", KILN_ATTR_INTS, false},
    {0},
};

typedef kiln_conv_grad_dims conv_dims;  // conv_grad_blocked.h

// Resolves the window over x's spatial size; checks that dy has y's shape.
static bool resolve(const kiln_node *n, kiln_diag *d, const kiln_shape *x, const kiln_shape *dy,
                    int64_t M, conv_dims *cd) {
  int64_t kernel[2];
  bool present;
  if (!kiln_window_kernel_attr(n, d, true, kernel, &present) ||
      !kiln_op_read_int(n, d, "group", 1, 1, INT64_MAX, &cd->group))
    return false;
  if (x->rank != 4 || x->dim[1] % cd->group || M % cd->group) {
    kiln_op_error(d, n, "expected x (N, C, H, W) with C and M divisible by group, got %s",
                  kiln_shape_text(x).text);
    return false;
  }
  if (!kiln_window_resolve(n, d, &x->dim[2], kernel, opts, &cd->win)) return false;
  cd->x = *x;
  cd->w = (kiln_shape){.rank = 4, .dim = {M, x->dim[1] / cd->group, kernel[0], kernel[1]}};
  cd->y = (kiln_shape){.rank = 4, .dim = {x->dim[0], M, cd->win.out[0], cd->win.out[1]}};
  if (!kiln_shape_equal(dy, &cd->y)) {
    kiln_op_error(d, n, "dy: expected shape %s, got %s", kiln_shape_text(&cd->y).text,
                  kiln_shape_text(dy).text);
    return false;
  }
  return true;
}

static bool input_dims(const kiln_node *n, kiln_diag *d, const kiln_shape *dy, int64_t M,
                       conv_dims *cd) {
  kiln_shape x = {.rank = 4};
  if (kiln_attr_ints(n, "input_shape", x.dim, 4) != 4) {
    kiln_op_error(d, n, "attrs.input_shape: expected 4 integers (N, C, H, W)");
    return false;
  }
  return resolve(n, d, &x, dy, M, cd);
}

static bool input_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 2, d)) return false;
  const kiln_tensor *dy = kiln_in(g, n, 0), *w = kiln_in(g, n, 1);
  conv_dims cd;
  if (w->shape.rank != 4 || !input_dims(n, d, &dy->shape, w->shape.dim[0], &cd)) return false;
  if (!kiln_train_check_shape(g, n, d, 1, &cd.w, "the conv's weights")) return false;
  kiln_op_set_output(g, n, 0, dy->dtype, &cd.x);
  return true;
}

static bool filter_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 2, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0), *dy = kiln_in(g, n, 1);
  conv_dims cd;
  if (dy->shape.rank != 4 || !resolve(n, d, &x->shape, &dy->shape, dy->shape.dim[1], &cd))
    return false;
  kiln_op_set_output(g, n, 0, x->dtype, &cd.w);
  return true;
}

// Calls fn(ctx, flat x index, flat w index, flat y index) for every valid (n, m, oh, ow, ci, kh,
// kw).
typedef void (*conv_visit)(void *ctx, int64_t xi, int64_t wi, int64_t yi);
static void for_each_tap(const conv_dims *cd, conv_visit fn, void *ctx) {
  const kiln_window *w = &cd->win;
  int64_t N = cd->x.dim[0], C = cd->x.dim[1], H = cd->x.dim[2], W = cd->x.dim[3];
  int64_t M = cd->w.dim[0], Cg = cd->w.dim[1], Mg = M / cd->group;
  int64_t OH = cd->y.dim[2], OW = cd->y.dim[3], KH = cd->w.dim[2], KW = cd->w.dim[3];
  for (int64_t n = 0; n < N; n++)
    for (int64_t m = 0; m < M; m++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++)
          for (int64_t ci = 0; ci < Cg; ci++)
            for (int64_t kh = 0; kh < KH; kh++)
              for (int64_t kw = 0; kw < KW; kw++) {
                int64_t ih = oh * w->stride[0] - w->pad_begin[0] + kh * w->dilation[0];
                int64_t iw = ow * w->stride[1] - w->pad_begin[1] + kw * w->dilation[1];
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                int64_t c = m / Mg * Cg + ci;
                fn(ctx, ((n * C + c) * H + ih) * W + iw, ((m * Cg + ci) * KH + kh) * KW + kw,
                   ((n * M + m) * OH + oh) * OW + ow);
              }
}

typedef struct taps {
  const double *a, *b;  // the two factors
  double *out;
} taps;

static void input_tap(void *ctx, int64_t xi, int64_t wi, int64_t yi) {
  taps *t = ctx;  // a = dy, b = w
  t->out[xi] += t->a[yi] * t->b[wi];
}

static void filter_tap(void *ctx, int64_t xi, int64_t wi, int64_t yi) {
  taps *t = ctx;  // a = x, b = dy
  t->out[wi] += t->a[xi] * t->b[yi];
}

static void input_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  conv_dims cd;
  input_dims(n, NULL, in[0].shape, in[1].shape->dim[0], &cd);
  for (int64_t i = 0; i < kiln_shape_numel(out->shape); i++) out->data[i] = 0;
  taps t = {in[0].data, in[1].data, out->data};
  for_each_tap(&cd, input_tap, &t);
}

static void filter_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  conv_dims cd;
  resolve(n, NULL, in[0].shape, in[1].shape, in[1].shape->dim[1], &cd);
  for (int64_t i = 0; i < kiln_shape_numel(out->shape); i++) out->data[i] = 0;
  taps t = {in[0].data, in[1].data, out->data};
  for_each_tap(&cd, filter_tap, &t);
}

// ---- Lowering ----

static kiln_lexpr *i64(kiln_lb *b, int64_t v) { return lx_int(b, v); }
static kiln_lexpr *var(kiln_lb *b, int v) { return lx_var(b, v); }

// The output positions o along axis a (0: H, 1: W) whose input position o*s - p + k*d lies
// inside x, for the tap k in variable kvar: ceil((p - k*d) / s) <= o < ceil((in + p - k*d) / s),
// clamped to [0, out). Returns the loop variable of `for o in [lo, hi)` (left open).
static int valid_outputs(kiln_lb *b, const kiln_window *w, int a, int kvar, int64_t out) {
  int64_t s = w->stride[a];
  kiln_lexpr *kd = lx_mul(b, var(b, kvar), i64(b, w->dilation[a]));
  kiln_lexpr *lo =
      lx_bin(b, LB_MAX, i64(b, 0),
             lx_bin(b, LB_DIV, lx_bin(b, LB_SUB, i64(b, w->pad_begin[a] + s - 1), kd), i64(b, s)));
  kd = lx_mul(b, var(b, kvar), i64(b, w->dilation[a]));
  kiln_lexpr *hi =
      lx_bin(b, LB_MIN, i64(b, out),
             lx_bin(b, LB_DIV, lx_bin(b, LB_SUB, i64(b, w->in[a] + w->pad_begin[a] + s - 1), kd),
                    i64(b, s)));
  return kiln_lb_for(b, a ? "ow" : "oh", lo, hi);
}

// The first element of plane (n, c) of an (N, C, H, W) tensor, written out with n and c (not a
// variable) so that the schedule sees every store indexed by the parallel loop's variable.
static kiln_lexpr *plane_start(kiln_lb *b, int n, int c, int64_t C, int64_t plane) {
  return lx_mul(b, lx_madd(b, var(b, n), C, var(b, c)), i64(b, plane));
}

// ConvGradInput as the transposed convolution, row by row: for n, c (parallel): the plane
// dx[n, c] starts at zero; for m in c's group, kh, oh (valid), kw: wv = w[m, c - base, kh, kw],
// and for ow (valid; vectorized) dx[n, c, oh*s - p + kh*d, ow*s - p + kw*d] += wv * dy[n, m, oh,
// ow]. The valid ranges are computed, so no loop tests a bound; each dx element sums its taps in
// (m, kh, kw) order.
static void input_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *dy = kiln_lower_in(c, 0), *wt = kiln_lower_in(c, 1),
                    *dx = kiln_lower_out(c, 0);
  conv_dims cd;
  input_dims(c->node, NULL, &dy->shape, wt->shape.dim[0], &cd);
  const kiln_window *w = &cd.win;
  int64_t C = cd.x.dim[1], H = cd.x.dim[2], W = cd.x.dim[3], M = cd.w.dim[0], Cg = cd.w.dim[1];
  int64_t Mg = M / cd.group, KH = cd.w.dim[2], KW = cd.w.dim[3];
  kiln_lb_comment(b, "ConvGradInput %s: dy %s, w %s -> dx %s", c->node->name,
                  kiln_describe(dy).text, kiln_describe(wt).text, kiln_describe(dx).text);
  if (kiln_conv_grad_input_blocked(c, &cd)) return;
  int n = kiln_lb_for_n(b, "n", cd.x.dim[0]);
  int ch = kiln_lb_for_n(b, "c", C);
  int z = kiln_lb_for_n(b, "i", H * W);
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_add(b, plane_start(b, n, ch, C, H * W), var(b, z)),
                lx_float(b, dx->dtype, 0));
  kiln_lb_end_for(b);
  // m runs over the group of channel c: [c / Cg * Mg, +Mg)
  kiln_lexpr *m0 = lx_mul(b, lx_bin(b, LB_DIV, var(b, ch), i64(b, Cg)), i64(b, Mg));
  int mbase = kiln_lb_decl(b, "m0", KILN_I64, m0);
  int m = kiln_lb_for(b, "m", var(b, mbase), lx_add(b, var(b, mbase), i64(b, Mg)));
  int kh = kiln_lb_for_n(b, "kh", KH);
  int oh = valid_outputs(b, w, 0, kh, cd.y.dim[2]);
  int kw = kiln_lb_for_n(b, "kw", KW);
  kiln_lexpr *ci = lx_bin(b, LB_MOD, var(b, ch), i64(b, Cg));
  int64_t wdims[4] = {M, Cg, KH, KW};
  kiln_lexpr *wi = kiln_lx_nchw(b, var(b, m), ci, wdims, var(b, kh), var(b, kw));
  int wv = kiln_lb_decl(b, "wv", dx->dtype, lx_load(b, kiln_in_buf(c, 1), wi));
  int ow = valid_outputs(b, w, 1, kw, cd.y.dim[3]);
  kiln_lexpr *yi = kiln_lx_nchw(b, var(b, n), var(b, m), cd.y.dim, var(b, oh), var(b, ow));
  kiln_lexpr *ih = kiln_window_lower_pos(b, w, 0, oh, kh),
             *iw = kiln_window_lower_pos(b, w, 1, ow, kw);
  kiln_lexpr *xi = lx_add(b, plane_start(b, n, ch, C, H * W), lx_madd(b, ih, W, iw));
  kiln_lb_store(b, kiln_out_buf(c, 0), xi,
                lx_muladd(b, var(b, wv), lx_load(b, kiln_in_buf(c, 0), yi),
                          lx_load(b, kiln_out_buf(c, 0), xi)));
  for (int k = 0; k < 7; k++) kiln_lb_end_for(b);  // ow, kw, oh, kh, m, c, n
}

// Widest output row whose partial sums ConvGradFilter keeps in a local array (16 KiB of f32).
enum { MAX_PARTIAL_ROW = 4096 };

// ConvGradFilter: for m (parallel), ci, kh, kw: dw[m, ci, kh, kw] = sum over n, oh, ow (valid) of
// dy[n, m, oh, ow] * x[n, c, ih, iw]. The sums run per output column first, in a local row
// part[ow] that the vectorized ow loop updates (no horizontal reduction in the hot loop), then
// the row is added up.
static void filter_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *dy = kiln_lower_in(c, 1), *dw = kiln_lower_out(c, 0);
  conv_dims cd;
  resolve(c->node, NULL, &x->shape, &dy->shape, dy->shape.dim[1], &cd);
  const kiln_window *w = &cd.win;
  kiln_dtype t = dw->dtype;
  int64_t M = cd.w.dim[0], Cg = cd.w.dim[1], Mg = M / cd.group, OW = cd.y.dim[3];
  bool rows = OW <= MAX_PARTIAL_ROW;
  kiln_lb_comment(b, "ConvGradFilter %s: x %s, dy %s -> dw %s", c->node->name,
                  kiln_describe(x).text, kiln_describe(dy).text, kiln_describe(dw).text);
  if (kiln_conv_grad_filter_blocked(c, &cd)) return;
  int m = kiln_lb_for_n(b, "m", M);
  int ci = kiln_lb_for_n(b, "ci", Cg);
  int kh = kiln_lb_for_n(b, "kh", cd.w.dim[2]);
  int kw = kiln_lb_for_n(b, "kw", cd.w.dim[3]);
  int ch = kiln_lb_decl(
      b, "ch", KILN_I64,
      lx_add(b, lx_mul(b, lx_bin(b, LB_DIV, var(b, m), i64(b, Mg)), i64(b, Cg)), var(b, ci)));
  int acc = kiln_lb_decl(b, "acc", t, lx_float(b, t, 0));
  int part = rows ? kiln_lb_decl_array(b, "part", t, OW) : -1;
  if (rows) {
    int l = kiln_lb_for_n(b, "l", OW);
    kiln_lb_store_local(b, part, var(b, l), lx_float(b, t, 0));
    kiln_lb_end_for(b);
  }
  int n = kiln_lb_for_n(b, "n", cd.x.dim[0]);
  int oh = valid_outputs(b, w, 0, kh, cd.y.dim[2]);
  int ow = valid_outputs(b, w, 1, kw, OW);
  kiln_lexpr *ih = kiln_window_lower_pos(b, w, 0, oh, kh);
  kiln_lexpr *iw = kiln_window_lower_pos(b, w, 1, ow, kw);
  kiln_lexpr *xi = kiln_lx_nchw(b, var(b, n), var(b, ch), cd.x.dim, ih, iw);
  kiln_lexpr *yi = kiln_lx_nchw(b, var(b, n), var(b, m), cd.y.dim, var(b, oh), var(b, ow));
  kiln_lexpr *prod =
      lx_bin(b, LB_MUL, lx_load(b, kiln_in_buf(c, 1), yi), lx_load(b, kiln_in_buf(c, 0), xi));
  if (rows)
    kiln_lb_store_local(b, part, var(b, ow),
                        lx_bin(b, LB_ADD, lx_local(b, part, var(b, ow)), prod));
  else
    kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, var(b, acc), prod));
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // ow, oh, n
  if (rows) {
    int l = kiln_lb_for_n(b, "l", OW);
    kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, var(b, acc), lx_local(b, part, var(b, l))));
    kiln_lb_end_for(b);
  }
  kiln_lexpr *wi = kiln_lx_nchw(b, var(b, m), var(b, ci), cd.w.dim, var(b, kh), var(b, kw));
  kiln_lb_store(b, kiln_out_buf(c, 0), wi, var(b, acc));
  for (int k = 0; k < 4; k++) kiln_lb_end_for(b);
}

// Two flops per tap: N * M * OH * OW * C/g * kH * kW multiply-adds (an upper bound with padding).
static int64_t input_flops(const kiln_graph *g, const kiln_node *n) {
  const kiln_tensor *dy = kiln_in(g, n, 0), *w = kiln_in(g, n, 1);
  return 2 * kiln_shape_numel(&dy->shape) * w->shape.dim[1] * w->shape.dim[2] * w->shape.dim[3];
}

static int64_t filter_flops(const kiln_graph *g, const kiln_node *n) {
  const kiln_tensor *dy = kiln_in(g, n, 1), *dw = kiln_out(g, n, 0);
  return 2 * kiln_shape_numel(&dy->shape) * dw->shape.dim[1] * dw->shape.dim[2] * dw->shape.dim[3];
}

const kiln_op_def kiln_op_ConvGradInput = {
    .name = "ConvGradInput",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = input_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = input_infer,
    .eval = input_eval,
    .lower = input_lower,
    .flops = input_flops,
    .tol = {1e-6, 1e-5},  // f32 sums of up to M/g * kH * kW products, as Conv
};

const kiln_op_def kiln_op_ConvGradFilter = {
    .name = "ConvGradFilter",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = filter_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = filter_infer,
    .eval = filter_eval,
    .lower = filter_lower,
    .flops = filter_flops,
    // f32 sums over the batch and every output position (thousands of products).
    .tol = {1e-5, 1e-4},
};
