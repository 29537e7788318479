// Slice (ONNX): x[start:end:step] along chosen axes. starts, ends, axes (default 0..k-1) and
// steps (default 1) are constant inputs 1-4 (opset 10+) or the attributes starts, ends, axes
// (opset < 10, steps 1). Negative starts/ends count from the end; out-of-range values are clamped
// as ONNX says (to [0, dim] for positive steps, [-1, dim - 1] for negative ones); negative steps
// walk backwards. Any dtype. Lowered as one strided copy.
#include <string.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"starts", KILN_ATTR_INTS, false},
                                       {"ends", KILN_ATTR_INTS, false},
                                       {"axes", KILN_ATTR_INTS, false},
                                       {0}};

// The raw parameters, k values each; axes and steps NULL when omitted.
typedef struct slice_args {
  int k;
  int64_t starts[KILN_MAX_RANK], ends[KILN_MAX_RANK], axes[KILN_MAX_RANK], steps[KILN_MAX_RANK];
  bool has_axes, has_steps;
} slice_args;

// Per axis of x: first element, step and count taken.
typedef struct slice_plan {
  int64_t start[KILN_MAX_RANK], step[KILN_MAX_RANK];
  kiln_shape out;
} slice_plan;

static int64_t clamp(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

// Resolves one axis's start, end and step into a start and a count (ONNX's clamping rules).
static void resolve_axis(int64_t dim, int64_t start, int64_t end, int64_t step, int64_t *first,
                         int64_t *count) {
  if (start < 0) start += dim;
  if (end < 0) end += dim;
  start = step > 0 ? clamp(start, 0, dim) : clamp(start, 0, dim - 1);
  end = step > 0 ? clamp(end, 0, dim) : clamp(end, -1, dim - 1);
  int64_t span = step > 0 ? end - start : start - end, stride = step > 0 ? step : -step;
  *first = start;
  *count = span > 0 ? (span + stride - 1) / stride : 0;
}

// Checks the parameters against x and resolves them; d may be NULL (eval).
static bool plan_slice(const kiln_node *n, kiln_diag *d, const kiln_shape *x, const slice_args *a,
                       slice_plan *p) {
  p->out = *x;
  for (int i = 0; i < x->rank; i++) p->start[i] = 0, p->step[i] = 1;
  bool seen[KILN_MAX_RANK] = {false};
  for (int i = 0; i < a->k; i++) {
    int64_t axis = a->has_axes ? a->axes[i] : i, step = a->has_steps ? a->steps[i] : 1;
    if (!kiln_op_check_axis(n, d, "axes", axis, x->rank, &axis)) return false;
    if (seen[axis]) {
      kiln_op_error(d, n, "axes: axis %lld appears twice", (long long)axis);
      return false;
    }
    seen[axis] = true;
    if (step == 0) {
      kiln_op_error(d, n, "steps: a step of 0 (for axis %lld); steps must be non-zero",
                    (long long)axis);
      return false;
    }
    p->step[axis] = step;
    resolve_axis(x->dim[axis], a->starts[i], a->ends[i], step, &p->start[axis], &p->out.dim[axis]);
  }
  return kiln_op_check_dims(n, d, &p->out, "this slice");
}

// Reads the parameters from the attributes (opset < 10) or constant inputs (opset 10+).
static bool read_args(const kiln_graph *g, const kiln_node *n, kiln_diag *d, slice_args *a) {
  static const char *const names[] = {"starts", "ends", "axes", "steps"};
  int64_t *dst[] = {a->starts, a->ends, a->axes, a->steps};
  int counts[4] = {-1, -1, -1, -1};
  bool from_attrs = kiln_node_attr(n, "starts") || kiln_node_attr(n, "ends");
  if (from_attrs && n->n_inputs > 1) {
    kiln_op_error(d, n,
                  "attrs.starts: give starts/ends either as attributes (opset < 10) or as "
                  "inputs (opset 10+), not both");
    return false;
  }
  for (int i = 0; i < 4; i++) {
    if (from_attrs && i < 3)
      counts[i] = kiln_attr_ints(n, names[i], dst[i], KILN_MAX_RANK);
    else if (!from_attrs && kiln_has_input(n, i + 1))
      counts[i] = kiln_op_const_ints(g, n, d, i + 1, names[i], dst[i], KILN_MAX_RANK);
    if (!from_attrs && kiln_has_input(n, i + 1) && counts[i] < 0) return false;
  }
  if (counts[0] < 0 || counts[1] < 0) {
    kiln_op_error(d, n,
                  "Slice needs starts and ends (inputs 1 and 2, or attributes before "
                  "opset 10)");
    return false;
  }
  a->k = counts[0];
  a->has_axes = counts[2] >= 0, a->has_steps = counts[3] >= 0;
  for (int i = 1; i < 4; i++) {
    if (counts[i] >= 0 && counts[i] != a->k) {
      kiln_op_error(d, n, "%s: expected %d values like starts, got %d", names[i], a->k, counts[i]);
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
  slice_args a;
  slice_plan p;
  if (!read_args(g, n, d, &a)) return false;
  if (a.k > x->shape.rank) {
    kiln_op_error(d, n, "starts: %d values for %s of rank %d", a.k, kiln_describe(x).text,
                  x->shape.rank);
    return false;
  }
  if (!plan_slice(n, d, &x->shape, &a, &p)) return false;
  kiln_op_set_output(g, n, 0, x->dtype, &p.out);
  return true;
}

// The plan in eval: the parameters come from the attributes or the eval tensors.
static void eval_plan(const kiln_node *n, const kiln_eval_tensor *in, slice_plan *p) {
  slice_args a = {0};
  int64_t *dst[] = {a.starts, a.ends, a.axes, a.steps};
  static const char *const names[] = {"starts", "ends", "axes"};
  bool from_attrs = kiln_node_attr(n, "starts") != NULL;
  int counts[4] = {-1, -1, -1, -1};
  for (int i = 0; i < 4; i++) {
    if (from_attrs && i < 3)
      counts[i] = kiln_attr_ints(n, names[i], dst[i], KILN_MAX_RANK);
    else if (!from_attrs && kiln_has_input(n, i + 1))
      counts[i] = kiln_eval_ints(&in[i + 1], dst[i], KILN_MAX_RANK);
  }
  a.k = counts[0];
  a.has_axes = counts[2] >= 0, a.has_steps = counts[3] >= 0;
  plan_slice(n, NULL, in[0].shape, &a, p);
}

// eval: y[idx] = x[start + idx * step], axis by axis.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  slice_plan p;
  eval_plan(n, in, &p);
  int64_t idx[KILN_MAX_RANK], strides[KILN_MAX_RANK];
  kiln_contiguous_strides(in[0].shape, strides);
  for (int64_t flat = 0; flat < kiln_shape_numel(out->shape); flat++) {
    kiln_unravel(flat, out->shape, idx);
    for (int i = 0; i < p.out.rank; i++) idx[i] = p.start[i] + idx[i] * p.step[i];
    out->data[flat] = in[0].data[kiln_dot_index(p.out.rank, idx, strides)];
  }
}

static void lower(const kiln_lower_ctx *c) {
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  slice_args a;
  slice_plan p;
  read_args(c->g, c->node, NULL, &a);
  plan_slice(c->node, NULL, &x->shape, &a, &p);
  kiln_lb_comment(c->b, "Slice %s: %s -> %s", c->node->name, kiln_describe(x).text,
                  kiln_describe(y).text);
  kiln_strided s = {.shape = y->shape};
  int64_t xs[KILN_MAX_RANK];
  kiln_contiguous_strides(&x->shape, xs);
  kiln_contiguous_strides(&y->shape, s.dst_stride);
  for (int i = 0; i < x->shape.rank; i++) {
    s.src_base += p.start[i] * xs[i];
    s.src_stride[i] = p.step[i] * xs[i];
  }
  kiln_strided_lower(c->b, kiln_in_buf(c, 0), kiln_out_buf(c, 0), &s);
}

// Gradient (docs/training.md), for steps of 1: dy padded with zeros back to x's shape (pads begin
// at each axis's start, end after its last element). Other steps are refused.
static bool slice_grad(kiln_grad_ctx *c) {
  kiln_shape xs = c->g->tensors[c->node.inputs[0]].shape;  // a copy: the rule adds tensors
  slice_args a;
  slice_plan p;
  if (!read_args(c->g, &c->node, c->d, &a) || !plan_slice(&c->node, c->d, &xs, &a, &p))
    return false;
  double pads[2 * KILN_MAX_RANK];
  for (int i = 0; i < xs.rank; i++) {
    if (p.step[i] != 1) {
      kiln_op_error(c->d, &c->node,
                    "steps: a Slice with step %lld (axis %d) is not differentiable "
                    "yet; only steps of 1 are",
                    (long long)p.step[i], i);
      return false;
    }
    pads[i] = (double)p.start[i];
    pads[xs.rank + i] = (double)(xs.dim[i] - p.start[i] - p.out.dim[i]);
  }
  kiln_shape s = {.rank = 1, .dim = {2 * xs.rank}};
  int in[2] = {c->dy[0], kiln_gb_const(c, KILN_I64, &s, pads)};
  c->dx[0] = kiln_gb_op(c, "Pad", in, 2, NULL, 1);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Slice = {
    .name = "Slice",
    .min_inputs = 1,
    .max_inputs = 5,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_INJECTIVE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // a copy
    .grad = slice_grad,
};
