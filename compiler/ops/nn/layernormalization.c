// LayerNormalization (ONNX opset 17): normalizes over the trailing dimensions [axis, rank).
//   x viewed as (outer, inner), inner = prod(x.shape[axis:]); for each row:
//   mean = sum(x) / inner, var = sum((x - mean)^2) / inner,
//   y = (x - mean) / sqrt(var + epsilon) * Scale + B
//   x: (D0, ..., Dr-1)   Scale, B: x.shape[axis:], both optional here (1 and 0)   y: like x
//   optional outputs Mean = mean and InvStdDev = 1 / sqrt(var + epsilon), per row:
//   (D0, ..., D(axis-1), 1, ..., 1), x's rank, in x's dtype
// Attributes: axis (default -1), epsilon (1e-5), stash_type (1 = float or 11 = double: the
// precision of the statistics; Kiln's reference is double either way, the generated code computes
// in x's dtype).
#include <math.h>

#include "../op_internal.h"
#include "../train/grad_compose.h"

static const kiln_attr_spec attrs[] = {
    {"axis", KILN_ATTR_INT, false},
    {"epsilon", KILN_ATTR_FLOAT, false},
    {"stash_type", KILN_ATTR_INT, false},
    {0},
};

typedef struct ln_view {
  int64_t outer, inner;
} ln_view;

static ln_view view_of(const kiln_node *n, const kiln_shape *s) {
  int64_t axis = kiln_attr_int(n, "axis", -1);
  if (axis < 0) axis += s->rank;
  ln_view v = {1, 1};
  for (int i = 0; i < s->rank; i++) *(i < axis ? &v.outer : &v.inner) *= s->dim[i];
  return v;
}

static bool check_attrs(const kiln_node *n, kiln_diag *d, int rank) {
  int64_t axis, stash = kiln_attr_int(n, "stash_type", 1);
  if (!kiln_op_read_int(n, d, "axis", -1, -rank, rank - 1, &axis)) return false;
  if (stash != 1 && stash != 11) {
    kiln_op_error(d, n, "attrs.stash_type: expected 1 (float) or 11 (double), got %lld",
                  (long long)stash);
    return false;
  }
  double eps = kiln_attr_float(n, "epsilon", 1e-5);
  if (!(eps >= 0)) {
    kiln_op_error(d, n, "attrs.epsilon: expected a value >= 0, got %g", eps);
    return false;
  }
  return true;
}

// Mean and InvStdDev: x's shape with the normalized axes [axis, rank) kept as 1.
static kiln_shape stats_shape(const kiln_node *n, const kiln_shape *x) {
  int64_t axis = kiln_attr_int(n, "axis", -1);
  if (axis < 0) axis += x->rank;
  kiln_shape s = *x;
  for (int i = (int)axis; i < s.rank; i++) s.dim[i] = 1;
  return s;
}

// Scale and B, when given, have exactly the normalized shape x.shape[axis:].
static bool check_affine(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i) {
  const kiln_tensor *x = kiln_in(g, n, 0), *p = kiln_in(g, n, i);
  if (!p) return true;
  int64_t axis = kiln_attr_int(n, "axis", -1);
  if (axis < 0) axis += x->shape.rank;
  kiln_shape want = {.rank = x->shape.rank - (int)axis};
  for (int k = 0; k < want.rank; k++) want.dim[k] = x->shape.dim[axis + k];
  if (kiln_shape_equal(&p->shape, &want)) return true;
  kiln_op_error(d, n, "inputs[%d] (%s): expected %s of shape %s (x.shape[%lld:]), got %s", i,
                p->name, i == 1 ? "Scale" : "B", kiln_shape_text(&want).text, (long long)axis,
                kiln_shape_text(&p->shape).text);
  return false;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  for (int i = 1; i < 3; i++) {
    const kiln_tensor *p = kiln_in(g, n, i);
    if (p && p->dtype != x->dtype) {
      kiln_op_error(d, n, "inputs[%d] (%s): expected dtype %s like inputs[0] (%s), got %s", i,
                    p->name, kiln_dtype_name(x->dtype), x->name, kiln_dtype_name(p->dtype));
      return false;
    }
  }
  if (x->shape.rank < 1) {
    kiln_op_error(d, n, "inputs[0] (%s): expected at least 1 dimension, got a scalar", x->name);
    return false;
  }
  if (!check_attrs(n, d, x->shape.rank) || !check_affine(g, n, d, 1) || !check_affine(g, n, d, 2))
    return false;
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: like x
  kiln_shape stats = stats_shape(n, &x->shape);
  for (int i = 1; i < n->n_outputs; i++) kiln_op_set_output(g, n, i, x->dtype, &stats);
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  ln_view v = view_of(n, in[0].shape);
  double eps = kiln_attr_float(n, "epsilon", 1e-5);
  const double *scale = kiln_has_input(n, 1) ? in[1].data : NULL;
  const double *bias = kiln_has_input(n, 2) ? in[2].data : NULL;
  for (int64_t o = 0; o < v.outer; o++) {
    const double *x = in[0].data + o * v.inner;
    double *y = out->data + o * v.inner;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < v.inner; i++) mean += x[i];
    mean /= (double)v.inner;
    for (int64_t i = 0; i < v.inner; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= (double)v.inner;
    for (int64_t i = 0; i < v.inner; i++)
      y[i] = (x[i] - mean) / sqrt(var + eps) * (scale ? scale[i] : 1) + (bias ? bias[i] : 0);
    if (n->n_outputs > 1) out[1].data[o] = mean;                 // Mean: (outer) rows
    if (n->n_outputs > 2) out[2].data[o] = 1 / sqrt(var + eps);  // InvStdDev
  }
}

