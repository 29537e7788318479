// Conv (2-D, ONNX): y = x (*) w + b with groups, strides, pads, dilations and auto_pad.
//   x: (N, C, H, W)   w: (M, C / group, kH, kW)   b: (M), optional   y: (N, M, OH, OW)
// Output channel oc belongs to group g = oc / (M / group) and reads input channels
// [g * C/group, (g + 1) * C/group). Window logic (pads, output size) is shared with the pools in
// pool.c.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_window_opts opts = {.dilations = true, .ceil_mode = false};

static const kiln_attr_spec attrs[] = {
    {"auto_pad", KILN_ATTR_STRING, false},
    {"dilations", KILN_ATTR_INTS, false},
    {"group", KILN_ATTR_INT, false},
    {"kernel_shape", KILN_ATTR_INTS, false},
    {"pads", KILN_ATTR_INTS, false},
    {"strides", KILN_ATTR_INTS, false},
    {0},
};

static bool check_rank4(const kiln_node *n, kiln_diag *d, int i, const kiln_tensor *t,
                        const char *layout) {
  if (t->shape.rank == 4) return true;
  kiln_op_error(d, n,
                "inputs[%d] (%s): expected a 4-D tensor %s (only 2-D Conv is supported), got %s", i,
                t->name, layout, kiln_shape_text(&t->shape).text);
  return false;
}

// Checks w against x and group, and the bias against w.
static bool check_weights(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int64_t group) {
  const kiln_tensor *x = kiln_in(g, n, 0), *w = kiln_in(g, n, 1), *bias = kiln_in(g, n, 2);
  int64_t C = x->shape.dim[1], M = w->shape.dim[0];
  if (C % group != 0 || M % group != 0) {
    kiln_op_error(d, n,
                  "attrs.group: %lld must divide the input channels (%lld) and the output "
                  "channels (%lld)",
                  (long long)group, (long long)C, (long long)M);
    return false;
  }
  if (w->shape.dim[1] != C / group) {
    kiln_op_error(d, n,
                  "inputs[1] (%s): expected %lld input channels per group (dim 1; C = %lld, "
                  "group = %lld), got %s",
                  w->name, (long long)(C / group), (long long)C, (long long)group,
                  kiln_shape_text(&w->shape).text);
    return false;
  }
  if (bias && (bias->shape.rank != 1 || bias->shape.dim[0] != M)) {
    kiln_op_error(d, n,
                  "inputs[2] (%s): expected shape (%lld) (one bias per output channel), got %s",
                  bias->name, (long long)M, kiln_shape_text(&bias->shape).text);
    return false;
  }
  return true;
}

