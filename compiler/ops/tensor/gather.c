// Gather (ONNX): picks entries of x along `axis` (default 0, negative counts from the end) by
// integer indices (i32 or i64; negative ones count from the end):
//   y[a..., i..., b...] = x[a..., indices[i...], b...],  y: x.shape[:axis] + indices.shape +
//   x.shape[axis+1:]
// Any data dtype (embedding lookups). Constant indices are range-checked at compile time; indices
// computed at run time that are out of range are clamped to the axis (no out-of-bounds reads),
// and the reference kernel clamps the same way.
#include <stdlib.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"axis", KILN_ATTR_INT, false}, {0}};

// Checks every constant index is in [-dim, dim).
static bool check_const_indices(const kiln_node *n, kiln_diag *d, const kiln_tensor *idx,
                                int64_t dim) {
  if (idx->kind != KILN_TENSOR_PARAM || !idx->data) return true;
  for (int64_t i = 0; i < kiln_shape_numel(&idx->shape); i++) {
    double v = kiln_tensor_get(idx, i);
    if (v < (double)-dim || v >= (double)dim) {
      kiln_op_error(d, n, "inputs[1] (%s): index %.0f (element %lld) is outside [%lld, %lld)",
                    idx->name, v, (long long)i, (long long)-dim, (long long)dim);
      return false;
    }
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0), *idx = kiln_in(g, n, 1);
  if (!x || !idx) {
    kiln_op_error(d, n, "inputs[%d]: missing", x ? 1 : 0);
    return false;
  }
  if (idx->dtype != KILN_I32 && idx->dtype != KILN_I64) {
    kiln_op_error(d, n, "inputs[1] (%s): expected indices of dtype i32 or i64, got %s", idx->name,
                  kiln_dtype_name(idx->dtype));
    return false;
  }
  int64_t axis;
  if (!kiln_op_check_axis(n, d, "attrs.axis", kiln_attr_int(n, "axis", 0), x->shape.rank, &axis))
    return false;
  int rank = x->shape.rank - 1 + idx->shape.rank;
  if (rank > KILN_MAX_RANK) {
    kiln_op_error(d, n, "the output would have rank %d; at most %d", rank, KILN_MAX_RANK);
    return false;
  }
  if (!check_const_indices(n, d, idx, x->shape.dim[axis])) return false;
  kiln_shape out = {.rank = 0};  // out: x.shape[:axis] + indices.shape + x.shape[axis+1:]
  for (int i = 0; i < axis; i++) out.dim[out.rank++] = x->shape.dim[i];
  for (int i = 0; i < idx->shape.rank; i++) out.dim[out.rank++] = idx->shape.dim[i];
  for (int i = (int)axis + 1; i < x->shape.rank; i++) out.dim[out.rank++] = x->shape.dim[i];
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

static int axis_of(const kiln_node *n, int rank) {
  int axis = (int)kiln_attr_int(n, "axis", 0);
  return axis < 0 ? axis + rank : axis;
}

// An index as ONNX reads it (negative from the end), clamped into [0, dim).
static int64_t resolve_index(double v, int64_t dim) {
  int64_t k = kiln_saturate_i64(v);
  if (k < 0) k += dim;
  return k < 0 ? 0 : k >= dim ? dim - 1 : k;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  const kiln_shape *xs = in[0].shape, *is = in[1].shape;
  int axis = axis_of(n, xs->rank), q = is->rank;
  int64_t idx[KILN_MAX_RANK], src[KILN_MAX_RANK], iidx[KILN_MAX_RANK];
  int64_t xstrides[KILN_MAX_RANK], istrides[KILN_MAX_RANK];
  kiln_contiguous_strides(xs, xstrides);
  kiln_contiguous_strides(is, istrides);
  for (int64_t flat = 0; flat < kiln_shape_numel(out->shape); flat++) {
    kiln_unravel(flat, out->shape, idx);
    for (int i = 0; i < q; i++) iidx[i] = idx[axis + i];
    for (int i = 0; i < xs->rank; i++) src[i] = i < axis ? idx[i] : i > axis ? idx[i - 1 + q] : 0;
    double k = in[1].data[kiln_dot_index(q, iidx, istrides)];
    src[axis] = resolve_index(k, xs->dim[axis]);
    out->data[flat] = in[0].data[kiln_dot_index(xs->rank, src, xstrides)];
  }
}

// lower: loops over y; once the index dimensions are open, k = the index, made non-negative and
// clamped; the inner loops copy a contiguous row of x.
static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *ind = kiln_lower_in(c, 1), *y = kiln_lower_out(c, 0);
  int axis = axis_of(c->node, x->shape.rank), q = ind->shape.rank, rank = y->shape.rank;
  int64_t dim = x->shape.dim[axis], xs[KILN_MAX_RANK], is[KILN_MAX_RANK], ys[KILN_MAX_RANK];
  kiln_contiguous_strides(&x->shape, xs);
  kiln_contiguous_strides(&ind->shape, is);
  kiln_contiguous_strides(&y->shape, ys);
  kiln_lb_comment(b, "Gather %s: %s at %s along axis %d -> %s", c->node->name,
                  kiln_describe(x).text, kiln_describe(ind).text, axis, kiln_describe(y).text);
  int vars[KILN_MAX_RANK];
  for (int i = 0; i < axis + q; i++) {
    char name[16];
    snprintf(name, sizeof name, "d%d", i);
    vars[i] = kiln_lb_for_n(b, name, y->shape.dim[i]);
  }
  kiln_lexpr *at = kiln_lower_index(b, q, vars + axis, is);
  int k = kiln_lb_decl(b, "k", KILN_I64, lx_cast(b, KILN_I64, lx_load(b, kiln_in_buf(c, 1), at)));
  kiln_lexpr *wrapped = lx_select(b, lx_bin(b, LB_LT, lx_var(b, k), lx_int(b, 0)),
                                  lx_add(b, lx_var(b, k), lx_int(b, dim)), lx_var(b, k));
  kiln_lb_assign(b, k,
                 lx_bin(b, LB_MIN, lx_bin(b, LB_MAX, wrapped, lx_int(b, 0)), lx_int(b, dim - 1)));
  for (int i = axis + q; i < rank; i++) {
    char name[16];
    snprintf(name, sizeof name, "d%d", i);
    vars[i] = kiln_lb_for_n(b, name, y->shape.dim[i]);
  }
  kiln_lexpr *src = lx_mul(b, lx_var(b, k), lx_int(b, xs[axis]));
  for (int i = 0; i < axis; i++) src = lx_madd(b, lx_var(b, vars[i]), xs[i], src);
  for (int i = axis + q; i < rank; i++) src = lx_madd(b, lx_var(b, vars[i]), xs[i - q + 1], src);
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_lower_index(b, rank, vars, ys),
                lx_load(b, kiln_in_buf(c, 0), src));
  for (int i = 0; i < rank; i++) kiln_lb_end_for(b);
}

// Gradient (docs/training.md): dx = GatherGrad(dy, indices), the scatter-add transpose along the
// same axis (repeated indices accumulate; constant or run-time indices alike). The indices get
// none.
static bool gather_grad(kiln_grad_ctx *c) {
  kiln_shape xs = c->g->tensors[c->node.inputs[0]].shape;  // a copy: the rule adds tensors
  if (c->dy[0] < 0 || !c->need[0]) return true;
  kiln_gb_attr attrs[] = {KILN_GB_INT("axis", kiln_attr_int(&c->node, "axis", 0)),
                          KILN_GB_INTS("data_shape", xs.dim, xs.rank), KILN_GB_END};
  int in[2] = {c->dy[0], c->node.inputs[1]};
  c->dx[0] = kiln_gb_op(c, "GatherGrad", in, 2, attrs, 1);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Gather = {
    .name = "Gather",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_INJECTIVE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // a copy
    .grad = gather_grad,
};
