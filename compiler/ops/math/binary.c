// Binary elementwise ops with numpy broadcasting, shared by Add, Sub, Mul and Div: each op file
// supplies only its scalar function and its loop-IR operator (KILN_DEFINE_BINARY_OP).
#include "../op_internal.h"

const kiln_attr_spec kiln_binary_attrs[] = {{0}};

bool kiln_binary_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 2, d)) return false;
  const kiln_tensor *a = kiln_in(g, n, 0), *b = kiln_in(g, n, 1);
  kiln_shape out;
  if (!kiln_broadcast_shapes(&a->shape, &b->shape, &out)) {
    kiln_op_error(d, n, "inputs: shapes of %s and %s do not broadcast (numpy rules)",
                  kiln_describe(a).text, kiln_describe(b).text);
    return false;
  }
  kiln_op_set_output(g, n, 0, a->dtype, &out);
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

void kiln_binary_lower(const kiln_lower_ctx *c, kiln_lbin op) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_in(c, 1), *z = kiln_lower_out(c, 0);
  kiln_lb_comment(b, "%s %s: %s %s %s -> %s", kiln_op_get(c->node->op)->name, c->node->name,
                  kiln_describe(x).text, kiln_lbin_name(op), kiln_describe(y).text,
                  kiln_describe(z).text);
  // Same shapes: one flat loop. Otherwise one loop per output dimension, inputs indexed with
  // stride 0 along their broadcast dimensions.
  int rank = z->shape.rank;
  kiln_shape flat = {.rank = 1, .dim = {kiln_shape_numel(&z->shape)}};
  const kiln_shape *nest = &z->shape;
  int64_t sx[KILN_MAX_RANK], sy[KILN_MAX_RANK], sz[KILN_MAX_RANK];
  if (kiln_shape_equal(&x->shape, &y->shape)) {
    nest = &flat, rank = 1;
    sx[0] = sy[0] = sz[0] = 1;
  } else {
    kiln_broadcast_strides(&x->shape, nest, sx);
    kiln_broadcast_strides(&y->shape, nest, sy);
    kiln_contiguous_strides(nest, sz);
  }
  int vars[KILN_MAX_RANK];
  kiln_lower_begin_nest(b, nest, vars);
  kiln_lexpr *a = lx_load(b, kiln_in_buf(c, 0), kiln_lower_index(b, rank, vars, sx));
  kiln_lexpr *v = lx_load(b, kiln_in_buf(c, 1), kiln_lower_index(b, rank, vars, sy));
  kiln_lb_store(b, kiln_out_buf(c, 0), kiln_lower_index(b, rank, vars, sz), lx_bin(b, op, a, v));
  kiln_lower_end_nest(b, nest);
}
