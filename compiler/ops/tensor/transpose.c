// Transpose (ONNX): y's axis i is x's axis perm[i]; perm defaults to the reverse order. Any dtype.
// Lowered as one strided copy walking y contiguously.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"perm", KILN_ATTR_INTS, false}, {0}};

// Reads perm (default: reversed axes) and checks it is a permutation of 0..rank-1.
static bool read_perm(const kiln_node *n, kiln_diag *d, int rank, int64_t *perm) {
  for (int i = 0; i < rank; i++) perm[i] = rank - 1 - i;
  const kiln_attr *a = kiln_node_attr(n, "perm");
  if (!a) return true;
  bool seen[KILN_MAX_RANK] = {false}, ok = a->count == rank;
  for (int i = 0; ok && i < rank; i++) {
    ok = a->ints[i] >= 0 && a->ints[i] < rank && !seen[a->ints[i]];
    if (ok) seen[a->ints[i]] = true, perm[i] = a->ints[i];
  }
  if (!ok) {
    char got[256];
    kiln_op_error(d, n, "attrs.perm: expected a permutation of 0..%d, got %s", rank - 1,
                  kiln_ints_str(a->ints, a->count, got, sizeof got));
  }
  return ok;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  int64_t perm[KILN_MAX_RANK];
  if (!x) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  if (!read_perm(n, d, x->shape.rank, perm)) return false;
  kiln_shape out = {.rank = x->shape.rank};  // out: (x.dim[perm[0]], x.dim[perm[1]], ...)
  for (int i = 0; i < out.rank; i++) out.dim[i] = x->shape.dim[perm[i]];
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

// eval: y[idx] = x[j] with j[perm[i]] = idx[i].
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  int rank = in[0].shape->rank;
  int64_t perm[KILN_MAX_RANK], idx[KILN_MAX_RANK], src[KILN_MAX_RANK], strides[KILN_MAX_RANK];
  read_perm(n, NULL, rank, perm);
  kiln_contiguous_strides(in[0].shape, strides);
  for (int64_t flat = 0; flat < kiln_shape_numel(out->shape); flat++) {
    kiln_unravel(flat, out->shape, idx);
    for (int i = 0; i < rank; i++) src[perm[i]] = idx[i];
    out->data[flat] = in[0].data[kiln_dot_index(rank, src, strides)];
  }
}

static void lower(const kiln_lower_ctx *c) {
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  int64_t perm[KILN_MAX_RANK], xs[KILN_MAX_RANK];
  char text[256];
  read_perm(c->node, NULL, x->shape.rank, perm);
  kiln_lb_comment(c->b, "Transpose %s: %s -> %s, perm %s", c->node->name, kiln_describe(x).text,
                  kiln_describe(y).text, kiln_ints_str(perm, x->shape.rank, text, sizeof text));
  kiln_strided s = {.shape = y->shape};
  kiln_contiguous_strides(&x->shape, xs);
  kiln_contiguous_strides(&y->shape, s.dst_stride);
  for (int i = 0; i < y->shape.rank; i++) s.src_stride[i] = xs[perm[i]];
  kiln_strided_lower(c->b, kiln_in_buf(c, 0), kiln_out_buf(c, 0), &s);
}

// Gradient (docs/training.md): dx = Transpose(dy) with the inverse permutation (the default,
// reversed axes, is its own inverse).
static bool transpose_grad(kiln_grad_ctx *c) {
  if (!kiln_node_attr(&c->node, "perm")) {
    c->dx[0] = kiln_gb_unary(c, "Transpose", c->dy[0]);
    return c->dx[0] >= 0;
  }
  int64_t perm[KILN_MAX_RANK], inverse[KILN_MAX_RANK];
  int rank = kiln_attr_ints(&c->node, "perm", perm, KILN_MAX_RANK);
  for (int i = 0; i < rank; i++) inverse[perm[i]] = i;
  kiln_gb_attr attrs[] = {KILN_GB_INTS("perm", inverse, rank), KILN_GB_END};
  c->dx[0] = kiln_gb_op(c, "Transpose", &c->dy[0], 1, attrs, 1);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Transpose = {
    .name = "Transpose",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_INJECTIVE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // a copy
    .grad = transpose_grad,
};
