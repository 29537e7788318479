// Clip: y = min(max(x, lo), hi), elementwise (so lo > hi gives hi everywhere, as ONNX says).
// The bounds are optional: inputs 1 and 2 (opset 11+; one element of x's dtype, a constant or
// computed at run time) or the float attributes `min` and `max` (opset 6). A bound given neither
// way is absent.
#include <math.h>
#include <stdio.h>

#include "../op_internal.h"
#include "../train/grad_compose.h"

static const kiln_attr_spec attrs[] = {
    {"min", KILN_ATTR_FLOAT, false}, {"max", KILN_ATTR_FLOAT, false}, {0}};

static const char *const bound_names[3] = {NULL, "min", "max"};

// Checks bound k (1: min, 2: max) is given at most one way and, as an input, has one element of
// x's dtype.
static bool check_bound(const kiln_graph *g, const kiln_node *n, int k, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0), *t = kiln_in(g, n, k);
  if (!t) return true;
  if (kiln_node_attr(n, bound_names[k])) {
    kiln_op_error(d, n, "inputs[%d] (%s): %s is also given as attrs.%s; give it one way", k,
                  t->name, bound_names[k], bound_names[k]);
    return false;
  }
  if (kiln_shape_numel(&t->shape) != 1 || t->dtype != x->dtype) {
    kiln_op_error(d, n, "inputs[%d] (%s): %s must be one %s value, got %s %s", k, t->name,
                  bound_names[k], kiln_dtype_name(x->dtype), kiln_dtype_name(t->dtype),
                  kiln_shape_text(&t->shape).text);
    return false;
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_dtypes(g, n, 0, 1, KILN_DT_NUMERIC, true, d)) return false;
  if (!check_bound(g, n, 1, d) || !check_bound(g, n, 2, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  for (int k = 1; k <= 2; k++)
    if (!kiln_dtype_is_float(x->dtype) && kiln_node_attr(n, bound_names[k])) {
      kiln_op_error(d, n, "attrs.%s: the float attribute form is for f32/f64 x (opset 6), x is %s",
                    bound_names[k], kiln_dtype_name(x->dtype));
      return false;
    }
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);  // y: same shape as x
  return true;
}

// Bound k as a loop-IR value of dtype t, or NULL when absent: a literal when it is an attribute or
// a constant param, else a load of the input's one element.
static kiln_lexpr *bound_lx(const kiln_lower_ctx *c, int k, kiln_dtype t, char *text, size_t len) {
  const kiln_tensor *input = kiln_in(c->g, c->node, k);
  const kiln_attr *a = kiln_node_attr(c->node, bound_names[k]);
  snprintf(text, len, "%s", k == 1 ? "-inf" : "inf");
  if (input && !(input->kind == KILN_TENSOR_PARAM && input->data)) {
    snprintf(text, len, "%s", input->name);
    return lx_load(c->b, kiln_in_buf(c, k), lx_int(c->b, 0));
  }
  if (!input && !a) return NULL;
  double value = input ? kiln_tensor_get(input, 0) : a->f;
  snprintf(text, len, "%g", value);
  return lx_float(c->b, t, value);
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  double lo = -INFINITY, hi = INFINITY;
  if (kiln_has_input(n, 1))
    lo = in[1].data[0];
  else
    lo = kiln_attr_float(n, "min", lo);
  if (kiln_has_input(n, 2))
    hi = in[2].data[0];
  else
    hi = kiln_attr_float(n, "max", hi);
  int64_t numel = kiln_shape_numel(out->shape);
  for (int64_t i = 0; i < numel; i++) out->data[i] = fmin(fmax(in[0].data[i], lo), hi);
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  kiln_dtype t = y->dtype;
  char lo_text[64], hi_text[64];
  kiln_lexpr *lo = bound_lx(c, 1, t, lo_text, sizeof lo_text);
  kiln_lexpr *hi = bound_lx(c, 2, t, hi_text, sizeof hi_text);
  kiln_lb_comment(b, "Clip %s: %s to [%s, %s] -> %s", c->node->name, kiln_describe(x).text, lo_text,
                  hi_text, kiln_describe(y).text);
  int lo_var = lo ? kiln_lb_decl(b, "lo", t, lo) : -1;
  int hi_var = hi ? kiln_lb_decl(b, "hi", t, hi) : -1;
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&y->shape));  // x, y: same layout
  kiln_lexpr *v = lx_load(b, kiln_in_buf(c, 0), lx_var(b, i));
  if (lo_var >= 0) v = lx_bin(b, LB_MAX, v, lx_var(b, lo_var));
  if (hi_var >= 0) v = lx_bin(b, LB_MIN, v, lx_var(b, hi_var));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i), v);
  kiln_lb_end_for(b);
}

// Gradient (docs/training.md): dx = dy where min <= x <= max (an absent bound always holds), else
// 0. The bounds get no gradient.
static int clip_bound_holds(kiln_grad_ctx *c, int k, const char *compare) {
  int x = kiln_gc_x(c, 0);
  if (kiln_has_input(&c->node, k)) return kiln_gc_binary(c, compare, x, c->node.inputs[k]);
  if (!kiln_node_attr(&c->node, bound_names[k])) return -2;  // absent
  return kiln_gc_scalar_op(c, compare, x, kiln_attr_float(&c->node, bound_names[k], 0));
}

static bool clip_grad(kiln_grad_ctx *c) {
  int above_min = clip_bound_holds(c, 1, "GreaterOrEqual");
  int below_max = above_min == -1 ? -1 : clip_bound_holds(c, 2, "LessOrEqual");
  if (above_min == -1 || below_max == -1) return false;
  int inside = above_min == -2   ? below_max
               : below_max == -2 ? above_min
                                 : kiln_gc_binary(c, "And", above_min, below_max);
  c->dx[0] = inside == -2 ? c->dy[0] : kiln_gc_where_else(c, inside, c->dy[0], 0);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Clip = {
    .name = "Clip",
    .min_inputs = 1,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_ELEMENTWISE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_output_numel_flops,
    .tol = {0, 0},  // exact: comparisons only
    .grad = clip_grad,
};
