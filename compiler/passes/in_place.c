// In-place reuse: an elementwise node may write its output over an input of the same size that
// dies at that node — out[i] depends only on in[i], so each element is read before it is
// overwritten. The pass records the pairing (tensor.in_place_of); plan-memory gives the pair one
// storage class, so chains of activations (Conv -> Relu -> Add ...) share one buffer.
#include "../ops/op.h"
#include "pipeline.h"

static bool in_arena(const kiln_tensor *t) {
  return t->kind == KILN_TENSOR_VALUE && !t->is_output && t->producer >= 0;
}

// Index of the last node reading t.
static int last_use(const kiln_graph *g, int t) {
  int last = g->tensors[t].producer;
  for (int k = last + 1; k < g->n_nodes; k++)
    for (int j = 0; j < g->nodes[k].n_inputs; j++)
      if (g->nodes[k].inputs[j] == t) last = k;
  return last;
}

static bool elementwise(const kiln_node *n) {
  kiln_fuse_kind kind = kiln_op_get(n->op)->fuse;
  return n->n_outputs == 1 && (kind == KILN_FUSE_ELEMENTWISE || kind == KILN_FUSE_BROADCAST);
}

// An input of node i that its output may overwrite, or -1.
static int reusable_input(const kiln_graph *g, int i) {
  const kiln_node *n = &g->nodes[i];
  const kiln_tensor *out = kiln_out(g, n, 0);
  for (int k = 0; k < n->n_inputs; k++) {
    int t = n->inputs[k];
    if (t < 0 || !in_arena(&g->tensors[t]) || last_use(g, t) != i) continue;
    if (kiln_shape_equal(&g->tensors[t].shape, &out->shape) &&
        kiln_dtype_size(g->tensors[t].dtype) == kiln_dtype_size(out->dtype))
      return t;
  }
  return -1;
}

bool kiln_pass_in_place(kiln_compilation *c, kiln_diag *d, bool *changed) {
  (void)d;
  kiln_graph *g = c->g;
  *changed = false;
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (!elementwise(n) || !in_arena(kiln_out(g, n, 0))) continue;
    int t = reusable_input(g, i);
    if (t < 0) continue;
    kiln_out(g, n, 0)->in_place_of = t;
    *changed = true;
  }
  return true;
}