// x[o * inner + i]
static kiln_lexpr *at(kiln_lb *b, int buf, const ln_view *v, int o, int i) {
  return lx_load(b, buf, lx_madd(b, lx_var(b, o), v->inner, lx_var(b, i)));
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  ln_view v = view_of(c->node, &x->shape);
  kiln_dtype t = y->dtype;
  int xb = kiln_in_buf(c, 0);
  kiln_lb_comment(b, "LayerNormalization %s: %s, rows of %lld -> %s", c->node->name,
                  kiln_describe(x).text, (long long)v.inner, kiln_describe(y).text);
  int o = kiln_lb_for_n(b, "o", v.outer);
  // mean = sum(x) / inner
  int sum = kiln_lb_decl(b, "sum", t, lx_float(b, t, 0));
  int i = kiln_lb_for_n(b, "i", v.inner);
  kiln_lb_assign(b, sum, lx_bin(b, LB_ADD, lx_var(b, sum), at(b, xb, &v, o, i)));
  kiln_lb_end_for(b);
  int mean = kiln_lb_decl(b, "mean", t,
                          lx_bin(b, LB_DIV, lx_var(b, sum), lx_float(b, t, (double)v.inner)));
  // inv = 1 / sqrt(sum((x - mean)^2) / inner + epsilon)
  int sq = kiln_lb_decl(b, "sq", t, lx_float(b, t, 0));
  i = kiln_lb_for_n(b, "i", v.inner);
  kiln_lexpr *dev = lx_bin(b, LB_SUB, at(b, xb, &v, o, i), lx_var(b, mean));
  kiln_lexpr *dev2 = lx_bin(b, LB_SUB, at(b, xb, &v, o, i), lx_var(b, mean));
  kiln_lb_assign(b, sq, lx_bin(b, LB_ADD, lx_var(b, sq), lx_bin(b, LB_MUL, dev, dev2)));
  kiln_lb_end_for(b);
  kiln_lexpr *var = lx_bin(b, LB_DIV, lx_var(b, sq), lx_float(b, t, (double)v.inner));
  kiln_lexpr *eps = lx_float(b, t, kiln_attr_float(c->node, "epsilon", 1e-5));
  int inv = kiln_lb_decl(b, "inv", t,
                         lx_unary(b, LU_RECIP, lx_unary(b, LU_SQRT, lx_bin(b, LB_ADD, var, eps))));
  // the optional statistics outputs, one element per row o
  if (c->node->n_outputs > 1) kiln_lb_store(b, kiln_out_buf(c, 1), lx_var(b, o), lx_var(b, mean));
  if (c->node->n_outputs > 2) kiln_lb_store(b, kiln_out_buf(c, 2), lx_var(b, o), lx_var(b, inv));
  // y = (x - mean) * inv * Scale + B
  i = kiln_lb_for_n(b, "i", v.inner);
  kiln_lexpr *val =
      lx_bin(b, LB_MUL, lx_bin(b, LB_SUB, at(b, xb, &v, o, i), lx_var(b, mean)), lx_var(b, inv));
  if (kiln_has_input(c->node, 1))
    val = lx_bin(b, LB_MUL, val, lx_load(b, kiln_in_buf(c, 1), lx_var(b, i)));
  if (kiln_has_input(c->node, 2))
    val = lx_bin(b, LB_ADD, val, lx_load(b, kiln_in_buf(c, 2), lx_var(b, i)));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_madd(b, lx_var(b, o), v.inner, lx_var(b, i)), val);
  kiln_lb_end_for(b);  // i
  kiln_lb_end_for(b);  // o
}

