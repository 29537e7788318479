// Concat (ONNX): inputs x_k (d0, ..., a_k, ..., dn) joined along `axis` (required; negative counts
// from the end) -> (d0, ..., sum a_k, ..., dn). Any dtype; every input has the same dtype and
// rank and the same dimensions off the axis. Lowered as one strided copy per input.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"axis", KILN_ATTR_INT, true}, {0}};

// Checks input i against input 0 (dtype, rank, dimensions off the axis).
static bool check_input(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i, int axis) {
  const kiln_tensor *x0 = kiln_in(g, n, 0), *x = kiln_in(g, n, i);
  if (!x) {
    kiln_op_error(d, n, "inputs[%d]: missing; Concat does not skip inputs", i);
    return false;
  }
  if (x->dtype != x0->dtype) {
    kiln_op_error(d, n, "inputs[%d] (%s): expected dtype %s like inputs[0] (%s), got %s", i,
                  x->name, kiln_dtype_name(x0->dtype), x0->name, kiln_dtype_name(x->dtype));
    return false;
  }
  bool same = x->shape.rank == x0->shape.rank;
  for (int k = 0; same && k < x->shape.rank; k++)
    if (k != axis && x->shape.dim[k] != x0->shape.dim[k]) same = false;
  if (!same) {
    kiln_op_error(d, n, "inputs[%d] (%s): expected the shape of inputs[0] %s except along axis %d",
                  i, kiln_describe(x).text, kiln_describe(x0).text, axis);
    return false;
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x0 = kiln_in(g, n, 0);
  if (!x0) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  int64_t axis;
  if (!kiln_op_check_axis(n, d, "attrs.axis", kiln_attr_int(n, "axis", 0), x0->shape.rank, &axis))
    return false;
  kiln_shape out = x0->shape;  // out: x0's shape with the axis summed over the inputs
  out.dim[axis] = 0;
  for (int i = 0; i < n->n_inputs; i++) {
    if (!check_input(g, n, d, i, (int)axis)) return false;
    out.dim[axis] += kiln_in(g, n, i)->shape.dim[axis];
  }
  kiln_op_set_output(g, n, 0, x0->dtype, &out);
  return true;
}

// eval: each output element finds the input whose range along the axis holds it.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  const kiln_shape *ys = out->shape;
  int axis = (int)kiln_attr_int(n, "axis", 0);
  if (axis < 0) axis += ys->rank;
  int64_t idx[KILN_MAX_RANK], strides[KILN_MAX_RANK];
  for (int64_t flat = 0; flat < kiln_shape_numel(ys); flat++) {
    kiln_unravel(flat, ys, idx);
    int k = 0;
    while (idx[axis] >= in[k].shape->dim[axis]) idx[axis] -= in[k++].shape->dim[axis];
    kiln_contiguous_strides(in[k].shape, strides);
    out->data[flat] = in[k].data[kiln_dot_index(ys->rank, idx, strides)];
  }
}

// lower: input k is copied into the output slab starting at its offset along the axis.
static void lower(const kiln_lower_ctx *c) {
  const kiln_tensor *y = kiln_lower_out(c, 0);
  int axis = (int)kiln_attr_int(c->node, "axis", 0);
  if (axis < 0) axis += y->shape.rank;
  kiln_lb_comment(c->b, "Concat %s: %d inputs along axis %d -> %s", c->node->name,
                  c->node->n_inputs, axis, kiln_describe(y).text);
  int64_t offset = 0;
  for (int k = 0; k < c->node->n_inputs; k++) {
    const kiln_tensor *x = kiln_lower_in(c, k);
    kiln_strided s = {.shape = x->shape};
    kiln_contiguous_strides(&x->shape, s.src_stride);
    kiln_contiguous_strides(&y->shape, s.dst_stride);
    s.dst_base = offset * s.dst_stride[axis];
    kiln_lb_comment(c->b, "%s -> y[..., %lld:%lld, ...]", kiln_describe(x).text, (long long)offset,
                    (long long)(offset + x->shape.dim[axis]));
    kiln_strided_lower(c->b, kiln_in_buf(c, k), kiln_out_buf(c, 0), &s);
    offset += x->shape.dim[axis];
  }
}

// Gradient (docs/training.md): dy split back into the inputs' pieces along the axis (one Split
// node; the pieces of inputs that need no gradient are left unused).
static bool concat_grad(kiln_grad_ctx *c) {
  int k = c->node.n_inputs;
  int64_t axis = kiln_attr_int(&c->node, "axis", 0);
  int rank = c->g->tensors[c->node.inputs[0]].shape.rank;
  if (axis < 0) axis += rank;
  double sizes[16];
  for (int i = 0; i < k; i++) sizes[i] = (double)c->g->tensors[c->node.inputs[i]].shape.dim[axis];
  kiln_shape count = {.rank = 1, .dim = {k}};
  int in[2] = {c->dy[0], kiln_gb_const(c, KILN_I64, &count, sizes)};
  kiln_gb_attr attrs[] = {KILN_GB_INT("axis", axis), KILN_GB_END};
  int first = kiln_gb_op(c, "Split", in, 2, attrs, k);
  if (first < 0) return false;
  for (int i = 0; i < k; i++) c->dx[i] = first + i;
  return true;
}

const kiln_op_def kiln_op_Concat = {
    .name = "Concat",
    .min_inputs = 1,
    .max_inputs = 16,  // the interpreter passes at most 16 inputs to a kernel
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_INJECTIVE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // a copy
    .grad = concat_grad,
};
