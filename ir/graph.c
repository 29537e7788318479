// Graph IR: construction, attribute lookup, topological sorting and compaction.
#include "graph.h"

#include "../runtime/kiln_runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t kiln_shape_numel(const kiln_shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) n *= s->dim[i];
  return n;
}

bool kiln_shape_equal(const kiln_shape *a, const kiln_shape *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dim[i] != b->dim[i]) return false;
  return true;
}

char *kiln_shape_str(const kiln_shape *s, char *buf, int size) {
  int used = snprintf(buf, (size_t)size, "(");
  for (int i = 0; i < s->rank && used < size; i++)
    used +=
        snprintf(buf + used, (size_t)(size - used), "%s%lld", i ? ", " : "", (long long)s->dim[i]);
  if (used < size) snprintf(buf + used, (size_t)(size - used), "%s)", s->rank == 1 ? "," : "");
  return buf;
}

kiln_graph *kiln_graph_new(const char *name, const char *source_file) {
  kiln_graph *g = kiln_xcalloc(1, sizeof(*g));
  g->name = kiln_pool_strdup(&g->pool, name ? name : "model");
  g->source_file = kiln_pool_strdup(&g->pool, source_file ? source_file : "<memory>");
  return g;
}

void kiln_graph_free(kiln_graph *g) {
  if (!g) return;
  free(g->tensors);
  free(g->nodes);
  free(g->inputs);
  free(g->outputs);
  kiln_pool_free(&g->pool);
  free(g);
}

int kiln_graph_add_tensor(kiln_graph *g, const char *name, kiln_tensor_kind kind, kiln_dtype dtype,
                          const kiln_shape *shape) {
  kiln_tensor t = {0};
  t.name = kiln_pool_strdup(&g->pool, name);
  t.kind = kind;
  t.dtype = dtype;
  if (shape) t.shape = *shape;
  t.producer = -1;
  t.offset = -1;
  t.in_place_of = -1;
  t.where = "";
  KILN_VEC_PUSH(g->tensors, g->n_tensors, g->cap_tensors, t);
  return g->n_tensors - 1;
}

int kiln_graph_find_tensor(const kiln_graph *g, const char *name) {
  for (int i = 0; i < g->n_tensors; i++)
    if (strcmp(g->tensors[i].name, name) == 0) return i;
  return -1;
}

int kiln_graph_add_node(kiln_graph *g, int op, const char *name, int n_in, const int *in, int n_out,
                        const int *out) {
  kiln_node n = {0};
  n.op = op;
  n.name = kiln_pool_strdup(&g->pool, name);
  n.n_inputs = n_in;
  n.n_outputs = n_out;
  n.inputs = kiln_pool_alloc(&g->pool, sizeof(int) * (size_t)(n_in ? n_in : 1));
  n.outputs = kiln_pool_alloc(&g->pool, sizeof(int) * (size_t)(n_out ? n_out : 1));
  if (n_in) memcpy(n.inputs, in, sizeof(int) * (size_t)n_in);
  if (n_out) memcpy(n.outputs, out, sizeof(int) * (size_t)n_out);
  n.where = "";
  KILN_VEC_PUSH(g->nodes, g->n_nodes, g->cap_nodes, n);
  return g->n_nodes - 1;
}

kiln_attr *kiln_node_add_attr(kiln_graph *g, kiln_node *n, const char *name, kiln_attr_type type) {
  kiln_attr *attrs = kiln_pool_alloc(&g->pool, sizeof(kiln_attr) * (size_t)(n->n_attrs + 1));
  if (n->n_attrs) memcpy(attrs, n->attrs, sizeof(kiln_attr) * (size_t)n->n_attrs);
  n->attrs = attrs;
  kiln_attr *a = &attrs[n->n_attrs++];
  a->name = kiln_pool_strdup(&g->pool, name);
  a->type = type;
  return a;
}

