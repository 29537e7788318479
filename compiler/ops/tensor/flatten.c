// Flatten (ONNX): x (d0, ..., dn-1) -> (d0 * ... * d(axis-1), d(axis) * ... * dn-1); axis in
// [-rank, rank], default 1. The data does not move: a copy loop, which later passes may alias.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"axis", KILN_ATTR_INT, false}, {0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  if (!x) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  int rank = x->shape.rank;
  int64_t axis;
  if (!kiln_op_read_int(n, d, "axis", 1, -rank, rank, &axis)) return false;
  if (axis < 0) axis += rank;
  // out: (outer, inner)
  kiln_shape out = {.rank = 2, .dim = {1, 1}};
  for (int i = 0; i < rank; i++) out.dim[i < axis ? 0 : 1] *= x->shape.dim[i];
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

// Gradient (docs/training.md): the same elements, back in x's shape.
static bool grad(kiln_grad_ctx *c) {
  c->dx[0] = kiln_gb_reshape(c, c->dy[0], &c->g->tensors[c->node.inputs[0]].shape);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Flatten = {
    .name = "Flatten",
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
    .tol = {0, 0},
    .grad = grad,
};
