// Shape (ONNX): the i64 1-D tensor of x's dimensions x.shape[start:end] (opset 15 `start`/`end`,
// default the whole shape; negative values count from the end, out-of-range ones are clamped).
// Shapes are static, so eval and lowering write constants.
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {
    {"start", KILN_ATTR_INT, false}, {"end", KILN_ATTR_INT, false}, {0}};

static int64_t clamp_axis(int64_t v, int rank) {
  if (v < 0) v += rank;
  return v < 0 ? 0 : v > rank ? rank : v;
}

// The clamped range [*start, *end) of x's axes.
static void axis_range(const kiln_node *n, int rank, int64_t *start, int64_t *end) {
  *start = clamp_axis(kiln_attr_int(n, "start", 0), rank);
  *end = clamp_axis(kiln_attr_int(n, "end", rank), rank);
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  if (!x) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  int64_t start, end;
  axis_range(n, x->shape.rank, &start, &end);
  if (end <= start) {
    kiln_op_error(d, n,
                  "attrs.start/end: [%lld, %lld) selects no axis of %s; Kiln needs a "
                  "non-empty output",
                  (long long)kiln_attr_int(n, "start", 0),
                  (long long)kiln_attr_int(n, "end", x->shape.rank), kiln_describe(x).text);
    return false;
  }
  kiln_shape out = {.rank = 1, .dim = {end - start}};  // out: (end - start,)
  kiln_op_set_output(g, n, 0, KILN_I64, &out);
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  int64_t start, end;
  axis_range(n, in[0].shape->rank, &start, &end);
  for (int64_t i = start; i < end; i++) out->data[i - start] = (double)in[0].shape->dim[i];
}

static void lower(const kiln_lower_ctx *c) {
  const kiln_tensor *x = kiln_lower_in(c, 0);
  int64_t start, end;
  axis_range(c->node, x->shape.rank, &start, &end);
  kiln_lb_comment(c->b, "Shape %s: %s[%lld:%lld]", c->node->name, kiln_describe(x).text,
                  (long long)start, (long long)end);
  for (int64_t i = start; i < end; i++)
    kiln_lb_store(c->b, kiln_out_buf(c, 0), lx_int(c->b, i - start), lx_int(c->b, x->shape.dim[i]));
}

const kiln_op_def kiln_op_Shape = {
    .name = "Shape",
    .min_inputs = 1,
    .max_inputs = 1,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},       // exact values
    .shape_only = true,  // static shapes: constant folding evaluates it at compile time
};
