// Graph IR verifier. Structural checks (indices in range, nodes in topological order, each value
// produced exactly once, params hold data) and semantic ones: every node's shape inference is run
// again and must reproduce the dtypes and shapes stored in the graph. A failure here is a bug in a
// pass, so messages say which invariant broke.
#include "verify.h"

#include <stdlib.h>

#include "../ops/op.h"

static bool check_refs(const kiln_graph *g, kiln_diag *d) {
  bool ok = true;
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->op < 0 || n->op >= KILN_OP_COUNT) {
      kiln_diag_error(d, n->where, "verifier: node '%s' has unknown op %d", n->name, n->op);
      ok = false;
      continue;
    }
    for (int k = 0; k < n->n_inputs; k++) {
      int t = n->inputs[k];
      if (t < -1 || t >= g->n_tensors) {
        kiln_diag_error(d, n->where, "verifier: node '%s' input %d out of range", n->name, k);
        ok = false;
      } else if (t >= 0 && g->tensors[t].kind == KILN_TENSOR_VALUE && g->tensors[t].producer >= i) {
        kiln_diag_error(d, n->where, "verifier: node '%s' reads '%s' before it is produced",
                        n->name, g->tensors[t].name);
        ok = false;
      }
    }
    for (int k = 0; k < n->n_outputs; k++) {
      int t = n->outputs[k];
      if (t < 0 || t >= g->n_tensors || g->tensors[t].producer != i) {
        kiln_diag_error(d, n->where, "verifier: node '%s' output %d is not recorded as its own",
                        n->name, k);
        ok = false;
      }
    }
  }
  for (int t = 0; t < g->n_tensors; t++) {
    const kiln_tensor *x = &g->tensors[t];
    if ((x->kind == KILN_TENSOR_PARAM || x->kind == KILN_TENSOR_STATE) && !x->data) {
      kiln_diag_error(d, x->where, "verifier: param '%s' has no data", x->name);
      ok = false;
    }
  }
  return ok;
}

// Re-runs inference and compares with what the graph holds; restores the held values.
static bool check_shapes(kiln_graph *g, kiln_diag *d) {
  bool ok = true;
  for (int i = 0; i < g->n_nodes && ok; i++) {
    kiln_node *n = &g->nodes[i];
    kiln_tensor saved[8];
    int n_out = n->n_outputs < 8 ? n->n_outputs : 8;
    for (int k = 0; k < n_out; k++) saved[k] = g->tensors[n->outputs[k]];
    if (!kiln_op_get(n->op)->infer(g, n, d)) {
      kiln_diag_error(d, n->where, "verifier: shape inference fails on node '%s'", n->name);
      ok = false;
    }
    for (int k = 0; k < n_out && ok; k++) {
      kiln_tensor *t = &g->tensors[n->outputs[k]];
      if (t->dtype != saved[k].dtype || !kiln_shape_equal(&t->shape, &saved[k].shape)) {
        kiln_diag_error(d, n->where, "verifier: '%s' holds a stale shape or dtype", t->name);
        ok = false;
      }
    }
    for (int k = 0; k < n_out; k++) g->tensors[n->outputs[k]] = saved[k];
  }
  return ok;
}

// Side effects (docs/training.md): a node writing a STATE tensor in place comes after every other
// node reading it, and writes nothing else.
static bool check_writes(const kiln_graph *g, kiln_diag *d) {
  bool ok = true;
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    unsigned writes = kiln_op_get(n->op)->writes_inputs;
    for (int k = 0; k < n->n_inputs && k < 32; k++) {
      int t = n->inputs[k];
      if (!(writes >> k & 1u) || t < 0) continue;
      if (g->tensors[t].kind != KILN_TENSOR_STATE) {
        kiln_diag_error(d, n->where, "verifier: node '%s' writes '%s', which is not STATE", n->name,
                        g->tensors[t].name);
        ok = false;
      }
      for (int j = i + 1; j < g->n_nodes; j++)
        for (int m = 0; m < g->nodes[j].n_inputs; m++)
          if (g->nodes[j].inputs[m] == t &&
              !(kiln_op_get(g->nodes[j].op)->writes_inputs >> m & 1u)) {
            kiln_diag_error(d, n->where, "verifier: node '%s' writes '%s' before '%s' reads it",
                            n->name, g->tensors[t].name, g->nodes[j].name);
            ok = false;
          }
    }
  }
  return ok;
}

bool kiln_graph_verify(kiln_graph *g, kiln_diag *d) {
  return check_refs(g, d) && check_writes(g, d) && check_shapes(g, d);
}
