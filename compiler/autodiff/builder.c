// The node builder gradient rules and the training-graph construction use (builder.h).
#include "builder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/kiln_runtime.h"

// A unique name derived from the forward node: "<node>.g<counter>".
static const char *fresh_name(kiln_grad_ctx *c) {
  return kiln_pool_printf(&c->g->pool, "%s.g%d", c->node.name, c->counter++);
}

static void copy_attr(kiln_graph *g, kiln_node *n, const kiln_gb_attr *a) {
  kiln_attr *dst = kiln_node_add_attr(g, n, a->name, a->type);
  dst->i = a->i;
  dst->f = a->f;
  dst->count = a->count;
  if (a->s) dst->s = kiln_pool_strdup(&g->pool, a->s);
  if (a->type == KILN_ATTR_INTS) {
    dst->ints = kiln_pool_alloc(&g->pool, sizeof(int64_t) * (size_t)(a->count + 1));
    if (a->count) memcpy(dst->ints, a->ints, sizeof(int64_t) * (size_t)a->count);
  }
  if (a->type == KILN_ATTR_FLOATS) {
    dst->floats = kiln_pool_alloc(&g->pool, sizeof(double) * (size_t)(a->count + 1));
    if (a->count) memcpy(dst->floats, a->floats, sizeof(double) * (size_t)a->count);
  }
}

int kiln_gb_op(kiln_grad_ctx *c, const char *op, const int *inputs, int n_inputs,
               const kiln_gb_attr *attrs, int n_outputs) {
  int op_id = kiln_op_lookup(op);
  const kiln_op_def *def = kiln_op_get(op_id);
  if (!def) {
    kiln_diag_error(c->d, c->node.where, "internal: gradient of %s uses unknown op %s",
                    c->node.name, op);
    return -1;
  }
  int outs[16];
  if (n_outputs < 1 || n_outputs > 16) return -1;
  const char *base = fresh_name(c);
  for (int k = 0; k < n_outputs; k++) {
    char name[256];
    snprintf(name, sizeof(name), "%s:%d", base, k);
    outs[k] = kiln_graph_add_tensor(c->g, k ? name : base, KILN_TENSOR_VALUE, KILN_F32, NULL);
  }
  int id = kiln_graph_add_node(c->g, op_id, base, n_inputs, inputs, n_outputs, outs);
  kiln_node *n = &c->g->nodes[id];
  n->where = c->node.where;
  for (const kiln_gb_attr *a = attrs; a && a->name; a++) copy_attr(c->g, n, a);
  for (int k = 0; k < n_outputs; k++) c->g->tensors[outs[k]].producer = id;
  if (!def->infer(c->g, n, c->d)) {
    kiln_diag_error(c->d, c->node.where, "internal: gradient node %s (%s) of %s is invalid", base,
                    op, c->node.name);
    return -1;
  }
  return outs[0];
}

int kiln_gb_unary(kiln_grad_ctx *c, const char *op, int x) {
  return kiln_gb_op(c, op, &x, 1, NULL, 1);
}

int kiln_gb_binary(kiln_grad_ctx *c, const char *op, int a, int b) {
  int in[2] = {a, b};
  return kiln_gb_op(c, op, in, 2, NULL, 1);
}

// Shapes are copied on entry: callers pass &g->tensors[i].shape, which adding a tensor moves.
int kiln_gb_const(kiln_grad_ctx *c, kiln_dtype t, const kiln_shape *shape_in,
                  const double *values) {
  kiln_shape shape_copy = *shape_in, *shape = &shape_copy;
  int id = kiln_graph_add_tensor(c->g, fresh_name(c), KILN_TENSOR_PARAM, t, shape);
  kiln_tensor *x = &c->g->tensors[id];
  int64_t n = kiln_shape_numel(shape);
  x->data = kiln_pool_alloc(&c->g->pool, (size_t)(n ? n : 1) * kiln_dtype_size(t));
  x->where = c->node.where;
  x->role = KILN_ROLE_CONSTANT;
  for (int64_t i = 0; i < n; i++) kiln_element_set(x->data, (int)t, i, values ? values[i] : 0);
  return id;
}

int kiln_gb_scalar(kiln_grad_ctx *c, kiln_dtype t, double value) {
  kiln_shape one = {.rank = 1, .dim = {1}};
  return kiln_gb_const(c, t, &one, &value);
}

