// Pad (ONNX): pads x with pads = [x1_begin, x2_begin, ..., x1_end, x2_end, ...] elements per axis
// (negative pads crop). pads is the constant input 1 (opset 11+) or the attribute (before 11);
// the fill value for mode "constant" is input 2 (a scalar, may be computed) or the attribute
// `value` (before 11), default 0; input 3 (opset 18) lists the padded axes. Modes:
//   constant  y = value outside x
//   reflect   mirror without repeating the edge: i -> -i, dim - 1 + k -> dim - 1 - k
//   edge      repeat the edge element
// Any dtype. Lowered as a fill and a strided copy (constant) or one loop nest whose input index
// per axis is computed branch-free (reflect, edge).
#include <string.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"mode", KILN_ATTR_STRING, false},
                                       {"pads", KILN_ATTR_INTS, false},
                                       {"value", KILN_ATTR_FLOAT, false},
                                       {0}};

typedef enum { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE } pad_mode;

typedef struct pad_plan {
  pad_mode mode;
  int64_t begin[KILN_MAX_RANK], end[KILN_MAX_RANK];  // per axis of x; negative crops
  kiln_shape out;
} pad_plan;

static bool read_mode(const kiln_node *n, kiln_diag *d, pad_mode *mode) {
  const char *m = kiln_attr_string(n, "mode", "constant");
  if (strcmp(m, "constant") == 0)
    *mode = PAD_CONSTANT;
  else if (strcmp(m, "reflect") == 0)
    *mode = PAD_REFLECT;
  else if (strcmp(m, "edge") == 0)
    *mode = PAD_EDGE;
  else {
    kiln_op_error(d, n, "attrs.mode: expected \"constant\", \"reflect\" or \"edge\", got \"%s\"",
                  m);
    return false;
  }
  return true;
}

// Spreads pads (2 * count values for the listed axes, or every axis) over the axes of x and
// checks the result. d may be NULL (eval).
static bool plan_pad(const kiln_node *n, kiln_diag *d, const kiln_shape *x, const int64_t *pads,
                     int n_pads, const int64_t *axes, int n_axes, pad_plan *p) {
  char got[256];
  int count = axes ? n_axes : x->rank;
  if (n_pads != 2 * count) {
    kiln_op_error(d, n, "pads: expected %d values (begin and end for %d axes), got %s", 2 * count,
                  count, kiln_ints_str(pads, n_pads < 16 ? n_pads : 16, got, sizeof got));
    return false;
  }
  memset(p->begin, 0, sizeof p->begin);
  memset(p->end, 0, sizeof p->end);
  for (int i = 0; i < count; i++) {
    int64_t axis = i;
    if (axes && !kiln_op_check_axis(n, d, "inputs[3] (axes)", axes[i], x->rank, &axis))
      return false;
    p->begin[axis] = pads[i], p->end[axis] = pads[count + i];
  }
  p->out = *x;
  for (int i = 0; i < x->rank; i++) {
    p->out.dim[i] += p->begin[i] + p->end[i];
    bool too_far = p->begin[i] >= x->dim[i] || p->end[i] >= x->dim[i];
    if (p->mode == PAD_REFLECT && too_far) {
      kiln_op_error(d, n,
                    "pads: reflect padding of %lld/%lld on axis %d of size %lld; reflect "
                    "pads must be smaller than the dimension",
                    (long long)p->begin[i], (long long)p->end[i], i, (long long)x->dim[i]);
      return false;
    }
  }
  return kiln_op_check_dims(n, d, &p->out, "this padding");
}