// Per element: an add (mean), a subtract and multiply-add (variance), then subtract, multiply,
// multiply, add.
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 8 * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

// Gradient (docs/training.md), over the normalized axes A = [axis, rank) with means taken over A:
//   xc = x - mean(x), r = 1 / sqrt(mean(xc^2) + epsilon), xhat = xc r, g = dy Scale,
//   dx = r (g - mean(g) - xhat mean(g xhat)), dScale = sum_to(dy xhat), dB = sum_to(dy).
// The statistics are recomputed from x (the forward node does not keep them).
typedef struct ln_grad {
  kiln_grad_ctx *c;
  int64_t axes[KILN_MAX_RANK];
  int n_axes;
} ln_grad;

// ReduceMean(v) over the normalized axes, keeping them (size 1).
static int ln_mean(ln_grad *l, int v) {
  if (v < 0) return -1;
  kiln_gb_attr attrs[] = {KILN_GB_INTS("axes", l->axes, l->n_axes), KILN_GB_END};
  return kiln_gb_op(l->c, "ReduceMean", &v, 1, attrs, 1);
}

// xhat = (x - mean(x)) / sqrt(var + epsilon); *r receives 1 / sqrt(var + epsilon).
static int ln_normalized(ln_grad *l, int *r) {
  kiln_grad_ctx *c = l->c;
  int x = c->node.inputs[0];
  int xc = kiln_gc_binary(c, "Sub", x, ln_mean(l, x));
  int var = ln_mean(l, kiln_gc_binary(c, "Mul", xc, xc));
  double epsilon = kiln_attr_float(&c->node, "epsilon", 1e-5);
  *r = kiln_gc_unary(c, "Reciprocal",
                     kiln_gc_unary(c, "Sqrt", kiln_gc_scalar_op(c, "Add", var, epsilon)));
  return kiln_gc_binary(c, "Mul", xc, *r);
}

static bool ln_dx(ln_grad *l, int xhat, int r) {
  kiln_grad_ctx *c = l->c;
  int g = kiln_has_input(&c->node, 1) ? kiln_gc_binary(c, "Mul", c->dy[0], c->node.inputs[1])
                                      : c->dy[0];
  int along = kiln_gc_binary(c, "Mul", xhat, ln_mean(l, kiln_gc_binary(c, "Mul", g, xhat)));
  int centered = kiln_gc_binary(c, "Sub", kiln_gc_binary(c, "Sub", g, ln_mean(l, g)), along);
  c->dx[0] = kiln_gc_binary(c, "Mul", centered, r);
  return c->dx[0] >= 0;
}

static bool layer_norm_grad(kiln_grad_ctx *c) {
  for (int i = 1; i < c->node.n_outputs; i++)
    if (c->dy[i] >= 0) {
      kiln_op_error(c->d, &c->node,
                    "outputs[%d] (%s): a gradient flows into it; LayerNormalization is "
                    "differentiated only through Y",
                    i, i == 1 ? "Mean" : "InvStdDev");
      return false;
    }
  if (c->dy[0] < 0) return true;
  int rank = c->g->tensors[c->node.inputs[0]].shape.rank;
  int64_t axis = kiln_attr_int(&c->node, "axis", -1);
  ln_grad l = {.c = c, .n_axes = 0};
  for (int64_t a = axis < 0 ? axis + rank : axis; a < rank; a++) l.axes[l.n_axes++] = a;
  int r, xhat = ln_normalized(&l, &r);
  if (xhat < 0 || (c->need[0] && !ln_dx(&l, xhat, r))) return false;
  if (kiln_has_input(&c->node, 1) && c->need[1]) {
    int d = kiln_gc_binary(c, "Mul", c->dy[0], xhat);
    if (d < 0 || (c->dx[1] = kiln_gb_sum_to(c, d, &c->g->tensors[c->node.inputs[1]].shape)) < 0)
      return false;
  }
  if (kiln_has_input(&c->node, 2) && c->need[2] &&
      (c->dx[2] = kiln_gb_sum_to(c, c->dy[0], &c->g->tensors[c->node.inputs[2]].shape)) < 0)
    return false;
  return true;
}

const kiln_op_def kiln_op_LayerNormalization = {
    .name = "LayerNormalization",
    .min_inputs = 1,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 3,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // Two f32 sums over a row (<= 64 elements in the cases) then a normalization to unit
    // variance: the outputs are O(1) and carry ~1e-6 of accumulated rounding.
    .tol = {1e-5, 1e-5},
    .grad = layer_norm_grad,
};
