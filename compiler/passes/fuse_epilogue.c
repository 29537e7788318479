// fuse-epilogue: folds the elementwise tail of a convolution into its store. A Conv whose output
// is read only by
//   Relu                  becomes FusedConv(activation = "Relu")
//   Add with a same-shape other operand z (the residual of a ResNet block)
//                         becomes FusedConv(x, w, b, z)
// and a FusedConv without an activation followed by a Relu takes the Relu too, so
// Conv -> Add -> Relu becomes one FusedConv(x, w, b, z, activation = "Relu"): the sums are
// computed, shifted by z and clamped while they are still in registers, and the intermediate
// tensors disappear. The fused node takes the place of the last node of the chain (every input,
// z included, is computed by then) and keeps the Conv's name; the Conv node is dropped.
// FusedConv is defined in compiler/ops/nn/conv.c.
// A Clip with constant bounds (ReLU6) after a convolution becomes its activation too:
// FusedConv(activation = "Clip", activation_params = [min, max]).
// A Gemm whose output is read only by an elementwise activation without attributes (Relu, Tanh,
// Sigmoid, ...: kiln_gemm_activation_ok) becomes FusedGemm(activation = that op's name), defined
// in compiler/ops/nn/gemm.c: the activation is applied to each sum before it is stored.
#include <string.h>

#include "../ops/op.h"
#include "pipeline.h"

static int readers_of(const kiln_graph *g, int tensor) {
  int count = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->n_inputs; k++) count += n->inputs[k] == tensor;
  }
  return count;
}

static bool has_activation(const kiln_node *n) { return kiln_node_attr(n, "activation") != NULL; }
static bool has_residual(const kiln_node *n) { return n->n_inputs > 3 && n->inputs[3] >= 0; }

// The convolution producing tensor t if its epilogue can still take `what` (an activation, or a
// residual: a residual must come before the activation); NULL otherwise.
static kiln_node *fusable_conv(kiln_graph *g, int t, bool residual) {
  const kiln_tensor *x = &g->tensors[t];
  if (x->producer < 0 || x->is_output || x->kind != KILN_TENSOR_VALUE) return NULL;
  kiln_node *conv = &g->nodes[x->producer];
  if (conv->dead || conv->n_outputs != 1 || readers_of(g, t) != 1) return NULL;
  if (conv->op == KILN_OP_Conv) return conv;
  if (conv->op != KILN_OP_FusedConv || has_activation(conv)) return NULL;
  return residual && has_residual(conv) ? NULL : conv;
}

// Moves conv (or gemm; now fused into op) into the slot of `tail`, whose output it takes over.
static void replace_tail(kiln_graph *g, kiln_node *conv, kiln_node *tail, int op) {
  int out = tail->outputs[0];
  kiln_node fused = *conv;
  fused.op = op;
  fused.outputs = kiln_pool_alloc(&g->pool, sizeof(int));
  fused.outputs[0] = out;
  fused.where = tail->where;
  *tail = fused;
  g->tensors[out].producer = (int)(tail - g->nodes);
  conv->dead = true;
}

// Relu(conv(...)) -> FusedConv(..., activation = "Relu")
static bool fuse_relu(kiln_graph *g, kiln_node *relu) {
  kiln_node *conv = fusable_conv(g, relu->inputs[0], false);
  if (!conv) return false;
  kiln_attr *a = kiln_node_add_attr(g, conv, "activation", KILN_ATTR_STRING);
  a->s = kiln_pool_strdup(&g->pool, "Relu");
  replace_tail(g, conv, relu, KILN_OP_FusedConv);
  return true;
}

// The constant value of Clip's bound k (1: min, 2: max; an input or an attribute) in *v.
static bool clip_bound(const kiln_graph *g, const kiln_node *clip, int k, double *v) {
  static const char *const names[3] = {NULL, "min", "max"};
  const kiln_attr *a = kiln_node_attr(clip, names[k]);
  if (a) return *v = a->f, true;
  if (k >= clip->n_inputs || clip->inputs[k] < 0) return false;
  const kiln_tensor *t = &g->tensors[clip->inputs[k]];
  if (t->kind != KILN_TENSOR_PARAM || !t->data || kiln_shape_numel(&t->shape) != 1) return false;
  *v = kiln_tensor_get(t, 0);
  return true;
}