const kiln_attr *kiln_node_attr(const kiln_node *n, const char *name) {
  for (int i = 0; i < n->n_attrs; i++)
    if (strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
  return NULL;
}

int64_t kiln_attr_int(const kiln_node *n, const char *name, int64_t dflt) {
  const kiln_attr *a = kiln_node_attr(n, name);
  return a && a->type == KILN_ATTR_INT ? a->i : dflt;
}

double kiln_attr_float(const kiln_node *n, const char *name, double dflt) {
  const kiln_attr *a = kiln_node_attr(n, name);
  if (!a) return dflt;
  if (a->type == KILN_ATTR_FLOAT) return a->f;
  if (a->type == KILN_ATTR_INT) return (double)a->i;
  return dflt;
}

const char *kiln_attr_string(const kiln_node *n, const char *name, const char *dflt) {
  const kiln_attr *a = kiln_node_attr(n, name);
  return a && a->type == KILN_ATTR_STRING ? a->s : dflt;
}

int kiln_attr_ints(const kiln_node *n, const char *name, int64_t *out, int max) {
  const kiln_attr *a = kiln_node_attr(n, name);
  if (!a || a->type != KILN_ATTR_INTS) return -1;
  for (int i = 0; i < a->count && i < max; i++) out[i] = a->ints[i];
  return a->count;
}

double kiln_tensor_get(const kiln_tensor *t, int64_t i) {
  return kiln_element_get(t->data, (int)t->dtype, i);
}

// ---- Topological sort (Kahn's algorithm, stable: keeps file order among ready nodes) ----

static bool set_producers(kiln_graph *g, kiln_diag *d) {
  bool ok = true;
  for (int t = 0; t < g->n_tensors; t++) g->tensors[t].producer = -1;
  for (int i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int o = 0; o < n->n_outputs; o++) {
      kiln_tensor *t = &g->tensors[n->outputs[o]];
      if (t->kind != KILN_TENSOR_VALUE) {
        kiln_diag_error(d, n->where, "node '%s' writes '%s', which is a model %s", n->name, t->name,
                        t->kind == KILN_TENSOR_INPUT ? "input" : "param");
        ok = false;
      } else if (t->producer >= 0) {
        kiln_diag_error(d, n->where, "tensor '%s' is produced twice (also by node '%s')", t->name,
                        g->nodes[t->producer].name);
        ok = false;
      } else {
        t->producer = i;
      }
    }
  }
  for (int i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->n_inputs; k++) {
      if (n->inputs[k] < 0) continue;
      kiln_tensor *t = &g->tensors[n->inputs[k]];
      if (t->kind == KILN_TENSOR_VALUE && t->producer < 0) {
        kiln_diag_error(d, n->where, "input '%s' of node '%s' is never produced", t->name, n->name);
        ok = false;
      }
    }
  }
  return ok;
}

static void report_cycle(const kiln_graph *g, const int *pending, kiln_diag *d) {
  // Every node still pending is on a cycle or downstream of one; name them.
  char names[512] = "";
  int used = 0, count = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    if (!pending[i]) continue;
    count++;
    if (used < (int)sizeof(names) - 64)
      used += snprintf(names + used, sizeof(names) - (size_t)used, "%s'%s'", count > 1 ? ", " : "",
                       g->nodes[i].name);
  }
  kiln_diag_error(d, "nodes", "the graph has a cycle through %d node%s: %s", count,
                  count == 1 ? "" : "s", names);
}

// Consumers of every tensor in compressed rows: the nodes reading tensor t are
// node_of[first[t] .. first[t + 1]).
typedef struct consumers {
  int *first, *node_of;
} consumers;

static consumers build_consumers(const kiln_graph *g) {
  consumers c = {kiln_xcalloc((size_t)g->n_tensors + 1, sizeof(int)), NULL};
  int edges = 0;
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_inputs; k++)
      if (!g->nodes[i].dead && g->nodes[i].inputs[k] >= 0)
        c.first[g->nodes[i].inputs[k] + 1]++, edges++;
  for (int t = 0; t < g->n_tensors; t++) c.first[t + 1] += c.first[t];
  c.node_of = kiln_xcalloc((size_t)(edges ? edges : 1), sizeof(int));
  int *fill = kiln_xcalloc((size_t)g->n_tensors + 1, sizeof(int));
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_inputs; k++) {
      int t = g->nodes[i].inputs[k];
      if (!g->nodes[i].dead && t >= 0) c.node_of[c.first[t] + fill[t]++] = i;
    }
  free(fill);
  return c;
}

// A binary min-heap of node indices, so ready nodes leave in file order.
typedef struct heap {
  int *v, n;
} heap;

static void heap_push(heap *h, int x) {
  int i = h->n++;
  for (; i > 0 && h->v[(i - 1) / 2] > x; i = (i - 1) / 2) h->v[i] = h->v[(i - 1) / 2];
  h->v[i] = x;
}

