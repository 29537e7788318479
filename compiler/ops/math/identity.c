// Identity: y = x, any dtype (a copy; common.c).
#include "../op_internal.h"
#include "../train/grad_compose.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, KILN_DT_ANY, true, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: same shape and dtype as x
  return true;
}

// Gradient (docs/training.md): dx = dy.
static bool identity_grad(kiln_grad_ctx *c) {
  c->dx[0] = c->dy[0];
  return true;
}

const kiln_op_def kiln_op_Identity = {
    .name = "Identity",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_INJECTIVE,
    .infer = infer,
    .eval = kiln_copy_eval,
    .lower = kiln_copy_lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // exact
    .grad = identity_grad,
};
