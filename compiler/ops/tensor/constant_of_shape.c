// ConstantOfShape (ONNX): a tensor of the shape given by the constant i64 input, every element
// the fill value. ONNX's `value` is a one-element TENSOR attribute, which has no JSON form; here
// it is absent (f32 zeros, as in ONNX) or a one-element array of numbers, and `dtype` (default
// "f32") is the output's dtype, the value tensor's. The ONNX importer writes both from the tensor.
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {
    {"value", KILN_ATTR_FLOATS, false}, {"dtype", KILN_ATTR_STRING, false}, {0}};

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int64_t want[KILN_MAX_RANK];
  const kiln_attr *v = kiln_node_attr(n, "value"), *dt = kiln_node_attr(n, "dtype");
  if (v && v->count != 1) {
    kiln_op_error(d, n, "attrs.value: expected one number (the fill value), got %d", v->count);
    return false;
  }
  kiln_dtype dtype = KILN_F32;
  if (dt && !kiln_dtype_parse(dt->s, &dtype)) {
    kiln_op_error(d, n, "attrs.dtype: expected a dtype such as \"f32\" or \"i64\", got \"%s\"",
                  dt->s);
    return false;
  }
  int rank = kiln_op_const_ints(g, n, d, 0, "shape", want, KILN_MAX_RANK);
  if (rank < 0) return false;
  kiln_shape out = {.rank = rank};  // out: shape
  for (int i = 0; i < rank; i++) out.dim[i] = want[i];
  if (!kiln_op_check_dims(n, d, &out, "inputs[0] (shape)")) return false;
  kiln_op_set_output(g, n, 0, dtype, &out);
  return true;
}

static double fill_value(const kiln_node *n) {
  const kiln_attr *v = kiln_node_attr(n, "value");
  return v ? v->floats[0] : 0.0;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)in;
  for (int64_t i = 0; i < kiln_shape_numel(out->shape); i++) out->data[i] = fill_value(n);
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *y = kiln_lower_out(c, 0);
  kiln_lb_comment(b, "ConstantOfShape %s -> %s = %g", c->node->name, kiln_describe(y).text,
                  fill_value(c->node));
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&y->shape));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i), lx_float(b, y->dtype, fill_value(c->node)));
  kiln_lb_end_for(b);
}

const kiln_op_def kiln_op_ConstantOfShape = {
    .name = "ConstantOfShape",
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
    .tol = {0, 0},  // exact values
};