// Reads mode, pads and axes from the graph (infer, lower).
static bool graph_plan(const kiln_graph *g, const kiln_node *n, kiln_diag *d, pad_plan *p) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  int64_t pads[2 * KILN_MAX_RANK], axes[KILN_MAX_RANK];
  int n_pads, n_axes = 0;
  if (!read_mode(n, d, &p->mode)) return false;
  if (kiln_has_input(n, 1) && kiln_node_attr(n, "pads")) {
    kiln_op_error(d, n,
                  "attrs.pads: give pads either as the attribute (opset < 11) or as "
                  "inputs[1] (opset 11+), not both");
    return false;
  }
  if (kiln_has_input(n, 1)) {
    n_pads = kiln_op_const_ints(g, n, d, 1, "pads", pads, 2 * KILN_MAX_RANK);
    if (n_pads < 0) return false;
  } else {
    n_pads = kiln_attr_ints(n, "pads", pads, 2 * KILN_MAX_RANK);
    if (n_pads < 0) {
      kiln_op_error(d, n, "Pad needs pads (inputs[1], or attrs.pads before opset 11)");
      return false;
    }
  }
  if (kiln_has_input(n, 3)) {
    n_axes = kiln_op_const_ints(g, n, d, 3, "axes", axes, KILN_MAX_RANK);
    if (n_axes < 0) return false;
  }
  return plan_pad(n, d, &x->shape, pads, n_pads, kiln_has_input(n, 3) ? axes : NULL, n_axes, p);
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0), *v = kiln_in(g, n, 2);
  if (!x) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  if (v && (v->dtype != x->dtype || kiln_shape_numel(&v->shape) != 1)) {
    kiln_op_error(d, n,
                  "inputs[2] (%s): expected a one-element constant_value of dtype %s, got %s %s",
                  v->name, kiln_dtype_name(x->dtype), kiln_dtype_name(v->dtype),
                  kiln_shape_text(&v->shape).text);
    return false;
  }
  if (v && kiln_node_attr(n, "value")) {
    kiln_op_error(d, n,
                  "attrs.value: give the value either as the attribute (opset < 11) or as "
                  "inputs[2] (opset 11+), not both");
    return false;
  }
  pad_plan p;
  if (!graph_plan(g, n, d, &p)) return false;
  kiln_op_set_output(g, n, 0, x->dtype, &p.out);  // out: x.dim[i] + begin[i] + end[i]
  return true;
}

// The input position read for output position o along an axis, or -1 outside x (constant mode).
static int64_t source_index(pad_mode mode, int64_t o, int64_t begin, int64_t dim) {
  int64_t i = o - begin;
  if (i >= 0 && i < dim) return i;
  if (mode == PAD_CONSTANT) return -1;
  if (mode == PAD_EDGE) return i < 0 ? 0 : dim - 1;
  return i < 0 ? -i : 2 * (dim - 1) - i;  // reflect
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  const kiln_shape *xs = in[0].shape;
  int64_t pads[2 * KILN_MAX_RANK], axes[KILN_MAX_RANK], idx[KILN_MAX_RANK], strides[KILN_MAX_RANK];
  int n_pads = kiln_has_input(n, 1) ? kiln_eval_ints(&in[1], pads, 2 * KILN_MAX_RANK)
                                    : kiln_attr_ints(n, "pads", pads, 2 * KILN_MAX_RANK);
  int n_axes = kiln_has_input(n, 3) ? kiln_eval_ints(&in[3], axes, KILN_MAX_RANK) : 0;
  pad_plan p;
  read_mode(n, NULL, &p.mode);
  plan_pad(n, NULL, xs, pads, n_pads, kiln_has_input(n, 3) ? axes : NULL, n_axes, &p);
  double value = kiln_has_input(n, 2) ? in[2].data[0] : kiln_attr_float(n, "value", 0);
  kiln_contiguous_strides(xs, strides);
  for (int64_t flat = 0; flat < kiln_shape_numel(out->shape); flat++) {
    kiln_unravel(flat, out->shape, idx);
    bool inside = true;
    for (int i = 0; i < xs->rank; i++) {
      idx[i] = source_index(p.mode, idx[i], p.begin[i], xs->dim[i]);
      inside = inside && idx[i] >= 0;
    }
    out->data[flat] = inside ? in[0].data[kiln_dot_index(xs->rank, idx, strides)] : value;
  }
}

