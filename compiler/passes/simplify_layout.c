// simplify-layout: transpose/reshape elimination. "Views" (Reshape, Flatten, Squeeze, Unsqueeze,
// Identity) keep the elements in their order and change only the shape; Transpose moves them. The
// rewrite table below runs over the graph until nothing changes:
//
//   rule                     before                                after
//   transpose-of-transpose   Transpose(p2) . Transpose(p1)         Transpose(p1[p2[i]])
//   view-of-view             view . view                           Reshape(x, final shape)
//   transpose-as-view        Transpose moving only size-1 axes     Reshape(x, its shape)
//   identity                 view or Transpose, same shape/order   removed (readers read x)
//
// A rule that merges two nodes fires only when the intermediate tensor has one reader and is no
// model output; "identity" does not remove a node whose output is a model output (the output must
// still be produced). No rewrite moves a read of training STATE (docs/training.md) past the node
// that did it. Reshapes are copies today (kiln_copy_lower), so every node removed is one
// copy kernel and one intermediate tensor fewer.
#include <stdlib.h>
#include <string.h>

#include "../ops/op.h"
#include "pipeline.h"

typedef struct layout_rule {
  const char *name;
  bool (*apply)(kiln_graph *g, kiln_node *n, const int *readers);  // true: n was rewritten
} layout_rule;

int *kiln_reader_counts(const kiln_graph *g) {
  int *readers = kiln_xcalloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof(int));
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_inputs; k++)
      if (!g->nodes[i].dead && g->nodes[i].inputs[k] >= 0) readers[g->nodes[i].inputs[k]]++;
  return readers;
}

static bool is_view(int op) {
  return op == KILN_OP_Reshape || op == KILN_OP_Flatten || op == KILN_OP_Squeeze ||
         op == KILN_OP_Unsqueeze || op == KILN_OP_Identity;
}

// The live node producing n's input 0 if it is a view (a Transpose when `transpose`), the tensor
// between them has no other reader and is no model output, and the node reads no training STATE;
// NULL otherwise.
static kiln_node *sole_producer(kiln_graph *g, const kiln_node *n, const int *readers,
                                bool transpose) {
  if (n->n_inputs < 1 || n->inputs[0] < 0) return NULL;
  const kiln_tensor *t = &g->tensors[n->inputs[0]];
  if (t->kind != KILN_TENSOR_VALUE || t->is_output || t->producer < 0) return NULL;
  kiln_node *p = &g->nodes[t->producer];
  if (p->dead || readers[n->inputs[0]] != 1 || p->n_outputs != 1) return NULL;
  if (p->n_inputs < 1 || p->inputs[0] < 0 || g->tensors[p->inputs[0]].kind == KILN_TENSOR_STATE)
    return NULL;  // n would read training state later than p did
  return (transpose ? p->op == KILN_OP_Transpose : is_view(p->op)) ? p : NULL;
}

// perm of a Transpose over `rank` axes (default: reversed).
static void read_perm(const kiln_node *n, int rank, int64_t *perm) {
  for (int i = 0; i < rank; i++) perm[i] = rank - 1 - i;
  kiln_attr_ints(n, "perm", perm, rank);
}

static bool is_identity_perm(const int64_t *perm, int rank) {
  for (int i = 0; i < rank; i++)
    if (perm[i] != i) return false;
  return true;
}

// Turns n into Reshape(x, shape of n's output; no 0 in it, which Reshape reads as "keep"): a
// constant i64 shape tensor is added.
static void make_reshape(kiln_graph *g, kiln_node *n, int x) {
  kiln_shape out = kiln_out(g, n, 0)->shape, dims = {.rank = 1, .dim = {out.rank}};
  char name[256];
  snprintf(name, sizeof name, "%s.shape", n->name);
  for (int i = 1; kiln_graph_find_tensor(g, name) >= 0; i++)
    snprintf(name, sizeof name, "%s.shape_%d", n->name, i);
  int s = kiln_graph_add_tensor(g, name, KILN_TENSOR_PARAM, KILN_I64, &dims);
  int64_t *data = kiln_pool_alloc(&g->pool, sizeof(int64_t) * (size_t)(out.rank ? out.rank : 1));
  memcpy(data, out.dim, sizeof(int64_t) * (size_t)out.rank);
  g->tensors[s].data = data;
  g->tensors[s].role = KILN_ROLE_CONSTANT;
  g->tensors[s].where = n->where;
  n->op = KILN_OP_Reshape;
  n->inputs = kiln_pool_alloc(&g->pool, 2 * sizeof(int));
  n->inputs[0] = x;
  n->inputs[1] = s;
  n->n_inputs = 2;
  n->n_attrs = 0;
}