static int heap_pop(heap *h) {
  int top = h->v[0], last = h->v[--h->n], i = 0;
  for (int child; (child = 2 * i + 1) < h->n; i = child) {
    if (child + 1 < h->n && h->v[child + 1] < h->v[child]) child++;
    if (last <= h->v[child]) break;
    h->v[i] = h->v[child];
  }
  h->v[i] = last;
  return top;
}

// Kahn's algorithm in O((V + E) log V). Stable: among ready nodes the earliest in the file runs
// first.
bool kiln_graph_toposort(kiln_graph *g, kiln_diag *d) {
  if (!set_producers(g, d)) return false;
  int n = g->n_nodes, n_order = 0, n_live = 0;
  size_t alloc = (size_t)(n ? n : 1);
  int *pending = kiln_xcalloc(alloc, sizeof(int));  // inputs not yet produced, per node
  int *order = kiln_xcalloc(alloc, sizeof(int));
  heap ready = {kiln_xcalloc(alloc, sizeof(int)), 0};
  for (int i = 0; i < n; i++) {
    if (g->nodes[i].dead) continue;
    n_live++;
    for (int k = 0; k < g->nodes[i].n_inputs; k++) {
      int t = g->nodes[i].inputs[k];
      if (t >= 0 && g->tensors[t].producer >= 0) pending[i]++;
    }
    if (!pending[i]) heap_push(&ready, i);
  }
  consumers c = build_consumers(g);
  while (ready.n) {
    int i = heap_pop(&ready);
    order[n_order++] = i;
    for (int o = 0; o < g->nodes[i].n_outputs; o++) {
      int t = g->nodes[i].outputs[o];
      for (int e = c.first[t]; e < c.first[t + 1]; e++)
        if (--pending[c.node_of[e]] == 0) heap_push(&ready, c.node_of[e]);
    }
  }
  bool ok = n_order == n_live;
  if (!ok) {
    for (int i = 0; i < n; i++) pending[i] = !g->nodes[i].dead && pending[i] > 0;
    report_cycle(g, pending, d);
  } else {
    kiln_node *sorted = kiln_xmalloc(sizeof(kiln_node) * alloc);
    for (int i = 0; i < n_order; i++) sorted[i] = g->nodes[order[i]];
    free(g->nodes);
    g->nodes = sorted;
    g->n_nodes = g->cap_nodes = n_order;
    set_producers(g, d);
  }
  free(c.first);
  free(c.node_of);
  free(ready.v);
  free(order);
  free(pending);
  return ok;
}

void kiln_graph_compact(kiln_graph *g) {
  int live = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (!g->nodes[i].dead) g->nodes[live++] = g->nodes[i];
  g->n_nodes = live;
  // Tensors: keep inputs, outputs and anything a live node touches.
  bool *used = kiln_xcalloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof(bool));
  for (int i = 0; i < g->n_inputs; i++) used[g->inputs[i]] = true;
  for (int i = 0; i < g->n_outputs; i++) used[g->outputs[i]] = true;
  for (int i = 0; i < g->n_nodes; i++) {
    for (int k = 0; k < g->nodes[i].n_inputs; k++)
      if (g->nodes[i].inputs[k] >= 0) used[g->nodes[i].inputs[k]] = true;
    for (int k = 0; k < g->nodes[i].n_outputs; k++) used[g->nodes[i].outputs[k]] = true;
  }
  int *remap = kiln_xmalloc(sizeof(int) * (size_t)(g->n_tensors ? g->n_tensors : 1));
  int kept = 0;
  for (int t = 0; t < g->n_tensors; t++) {
    remap[t] = used[t] ? kept : -1;
    if (used[t]) g->tensors[kept++] = g->tensors[t];
  }
  g->n_tensors = kept;
  for (int i = 0; i < g->n_inputs; i++) g->inputs[i] = remap[g->inputs[i]];
  for (int i = 0; i < g->n_outputs; i++) g->outputs[i] = remap[g->outputs[i]];
  for (int i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    for (int k = 0; k < n->n_inputs; k++)
      if (n->inputs[k] >= 0) n->inputs[k] = remap[n->inputs[k]];
    for (int k = 0; k < n->n_outputs; k++) n->outputs[k] = remap[n->outputs[k]];
  }
  for (int t = 0; t < g->n_tensors; t++) {
    int *of = &g->tensors[t].in_place_of;
    if (*of >= 0) *of = remap[*of];
  }
  for (int t = 0; t < g->n_tensors; t++) g->tensors[t].producer = -1;
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_outputs; k++) g->tensors[g->nodes[i].outputs[k]].producer = i;
  free(remap);
  free(used);
}
