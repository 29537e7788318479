// ReduceMean: the mean over the reduced axes; attributes in reduce.c.
#include "../op_internal.h"
#include "../train/grad_compose.h"

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  return kiln_reduce_infer(g, n, d, KILN_DT_FLOAT);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_reduce_eval(n, in, out, (kiln_reduce_kind){LB_ADD, KILN_RMAP_NONE, KILN_RFINISH_MEAN});
}

static void lower(const kiln_lower_ctx *c) {
  kiln_reduce_lower(c, (kiln_reduce_kind){LB_ADD, KILN_RMAP_NONE, KILN_RFINISH_MEAN});
}

// Gradient (docs/training.md): dy / count broadcast back over the reduced axes (count: the number
// of elements each mean averages).
static bool reduce_mean_grad(kiln_grad_ctx *c) {
  int x = c->node.inputs[0];
  unsigned axes = kiln_gc_reduced_axes(c);
  const kiln_shape *xs = &c->g->tensors[x].shape;
  double count = 1;
  for (int i = 0; i < xs->rank; i++)
    if (axes & (1u << i)) count *= (double)xs->dim[i];
  c->dx[0] = kiln_gc_broadcast_back(c, c->dy[0], x, axes, 1 / count);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_ReduceMean = {
    .name = "ReduceMean",
    .min_inputs = 1,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = kiln_reduce_attrs,
    .fuse = KILN_FUSE_REDUCTION,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_reduce_flops,
    // f32 vs f64 sums of up to ~100 values of size ~1 (PyTorch and the generated code sum in
    // f32, in their own order), divided by the count: a few ulp of the largest partial sum.
    .tol = {1e-6, 1e-6},
    .grad = reduce_mean_grad,
};