int kiln_gb_reshape(kiln_grad_ctx *c, int x, const kiln_shape *shape_in) {
  kiln_shape shape_copy = *shape_in, *shape = &shape_copy;
  if (kiln_shape_equal(&c->g->tensors[x].shape, shape)) return x;
  double dims[KILN_MAX_RANK];
  for (int i = 0; i < shape->rank; i++) dims[i] = (double)shape->dim[i];
  kiln_shape s = {.rank = 1, .dim = {shape->rank}};
  return kiln_gb_binary(c, "Reshape", x, kiln_gb_const(c, KILN_I64, &s, dims));
}

int kiln_gb_sum_to(kiln_grad_ctx *c, int dy, const kiln_shape *shape_in) {
  kiln_shape shape_copy = *shape_in, *shape = &shape_copy;
  kiln_shape from = c->g->tensors[dy].shape;
  if (kiln_shape_equal(&from, shape)) return dy;
  // Axes of `from` that `shape` broadcast over: leading extra axes, and axes where shape has 1.
  int64_t axes[KILN_MAX_RANK];
  int n_axes = 0, lead = from.rank - shape->rank;
  for (int i = 0; i < from.rank; i++)
    if (i < lead || (shape->dim[i - lead] == 1 && from.dim[i] != 1)) axes[n_axes++] = i;
  int summed = dy;
  if (n_axes) {
    kiln_gb_attr attrs[] = {KILN_GB_INTS("axes", axes, n_axes), KILN_GB_INT("keepdims", 1),
                            KILN_GB_END};
    summed = kiln_gb_op(c, "ReduceSum", &dy, 1, attrs, 1);
    if (summed < 0) return -1;
  }
  return kiln_gb_reshape(c, summed, shape);
}

int kiln_gb_forward_attrs(const kiln_grad_ctx *c, const char *const *skip, kiln_gb_attr *out,
                          int max) {
  int n = 0;
  for (int i = 0; i < c->node.n_attrs && n + 1 < max; i++) {
    const kiln_attr *a = &c->node.attrs[i];
    bool skipped = false;
    for (int k = 0; skip && skip[k]; k++) skipped |= strcmp(skip[k], a->name) == 0;
    if (skipped) continue;
    out[n++] = (kiln_gb_attr){.name = a->name,
                              .type = a->type,
                              .i = a->i,
                              .f = a->f,
                              .ints = a->ints,
                              .floats = a->floats,
                              .count = a->count,
                              .s = a->s};
  }
  out[n] = KILN_GB_END;
  return n;
}

int kiln_gb_op_like(kiln_grad_ctx *c, const char *op, const int *inputs, int n_inputs,
                    const kiln_gb_attr *extra) {
  const char *skip[16];
  int n_skip = 0;
  for (const kiln_gb_attr *a = extra; a && a->name && n_skip < 15; a++) skip[n_skip++] = a->name;
  skip[n_skip] = NULL;
  kiln_gb_attr attrs[48];
  int n = kiln_gb_forward_attrs(c, skip, attrs, 32);
  for (const kiln_gb_attr *a = extra; a && a->name && n < 47; a++) attrs[n++] = *a;
  attrs[n] = KILN_GB_END;
  return kiln_gb_op(c, op, inputs, n_inputs, attrs, 1);
}

int kiln_gb_op_into(kiln_grad_ctx *c, const char *op, const int *inputs, int n_inputs,
                    const kiln_gb_attr *attrs, const int *outputs, int n_outputs) {
  int op_id = kiln_op_lookup(op);
  const kiln_op_def *def = kiln_op_get(op_id);
  if (!def) {
    kiln_diag_error(c->d, c->node.where, "internal: rewrite of %s uses unknown op %s", c->node.name,
                    op);
    return -1;
  }
  int id = kiln_graph_add_node(c->g, op_id, fresh_name(c), n_inputs, inputs, n_outputs, outputs);
  kiln_node *n = &c->g->nodes[id];
  n->where = c->node.where;
  for (const kiln_gb_attr *a = attrs; a && a->name; a++) copy_attr(c->g, n, a);
  for (int k = 0; k < n_outputs; k++) c->g->tensors[outputs[k]].producer = id;
  if (!def->infer(c->g, n, c->d)) {
    kiln_diag_error(c->d, c->node.where, "internal: rewritten node %s (%s) of %s is invalid",
                    n->name, op, c->node.name);
    return -1;
  }
  return outputs[0];
}