// Transpose(p2)(Transpose(p1)(x)) = Transpose(q)(x) with q[i] = p1[p2[i]].
static bool compose_transposes(kiln_graph *g, kiln_node *n, const int *readers) {
  kiln_node *p = n->op == KILN_OP_Transpose ? sole_producer(g, n, readers, true) : NULL;
  if (!p) return false;
  int rank = kiln_in(g, p, 0)->shape.rank;
  int64_t p1[KILN_MAX_RANK], p2[KILN_MAX_RANK];
  read_perm(p, rank, p1);
  read_perm(n, rank, p2);
  int64_t *q = kiln_pool_alloc(&g->pool, sizeof(int64_t) * (size_t)(rank ? rank : 1));
  for (int i = 0; i < rank; i++) q[i] = p1[p2[i]];
  n->n_attrs = 0;
  kiln_attr *a = kiln_node_add_attr(g, n, "perm", KILN_ATTR_INTS);
  a->ints = q;
  a->count = rank;
  n->inputs[0] = p->inputs[0];
  p->dead = true;
  return true;
}

// view(view(x)) = Reshape(x)
static bool merge_views(kiln_graph *g, kiln_node *n, const int *readers) {
  kiln_node *p = is_view(n->op) ? sole_producer(g, n, readers, false) : NULL;
  const kiln_shape *y = &kiln_out(g, n, 0)->shape;
  if (!p || y->rank == 0 || kiln_shape_numel(y) == 0) return false;
  make_reshape(g, n, p->inputs[0]);
  p->dead = true;
  return true;
}

// A Transpose whose axes of size > 1 keep their order moves no element: a Reshape.
static bool transpose_as_view(kiln_graph *g, kiln_node *n, const int *readers) {
  (void)readers;
  if (n->op != KILN_OP_Transpose || n->n_inputs != 1) return false;
  const kiln_shape *x = &kiln_in(g, n, 0)->shape;
  int64_t perm[KILN_MAX_RANK], last = -1;
  read_perm(n, x->rank, perm);
  if (x->rank == 0 || kiln_shape_numel(x) == 0 || is_identity_perm(perm, x->rank)) return false;
  for (int i = 0; i < x->rank; i++) {
    if (x->dim[perm[i]] == 1) continue;
    if (perm[i] < last) return false;
    last = perm[i];
  }
  make_reshape(g, n, n->inputs[0]);
  return true;
}

// A view to the same shape, or a Transpose by the identity: its readers read its input instead.
static bool drop_identity(kiln_graph *g, kiln_node *n, const int *readers) {
  (void)readers;
  if (n->n_outputs != 1 || n->n_inputs < 1 || n->inputs[0] < 0) return false;
  const kiln_tensor *x = kiln_in(g, n, 0), *y = kiln_out(g, n, 0);
  if (y->is_output || x->kind == KILN_TENSOR_STATE || x->dtype != y->dtype ||
      !kiln_shape_equal(&x->shape, &y->shape))
    return false;  // (readers of training state keep reading it where they did)
  if (n->op == KILN_OP_Transpose) {
    int64_t perm[KILN_MAX_RANK];
    read_perm(n, x->shape.rank, perm);
    if (!is_identity_perm(perm, x->shape.rank)) return false;
  } else if (!is_view(n->op)) {
    return false;
  }
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_inputs; k++)
      if (g->nodes[i].inputs[k] == n->outputs[0]) g->nodes[i].inputs[k] = n->inputs[0];
  n->dead = true;
  return true;
}

static const layout_rule rules[] = {
    {"transpose-of-transpose", compose_transposes},
    {"view-of-view", merge_views},
    {"transpose-as-view", transpose_as_view},
    {"identity", drop_identity},
};
enum { N_RULES = sizeof rules / sizeof rules[0] };

// One sweep over the nodes: the first rule that applies to a node rewrites it. Returns how many
// rewrites happened.
static int sweep(kiln_graph *g, bool verbose) {
  int rewrites = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    if (g->nodes[i].dead) continue;
    int *readers = kiln_reader_counts(g);
    for (int r = 0; r < N_RULES; r++) {
      if (!rules[r].apply(g, &g->nodes[i], readers)) continue;
      if (verbose)
        fprintf(stderr, "kiln: simplify-layout: %s at %s\n", rules[r].name, g->nodes[i].name);
      rewrites++;
      break;
    }
    free(readers);
  }
  return rewrites;
}

bool kiln_pass_simplify_layout(kiln_compilation *c, kiln_diag *d, bool *changed) {
  (void)d;
  int total = 0, rewrites;
  while ((rewrites = sweep(c->g, c->verbose)) > 0) total += rewrites;
  if (total) kiln_graph_compact(c->g);
  *changed = total > 0;
  return true;
}
