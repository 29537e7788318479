// Common-subexpression elimination: a node that applies the same op, with the same attributes, to
// the same inputs as an earlier node computes the same values; its consumers read the earlier
// node's outputs instead and it is dropped. Nodes in topological order make one forward sweep
// enough: by the time a node is compared, its inputs have already been merged.
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"

static bool same_attr(const kiln_attr *a, const kiln_attr *b) {
  if (strcmp(a->name, b->name) != 0 || a->type != b->type) return false;
  switch (a->type) {
    case KILN_ATTR_INT: return a->i == b->i;
    case KILN_ATTR_FLOAT: return a->f == b->f;
    case KILN_ATTR_STRING: return strcmp(a->s, b->s) == 0;
    case KILN_ATTR_INTS:
      return a->count == b->count && !memcmp(a->ints, b->ints, sizeof(int64_t) * (size_t)a->count);
    case KILN_ATTR_FLOATS:
      if (a->count != b->count) return false;
      for (int i = 0; i < a->count; i++)
        if (a->floats[i] != b->floats[i]) return false;
      return true;
  }
  return false;
}

static bool same_attrs(const kiln_node *a, const kiln_node *b) {
  if (a->n_attrs != b->n_attrs) return false;
  for (int i = 0; i < a->n_attrs; i++) {
    const kiln_attr *match = kiln_node_attr(b, a->attrs[i].name);
    if (!match || !same_attr(&a->attrs[i], match)) return false;
  }
  return true;
}

static bool same_computation(const kiln_node *a, const kiln_node *b) {
  return a->op == b->op && a->n_inputs == b->n_inputs && a->n_outputs == b->n_outputs &&
         !memcmp(a->inputs, b->inputs, sizeof(int) * (size_t)a->n_inputs) && same_attrs(a, b);
}

static bool has_model_output(const kiln_graph *g, const kiln_node *n) {
  for (int k = 0; k < n->n_outputs; k++)
    if (kiln_out(g, n, k)->is_output) return true;
  return false;
}

// Every read of tensor `from` now reads `to`.
static void redirect(kiln_graph *g, int from, int to) {
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_inputs; k++)
      if (g->nodes[i].inputs[k] == from) g->nodes[i].inputs[k] = to;
}

bool kiln_pass_cse(kiln_compilation *c, kiln_diag *d, bool *changed) {
  (void)d;
  kiln_graph *g = c->g;
  int merged = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    if (has_model_output(g, n)) continue;
    for (int j = 0; j < i; j++) {
      const kiln_node *m = &g->nodes[j];
      if (m->dead || !same_computation(m, n)) continue;
      for (int k = 0; k < n->n_outputs; k++) redirect(g, n->outputs[k], m->outputs[k]);
      n->dead = true;
      merged++;
      break;
    }
  }
  if (merged) kiln_graph_compact(g);
  *changed = merged > 0;
  return true;
}