int kiln_gb_ints(kiln_grad_ctx *c, const int64_t *values, int count) {
  double v[KILN_MAX_RANK * 4];
  for (int i = 0; i < count && i < KILN_MAX_RANK * 4; i++) v[i] = (double)values[i];
  kiln_shape s = {.rank = 1, .dim = {count}};
  return kiln_gb_const(c, KILN_I64, &s, v);
}

int kiln_gb_slice(kiln_grad_ctx *c, int x, int64_t axis, int64_t start, int64_t end) {
  if (x < 0) return -1;
  int in[4] = {x, kiln_gb_ints(c, &start, 1), kiln_gb_ints(c, &end, 1), kiln_gb_ints(c, &axis, 1)};
  return kiln_gb_op(c, "Slice", in, 4, NULL, 1);
}

// ---- Differentiating nodes a rule built ----

typedef struct local_ad {
  kiln_grad_ctx *c;
  int n_tensors;  // tensors before the backward nodes (the arrays' size)
  int *grad;      // per tensor
  bool *needs;    // per tensor: a wrt tensor flows into it
} local_ad;

static bool local_accumulate(local_ad *A, int tensor, int dx) {
  if (dx < 0 || tensor < 0 || tensor >= A->n_tensors) return true;
  A->grad[tensor] = A->grad[tensor] < 0 ? dx : kiln_gb_binary(A->c, "Add", A->grad[tensor], dx);
  return A->grad[tensor] >= 0;
}

static bool local_backprop_node(local_ad *A, int k) {
  kiln_graph *g = A->c->g;
  kiln_node n = g->nodes[k];
  int dy[16], dx[16];
  bool need[16], any_dy = false, any_need = false;
  if (n.n_inputs > 16 || n.n_outputs > 16) return true;
  for (int j = 0; j < n.n_outputs; j++) any_dy |= (dy[j] = A->grad[n.outputs[j]]) >= 0;
  for (int j = 0; j < n.n_inputs; j++) {
    any_need |= need[j] = n.inputs[j] >= 0 && A->needs[n.inputs[j]];
    dx[j] = -1;
  }
  if (!any_dy || !any_need) return true;
  const kiln_op_def *def = kiln_op_get(n.op);
  if (!def->grad) {
    kiln_diag_error(A->c->d, A->c->node.where, "internal: %s (the gradient of %s) has no rule",
                    def->name, A->c->node.name);
    return false;
  }
  kiln_grad_ctx sub = {.g = g, .node = n, .dy = dy, .need = need, .dx = dx, .d = A->c->d};
  if (!def->grad(&sub)) return false;
  for (int j = 0; j < n.n_inputs; j++)
    if (need[j] && !local_accumulate(A, n.inputs[j], dx[j])) return false;
  return true;
}

bool kiln_gb_differentiate(kiln_grad_ctx *c, int first_node, int last_node, const int *seed,
                           const int *seed_grad, int n_seeds, const int *wrt, int *wrt_grad,
                           int n_wrt) {
  kiln_graph *g = c->g;
  local_ad A = {.c = c, .n_tensors = g->n_tensors};
  A.grad = kiln_xmalloc(sizeof(int) * (size_t)(A.n_tensors + 1));
  A.needs = kiln_xcalloc((size_t)A.n_tensors + 1, sizeof(bool));
  for (int i = 0; i < A.n_tensors; i++) A.grad[i] = -1;
  for (int i = 0; i < n_wrt; i++)
    if (wrt[i] >= 0) A.needs[wrt[i]] = true;
  for (int k = first_node; k < last_node; k++) {
    const kiln_node *n = &g->nodes[k];
    bool any = false;
    for (int j = 0; j < n->n_inputs; j++) any |= n->inputs[j] >= 0 && A.needs[n->inputs[j]];
    for (int j = 0; j < n->n_outputs; j++)
      A.needs[n->outputs[j]] = any && kiln_dtype_is_float(g->tensors[n->outputs[j]].dtype);
  }
  bool ok = true;
  for (int i = 0; i < n_seeds && ok; i++)
    if (seed[i] >= 0 && seed_grad[i] >= 0) ok = local_accumulate(&A, seed[i], seed_grad[i]);
  for (int k = last_node - 1; k >= first_node && ok; k--) ok = local_backprop_node(&A, k);
  for (int i = 0; i < n_wrt; i++) wrt_grad[i] = ok && wrt[i] >= 0 ? A.grad[wrt[i]] : -1;
  free(A.grad);
  free(A.needs);
  return ok;
}
