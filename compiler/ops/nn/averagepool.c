// AveragePool (1-D, 2-D or 3-D): y[n][c][o...] = mean of x over the window. Attributes:
// kernel_shape (required; its length is the spatial rank), strides, pads, auto_pad, ceil_mode,
// count_include_pad; the window logic is in pool.c.
//
// The divisor (as in ONNX and PyTorch) is a product over the axes of, for window start
// s = o * stride - pad:
//   count_include_pad = 0: the window elements inside the input.
//   count_include_pad = 1: the window elements inside input + pads, [s, min(s + k, in + pad_end));
//                          with ceil_mode a window can overhang pad_end, and that part is not
//                          counted.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_window_opts opts = {.dilations = false, .ceil_mode = true};

const kiln_attr_spec kiln_average_pool_attrs[] = {
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

// The divisor at output position o (flat over w->out): see the header comment.
static int64_t divisor(const kiln_window *w, int64_t o, bool include_pad) {
  int64_t count = 1;
  for (int i = w->rank - 1; i >= 0; i--) {
    int64_t start = o % w->out[i] * w->stride[i] - w->pad_begin[i];
    int64_t end = min64(start + w->kernel[i], w->in[i] + w->pad_end[i]);    // clipped to the pads
    if (!include_pad) start = max64(start, 0), end = min64(end, w->in[i]);  // to the input
    count *= end - start;
    o /= w->out[i];
  }
  return count;
}

// x: (N, C, D1, ..., Dk), y: (N, C, OD1, ..., ODk)
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_window w = kiln_pool_window(n, in[0].shape, opts);
  int64_t planes = in[0].shape->dim[0] * in[0].shape->dim[1];
  int64_t in_size = kiln_window_in_size(&w), out_size = kiln_window_out_size(&w);
  int64_t taps = kiln_window_taps(&w);
  bool include_pad = kiln_attr_int(n, "count_include_pad", 0) != 0;
  for (int64_t p = 0; p < planes; p++)
    for (int64_t o = 0; o < out_size; o++) {
      double sum = 0;
      int64_t at;
      for (int64_t t = 0; t < taps; t++)
        if (kiln_window_tap(&w, o, t, &at)) sum += in[0].data[p * in_size + at];
      out->data[p * out_size + o] = sum / (double)divisor(&w, o, include_pad);
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
  kiln_lexpr *count = lx_int(b, 1);
  for (int i = 0; i < w->rank; i++)
    count = lx_mul(b, count, axis_count(b, w, i, include_pad, v->o[i], &v->k[i]));
  if (count->kind == LE_INT)
    return lx_bin(b, LB_DIV, lx_var(b, v->acc), lx_float(b, t, (double)count->i));
  return lx_bin(b, LB_DIV, lx_var(b, v->acc), lx_cast(b, t, count));
}

static void lower(const kiln_lower_ctx *c) { kiln_pool_lower(c, opts, 0, LB_ADD, finish); }

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return kiln_pool_flops(g, n, opts);
}

// Gradient (docs/training.md): each window's dy / count spread over it (AveragePoolGrad, 2-D
// only: it rejects other ranks).
static bool grad(kiln_grad_ctx *c) {
  if (c->dy[0] < 0 || !c->need[0]) return true;
  if (!kiln_window_grad_is_2d(c, 0)) return false;
  kiln_shape xs_copy = c->g->tensors[c->node.inputs[0]].shape, *xs = &xs_copy;
  kiln_gb_attr extra[] = {KILN_GB_INTS("input_shape", xs->dim, xs->rank), KILN_GB_END};
  c->dx[0] = kiln_gb_op_like(c, "AveragePoolGrad", &c->dy[0], 1, extra);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_AveragePool = {
    .name = "AveragePool",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = kiln_average_pool_attrs,
    .fuse = KILN_FUSE_OUT_FUSABLE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    .tol = {1e-7, 4e-7},
    .grad = grad,
};
