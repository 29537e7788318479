// Reductions shared by the Reduce* ops (ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd,
// ReduceSumSquare, ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp), and the (outer, axis, inner)
// view of a shape used by ArgMax/ArgMin and the softmaxes. A reduction is
//   y = finish(combine over the reduced elements of map(x))        (kiln_reduce_kind)
//
// Axes come from the INTS attribute `axes` (opset < 18; < 13 for ReduceSum) or from an optional
// constant i64 input 1 (ReduceSum 13+, all of them 18+), never both. Negative axes count from the
// end. No axes reduce every axis, unless noop_with_empty_axes = 1: then the op is a copy.
// keepdims = 1 (default) keeps reduced axes with size 1; 0 drops them.
#include <math.h>
#include <string.h>

#include "../op_internal.h"

const kiln_attr_spec kiln_reduce_attrs[] = {{"axes", KILN_ATTR_INTS, false},
                                            {"keepdims", KILN_ATTR_INT, false},
                                            {"noop_with_empty_axes", KILN_ATTR_INT, false},
                                            {0}};

typedef struct reduce_plan {
  bool noop;                    // a copy
  bool reduced[KILN_MAX_RANK];  // axis i is reduced
  kiln_shape keep;              // x's shape with reduced axes set to 1 (the output's layout)
  int64_t count;                // elements reduced into each output element
} reduce_plan;

// Turns the raw axes (count of them, or count < 0 when none were given) into a plan for x's
// shape. Reports bad axes when d is given.
static bool plan_axes(const kiln_node *n, kiln_diag *d, const kiln_shape *x, const int64_t *axes,
                      int count, reduce_plan *p) {
  memset(p, 0, sizeof *p);
  p->keep = *x;
  p->count = 1;
  bool all = count <= 0;
  if (all && kiln_attr_int(n, "noop_with_empty_axes", 0)) {
    p->noop = true;
    return true;
  }
  for (int k = 0; k < count; k++) {
    int64_t a = axes[k] < 0 ? axes[k] + x->rank : axes[k];
    if (a < 0 || a >= x->rank || p->reduced[a]) {
      char got[256];
      const char *field = kiln_has_input(n, 1) ? "inputs[1] (axes)" : "attrs.axes";
      kiln_op_error(d, n, "%s: expected distinct axes in [%d, %d] for x of rank %d, got %s", field,
                    -x->rank, x->rank - 1, x->rank, kiln_ints_str(axes, count, got, sizeof got));
      return false;
    }
    p->reduced[a] = true;
  }
  for (int i = 0; i < x->rank; i++) {
    if (all) p->reduced[i] = true;
    if (!p->reduced[i]) continue;
    p->count *= x->dim[i];
    p->keep.dim[i] = 1;
  }
  return true;
}

// The output shape: keep, or keep without the reduced axes when keepdims = 0.
static kiln_shape output_shape(const kiln_node *n, const reduce_plan *p) {
  if (p->noop || kiln_attr_int(n, "keepdims", 1)) return p->keep;
  kiln_shape s = {.rank = 0};
  for (int i = 0; i < p->keep.rank; i++)
    if (!p->reduced[i]) s.dim[s.rank++] = p->keep.dim[i];
  return s;
}

// Raw axes of a node in the graph (attribute or constant input 1); count -1 when none.
static bool graph_axes(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int64_t *axes,
                       int *count) {
  const kiln_tensor *t = kiln_in(g, n, 1);
  const kiln_attr *a = kiln_node_attr(n, "axes");
  *count = -1;
  if (t && a) {
    kiln_op_error(d, n, "inputs[1] (%s): axes are also given as attrs.axes; give them one way",
                  t->name);
    return false;
  }
  if (a) {
    if (a->count > KILN_MAX_RANK) {
      kiln_op_error(d, n, "attrs.axes: expected at most %d axes, got %d", KILN_MAX_RANK, a->count);
      return false;
    }
    *count = kiln_attr_ints(n, "axes", axes, KILN_MAX_RANK);
    return true;
  }
  if (!t) return true;
  if (t->kind != KILN_TENSOR_PARAM || !t->data || t->dtype != KILN_I64 || t->shape.rank != 1 ||
      t->shape.dim[0] > KILN_MAX_RANK) {
    kiln_op_error(d, n,
                  "inputs[1] (%s): axes must be a constant i64 param of shape (k), k <= %d; got "
                  "%s %s%s",
                  t->name, KILN_MAX_RANK, kiln_dtype_name(t->dtype),
                  kiln_shape_text(&t->shape).text,
                  t->kind == KILN_TENSOR_PARAM ? "" : " computed at run time");
    return false;
  }
  *count = (int)t->shape.dim[0];
  for (int k = 0; k < *count; k++) axes[k] = (int64_t)kiln_tensor_get(t, k);
  return true;
}