// kernel_shape, when given, must match w's spatial dims.
static bool check_kernel_attr(const kiln_node *n, kiln_diag *d, const kiln_tensor *w) {
  int64_t kernel[2];
  bool present;
  if (!kiln_window_kernel_attr(n, d, false, kernel, &present)) return false;
  if (present && (kernel[0] != w->shape.dim[2] || kernel[1] != w->shape.dim[3])) {
    char got[64];
    kiln_op_error(d, n, "attrs.kernel_shape: expected [%lld, %lld] (the dims of %s), got %s",
                  (long long)w->shape.dim[2], (long long)w->shape.dim[3], kiln_describe(w).text,
                  kiln_ints_str(kernel, 2, got, sizeof got));
    return false;
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int nin = kiln_in(g, n, 2) ? 3 : 2;
  if (!kiln_op_check_float_inputs(g, n, nin, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0), *w = kiln_in(g, n, 1);
  if (!check_rank4(n, d, 0, x, "(N, C, H, W)") || !check_rank4(n, d, 1, w, "(M, C/group, kH, kW)"))
    return false;
  int64_t group;
  if (!kiln_op_read_int(n, d, "group", 1, 1, INT64_MAX, &group)) return false;
  if (!check_weights(g, n, d, group) || !check_kernel_attr(n, d, w)) return false;
  kiln_window win;
  if (!kiln_window_resolve(n, d, &x->shape.dim[2], &w->shape.dim[2], opts, &win)) return false;
  // out: (N, M, OH, OW)
  kiln_shape out = {.rank = 4, .dim = {x->shape.dim[0], w->shape.dim[0], win.out[0], win.out[1]}};
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

static kiln_window conv_window(const kiln_node *n, const kiln_shape *x, const kiln_shape *w) {
  kiln_window win;
  kiln_window_resolve(n, NULL, &x->dim[2], &w->dim[2], opts, &win);
  return win;
}

// The reference: a 7-deep loop straight from the definition, padding checked explicitly.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  const double *x = in[0].data, *w = in[1].data;
  const double *bias = kiln_has_input(n, 2) ? in[2].data : NULL;
  double *y = out->data;
  const int64_t *xd = in[0].shape->dim, *wd = in[1].shape->dim;
  int64_t N = xd[0], C = xd[1], H = xd[2], W = xd[3];
  int64_t M = wd[0], CG = wd[1], KH = wd[2], KW = wd[3];
  int64_t group = kiln_attr_int(n, "group", 1), MG = M / group;
  kiln_window win = conv_window(n, in[0].shape, in[1].shape);
  int64_t OH = win.out[0], OW = win.out[1];
  for (int64_t b = 0; b < N; b++)
    for (int64_t oc = 0; oc < M; oc++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          double sum = bias ? bias[oc] : 0;
          for (int64_t ic = 0; ic < CG; ic++)
            for (int64_t kh = 0; kh < KH; kh++)
              for (int64_t kw = 0; kw < KW; kw++) {
                int64_t ih = oh * win.stride[0] - win.pad_begin[0] + kh * win.dilation[0];
                int64_t iw = ow * win.stride[1] - win.pad_begin[1] + kw * win.dilation[1];
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;  // padding is zero
                int64_t c = oc / MG * CG + ic;
                sum += x[((b * C + c) * H + ih) * W + iw] * w[((oc * CG + ic) * KH + kh) * KW + kw];
              }
          y[((b * M + oc) * OH + oh) * OW + ow] = sum;
        }
}

// ---- Lowering ----
// Output rows are accumulated in place, the innermost loop running over output columns (unit
// stride in y, and in x when stride_w == 1):
//   for n, oc, oh [kh range]:
//     y[n][oc][oh][:] = bias[oc] (or 0)
//     for ic, kh, kw [ow range of kw]: wv = w[oc][ic][kh][kw]
//       for ow: y[n][oc][oh][ow] += wv * x[n][c][oh*sh - pt + kh*dh][ow*sw - pl + kw*dw]
// Each element still sums bias, then ic, kh, kw in order, as eval does.

typedef struct conv_vars {
  int n, oc, oh, ic, kh, kw;
} conv_vars;

// ceil(x / d) for d >= 1 when x >= 0; for x < 0 a value <= 0, enough for the clamps below.
static kiln_lexpr *ceil_div_clamped(kiln_lb *b, kiln_lexpr *x, int64_t d) {
  if (d == 1) return x;
  return lx_bin(b, LB_DIV, lx_add(b, x, lx_int(b, d - 1)), lx_int(b, d));
}

// The output columns [lo, hi) whose input column ow*sw - pl + kw*dw lies in [0, W), declared
// as i64 locals ow_lo / ow_hi where they depend on kw (constants 0 / OW where they do not).
static void column_range(kiln_lb *b, const kiln_window *win, int kw, kiln_lexpr **lo,
                         kiln_lexpr **hi) {
  int64_t s = win->stride[1], p = win->pad_begin[1], dil = win->dilation[1], OW = win->out[1];
  kiln_lexpr *shift = lx_mul(b, lx_var(b, kw), lx_int(b, dil));  // kw * dw
  *lo = lx_int(b, 0);
  *hi = lx_int(b, OW);
  // ow*s - p + kw*dil >= 0  <=>  ow >= ceil((p - kw*dil) / s)
  if (p > 0) {
    kiln_lexpr *first = ceil_div_clamped(b, lx_bin(b, LB_SUB, lx_int(b, p), shift), s);
    *lo = lx_var(b, kiln_lb_decl(b, "ow_lo", KILN_I64, lx_bin(b, LB_MAX, *lo, first)));
  }
  // ow*s - p + kw*dil < W  <=>  ow < ceil((W + p - kw*dil) / s)
  int64_t last = (OW - 1) * s - p + (win->kernel[1] - 1) * dil;
  if (last >= win->in[1]) {
    kiln_lexpr *rest = lx_bin(b, LB_SUB, lx_int(b, win->in[1] + p), shift);
    kiln_lexpr *end = ceil_div_clamped(b, rest, s);
    *hi = lx_var(b, kiln_lb_decl(b, "ow_hi", KILN_I64, lx_bin(b, LB_MIN, *hi, end)));
  }
}

// y[n][oc][oh][ow] as an index expression.
static kiln_lexpr *out_index(kiln_lb *b, const conv_vars *v, const int64_t yd[4], int ow) {
  return kiln_lx_nchw(b, lx_var(b, v->n), lx_var(b, v->oc), yd, lx_var(b, v->oh), lx_var(b, ow));
}

// for ow in [0, OW): y[n][oc][oh][ow] = bias[oc] (or 0)
static void init_row(const kiln_lower_ctx *c, const conv_vars *v, const int64_t yd[4]) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_out(c, 0)->dtype;
  int ow = kiln_lb_for_n(b, "ow", yd[3]);
  kiln_lexpr *init = kiln_has_input(c->node, 2) ? lx_load(b, kiln_in_buf(c, 2), lx_var(b, v->oc))
                                                : lx_float(b, t, 0);
  kiln_lb_store(b, kiln_out_buf(c, 0), out_index(b, v, yd, ow), init);
  kiln_lb_end_for(b);
}

// Input channel of (oc, ic): (oc / (M / group)) * (C / group) + ic; just ic without groups.
static kiln_lexpr *input_channel(kiln_lb *b, const conv_vars *v, int64_t group, int64_t MG,
                                 int64_t CG) {
  kiln_lexpr *channel = lx_var(b, v->ic);
  if (group == 1) return channel;
  kiln_lexpr *g = lx_bin(b, LB_DIV, lx_var(b, v->oc), lx_int(b, MG));
  return lx_add(b, lx_mul(b, g, lx_int(b, CG)), channel);
}

// Inside the kw loop: wv = w[oc][ic][kh][kw]; for ow in range: y[..][ow] += wv * x[..].
static void accumulate_row(const kiln_lower_ctx *c, const conv_vars *v, const kiln_window *win) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *w = kiln_lower_in(c, 1), *y = kiln_lower_out(c, 0);
  const int64_t *xd = x->shape.dim, *wd = w->shape.dim;
  int64_t group = kiln_attr_int(c->node, "group", 1), MG = wd[0] / group, CG = wd[1];
  kiln_lexpr *lo, *hi;
  column_range(b, win, v->kw, &lo, &hi);
  kiln_lexpr *wi =
      kiln_lx_nchw(b, lx_var(b, v->oc), lx_var(b, v->ic), wd, lx_var(b, v->kh), lx_var(b, v->kw));
  int wv = kiln_lb_decl(b, "wv", y->dtype, lx_load(b, kiln_in_buf(c, 1), wi));
  int ow = kiln_lb_for(b, "ow", lo, hi);
  kiln_lexpr *xi = kiln_lx_nchw(b, lx_var(b, v->n), input_channel(b, v, group, MG, CG), xd,
                                kiln_window_lower_pos(b, win, 0, v->oh, v->kh),
                                kiln_window_lower_pos(b, win, 1, ow, v->kw));
  kiln_lexpr *prod = lx_bin(b, LB_MUL, lx_var(b, wv), lx_load(b, kiln_in_buf(c, 0), xi));
  int out = kiln_out_buf(c, 0);
  kiln_lexpr *sum = lx_bin(b, LB_ADD, lx_load(b, out, out_index(b, v, y->shape.dim, ow)), prod);
  kiln_lb_store(b, out, out_index(b, v, y->shape.dim, ow), sum);
  kiln_lb_end_for(b);
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *w = kiln_lower_in(c, 1), *y = kiln_lower_out(c, 0);
  kiln_window win = conv_window(c->node, &x->shape, &w->shape);
  kiln_lb_comment(b, "Conv %s: %s * %s%s -> %s", c->node->name, kiln_describe(x).text,
                  kiln_describe(w).text, kiln_has_input(c->node, 2) ? " + bias" : "",
                  kiln_describe(y).text);
  const int64_t *wd = w->shape.dim, *yd = y->shape.dim;
  conv_vars v;
  v.n = kiln_lb_for_n(b, "n", yd[0]);
  v.oc = kiln_lb_for_n(b, "oc", yd[1]);
  v.oh = kiln_lb_for_n(b, "oh", yd[2]);
  kiln_krange rh = kiln_window_lower_range(b, &win, 0, v.oh, "kh");
  init_row(c, &v, yd);
  v.ic = kiln_lb_for_n(b, "ic", wd[1]);
  v.kh = kiln_lb_for(b, "kh", kiln_krange_lo(b, &rh), kiln_krange_hi(b, &rh));
  v.kw = kiln_lb_for_n(b, "kw", wd[3]);
  accumulate_row(c, &v, &win);
  for (int i = 0; i < 6; i++) kiln_lb_end_for(b);  // kw, kh, ic, oh, oc, n
}

