// Squeeze (ONNX): drops the size-1 axes listed in `axes` (the attribute before opset 13, the
// constant input 1 from 13; negative axes count from the end), or every size-1 axis when none
// are given. Any dtype. The data does not move: a copy loop.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"axes", KILN_ATTR_INTS, false}, {0}};

// Reads the axes from the attribute or input 1; returns their count, -1 when none are given,
// -2 after reporting a problem.
static int read_axes(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int64_t *axes) {
  if (kiln_has_input(n, 1) && kiln_node_attr(n, "axes")) {
    kiln_op_error(d, n,
                  "attrs.axes: give axes either as the attribute (opset < 13) or as "
                  "inputs[1] (opset 13+), not both");
    return -2;
  }
  if (kiln_has_input(n, 1)) {
    int count = kiln_op_const_ints(g, n, d, 1, "axes", axes, KILN_MAX_RANK);
    return count < 0 ? -2 : count;
  }
  int count = kiln_attr_ints(n, "axes", axes, KILN_MAX_RANK);
  if (count > KILN_MAX_RANK) {
    kiln_op_error(d, n, "attrs.axes: %d axes; at most %d", count, KILN_MAX_RANK);
    return -2;
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
  if (count == -2) return false;
  const char *field = kiln_has_input(n, 1) ? "inputs[1] (axes)" : "attrs.axes";
  bool drop[KILN_MAX_RANK] = {false};
  for (int i = 0; i < count; i++) {
    int64_t axis;
    if (!kiln_op_check_axis(n, d, field, axes[i], x->shape.rank, &axis)) return false;
    if (x->shape.dim[axis] != 1) {
      kiln_op_error(d, n, "%s: axis %lld of %s has size %lld; only size-1 axes can be squeezed",
                    field, (long long)axes[i], kiln_describe(x).text,
                    (long long)x->shape.dim[axis]);
      return false;
    }
    drop[axis] = true;
  }
  kiln_shape out = {.rank = 0};  // out: x's shape without the dropped axes
  for (int i = 0; i < x->shape.rank; i++)
    if (!(count < 0 ? x->shape.dim[i] == 1 : drop[i])) out.dim[out.rank++] = x->shape.dim[i];
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

// Gradient (docs/training.md): the data does not move, so dx is dy reshaped to x's shape.
static bool squeeze_grad(kiln_grad_ctx *c) {
  c->dx[0] = kiln_gb_reshape(c, c->dy[0], &c->g->tensors[c->node.inputs[0]].shape);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Squeeze = {
    .name = "Squeeze",
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
    .grad = squeeze_grad,
};
