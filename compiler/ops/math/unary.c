// Unary elementwise ops, shared by Relu, Sigmoid, Tanh, Exp, ...: each op file supplies only its
// scalar function and the loop-IR expression for one element (KILN_DEFINE_UNARY_OP). Also the
// helpers of the math family's elementwise ops with attributes (LeakyRelu, Clip, Cast, ...): dtype
// sets, deep copies of expressions, and element loops that pass the node along.
#include <stdio.h>

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

// ---- Shared by the math family ----

// "f32, f64 or i32": the dtypes in a set, for messages.
static void dtype_set_text(unsigned allowed, char *buf, size_t size) {
  int count = 0, total = 0;
  for (int t = 0; t < KILN_DTYPE_COUNT; t++) total += (allowed & KILN_DT(t)) != 0;
  size_t len = 0;
  buf[0] = 0;
  for (int t = 0; t < KILN_DTYPE_COUNT && len < size; t++) {
    if (!(allowed & KILN_DT(t))) continue;
    const char *sep = count == 0 ? "" : count == total - 1 ? " or " : ", ";
    len += (size_t)snprintf(buf + len, size - len, "%s%s", sep, kiln_dtype_name((kiln_dtype)t));
    count++;
  }
}

bool kiln_op_check_dtypes(const kiln_graph *g, const kiln_node *n, int first, int count,
                          unsigned allowed, bool same, kiln_diag *d) {
  bool ok = true;
  const kiln_tensor *lead = NULL;
  char want[128];
  for (int i = first; i < first + count; i++) {
    const kiln_tensor *t = kiln_in(g, n, i);
    if (!t) {
      kiln_op_error(d, n, "inputs[%d]: missing; %s needs it", i, kiln_op_get(n->op)->name);
      ok = false;
    } else if (!(allowed & KILN_DT(t->dtype))) {
      dtype_set_text(allowed, want, sizeof want);
      kiln_op_error(d, n, "inputs[%d] (%s): expected dtype %s, got %s", i, t->name, want,
                    kiln_dtype_name(t->dtype));
      ok = false;
    } else if (!lead) {
      lead = t;
    } else if (same && t->dtype != lead->dtype) {
      kiln_op_error(d, n, "inputs[%d] (%s): expected dtype %s like inputs[%d] (%s), got %s", i,
                    t->name, kiln_dtype_name(lead->dtype), first, lead->name,
                    kiln_dtype_name(t->dtype));
      ok = false;
    }
  }
  return ok;
}

kiln_lexpr *kiln_lx_clone(kiln_lb *b, const kiln_lexpr *e) {
  switch (e->kind) {
    case LE_INT: return lx_int(b, e->i);
    case LE_FLOAT: return lx_float(b, e->dtype, e->f);
    case LE_VAR: return lx_var(b, e->var);
    case LE_LOAD: return lx_load(b, e->buf, kiln_lx_clone(b, e->a));
    case LE_BIN: return lx_bin(b, (kiln_lbin)e->op, kiln_lx_clone(b, e->a), kiln_lx_clone(b, e->b));
    case LE_UNARY: return lx_unary(b, (kiln_lunary)e->op, kiln_lx_clone(b, e->a));
    case LE_SELECT:
      return lx_select(b, kiln_lx_clone(b, e->a), kiln_lx_clone(b, e->b), kiln_lx_clone(b, e->c));
    case LE_CAST: return lx_cast(b, e->dtype, kiln_lx_clone(b, e->a));
    case LE_LOCAL: return lx_local(b, e->var, kiln_lx_clone(b, e->a));
    case LE_MULADD:
      return lx_muladd(b, kiln_lx_clone(b, e->a), kiln_lx_clone(b, e->b), kiln_lx_clone(b, e->c));
  }
  return NULL;  // not reached: every kind is handled
}

void kiln_unary_node_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out,
                          kiln_unary_node_fn fn) {
  int64_t numel = kiln_shape_numel(out->shape);
  for (int64_t i = 0; i < numel; i++) out->data[i] = fn(n, in[0].data[i]);
}

void kiln_unary_node_lower(const kiln_lower_ctx *c, kiln_unary_node_lx lx) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  kiln_lb_comment(b, "%s %s: %s %s -> %s %s", kiln_op_get(c->node->op)->name, c->node->name,
                  kiln_describe(x).text, kiln_dtype_name(x->dtype), kiln_describe(y).text,
                  kiln_dtype_name(y->dtype));
  // x, y: same shape, contiguous: one flat loop
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&y->shape));
  kiln_lexpr *v = lx_load(b, kiln_in_buf(c, 0), lx_var(b, i));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i), lx(b, c->node, y->dtype, v));
  kiln_lb_end_for(b);
}
