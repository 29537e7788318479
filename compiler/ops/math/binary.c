// Elementwise ops with numpy broadcasting. Binary arithmetic (Add, Sub, Mul, Div: each op file
// supplies only its scalar function and its loop-IR operator, KILN_DEFINE_BINARY_OP) and the
// n-input form behind Pow, the comparisons, And/Or, Min/Max, Where and PRelu (kiln_nary_*).
#include <math.h>

#include "../op_internal.h"

const kiln_attr_spec kiln_binary_attrs[] = {{0}};

// Add/Sub/Mul/Div: floats and integers. Integer results wrap around modulo 2^bits like numpy's
// and ONNX's (u8: 250 + 10 = 4): the interpreter's rounding to the dtype (kiln_dtype_round) and the
// generated C's store to the narrow type both take the low bits.
bool kiln_binary_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  unsigned dtypes = KILN_DT_FLOAT | KILN_DT_INT;
  if (!kiln_op_check_dtypes(g, n, 0, 2, dtypes, true, d)) return false;
  kiln_shape out;
  if (!kiln_broadcast_inputs(g, n, d, &out)) return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &out);
  return true;
}

bool kiln_broadcast_inputs(const kiln_graph *g, const kiln_node *n, kiln_diag *d, kiln_shape *out) {
  kiln_shape s = kiln_in(g, n, 0)->shape;
  for (int k = 1; k < n->n_inputs; k++) {
    const kiln_tensor *t = kiln_in(g, n, k);
    kiln_shape next;
    if (!kiln_broadcast_shapes(&s, &t->shape, &next)) {
      kiln_op_error(d, n, "inputs[%d] (%s): shape %s does not broadcast with %s (numpy rules)", k,
                    t->name, kiln_shape_text(&t->shape).text, kiln_shape_text(&s).text);
      return false;
    }
    s = next;
  }
  *out = s;
  return true;
}

void kiln_binary_eval(const kiln_eval_tensor *in, kiln_eval_tensor *out, kiln_binary_fn fn) {
  const kiln_shape *s = out->shape;
  int64_t sa[KILN_MAX_RANK], sb[KILN_MAX_RANK], idx[KILN_MAX_RANK];
  kiln_broadcast_strides(in[0].shape, s, sa);
  kiln_broadcast_strides(in[1].shape, s, sb);
  int64_t numel = kiln_shape_numel(s);
  for (int64_t i = 0; i < numel; i++) {
    kiln_unravel(i, s, idx);
    double a = in[0].data[kiln_dot_index(s->rank, idx, sa)];
    double b = in[1].data[kiln_dot_index(s->rank, idx, sb)];
    out->data[i] = fn(a, b);
  }
}

enum { MAX_NARY = 16 };  // inputs of one node the interpreter passes

void kiln_nary_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out,
                    kiln_nary_fn fn) {
  const kiln_shape *s = out->shape;
  int count = n->n_inputs < MAX_NARY ? n->n_inputs : MAX_NARY;
  int64_t strides[MAX_NARY][KILN_MAX_RANK], idx[KILN_MAX_RANK];
  for (int k = 0; k < count; k++) kiln_broadcast_strides(in[k].shape, s, strides[k]);
  double v[MAX_NARY];
  int64_t numel = kiln_shape_numel(s);
  for (int64_t i = 0; i < numel; i++) {
    kiln_unravel(i, s, idx);
    for (int k = 0; k < count; k++) v[k] = in[k].data[kiln_dot_index(s->rank, idx, strides[k])];
    out->data[i] = fn(n, v, count);
  }
}

void kiln_bcast_open(const kiln_lower_ctx *c, kiln_bcast_nest *nest) {
  const kiln_tensor *y = kiln_lower_out(c, 0);
  nest->flat = true;
  for (int k = 0; k < c->node->n_inputs; k++)
    nest->flat = nest->flat && kiln_shape_equal(&kiln_lower_in(c, k)->shape, &y->shape);
  if (nest->flat)
    nest->shape = (kiln_shape){.rank = 1, .dim = {kiln_shape_numel(&y->shape)}};
  else
    nest->shape = y->shape;
  kiln_contiguous_strides(&nest->shape, nest->out_strides);
  kiln_lower_begin_nest(c->b, &nest->shape, nest->vars);
}

