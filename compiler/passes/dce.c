// Dead code elimination: a node whose outputs no graph output depends on is dropped. Walks the
// nodes backwards from the outputs, marking what is needed.
#include <stdlib.h>

#include "../ops/op.h"
#include "pipeline.h"

bool kiln_pass_dce(kiln_compilation *c, kiln_diag *d, bool *changed) {
  (void)d;
  kiln_graph *g = c->g;
  bool *needed = kiln_xcalloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof(bool));
  for (int i = 0; i < g->n_outputs; i++) needed[g->outputs[i]] = true;
  int removed = 0;
  for (int i = g->n_nodes - 1; i >= 0; i--) {
    kiln_node *n = &g->nodes[i];
    bool live = kiln_op_get(n->op)->writes_inputs != 0;  // side effects (optimizer updates)
    for (int k = 0; k < n->n_outputs; k++) live = live || needed[n->outputs[k]];
    if (!live) {
      n->dead = true;
      removed++;
      continue;
    }
    for (int k = 0; k < n->n_inputs; k++)
      if (n->inputs[k] >= 0) needed[n->inputs[k]] = true;
  }
  free(needed);
  if (removed) kiln_graph_compact(g);
  *changed = removed > 0;
  return true;
}