// constant: y = value everywhere, then the part of x that survives is copied to its place.
static void lower_constant(const kiln_lower_ctx *c, const pad_plan *p) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&y->shape));
  kiln_lexpr *value = kiln_has_input(c->node, 2)
                          ? lx_load(b, kiln_in_buf(c, 2), lx_int(b, 0))
                          : lx_float(b, y->dtype, kiln_attr_float(c->node, "value", 0));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i), value);
  kiln_lb_end_for(b);
  kiln_strided s = {.shape = x->shape};
  int64_t xs[KILN_MAX_RANK], ys[KILN_MAX_RANK];
  kiln_contiguous_strides(&x->shape, xs);
  kiln_contiguous_strides(&y->shape, ys);
  bool empty = false;
  for (int k = 0; k < x->shape.rank; k++) {  // the copied box: x[lo, hi) along axis k
    int64_t lo = p->begin[k] < 0 ? -p->begin[k] : 0;
    int64_t hi = x->shape.dim[k] + (p->end[k] < 0 ? p->end[k] : 0);
    empty = empty || hi <= lo;
    s.shape.dim[k] = hi - lo;
    s.src_base += lo * xs[k];
    s.dst_base += (lo + p->begin[k]) * ys[k];
    s.src_stride[k] = xs[k];
    s.dst_stride[k] = ys[k];
  }
  if (!empty) kiln_strided_lower(b, kiln_in_buf(c, 0), kiln_out_buf(c, 0), &s);
}

// reflect / edge: i = o - begin, then edge clamps to [0, dim - 1] and reflect folds with
// dim - 1 - |dim - 1 - |i|| (exact for -(dim - 1) <= i <= 2 (dim - 1)).
static kiln_lexpr *lower_source(kiln_lb *b, pad_mode mode, int o, int64_t begin, int64_t dim) {
  kiln_lexpr *i = lx_add(b, lx_var(b, o), lx_int(b, -begin));
  if (mode == PAD_EDGE)
    return lx_bin(b, LB_MIN, lx_bin(b, LB_MAX, i, lx_int(b, 0)), lx_int(b, dim - 1));
  kiln_lexpr *inner = lx_bin(b, LB_SUB, lx_int(b, dim - 1), lx_unary(b, LU_ABS, i));
  return lx_bin(b, LB_SUB, lx_int(b, dim - 1), lx_unary(b, LU_ABS, inner));
}

static void lower_gather(const kiln_lower_ctx *c, const pad_plan *p) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  int rank = y->shape.rank, vars[KILN_MAX_RANK], src[KILN_MAX_RANK];
  int64_t xs[KILN_MAX_RANK], ys[KILN_MAX_RANK];
  kiln_contiguous_strides(&x->shape, xs);
  kiln_contiguous_strides(&y->shape, ys);
  for (int k = 0; k < rank; k++) {
    char name[16];
    snprintf(name, sizeof name, "d%d", k);
    vars[k] = kiln_lb_for_n(b, name, y->shape.dim[k]);
    snprintf(name, sizeof name, "i%d", k);
    src[k] = kiln_lb_decl(b, name, KILN_I64,
                          lower_source(b, p->mode, vars[k], p->begin[k], x->shape.dim[k]));
  }
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_lower_index(b, rank, vars, ys),
                lx_load(b, kiln_in_buf(c, 0), kiln_lower_index(b, rank, src, xs)));
  for (int k = 0; k < rank; k++) kiln_lb_end_for(b);
}

static void lower(const kiln_lower_ctx *c) {
  pad_plan p;
  graph_plan(c->g, c->node, NULL, &p);
  kiln_lb_comment(
      c->b, "Pad %s (%s): %s -> %s", c->node->name, kiln_attr_string(c->node, "mode", "constant"),
      kiln_describe(kiln_lower_in(c, 0)).text, kiln_describe(kiln_lower_out(c, 0)).text);
  if (p.mode == PAD_CONSTANT)
    lower_constant(c, &p);
  else
    lower_gather(c, &p);
}

const kiln_op_def kiln_op_Pad = {
    .name = "Pad",
    .min_inputs = 1,
    .max_inputs = 4,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_INJECTIVE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // a copy
};
