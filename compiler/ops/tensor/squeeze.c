// Squeeze (ONNX): drops the size-1 axes listed in `axes` (the attribute before opset 13, the
// constant input 1 from 13; negative axes count from the end), or every size-1 axis when none
// are given. Any dtype. The data does not move: a copy loop.
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

KILN_DEFINE_RESHAPING_OP(Squeeze, 2, attrs, infer);