// 2 * N * M * OH * OW * (C / group) * kH * kW
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  const kiln_shape *w = &kiln_in(g, n, 1)->shape;
  return 2 * kiln_shape_numel(&kiln_out(g, n, 0)->shape) * w->dim[1] * w->dim[2] * w->dim[3];
}

// Gradient (docs/training.md): dx = ConvGradInput(dy, w), dw = ConvGradFilter(x, dy), both with
// this node's window attributes; db = dy summed over (N, OH, OW).
static bool grad(kiln_grad_ctx *c) {
  const kiln_node *n = &c->node;
  int x = n->inputs[0], w = n->inputs[1], dy = c->dy[0];
  if (dy < 0) return true;
  kiln_shape xs_copy = c->g->tensors[x].shape, *xs = &xs_copy;  // adding nodes moves tensors
  int64_t kernel[2] = {c->g->tensors[w].shape.dim[2], c->g->tensors[w].shape.dim[3]};
  if (c->need[0]) {
    kiln_gb_attr extra[] = {KILN_GB_INTS("kernel_shape", kernel, 2),
                            KILN_GB_INTS("input_shape", xs->dim, 4), KILN_GB_END};
    int in[2] = {dy, w};
    if ((c->dx[0] = kiln_gb_op_like(c, "ConvGradInput", in, 2, extra)) < 0) return false;
  }
  if (c->need[1]) {
    kiln_gb_attr extra[] = {KILN_GB_INTS("kernel_shape", kernel, 2), KILN_GB_END};
    int in[2] = {x, dy};
    if ((c->dx[1] = kiln_gb_op_like(c, "ConvGradFilter", in, 2, extra)) < 0) return false;
  }
  if (n->n_inputs > 2 && n->inputs[2] >= 0 && c->need[2]) {
    static const int64_t axes[3] = {0, 2, 3};
    kiln_gb_attr attrs[] = {KILN_GB_INTS("axes", axes, 3), KILN_GB_INT("keepdims", 0), KILN_GB_END};
    if ((c->dx[2] = kiln_gb_op(c, "ReduceSum", &dy, 1, attrs, 1)) < 0) return false;
  }
  return true;
}

const kiln_op_def kiln_op_Conv = {
    .name = "Conv",
    .min_inputs = 2,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OUT_FUSABLE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    .tol = {1e-5, 1e-5},
    .grad = grad,
};
