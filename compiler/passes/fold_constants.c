// Constant folding: a node whose inputs are all constants (params) — or that reads only its
// inputs' shapes — is run once at compile time with its reference kernel, and its outputs become
// params. Outputs larger than their inputs (and than FOLD_MAX_BYTES) are left to run time, so
// folding never bloats the weights (an Expand of a scalar stays an Expand).
#include <stdlib.h>

#include "../../runtime/kiln_runtime.h"
#include "../ops/op.h"
#include "pipeline.h"

enum { FOLD_MAX_BYTES = 1 << 16, MAX_ARITY = 16 };

static int64_t tensor_bytes(const kiln_tensor *t) {
  return kiln_shape_numel(&t->shape) * (int64_t)kiln_dtype_size(t->dtype);
}

static bool foldable(const kiln_graph *g, const kiln_node *n, const kiln_op_def *def) {
  if (n->dead || n->n_inputs > MAX_ARITY || n->n_outputs > MAX_ARITY) return false;
  int64_t in_bytes = 0, out_bytes = 0;
  for (int k = 0; k < n->n_inputs; k++) {
    const kiln_tensor *t = kiln_in(g, n, k);
    if (!t) continue;
    if (!def->shape_only && (t->kind != KILN_TENSOR_PARAM || !t->data)) return false;
    in_bytes += tensor_bytes(t);
  }
  for (int k = 0; k < n->n_outputs; k++) {
    const kiln_tensor *t = kiln_out(g, n, k);
    if (t->is_output || t->kind != KILN_TENSOR_VALUE) return false;
    out_bytes += tensor_bytes(t);
  }
  return out_bytes <= FOLD_MAX_BYTES || out_bytes <= in_bytes;
}

static double *constant_values(const kiln_tensor *t) {
  int64_t n = kiln_shape_numel(&t->shape);
  double *v = kiln_xcalloc((size_t)(n ? n : 1), sizeof(double));
  if (t->kind == KILN_TENSOR_PARAM && t->data)
    for (int64_t i = 0; i < n; i++) v[i] = kiln_tensor_get(t, i);
  return v;
}

bool kiln_fold_node(kiln_graph *g, kiln_node *n) {
  const kiln_op_def *def = kiln_op_get(n->op);
  if (!foldable(g, n, def)) return false;
  kiln_eval_tensor in[MAX_ARITY] = {0}, out[MAX_ARITY] = {0};
  for (int k = 0; k < n->n_inputs; k++) {
    const kiln_tensor *t = kiln_in(g, n, k);
    if (t) in[k] = (kiln_eval_tensor){&t->shape, t->dtype, constant_values(t)};
  }
  for (int k = 0; k < n->n_outputs; k++) {
    const kiln_tensor *t = kiln_out(g, n, k);
    out[k] = (kiln_eval_tensor){&t->shape, t->dtype, constant_values(t)};
  }
  def->eval(n, in, out);
  for (int k = 0; k < n->n_outputs; k++) {
    kiln_tensor *t = kiln_out(g, n, k);
    int64_t count = kiln_shape_numel(&t->shape);
    t->data = kiln_pool_alloc(&g->pool, (size_t)(tensor_bytes(t) ? tensor_bytes(t) : 1));
    for (int64_t i = 0; i < count; i++) kiln_element_set(t->data, (int)t->dtype, i, out[k].data[i]);
    t->kind = KILN_TENSOR_PARAM;
    t->role = KILN_ROLE_CONSTANT;  // computed, not learned: not a parameter `kiln inspect` counts
    t->producer = -1;
    free(out[k].data);
  }
  for (int k = 0; k < n->n_inputs; k++) free(in[k].data);
  n->dead = true;
  return true;
}

bool kiln_pass_fold_constants(kiln_compilation *c, kiln_diag *d, bool *changed) {
  (void)d;
  int folded = 0;
  for (int i = 0; i < c->g->n_nodes; i++) folded += kiln_fold_node(c->g, &c->g->nodes[i]);
  if (folded) kiln_graph_compact(c->g);
  *changed = folded > 0;
  return true;
}