static bool graph_plan(const kiln_graph *g, const kiln_node *n, kiln_diag *d, reduce_plan *p) {
  int64_t axes[KILN_MAX_RANK];
  int count;
  return graph_axes(g, n, d, axes, &count) &&
         plan_axes(n, d, &kiln_in(g, n, 0)->shape, axes, count, p);
}

bool kiln_reduce_infer(kiln_graph *g, kiln_node *n, kiln_diag *d, unsigned dtypes) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, dtypes, true, d)) return false;
  int64_t keepdims, noop;
  if (!kiln_op_read_int(n, d, "keepdims", 1, 0, 1, &keepdims) ||
      !kiln_op_read_int(n, d, "noop_with_empty_axes", 0, 0, 1, &noop))
    return false;
  reduce_plan p;
  if (!graph_plan(g, n, d, &p)) return false;
  kiln_shape out = output_shape(n, &p);
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &out);
  return true;
}

static double combine_ref(kiln_lbin combine, double acc, double v) {
  if (combine == LB_MAX) return fmax(acc, v);
  if (combine == LB_MIN) return fmin(acc, v);
  if (combine == LB_MUL) return acc * v;
  return acc + v;
}

static double init_ref(kiln_lbin combine) {
  return combine == LB_MAX ? -INFINITY : combine == LB_MIN ? INFINITY : combine == LB_MUL ? 1 : 0;
}

static double map_ref(kiln_reduce_map map, double x) {
  switch (map) {
    case KILN_RMAP_SQUARE: return x * x;
    case KILN_RMAP_ABS: return fabs(x);
    case KILN_RMAP_EXP: return exp(x);
    case KILN_RMAP_NONE: break;
  }
  return x;
}

static double finish_ref(kiln_reduce_finish finish, double acc, int64_t count) {
  switch (finish) {
    case KILN_RFINISH_MEAN: return acc / (double)count;
    case KILN_RFINISH_SQRT: return sqrt(acc);
    case KILN_RFINISH_LOG: return log(acc);
    case KILN_RFINISH_NONE: break;
  }
  return acc;
}

void kiln_reduce_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out,
                      kiln_reduce_kind kind) {
  int64_t axes[KILN_MAX_RANK];
  int count = -1;
  if (kiln_has_input(n, 1)) {
    count = (int)kiln_shape_numel(in[1].shape);
    for (int k = 0; k < count && k < KILN_MAX_RANK; k++) axes[k] = (int64_t)in[1].data[k];
  } else {
    count = kiln_attr_ints(n, "axes", axes, KILN_MAX_RANK);
  }
  reduce_plan p;
  plan_axes(n, NULL, in[0].shape, axes, count, &p);  // infer checked the axes
  int64_t out_numel = kiln_shape_numel(out->shape), x_numel = kiln_shape_numel(in[0].shape);
  if (p.noop) {
    memcpy(out->data, in[0].data, sizeof(double) * (size_t)x_numel);
    return;
  }
  for (int64_t o = 0; o < out_numel; o++) out->data[o] = init_ref(kind.combine);
  // Each x element goes to the output element with its reduced coordinates set to 0.
  int64_t keep_strides[KILN_MAX_RANK], idx[KILN_MAX_RANK];
  kiln_contiguous_strides(&p.keep, keep_strides);
  for (int64_t i = 0; i < x_numel; i++) {
    kiln_unravel(i, in[0].shape, idx);
    for (int a = 0; a < p.keep.rank; a++)
      if (p.reduced[a]) idx[a] = 0;
    double *acc = &out->data[kiln_dot_index(p.keep.rank, idx, keep_strides)];
    *acc = combine_ref(kind.combine, *acc, map_ref(kind.map, in[0].data[i]));
  }
  for (int64_t o = 0; o < out_numel; o++)
    out->data[o] = finish_ref(kind.finish, out->data[o], p.count);
}

// The accumulator's start: -inf / +inf (the type's lowest / highest integer), 1 or 0.
static kiln_lexpr *init_lx(kiln_lb *b, kiln_dtype t, kiln_lbin combine) {
  if (combine == LB_MUL) return lx_float(b, t, 1);
  if (combine != LB_MAX && combine != LB_MIN) return lx_float(b, t, 0);
  bool max = combine == LB_MAX;
  if (kiln_dtype_is_float(t)) return lx_float(b, t, max ? -INFINITY : INFINITY);
  if (t == KILN_I64) return lx_int(b, max ? INT64_MIN : INT64_MAX);
  return lx_float(b, t, max ? (double)INT32_MIN : (double)INT32_MAX);  // i32
}

