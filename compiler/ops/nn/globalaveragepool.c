// GlobalAveragePool: y[n][c] = mean of x[n][c] over every spatial position.
//   x: (N, C, D1, ..., Dk), k >= 1   y: (N, C, 1, ..., 1)
// The shared code (shape inference, lowering) is in pool.c.
#include "../op_internal.h"
#include "../train/grad_compose.h"

static const kiln_attr_spec attrs[] = {{0}};

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)n;
  const kiln_shape *xs = in[0].shape;
  int64_t rows = xs->dim[0] * xs->dim[1], size = kiln_global_pool_size(xs);
  for (int64_t r = 0; r < rows; r++) {
    double sum = 0;
    for (int64_t i = 0; i < size; i++) sum += in[0].data[r * size + i];
    out->data[r] = sum / (double)size;
  }
}

static void lower(const kiln_lower_ctx *c) { kiln_global_pool_lower(c, 0, LB_ADD, true); }

// Gradient (docs/training.md): dy / (D1 ... Dk) broadcast back over the spatial axes.
static bool global_average_pool_grad(kiln_grad_ctx *c) {
  int x = c->node.inputs[0];
  const kiln_shape *xs = &c->g->tensors[x].shape;
  unsigned spatial = ((1u << xs->rank) - 1) & ~3u;  // every axis after N and C
  double size = (double)kiln_global_pool_size(xs);
  c->dx[0] = kiln_gc_broadcast_back(c, c->dy[0], x, spatial, 1 / size);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_GlobalAveragePool = {
    .name = "GlobalAveragePool",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_REDUCTION,
    .infer = kiln_global_pool_infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_global_pool_flops,
    // An f32 sum of S terms (S <= a few hundred in the cases) drifts by about S * 2^-24 relative
    // to the magnitude of the terms; the mean of N(0, 1) values is small, hence the atol.
    .tol = {1e-6, 1e-5},
    .grad = global_average_pool_grad,
};
