// fold-batchnorm: a BatchNormalization (inference) fed by a Conv with constant weights, where the
// BN is the Conv output's only reader, is folded into the Conv. Per output channel o, with
// s[o] = scale[o] / sqrt(var[o] + epsilon):
//   W'[o, ...] = W[o, ...] * s[o]      b'[o] = (b[o] - mean[o]) * s[o] + B[o]   (b = 0 if absent)
// The folded weights are new params (the old ones may be shared); the Conv writes the BN's output
// tensor and the BN node is dropped.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../runtime/kiln_runtime.h"
#include "../ops/op.h"
#include "pipeline.h"

static bool is_constant(const kiln_tensor *t) {
  return t && t->kind == KILN_TENSOR_PARAM && t->data &&
         (t->dtype == KILN_F32 || t->dtype == KILN_F64);
}

static int readers_of(const kiln_graph *g, int tensor) {
  int count = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->n_inputs; k++) count += n->inputs[k] == tensor;
  }
  return count;
}

// The Conv node whose output bn reads, if the pair can be folded; NULL otherwise.
static kiln_node *foldable_conv(const kiln_graph *g, const kiln_node *bn) {
  if (bn->n_outputs != 1 || kiln_attr_int(bn, "training_mode", 0) != 0) return NULL;
  for (int k = 1; k < 5; k++)
    if (!is_constant(kiln_in(g, bn, k))) return NULL;
  const kiln_tensor *x = kiln_in(g, bn, 0);
  if (!x || x->producer < 0 || x->is_output || x->shape.rank != 4) return NULL;
  kiln_node *conv = &g->nodes[x->producer];
  if (conv->dead || conv->op != KILN_OP_Conv || conv->n_outputs != 1) return NULL;
  const kiln_tensor *w = kiln_in(g, conv, 1), *b = kiln_in(g, conv, 2);
  if (!is_constant(w) || (b && !is_constant(b))) return NULL;
  if (readers_of(g, conv->outputs[0]) != 1) return NULL;
  return conv;
}

// A new param named "<base>.<suffix>" (numbered if taken), zero-filled.
static int new_param(kiln_graph *g, const char *base, const char *suffix, kiln_dtype dtype,
                     kiln_shape shape) {
  char name[512];
  snprintf(name, sizeof name, "%s.%s", base, suffix);
  for (int i = 2; kiln_graph_find_tensor(g, name) >= 0; i++)
    snprintf(name, sizeof name, "%s.%s%d", base, suffix, i);
  int t = kiln_graph_add_tensor(g, name, KILN_TENSOR_PARAM, dtype, &shape);
  size_t bytes = (size_t)kiln_shape_numel(&shape) * kiln_dtype_size(dtype);
  g->tensors[t].data = kiln_pool_alloc(&g->pool, bytes ? bytes : 1);
  return t;
}

// Rewrites conv (reading W, b) and bn into one Conv writing bn's output.
static void fold(kiln_graph *g, kiln_node *conv, kiln_node *bn) {
  double eps = kiln_attr_float(bn, "epsilon", 1e-5);
  const kiln_tensor *w = kiln_in(g, conv, 1);  // (M, C/group, kH, kW)
  int64_t channels = w->shape.dim[0], per_channel = kiln_shape_numel(&w->shape) / channels;
  kiln_shape bias_shape = {.rank = 1, .dim = {channels}};
  // Adding tensors may move g->tensors: indices from here on.
  int w_idx = conv->inputs[1], b_idx = conv->n_inputs > 2 ? conv->inputs[2] : -1;
  const char *base = conv->name ? conv->name : g->tensors[w_idx].name;
  int nw = new_param(g, base, "w_bn", w->dtype, w->shape);
  int nb = new_param(g, base, "b_bn", g->tensors[w_idx].dtype, bias_shape);
  const kiln_tensor *scale = kiln_in(g, bn, 1), *shift = kiln_in(g, bn, 2),
                    *mean = kiln_in(g, bn, 3), *var = kiln_in(g, bn, 4);
  const kiln_tensor *old_w = &g->tensors[w_idx], *old_b = b_idx >= 0 ? &g->tensors[b_idx] : NULL;
  kiln_tensor *tw = &g->tensors[nw], *tb = &g->tensors[nb];
  for (int64_t o = 0; o < channels; o++) {
    double s = kiln_tensor_get(scale, o) / sqrt(kiln_tensor_get(var, o) + eps);
    for (int64_t i = o * per_channel; i < (o + 1) * per_channel; i++)
      kiln_element_set(tw->data, (int)tw->dtype, i, kiln_tensor_get(old_w, i) * s);
    double bias = old_b ? kiln_tensor_get(old_b, o) : 0;
    kiln_element_set(tb->data, (int)tb->dtype, o,
                     (bias - kiln_tensor_get(mean, o)) * s + kiln_tensor_get(shift, o));
  }
  int in[3] = {conv->inputs[0], nw, nb};
  conv->inputs = kiln_pool_alloc(&g->pool, sizeof in);
  for (int k = 0; k < 3; k++) conv->inputs[k] = in[k];
  conv->n_inputs = 3;
  conv->outputs[0] = bn->outputs[0];
  g->tensors[bn->outputs[0]].producer = (int)(conv - g->nodes);
  bn->dead = true;
}

bool kiln_pass_fold_batchnorm(kiln_compilation *c, kiln_diag *d, bool *changed) {
  (void)d;
  kiln_graph *g = c->g;
  int folded = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    kiln_node *bn = &g->nodes[i];
    if (bn->dead || bn->op != KILN_OP_BatchNormalization) continue;
    kiln_node *conv = foldable_conv(g, bn);
    if (!conv) continue;
    fold(g, conv, bn);
    folded++;
  }
  if (folded) kiln_graph_compact(g);
  *changed = folded > 0;
  return true;
}