kiln_lexpr *kiln_bcast_load(const kiln_lower_ctx *c, const kiln_bcast_nest *nest, int k) {
  int64_t strides[KILN_MAX_RANK] = {1};  // flat: the input's layout is the output's
  if (!nest->flat) kiln_broadcast_strides(&kiln_lower_in(c, k)->shape, &nest->shape, strides);
  return lx_load(c->b, kiln_in_buf(c, k),
                 kiln_lower_index(c->b, nest->shape.rank, nest->vars, strides));
}

void kiln_bcast_store_close(const kiln_lower_ctx *c, const kiln_bcast_nest *nest,
                            kiln_lexpr *value) {
  kiln_lexpr *index = kiln_lower_index(c->b, nest->shape.rank, nest->vars, nest->out_strides);
  kiln_lb_store(c->b, kiln_out_buf(c, 0), index, value);
  kiln_lower_end_nest(c->b, &nest->shape);
}

void kiln_binary_lower(const kiln_lower_ctx *c, kiln_lbin op) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_in(c, 1), *z = kiln_lower_out(c, 0);
  kiln_lb_comment(b, "%s %s: %s %s %s -> %s", kiln_op_get(c->node->op)->name, c->node->name,
                  kiln_describe(x).text, kiln_lbin_name(op), kiln_describe(y).text,
                  kiln_describe(z).text);
  kiln_bcast_nest nest;
  kiln_bcast_open(c, &nest);
  kiln_lexpr *value = lx_bin(b, op, kiln_bcast_load(c, &nest, 0), kiln_bcast_load(c, &nest, 1));
  kiln_bcast_store_close(c, &nest, value);
}

void kiln_nary_lower(const kiln_lower_ctx *c, kiln_nary_lx lx) {
  kiln_lb *b = c->b;
  const kiln_tensor *y = kiln_lower_out(c, 0);
  int count = c->node->n_inputs < MAX_NARY ? c->node->n_inputs : MAX_NARY;
  kiln_lb_comment(b, "%s %s: %d inputs %s, ... -> %s %s", kiln_op_get(c->node->op)->name,
                  c->node->name, count, kiln_describe(kiln_lower_in(c, 0)).text,
                  kiln_describe(y).text, kiln_dtype_name(y->dtype));
  kiln_bcast_nest nest;
  kiln_bcast_open(c, &nest);
  kiln_lexpr *v[MAX_NARY];
  for (int k = 0; k < count; k++) v[k] = kiln_bcast_load(c, &nest, k);
  kiln_bcast_store_close(c, &nest, lx(b, c->node, y->dtype, v, count));
}

bool kiln_nary_infer(kiln_graph *g, kiln_node *n, kiln_diag *d, unsigned dtypes, int out_dtype) {
  if (!kiln_op_check_dtypes(g, n, 0, n->n_inputs, dtypes, true, d)) return false;
  kiln_shape out;
  if (!kiln_broadcast_inputs(g, n, d, &out)) return false;
  kiln_dtype t = out_dtype >= 0 ? (kiln_dtype)out_dtype : kiln_in(g, n, 0)->dtype;
  kiln_op_set_output(g, n, 0, t, &out);
  return true;
}

// ---- Variadic folds: Min, Max, Sum, Mean ----

double kiln_fold_ref(kiln_lbin combine, bool mean, const double *v, int count) {
  double acc = v[0];
  for (int k = 1; k < count; k++)
    acc = combine == LB_MIN ? fmin(acc, v[k]) : combine == LB_MAX ? fmax(acc, v[k]) : acc + v[k];
  return mean ? acc / count : acc;
}

kiln_lexpr *kiln_fold_lx(kiln_lb *b, kiln_dtype t, kiln_lbin combine, bool mean, kiln_lexpr **v,
                         int count) {
  kiln_lexpr *acc = v[0];  // ((v0 op v1) op v2) ...
  for (int k = 1; k < count; k++) acc = lx_bin(b, combine, acc, v[k]);
  return mean ? lx_bin(b, LB_DIV, acc, lx_float(b, t, count)) : acc;
}

// ---- Logic on bool: And, Or, Xor ----

double kiln_logic_ref(kiln_lbin op, double a, double b) {
  bool x = a != 0, y = b != 0;
  return op == LB_AND ? x && y : op == LB_OR ? x || y : x != y;
}
