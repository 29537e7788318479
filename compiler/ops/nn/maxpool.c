// MaxPool (2-D): y[n][c][oh][ow] = max over the window of x, padding ignored. Attributes:
// kernel_shape (required), strides, pads, dilations, auto_pad, ceil_mode; the window logic is in
// pool.c. Only output Y is supported (not Indices, so storage_order has no effect).
#include <math.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_window_opts opts = {.dilations = true, .ceil_mode = true};

static const kiln_attr_spec attrs[] = {
    {"auto_pad", KILN_ATTR_STRING, false}, {"ceil_mode", KILN_ATTR_INT, false},
    {"dilations", KILN_ATTR_INTS, false},  {"kernel_shape", KILN_ATTR_INTS, true},
    {"pads", KILN_ATTR_INTS, false},       {"storage_order", KILN_ATTR_INT, false},
    {"strides", KILN_ATTR_INTS, false},    {0},
};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int64_t storage_order;
  return kiln_op_read_int(n, d, "storage_order", 0, 0, 1, &storage_order) &&
         kiln_pool_infer(g, n, d, opts);
}

// x: (N, C, H, W), y: (N, C, OH, OW)
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  const double *x = in[0].data;
  double *y = out->data;
  const int64_t *xd = in[0].shape->dim;
  int64_t N = xd[0], C = xd[1], H = xd[2], W = xd[3];
  kiln_window w = kiln_pool_window(n, in[0].shape, opts);
  int64_t OH = w.out[0], OW = w.out[1];
  for (int64_t b = 0; b < N; b++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          double m = -INFINITY;
          for (int64_t kh = 0; kh < w.kernel[0]; kh++)
            for (int64_t kw = 0; kw < w.kernel[1]; kw++) {
              int64_t ih = oh * w.stride[0] - w.pad_begin[0] + kh * w.dilation[0];
              int64_t iw = ow * w.stride[1] - w.pad_begin[1] + kw * w.dilation[1];
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;  // padding
              double v = x[((b * C + c) * H + ih) * W + iw];
              if (v > m) m = v;
            }
          y[((b * C + c) * OH + oh) * OW + ow] = m;
        }
}

// acc starts at -inf so that a window lying entirely in the padding gives -inf, as in eval.
static void lower(const kiln_lower_ctx *c) { kiln_pool_lower(c, opts, -INFINITY, LB_MAX, NULL); }

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return kiln_pool_flops(g, n, opts);
}

// Gradient (docs/training.md): each window's dy goes to its first maximal element (MaxPoolGrad).
static bool grad(kiln_grad_ctx *c) {
  if (c->dy[0] < 0 || !c->need[0]) return true;
  int in[2] = {c->node.inputs[0], c->dy[0]};
  c->dx[0] = kiln_gb_op_like(c, "MaxPoolGrad", in, 2, NULL);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_MaxPool = {
    .name = "MaxPool",
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
    .tol = {0, 0},
    .grad = grad,
};
