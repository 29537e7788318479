// Split (ONNX): x split along `axis` (default 0, negative counts from the end) into one output
// per piece. The piece sizes come from the `split` attribute (opset < 13) or the constant `split`
// input (13+); without them, the axis is cut into equal pieces of ceil(dim / outputs), the last
// one smaller (opset 18; `num_outputs`, when given, must equal the number of outputs). Any dtype.
// Lowered as one strided copy per output.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

#define MAX_PIECES 16  // the interpreter hands at most 16 outputs to a kernel

static const kiln_attr_spec attrs[] = {{"axis", KILN_ATTR_INT, false},
                                       {"split", KILN_ATTR_INTS, false},
                                       {"num_outputs", KILN_ATTR_INT, false},
                                       {0}};

// The piece sizes along an axis of size dim. `given` (count sizes, or NULL) are explicit sizes
// from the attribute or the input. d may be NULL (eval, after infer checked).
static bool piece_sizes(const kiln_node *n, kiln_diag *d, int64_t dim, const int64_t *given,
                        int count, int64_t *sizes) {
  int pieces = n->n_outputs;
  char got[256];
  if (given) {
    int64_t total = 0;
    bool ok = count == pieces;
    for (int i = 0; ok && i < count; i++) ok = given[i] >= 1, total += given[i];
    if (!ok || total != dim) {
      kiln_op_error(d, n, "%s: expected %d sizes >= 1 adding up to %lld (one per output), got %s",
                    kiln_has_input(n, 1) ? "inputs[1] (split)" : "attrs.split", pieces,
                    (long long)dim,
                    kiln_ints_str(given, count < pieces ? count : pieces, got, sizeof got));
      return false;
    }
    for (int i = 0; i < count; i++) sizes[i] = given[i];
    return true;
  }
  int64_t chunk = (dim + pieces - 1) / pieces;
  for (int i = 0; i < pieces; i++) {
    int64_t left = dim - chunk * i;
    sizes[i] = left < chunk ? left : chunk;
    if (sizes[i] < 1) {
      kiln_op_error(d, n, "cannot split a dimension of %lld into %d non-empty equal pieces",
                    (long long)dim, pieces);
      return false;
    }
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  if (!x) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  int64_t axis, num, given[MAX_PIECES + 1];
  if (!kiln_op_check_axis(n, d, "attrs.axis", kiln_attr_int(n, "axis", 0), x->shape.rank, &axis))
    return false;
  num = kiln_attr_int(n, "num_outputs", n->n_outputs);
  if (num != n->n_outputs) {
    kiln_op_error(d, n, "attrs.num_outputs: %lld, but the node lists %d outputs", (long long)num,
                  n->n_outputs);
    return false;
  }
  int count = -1;
  if (kiln_has_input(n, 1) && kiln_node_attr(n, "split")) {
    kiln_op_error(d, n,
                  "attrs.split: give the sizes either as the attribute (opset < 13) or as "
                  "inputs[1] (opset 13+), not both");
    return false;
  }
  if (kiln_has_input(n, 1)) {
    count = kiln_op_const_ints(g, n, d, 1, "split", given, MAX_PIECES + 1);
    if (count < 0) return false;
  } else {
    count = kiln_attr_ints(n, "split", given, MAX_PIECES + 1);
  }
  int64_t sizes[MAX_PIECES];
  if (!piece_sizes(n, d, x->shape.dim[axis], count >= 0 ? given : NULL, count, sizes)) return false;
  for (int i = 0; i < n->n_outputs; i++) {
    kiln_shape out = x->shape;  // out i: x's shape with sizes[i] along the axis
    out.dim[axis] = sizes[i];
    kiln_op_set_output(g, n, i, x->dtype, &out);
  }
  return true;
}

static int axis_of(const kiln_node *n, int rank) {
  int axis = (int)kiln_attr_int(n, "axis", 0);
  return axis < 0 ? axis + rank : axis;
}

// eval: output k element idx is x at idx shifted by the sizes of the pieces before it.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  const kiln_shape *xs = in[0].shape;
  int axis = axis_of(n, xs->rank);
  int64_t idx[KILN_MAX_RANK], strides[KILN_MAX_RANK], offset = 0;
  kiln_contiguous_strides(xs, strides);
  for (int k = 0; k < n->n_outputs; k++) {
    for (int64_t flat = 0; flat < kiln_shape_numel(out[k].shape); flat++) {
      kiln_unravel(flat, out[k].shape, idx);
      idx[axis] += offset;
      out[k].data[flat] = in[0].data[kiln_dot_index(xs->rank, idx, strides)];
    }
    offset += out[k].shape->dim[axis];
  }
}

static void lower(const kiln_lower_ctx *c) {
  const kiln_tensor *x = kiln_lower_in(c, 0);
  int axis = axis_of(c->node, x->shape.rank);
  kiln_lb_comment(c->b, "Split %s: %s into %d pieces along axis %d", c->node->name,
                  kiln_describe(x).text, c->node->n_outputs, axis);
  int64_t offset = 0;
  for (int k = 0; k < c->node->n_outputs; k++) {
    const kiln_tensor *y = kiln_lower_out(c, k);
    kiln_strided s = {.shape = y->shape};
    kiln_contiguous_strides(&x->shape, s.src_stride);
    kiln_contiguous_strides(&y->shape, s.dst_stride);
    s.src_base = offset * s.src_stride[axis];
    kiln_lb_comment(c->b, "x[..., %lld:%lld, ...] -> %s", (long long)offset,
                    (long long)(offset + y->shape.dim[axis]), kiln_describe(y).text);
    kiln_strided_lower(c->b, kiln_in_buf(c, 0), kiln_out_buf(c, k), &s);
    offset += y->shape.dim[axis];
  }
}

// Gradient (docs/training.md): the outputs' gradients concatenated along the axis; an output no
// gradient flows into contributes zeros (a constant of its shape).
static bool split_grad(kiln_grad_ctx *c) {
  int k = c->node.n_outputs, pieces[MAX_PIECES];
  for (int i = 0; i < k; i++) {
    int y = c->node.outputs[i];
    kiln_shape s = c->g->tensors[y].shape;  // a copy: kiln_gb_const adds a tensor
    pieces[i] = c->dy[i] >= 0 ? c->dy[i] : kiln_gb_const(c, c->g->tensors[y].dtype, &s, NULL);
  }
  kiln_gb_attr attrs[] = {KILN_GB_INT("axis", kiln_attr_int(&c->node, "axis", 0)), KILN_GB_END};
  c->dx[0] = kiln_gb_op(c, "Concat", pieces, k, attrs, 1);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Split = {
    .name = "Split",
    .min_inputs = 1,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = MAX_PIECES,
    .attrs = attrs,
    .fuse = KILN_FUSE_INJECTIVE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // a copy
    .grad = split_grad,
};
