// ArgMax and ArgMin: the index (i64) of the largest (smallest) element along `axis` (default 0;
// negative counts from the end). keepdims = 1 (default) keeps the axis with size 1. Ties go to the
// first index, or the last with select_last_index = 1. The shape is viewed as (outer, A, inner)
// (reduce.c). The two ops differ only in the comparison, so both live here.
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"axis", KILN_ATTR_INT, false},
                                       {"keepdims", KILN_ATTR_INT, false},
                                       {"select_last_index", KILN_ATTR_INT, false},
                                       {0}};

static int axis_of(const kiln_node *n, int rank) {
  int64_t axis = kiln_attr_int(n, "axis", 0);
  return (int)(axis < 0 ? axis + rank : axis);
}

// ArgMax compares with >, ArgMin with <.
static bool is_max(const kiln_node *n) { return n->op == KILN_OP_ArgMax; }

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, KILN_DT_NUMERIC, true, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  int rank = x->shape.rank;
  int64_t axis, keepdims, last;
  if (rank < 1) {
    kiln_op_error(d, n, "inputs[0] (%s): expected at least 1 dimension, got a scalar", x->name);
    return false;
  }
  if (!kiln_op_read_int(n, d, "axis", 0, -rank, rank - 1, &axis) ||
      !kiln_op_read_int(n, d, "keepdims", 1, 0, 1, &keepdims) ||
      !kiln_op_read_int(n, d, "select_last_index", 0, 0, 1, &last))
    return false;
  int a = axis_of(n, rank);
  kiln_shape out = x->shape;  // out: x's shape with dim[axis] = 1, or without it
  out.dim[a] = 1;
  if (!keepdims) {
    for (int i = a; i + 1 < rank; i++) out.dim[i] = out.dim[i + 1];
    out.rank--;
  }
  kiln_op_set_output(g, n, 0, KILN_I64, &out);
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  kiln_axis_view v = kiln_axis_view_of(in[0].shape, axis_of(n, in[0].shape->rank));
  bool last = kiln_attr_int(n, "select_last_index", 0), max = is_max(n);
  const double *x = in[0].data;
  for (int64_t o = 0; o < v.outer; o++)
    for (int64_t i = 0; i < v.inner; i++) {
      int64_t base = o * v.axis * v.inner + i, best = 0;
      for (int64_t j = 1; j < v.axis; j++) {
        double xj = x[base + j * v.inner], xb = x[base + best * v.inner];
        if ((max ? xj > xb : xj < xb) || (last && xj == xb)) best = j;
      }
      out->data[o * v.inner + i] = (double)best;
    }
}

// for o, i: best = x[0]; index = 0
//   for j in 1..A: better = x[j] > best (>= for the last index; < and <= for ArgMin)
//                  best, index = x[j], j if better
//   y[o][i] = index
static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  int axis = axis_of(c->node, x->shape.rank);
  kiln_axis_view v = kiln_axis_view_of(&x->shape, axis);
  bool last = kiln_attr_int(c->node, "select_last_index", 0), max = is_max(c->node);
  kiln_lb_comment(b, "%s %s: %s along axis %d (rows of %lld), %s index on ties -> %s",
                  kiln_op_get(c->node->op)->name, c->node->name, kiln_describe(x).text, axis,
                  (long long)v.axis, last ? "last" : "first", kiln_describe(y).text);
  int xb = kiln_in_buf(c, 0);
  int o = v.outer > 1 ? kiln_lb_for_n(b, "o", v.outer) : -1;
  int i = v.inner > 1 ? kiln_lb_for_n(b, "i", v.inner) : -1;
  int best = kiln_lb_decl(b, "best", x->dtype,
                          lx_load(b, xb, kiln_axis_element(b, &v, o, i, lx_int(b, 0))));
  int index = kiln_lb_decl(b, "index", KILN_I64, lx_int(b, 0));
  int j = kiln_lb_for(b, "j", lx_int(b, 1), lx_int(b, v.axis));
  int xj =
      kiln_lb_decl(b, "xj", x->dtype, lx_load(b, xb, kiln_axis_element(b, &v, o, i, lx_var(b, j))));
  // best < xj, or best <= xj for the last index; the operands swapped for ArgMin
  kiln_lbin cmp = last ? LB_LE : LB_LT;
  int lo = max ? best : xj, hi = max ? xj : best;
  int better = kiln_lb_decl(b, "better", KILN_BOOL, lx_bin(b, cmp, lx_var(b, lo), lx_var(b, hi)));
  kiln_lb_assign(b, best, lx_select(b, lx_var(b, better), lx_var(b, xj), lx_var(b, best)));
  kiln_lb_assign(b, index, lx_select(b, lx_var(b, better), lx_var(b, j), lx_var(b, index)));
  kiln_lb_end_for(b);
  kiln_lexpr *out_index = i >= 0 ? lx_var(b, i) : lx_int(b, 0);
  if (o >= 0) out_index = lx_madd(b, lx_var(b, o), v.inner, out_index);
  kiln_lb_store(b, kiln_out_buf(c, 0), out_index, lx_var(b, index));
  if (i >= 0) kiln_lb_end_for(b);
  if (o >= 0) kiln_lb_end_for(b);
}

#define ARG_EXTREME_OP(Name)                                                                   \
  {                                                                                            \
    .name = #Name, .min_inputs = 1, .max_inputs = 1, .min_outputs = 1, .max_outputs = 1,       \
    .attrs = attrs, .fuse = KILN_FUSE_REDUCTION, .infer = infer, .eval = eval, .lower = lower, \
    .flops = kiln_reduce_flops, .tol = {0, 0},                                                 \
  }
const kiln_op_def kiln_op_ArgMax = ARG_EXTREME_OP(ArgMax);  // exact: comparisons only
const kiln_op_def kiln_op_ArgMin = ARG_EXTREME_OP(ArgMin);