// Clip(conv(...), min, max) with both bounds constant -> FusedConv(..., activation = "Clip")
static bool fuse_clip(kiln_graph *g, kiln_node *clip) {
  double lo, hi;
  if (!clip_bound(g, clip, 1, &lo) || !clip_bound(g, clip, 2, &hi)) return false;
  kiln_node *conv = fusable_conv(g, clip->inputs[0], false);
  if (!conv) return false;
  kiln_attr *a = kiln_node_add_attr(g, conv, "activation", KILN_ATTR_STRING);
  a->s = kiln_pool_strdup(&g->pool, "Clip");
  a = kiln_node_add_attr(g, conv, "activation_params", KILN_ATTR_FLOATS);
  a->count = 2;
  a->floats = kiln_pool_alloc(&g->pool, 2 * sizeof(double));
  a->floats[0] = lo, a->floats[1] = hi;
  replace_tail(g, conv, clip, KILN_OP_FusedConv);
  return true;
}

// Add(conv(...), z) or Add(z, conv(...)) with z of the output's shape -> FusedConv(x, w, b, z)
static bool fuse_add(kiln_graph *g, kiln_node *add) {
  const kiln_tensor *y = &g->tensors[add->outputs[0]];
  for (int side = 0; side < 2; side++) {
    int t = add->inputs[side], z = add->inputs[1 - side];
    const kiln_tensor *zt = &g->tensors[z];
    if (t == z || zt->dtype != y->dtype || !kiln_shape_equal(&zt->shape, &y->shape)) continue;
    if (!kiln_shape_equal(&g->tensors[t].shape, &y->shape)) continue;
    kiln_node *conv = fusable_conv(g, t, true);
    if (!conv) continue;
    int in[4] = {conv->inputs[0], conv->inputs[1], conv->n_inputs > 2 ? conv->inputs[2] : -1, z};
    conv->inputs = kiln_pool_alloc(&g->pool, sizeof in);
    memcpy(conv->inputs, in, sizeof in);
    conv->n_inputs = 4;
    replace_tail(g, conv, add, KILN_OP_FusedConv);
    return true;
  }
  return false;
}

// act(Gemm(...)) -> FusedGemm(..., activation = act's op)
static bool fuse_gemm_activation(kiln_graph *g, kiln_node *act) {
  const kiln_tensor *x = &g->tensors[act->inputs[0]];
  if (x->producer < 0 || x->is_output || x->kind != KILN_TENSOR_VALUE) return false;
  kiln_node *gemm = &g->nodes[x->producer];
  if (gemm->dead || gemm->op != KILN_OP_Gemm || readers_of(g, act->inputs[0]) != 1) return false;
  if (!kiln_gemm_activation_ok(act->op)) return false;
  kiln_attr *a = kiln_node_add_attr(g, gemm, "activation", KILN_ATTR_STRING);
  a->s = kiln_pool_strdup(&g->pool, kiln_op_get(act->op)->name);
  replace_tail(g, gemm, act, KILN_OP_FusedGemm);
  return true;
}

bool kiln_pass_fuse_epilogue(kiln_compilation *c, kiln_diag *d, bool *changed) {
  (void)d;
  kiln_graph *g = c->g;
  int fused = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    if (n->dead || n->n_outputs != 1) continue;
    if (n->op == KILN_OP_Relu && n->n_inputs == 1 && fuse_relu(g, n))
      fused++;
    else if (n->n_inputs == 1 && n->inputs[0] >= 0)
      fused += fuse_gemm_activation(g, n);
    else if (n->op == KILN_OP_Clip && n->inputs[0] >= 0 && fuse_clip(g, n))
      fused++;
    else if (n->op == KILN_OP_Add && n->n_inputs == 2)
      fused += fuse_add(g, n);
  }
  if (fused) kiln_graph_compact(g);
  *changed = fused > 0;
  return true;
}
