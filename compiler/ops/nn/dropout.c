// Dropout (ONNX opset 13), inference only: output = data, and the optional mask output is all
// true (nothing is dropped). Inputs: data, ratio (optional scalar float), training_mode (optional;
// when given it must be a constant param equal to false, or true with a constant ratio of 0:
// training comes with the training issue).
// Attribute seed is accepted and has no effect at inference.
//   data: any shape   output: same   mask: same shape, bool
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"seed", KILN_ATTR_INT, false}, {0}};

// ratio, when given: one float; when a constant, in [0, 1).
static bool check_ratio(const kiln_graph *g, const kiln_node *n, kiln_diag *d) {
  const kiln_tensor *r = kiln_in(g, n, 1);
  if (!r) return true;
  if (!kiln_dtype_is_float(r->dtype) || kiln_shape_numel(&r->shape) != 1) {
    kiln_op_error(d, n, "inputs[1] (%s): ratio must be one f32 or f64 value, got %s %s", r->name,
                  kiln_dtype_name(r->dtype), kiln_shape_text(&r->shape).text);
    return false;
  }
  if (r->kind == KILN_TENSOR_PARAM && r->data) {
    double v = kiln_tensor_get(r, 0);
    if (!(v >= 0 && v < 1)) {
      kiln_op_error(d, n, "inputs[1] (%s): ratio must be in [0, 1), got %g", r->name, v);
      return false;
    }
  }
  return true;
}

// training_mode, when given: a constant param holding false.
static bool check_training_mode(const kiln_graph *g, const kiln_node *n, kiln_diag *d) {
  const kiln_tensor *t = kiln_in(g, n, 2);
  if (!t) return true;
  if (t->kind != KILN_TENSOR_PARAM || !t->data || kiln_shape_numel(&t->shape) != 1) {
    kiln_op_error(d, n,
                  "inputs[2] (%s): training_mode must be a constant (a param with init) holding "
                  "one value; Kiln runs Dropout in inference mode only",
                  t->name);
    return false;
  }
  // Training mode with a constant ratio of 0 drops nothing: the same identity (mask all true).
  if (kiln_tensor_get(t, 0) == 0) return true;
  const kiln_tensor *r = kiln_in(g, n, 1);
  if (r && (r->kind != KILN_TENSOR_PARAM || !r->data)) {
    kiln_op_error(d, n,
                  "inputs[1] (%s): with training_mode true, ratio must be a constant (a param "
                  "with init) equal to 0",
                  r->name);
    return false;
  }
  if (!r || kiln_tensor_get(r, 0) != 0) {
    kiln_op_error(d, n,
                  "inputs[2] (%s): training_mode is true with a nonzero ratio (a random mask); "
                  "only inference (false) or a constant ratio of 0 is supported",
                  t->name);
    return false;
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  if (!x) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  if (!check_ratio(g, n, d) || !check_training_mode(g, n, d)) return false;
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);                         // output: same as data
  if (n->n_outputs > 1) kiln_op_set_output(g, n, 1, KILN_BOOL, &x->shape);  // mask: all true
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  int64_t numel = kiln_shape_numel(out[0].shape);
  for (int64_t i = 0; i < numel; i++) out[0].data[i] = in[0].data[i];
  if (n->n_outputs > 1)
    for (int64_t i = 0; i < numel; i++) out[1].data[i] = 1;
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0);
  bool mask = c->node->n_outputs > 1;
  kiln_lb_comment(b, "Dropout %s (inference): %s copied%s", c->node->name, kiln_describe(x).text,
                  mask ? ", mask all true" : "");
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&x->shape));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i), lx_load(b, kiln_in_buf(c, 0), lx_var(b, i)));
  if (mask) kiln_lb_store(b, kiln_out_buf(c, 1), lx_var(b, i), lx_cast(b, KILN_BOOL, lx_int(b, 1)));
  kiln_lb_end_for(b);
}

// Gradient (docs/training.md): Dropout runs as at inference (nothing dropped), so dx = dy; the
// mask output is bool and carries no gradient. The ratio gets none.
static bool dropout_grad(kiln_grad_ctx *c) {
  c->dx[0] = c->dy[0];
  return true;
}

const kiln_op_def kiln_op_Dropout = {
    .name = "Dropout",
    .min_inputs = 1,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 2,
    .attrs = attrs,
    .fuse = KILN_FUSE_ELEMENTWISE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},  // a copy: exact
    .grad = dropout_grad,
};