static kiln_lexpr *map_lx(kiln_lb *b, kiln_reduce_map map, kiln_lexpr *x) {
  switch (map) {
    case KILN_RMAP_SQUARE: return lx_bin(b, LB_MUL, kiln_lx_clone(b, x), x);
    case KILN_RMAP_ABS: return lx_unary(b, LU_ABS, x);
    case KILN_RMAP_EXP: return lx_unary(b, LU_EXP, x);
    case KILN_RMAP_NONE: break;
  }
  return x;
}

static kiln_lexpr *finish_lx(kiln_lb *b, kiln_dtype t, kiln_reduce_finish finish, kiln_lexpr *acc,
                             int64_t count) {
  switch (finish) {
    case KILN_RFINISH_MEAN: return lx_bin(b, LB_DIV, acc, lx_float(b, t, (double)count));
    case KILN_RFINISH_SQRT: return lx_unary(b, LU_SQRT, acc);
    case KILN_RFINISH_LOG: return lx_unary(b, LU_LOG, acc);
    case KILN_RFINISH_NONE: break;
  }
  return acc;
}

void kiln_reduce_lower(const kiln_lower_ctx *c, kiln_reduce_kind kind) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  reduce_plan p;
  graph_plan(c->g, c->node, NULL, &p);
  if (p.noop) {
    kiln_copy_lower(c);
    return;
  }
  kiln_dtype t = y->dtype;
  kiln_lb_comment(b, "%s %s: %s -> %s, %lld elements per output", kiln_op_get(c->node->op)->name,
                  c->node->name, kiln_describe(x).text, kiln_describe(y).text, (long long)p.count);
  // Kept axes outside (d<i>), reduced axes inside (r<i>), each in x's order: y[d...] =
  // combine over r... of x[d..., r...].
  int rank = x->shape.rank, vars[KILN_MAX_RANK];
  int64_t x_strides[KILN_MAX_RANK], y_strides[KILN_MAX_RANK];
  kiln_contiguous_strides(&x->shape, x_strides);
  kiln_contiguous_strides(&p.keep, y_strides);
  char name[16];
  for (int i = 0; i < rank; i++) {
    y_strides[i] = p.reduced[i] ? 0 : y_strides[i];
    if (p.reduced[i]) continue;
    snprintf(name, sizeof name, "d%d", i);
    vars[i] = kiln_lb_for_n(b, name, x->shape.dim[i]);
  }
  int acc = kiln_lb_decl(b, "acc", t, init_lx(b, t, kind.combine));
  for (int i = 0; i < rank; i++) {
    if (!p.reduced[i]) continue;
    snprintf(name, sizeof name, "r%d", i);
    vars[i] = kiln_lb_for_n(b, name, x->shape.dim[i]);
  }
  kiln_lexpr *v = lx_load(b, kiln_in_buf(c, 0), kiln_lower_index(b, rank, vars, x_strides));
  kiln_lb_assign(b, acc, lx_bin(b, kind.combine, lx_var(b, acc), map_lx(b, kind.map, v)));
  for (int i = 0; i < rank; i++)
    if (p.reduced[i]) kiln_lb_end_for(b);
  kiln_lexpr *result = finish_lx(b, t, kind.finish, lx_var(b, acc), p.count);
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_lower_index(b, rank, vars, y_strides), result);
  for (int i = 0; i < rank; i++)
    if (!p.reduced[i]) kiln_lb_end_for(b);
}

int64_t kiln_reduce_flops(const kiln_graph *g, const kiln_node *n) {
  return kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

// ---- (outer, axis, inner) views ----

kiln_axis_view kiln_axis_view_of(const kiln_shape *s, int axis) {
  kiln_axis_view v = {1, s->dim[axis], 1};
  for (int i = 0; i < axis; i++) v.outer *= s->dim[i];
  for (int i = axis + 1; i < s->rank; i++) v.inner *= s->dim[i];
  return v;
}

kiln_lexpr *kiln_axis_element(kiln_lb *b, const kiln_axis_view *v, int o, int i, kiln_lexpr *j) {
  kiln_lexpr *e = o >= 0 ? lx_mul(b, lx_var(b, o), lx_int(b, v->axis)) : lx_int(b, 0);
  e = lx_mul(b, lx_add(b, e, j), lx_int(b, v->inner));
  return i >= 0 ? lx_add(b, e, lx_var(b, i)) : e;
}
