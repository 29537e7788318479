// RankMean and RankSum (docs/distributed.md, `kiln build --train --distributed mpi --sync-bn`):
// y = the mean (the sum) of x over the ranks of a data-parallel job, elementwise; x and y f32 of
// any shape.
//
// Within one process both are a copy (the interpreter, `kiln run`, single-process trainers): the
// reduction itself is the runtime's. The C backend emits, right after the copy kernel, a call to
// the runtime callback kiln_dist_rank_mean_f32 / kiln_dist_rank_sum_f32(y, numel)
// (runtime/train.c), a no-op unless an MPI trainer is inside a step, where it all-reduces y.
// BatchNormalization with --sync-bn averages its batch statistics with RankMean, like
// torch.nn.SyncBatchNorm, and counts the global batch with RankSum (the running variance's
// unbiasing).
//
// Gradient: every rank's x_r feeds every rank's y (with weight 1/R for the mean), and the ranks'
// losses are averaged, so the gradient of x_r is the same reduction of dy over the ranks:
// dx = RankMean(dy) (RankSum(dy)), SyncBatchNorm's all-reduce of the gradient reductions.
#include "grad_compose.h"
#include "train_internal.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, KILN_DT(KILN_F32), false, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: x's shape
  return true;
}

static bool rank_mean_grad(kiln_grad_ctx *c) {
  c->dx[0] = kiln_gc_unary(c, "RankMean", c->dy[0]);
  return c->dx[0] >= 0;
}

static bool rank_sum_grad(kiln_grad_ctx *c) {
  c->dx[0] = kiln_gc_unary(c, "RankSum", c->dy[0]);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_RankMean = {
    .name = "RankMean",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,  // a kernel of its own: the backend calls the runtime after it
    .infer = infer,
    .eval = kiln_copy_eval,
    .lower = kiln_copy_lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // a copy in one process: exact
    .grad = rank_mean_grad,
};

const kiln_op_def kiln_op_RankSum = {
    .name = "RankSum",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,  // as RankMean
    .infer = infer,
    .eval = kiln_copy_eval,
    .lower = kiln_copy_lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // a copy in one process: exact
    .grad = rank_sum_grad,
};
