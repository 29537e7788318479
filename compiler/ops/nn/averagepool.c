// AveragePool (2-D): y[n][c][oh][ow] = mean of x over the window. Attributes: kernel_shape
// (required), strides, pads, auto_pad, ceil_mode, count_include_pad; the window logic is in pool.c.
//
// The divisor (as in ONNX and PyTorch), along each axis, for window start s = oh * stride - pad:
//   count_include_pad = 0: the window elements inside the input.
//   count_include_pad = 1: the window elements inside input + pads, [s, min(s + k, in + pad_end));
//                          with ceil_mode a window can overhang pad_end, and that part is not
//                          counted.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_window_opts opts = {.dilations = false, .ceil_mode = true};

static const kiln_attr_spec attrs[] = {
    {"auto_pad", KILN_ATTR_STRING, false},
    {"ceil_mode", KILN_ATTR_INT, false},
    {"count_include_pad", KILN_ATTR_INT, false},
    {"kernel_shape", KILN_ATTR_INTS, true},
    {"pads", KILN_ATTR_INTS, false},
    {"strides", KILN_ATTR_INTS, false},
    {0},
};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int64_t count_include_pad;
  return kiln_op_read_int(n, d, "count_include_pad", 0, 0, 1, &count_include_pad) &&
         kiln_pool_infer(g, n, d, opts);
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// x: (N, C, H, W), y: (N, C, OH, OW)
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  const double *x = in[0].data;
  double *y = out->data;
  const int64_t *xd = in[0].shape->dim;
  int64_t N = xd[0], C = xd[1], H = xd[2], W = xd[3];
  kiln_window w = kiln_pool_window(n, in[0].shape, opts);
  int64_t OH = w.out[0], OW = w.out[1];
  bool include_pad = kiln_attr_int(n, "count_include_pad", 0) != 0;
  for (int64_t b = 0; b < N; b++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          // The window clipped to input + pads, then to the input.
          int64_t h0 = oh * w.stride[0] - w.pad_begin[0], w0 = ow * w.stride[1] - w.pad_begin[1];
          int64_t h1 = min64(h0 + w.kernel[0], H + w.pad_end[0]);
          int64_t w1 = min64(w0 + w.kernel[1], W + w.pad_end[1]);
          int64_t padded_count = (h1 - h0) * (w1 - w0);
          h0 = max64(h0, 0), w0 = max64(w0, 0), h1 = min64(h1, H), w1 = min64(w1, W);
          double sum = 0;
          for (int64_t ih = h0; ih < h1; ih++)
            for (int64_t iw = w0; iw < w1; iw++) sum += x[((b * C + c) * H + ih) * W + iw];
          int64_t count = include_pad ? padded_count : (h1 - h0) * (w1 - w0);
          y[((b * C + c) * OH + oh) * OW + ow] = sum / (double)count;
        }
}

// Divisor factor along one axis (i64): see the header comment.
static kiln_lexpr *axis_count(kiln_lb *b, const kiln_window *w, int axis, bool include_pad, int o,
                              const kiln_krange *r) {
  if (!include_pad) {
    if (r->lo_var < 0 && r->hi_var < 0) return lx_int(b, r->hi - r->lo);
    return lx_bin(b, LB_SUB, kiln_krange_hi(b, r), kiln_krange_lo(b, r));
  }
  int64_t k = w->kernel[axis], s = w->stride[axis];
  int64_t limit = w->in[axis] + w->pad_begin[axis] + w->pad_end[axis];  // in padded coordinates
  if ((w->out[axis] - 1) * s + k <= limit) return lx_int(b, k);
  kiln_lexpr *left = lx_bin(b, LB_SUB, lx_int(b, limit), lx_mul(b, lx_var(b, o), lx_int(b, s)));
  return lx_bin(b, LB_MIN, lx_int(b, k), left);
}

// y = acc / count, count a constant when no window is clipped.
static kiln_lexpr *finish(const kiln_lower_ctx *c, const kiln_window *w, const kiln_pool_vars *v) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_out(c, 0)->dtype;
  bool include_pad = kiln_attr_int(c->node, "count_include_pad", 0) != 0;
  kiln_lexpr *ch = axis_count(b, w, 0, include_pad, v->oh, &v->kh);
  kiln_lexpr *cw = axis_count(b, w, 1, include_pad, v->ow, &v->kw);
  kiln_lexpr *count = ch->kind == LE_INT && cw->kind == LE_INT
                          ? lx_float(b, t, (double)(ch->i * cw->i))
                          : lx_cast(b, t, lx_mul(b, ch, cw));
  return lx_bin(b, LB_DIV, lx_var(b, v->acc), count);
}

static void lower(const kiln_lower_ctx *c) { kiln_pool_lower(c, opts, 0, LB_ADD, finish); }

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return kiln_pool_flops(g, n, opts);
}

// Gradient (docs/training.md): each window's dy / count spread over it (AveragePoolGrad).
static bool grad(kiln_grad_ctx *c) {
  if (c->dy[0] < 0 || !c->need[0]) return true;
  kiln_shape xs_copy = c->g->tensors[c->node.inputs[0]].shape, *xs = &xs_copy;
  kiln_gb_attr extra[] = {KILN_GB_INTS("input_shape", xs->dim, 4), KILN_GB_END};
  c->dx[0] = kiln_gb_op_like(c, "AveragePoolGrad", &c->dy[0], 1, extra);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_AveragePool = {
    .name = "AveragePool",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OUT_FUSABLE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    .tol = {1e-7, 4e-7},
    .grad = grad,
};
