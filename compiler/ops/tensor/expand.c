// Expand (ONNX): broadcasts x against the constant `shape` input (i32/i64 param), numpy style in
// both directions: y's shape is broadcast(x.shape, shape), so a 1 in `shape` keeps x's
// dimension. Any dtype. Lowered as one strided copy with stride 0 along broadcast axes.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  int64_t want[KILN_MAX_RANK];
  if (!x) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  int rank = kiln_op_const_ints(g, n, d, 1, "shape", want, KILN_MAX_RANK);
  if (rank < 0) return false;
  kiln_shape s = {.rank = rank}, out;
  char got[256];
  for (int i = 0; i < rank; i++) {
    if (want[i] < 1) {
      kiln_op_error(d, n, "inputs[1] (%s): expected dimensions >= 1, got %s",
                    kiln_in(g, n, 1)->name, kiln_ints_str(want, rank, got, sizeof got));
      return false;
    }
    s.dim[i] = want[i];
  }
  if (!kiln_broadcast_shapes(&x->shape, &s, &out)) {
    kiln_op_error(d, n, "inputs[1] (%s): cannot broadcast %s to shape %s", kiln_in(g, n, 1)->name,
                  kiln_describe(x).text, kiln_ints_str(want, rank, got, sizeof got));
    return false;
  }
  kiln_op_set_output(g, n, 0, x->dtype, &out);  // out: broadcast(x.shape, shape)
  return true;
}

// eval: y[idx] = x[idx aligned from the right, 0 where x has size 1].
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)n;
  const kiln_shape *xs = in[0].shape, *ys = out->shape;
  int64_t idx[KILN_MAX_RANK], src[KILN_MAX_RANK], strides[KILN_MAX_RANK];
  int lead = ys->rank - xs->rank;
  kiln_contiguous_strides(xs, strides);
  for (int64_t flat = 0; flat < kiln_shape_numel(ys); flat++) {
    kiln_unravel(flat, ys, idx);
    for (int i = 0; i < xs->rank; i++) src[i] = xs->dim[i] == 1 ? 0 : idx[lead + i];
    out->data[flat] = in[0].data[kiln_dot_index(xs->rank, src, strides)];
  }
}

static void lower(const kiln_lower_ctx *c) {
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  kiln_lb_comment(c->b, "Expand %s: %s -> %s", c->node->name, kiln_describe(x).text,
                  kiln_describe(y).text);
  kiln_strided s = {.shape = y->shape};
  kiln_broadcast_strides(&x->shape, &y->shape, s.src_stride);
  kiln_contiguous_strides(&y->shape, s.dst_stride);
  kiln_strided_lower(c->b, kiln_in_buf(c, 0), kiln_out_buf(c, 0), &s);
}

// Gradient (docs/training.md): dy summed over the axes x was broadcast along.
static bool expand_grad(kiln_grad_ctx *c) {
  c->dx[0] = kiln_gb_sum_to(c, c->dy[0], &c->g->tensors[c->node.inputs[0]].shape);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Expand = {
    .name = "Expand",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_BROADCAST,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // a copy
    .grad = expand_grad,
};
