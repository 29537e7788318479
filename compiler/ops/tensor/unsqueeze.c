// Unsqueeze (ONNX): inserts size-1 axes at the positions `axes` of the output (the attribute
// before opset 13, the constant input 1 from 13; negative axes count from the end of the output).
// Any dtype. The data does not move: a copy loop.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"axes", KILN_ATTR_INTS, false}, {0}};

static int read_axes(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int64_t *axes) {
  if (kiln_has_input(n, 1) && kiln_node_attr(n, "axes")) {
    kiln_op_error(d, n,
                  "attrs.axes: give axes either as the attribute (opset < 13) or as "
                  "inputs[1] (opset 13+), not both");
    return -1;
  }
  if (kiln_has_input(n, 1)) return kiln_op_const_ints(g, n, d, 1, "axes", axes, KILN_MAX_RANK);
  int count = kiln_attr_ints(n, "axes", axes, KILN_MAX_RANK);
  if (count < 0)
    kiln_op_error(d, n, "Unsqueeze needs axes (inputs[1], or attrs.axes before opset 13)");
  if (count > KILN_MAX_RANK) {
    kiln_op_error(d, n, "attrs.axes: %d axes; at most %d", count, KILN_MAX_RANK);
    return -1;
  }
  return count;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  if (!x) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  int64_t axes[KILN_MAX_RANK];
  int count = read_axes(g, n, d, axes);
  if (count < 0) return false;
  int rank = x->shape.rank + count;
  const char *field = kiln_has_input(n, 1) ? "inputs[1] (axes)" : "attrs.axes";
  if (rank > KILN_MAX_RANK) {
    kiln_op_error(d, n, "%s: the output would have rank %d; at most %d", field, rank,
                  KILN_MAX_RANK);
    return false;
  }
  bool insert[KILN_MAX_RANK] = {false};
  for (int i = 0; i < count; i++) {
    int64_t axis;
    if (!kiln_op_check_axis(n, d, field, axes[i], rank, &axis)) return false;
    if (insert[axis]) {
      kiln_op_error(d, n, "%s: axis %lld appears twice", field, (long long)axes[i]);
      return false;
    }
    insert[axis] = true;
  }
  kiln_shape out = {.rank = rank};  // out: x's shape with 1 at each inserted axis
  for (int i = 0, from = 0; i < rank; i++) out.dim[i] = insert[i] ? 1 : x->shape.dim[from++];
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

// Gradient (docs/training.md): the data does not move, so dx is dy reshaped to x's shape.
static bool unsqueeze_grad(kiln_grad_ctx *c) {
  c->dx[0] = kiln_gb_reshape(c, c->dy[0], &c->g->tensors[c->node.inputs[0]].shape);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Unsqueeze = {
    .name = "Unsqueeze",
    .min_inputs = 1,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_INJECTIVE,
    .infer = infer,
    .eval = kiln_copy_eval,
    .lower = kiln_copy_lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // a copy
    .grad = unsqueeze_grad,
};
