// Unsqueeze (ONNX): inserts size-1 axes at the positions `axes` of the output (the attribute
// before opset 13, the constant input 1 from 13; negative axes count from the end of the output).
// Any dtype. The data does not move: a copy loop.
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"axes", KILN_ATTR_INTS, false}, {0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  if (!x) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  int64_t axes[KILN_MAX_RANK];
  int count = kiln_op_axes_arg(g, n, d, axes);
  if (count == -1)
    kiln_op_error(d, n, "Unsqueeze needs axes (inputs[1], or attrs.axes before opset 13)");
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

KILN_DEFINE_RESHAPING_OP(Unsqueeze, 2, attrs, infer);
