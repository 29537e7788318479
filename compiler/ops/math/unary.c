// Unary elementwise ops, shared by Relu, Sigmoid and Tanh: each op file supplies only its scalar
// function and the loop-IR expression for one element (KILN_DEFINE_UNARY_OP).
#include "../op_internal.h"

const kiln_attr_spec kiln_unary_attrs[] = {{0}};

bool kiln_unary_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 1, d)) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  kiln_op_set_output(g, n, 0, x->dtype, &x->shape);
  return true;
}

void kiln_unary_eval(const kiln_eval_tensor *in, kiln_eval_tensor *out, kiln_unary_fn fn) {
  int64_t numel = kiln_shape_numel(out->shape);
  for (int64_t i = 0; i < numel; i++) out->data[i] = fn(in[0].data[i]);
}

void kiln_unary_lower(const kiln_lower_ctx *c, kiln_unary_lx lx) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  kiln_lb_comment(b, "%s %s: %s -> %s", kiln_op_get(c->node->op)->name, c->node->name,
                  kiln_describe(x).text, kiln_describe(y).text);
  // Layouts match, so one flat loop over every element.
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&y->shape));
  kiln_lexpr *v = lx_load(b, kiln_in_buf(c, 0), lx_var(b, i));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i), lx(b, y->dtype, v));
  kiln_lb_end_for(b);
}
