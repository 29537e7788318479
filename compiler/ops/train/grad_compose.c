// Compositions shared by gradient rules (grad_compose.h).
#include "grad_compose.h"

#include "../op_internal.h"

int kiln_gc_binary(kiln_grad_ctx *c, const char *op, int a, int b) {
  return a < 0 || b < 0 ? -1 : kiln_gb_binary(c, op, a, b);
}

int kiln_gc_unary(kiln_grad_ctx *c, const char *op, int x) {
  return x < 0 ? -1 : kiln_gb_unary(c, op, x);
}

int kiln_gc_scalar_op(kiln_grad_ctx *c, const char *op, int a, double v) {
  if (a < 0) return -1;
  return kiln_gb_binary(c, op, a, kiln_gb_scalar(c, c->g->tensors[a].dtype, v));
}

int kiln_gc_where_else(kiln_grad_ctx *c, int cond, int a, double v) {
  if (cond < 0 || a < 0) return -1;
  int in[3] = {cond, a, kiln_gb_scalar(c, c->g->tensors[a].dtype, v)};
  return kiln_gb_op(c, "Where", in, 3, NULL, 1);
}

bool kiln_gc_chain(kiln_grad_ctx *c, int d) {
  c->dx[0] = kiln_gc_binary(c, "Mul", c->dy[0], d);
  return c->dx[0] >= 0;
}

unsigned kiln_gc_reduced_axes(const kiln_grad_ctx *c) {
  const kiln_graph *g = c->g;
  const kiln_node *n = &c->node;
  int rank = g->tensors[n->inputs[0]].shape.rank;
  int64_t axes[KILN_MAX_RANK];
  int count = -1;
  const kiln_tensor *t = kiln_in(g, n, 1);
  if (t && t->data) {
    count = (int)kiln_shape_numel(&t->shape);
    for (int k = 0; k < count && k < KILN_MAX_RANK; k++) axes[k] = (int64_t)kiln_tensor_get(t, k);
  } else if (kiln_node_attr(n, "axes")) {
    count = kiln_attr_ints(n, "axes", axes, KILN_MAX_RANK);
  }
  if (count <= 0) return kiln_attr_int(n, "noop_with_empty_axes", 0) ? 0 : (1u << rank) - 1;
  unsigned mask = 0;
  for (int k = 0; k < count && k < KILN_MAX_RANK; k++)
    mask |= 1u << (axes[k] < 0 ? axes[k] + rank : axes[k]);
  return mask;
}

int kiln_gc_broadcast_back(kiln_grad_ctx *c, int dy, int x, unsigned mask, double scale) {
  kiln_shape full = c->g->tensors[x].shape, keep = full;  // keep: reduced axes as 1
  for (int i = 0; i < keep.rank; i++)
    if (mask & (1u << i)) keep.dim[i] = 1;
  int kept = kiln_gb_reshape(c, dy, &keep);
  if (scale != 1) kept = kiln_gc_scalar_op(c, "Mul", kept, scale);
  if (kept < 0 || kiln_shape_equal(&keep, &full)) return kept;
  double dims[KILN_MAX_RANK];
  for (int i = 0; i < full.rank; i++) dims[i] = (double)full.dim[i];
  kiln_shape s = {.rank = 1, .dim = {full.rank}};
  return kiln_gb_binary(c, "Expand", kept, kiln_gb_const(c, KILN_I64, &s, dims));
}
