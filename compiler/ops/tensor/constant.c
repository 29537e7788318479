// Constant (ONNX, opset 12+ forms): a node without inputs whose output is fixed by exactly one of
//   value_float   f32 scalar          value_floats  f32 1-D
//   value_int     i64 scalar          value_ints    i64 1-D
// The TENSOR attribute `value` has no JSON form: write the tensor as a param instead (the ONNX
// importer does). Eval and lowering just write the values.
#include <string.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {
    {"value_float", KILN_ATTR_FLOAT, false}, {"value_floats", KILN_ATTR_FLOATS, false},
    {"value_int", KILN_ATTR_INT, false},     {"value_ints", KILN_ATTR_INTS, false},
    {"value", KILN_ATTR_FLOATS, false},      {0}};

static const char *const forms[] = {"value_float", "value_floats", "value_int", "value_ints"};

// The one value attribute given (index into forms); -1 after reporting.
static int value_form(const kiln_node *n, kiln_diag *d) {
  if (kiln_node_attr(n, "value")) {
    kiln_op_error(d, n,
                  "attrs.value: a TENSOR attribute has no JSON form; write the tensor as a "
                  "param, or use value_float, value_floats, value_int or value_ints");
    return -1;
  }
  int form = -1, given = 0;
  for (int i = 0; i < 4; i++)
    if (kiln_node_attr(n, forms[i])) form = i, given++;
  if (given != 1) {
    kiln_op_error(d, n,
                  "attrs: Constant needs exactly one of value_float, value_floats, value_int "
                  "and value_ints, got %d",
                  given);
    return -1;
  }
  return form;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int form = value_form(n, d);
  if (form < 0) return false;
  const kiln_attr *a = kiln_node_attr(n, forms[form]);
  bool list = form == 1 || form == 3;
  if (list && a->count < 1) {
    kiln_op_error(d, n, "attrs.%s: expected at least one value", forms[form]);
    return false;
  }
  kiln_shape out = {.rank = list ? 1 : 0, .dim = {list ? a->count : 1}};  // out: () or (count)
  kiln_op_set_output(g, n, 0, form < 2 ? KILN_F32 : KILN_I64, &out);
  return true;
}

// The value at flat index i (infer has checked the form).
static double value_at(const kiln_node *n, int64_t i) {
  const kiln_attr *a;
  if ((a = kiln_node_attr(n, "value_float"))) return a->f;
  if ((a = kiln_node_attr(n, "value_floats"))) return a->floats[i];
  if ((a = kiln_node_attr(n, "value_int"))) return (double)a->i;
  a = kiln_node_attr(n, "value_ints");
  return (double)a->ints[i];
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)in;
  for (int64_t i = 0; i < kiln_shape_numel(out->shape); i++) out->data[i] = value_at(n, i);
}

// lower: one store per value (exact for i64: the integer is written as is).
static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *y = kiln_lower_out(c, 0);
  kiln_lb_comment(b, "Constant %s -> %s", c->node->name, kiln_describe(y).text);
  const kiln_attr *ints = kiln_node_attr(c->node, "value_ints");
  const kiln_attr *one = kiln_node_attr(c->node, "value_int");
  for (int64_t i = 0; i < kiln_shape_numel(&y->shape); i++) {
    kiln_lexpr *v = ints  ? lx_int(b, ints->ints[i])
                    : one ? lx_int(b, one->i)
                          : lx_float(b, y->dtype, value_at(c->node, i));
    kiln_lb_store(b, kiln_out_buf(c, 0), lx_int(b, i), v);
  }
}

const kiln_op_def kiln_op_Constant = {
    .name = "Constant",
    .min_inputs = 0,
    .max_inputs = 0,
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
