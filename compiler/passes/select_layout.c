// select-layout: runs chains of convolutions in the channel-blocked layout NCHWc (c = the
// target's f32 lanes), where a register tile's output channels are adjacent in memory and are
// stored as whole vectors instead of being scattered one plane apart. A convolution is converted
// (to FusedConv with layout = "NCHWc", compiler/ops/nn/conv.c) when it can run blocked — 2-D, f32,
// one group, constant weights, input and output channels multiples of c — and it is part of a
// chain: its input comes from a converted convolution, or a convertible convolution reads its
// output (as input or residual). Reorders (compiler/ops/tensor/reorder.c) are placed only at the
// chain's borders and each planar tensor is blocked at most once, however many convolutions
// read it (a ResNet block's input feeds both its first conv and, as the residual, its last); the
// planar copy of a converted output is kept only where something still reads it (dce drops the
// rest). Values are unchanged: each output sums the same terms in the same order.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/op_internal.h"
#include "pipeline.h"

static bool constant(const kiln_tensor *t) {
  return !t || (t->kind == KILN_TENSOR_PARAM && t->data);
}

static bool convertible(const kiln_graph *g, const kiln_node *n, int64_t L) {
  if (n->dead || (n->op != KILN_OP_Conv && n->op != KILN_OP_FusedConv)) return false;
  if (kiln_node_attr(n, "layout")) return false;  // already chosen
  const kiln_tensor *x = kiln_in(g, n, 0), *w = kiln_in(g, n, 1), *y = kiln_out(g, n, 0);
  if (x->shape.rank != 4 || x->dtype != KILN_F32 || w->dtype != KILN_F32) return false;
  if (kiln_attr_int(n, "group", 1) != 1 || !constant(w) || !constant(kiln_in(g, n, 2)))
    return false;
  return x->shape.dim[1] % L == 0 && y->shape.dim[1] % L == 0;
}

// reads[t]: a convertible convolution reads tensor t as its input or its residual.
static bool *conv_reads(const kiln_graph *g, int64_t L) {
  bool *reads = calloc((size_t)g->n_tensors + 1, sizeof(bool));
  if (!reads) abort();
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (!convertible(g, n, L)) continue;
    reads[n->inputs[0]] = true;
    if (n->n_inputs > 3 && n->inputs[3] >= 0) reads[n->inputs[3]] = true;
  }
  return reads;
}

static bool in_chain(const kiln_graph *g, const kiln_node *n, const bool *reads, int64_t L) {
  const kiln_tensor *x = kiln_in(g, n, 0);
  bool from_conv = x->producer >= 0 && convertible(g, &g->nodes[x->producer], L);
  return from_conv || reads[n->outputs[0]];
}

static void add_layout_attrs(kiln_graph *g, kiln_node *n, const char *layout, int64_t L) {
  kiln_attr *a = kiln_node_add_attr(g, n, "layout", KILN_ATTR_STRING);
  a->s = kiln_pool_strdup(&g->pool, layout);
  a = kiln_node_add_attr(g, n, "lanes", KILN_ATTR_INT);
  a->i = L;
}

// A new tensor "<name>.nchw<L>c" for the blocked form of tensor t.
static int blocked_tensor(kiln_graph *g, int t, int64_t L) {
  char name[512];
  kiln_shape b = kiln_nchwc_shape(&g->tensors[t].shape, L);
  snprintf(name, sizeof(name), "%s.nchw%lldc", g->tensors[t].name, (long long)L);
  return kiln_graph_add_tensor(g, name, KILN_TENSOR_VALUE, KILN_F32, &b);
}

// Reorder(from) -> to, with `layout` the layout of `to`.
static void add_reorder(kiln_graph *g, int from, int to, const char *layout, int64_t L) {
  char name[512];
  snprintf(name, sizeof(name), "%s.reorder", g->tensors[to].name);
  int k = kiln_graph_add_node(g, KILN_OP_Reorder, name, 1, &from, 1, &to);
  add_layout_attrs(g, &g->nodes[k], layout, L);
  g->nodes[k].where = g->tensors[from].where;
}

// The blocked twin of planar tensor t: made once, by one Reorder.
static int twin_of(kiln_graph *g, int *twin, int t, int64_t L) {
  if (twin[t] >= 0) return twin[t];
  twin[t] = blocked_tensor(g, t, L);
  add_reorder(g, t, twin[t], "NCHWc", L);
  return twin[t];
}

// Node k reads and writes NCHWc; its planar output is rebuilt by a Reorder for other readers.
static void convert(kiln_graph *g, int k, int *twin, int64_t L) {
  int xb = twin_of(g, twin, g->nodes[k].inputs[0], L);
  int zb = g->nodes[k].n_inputs > 3 && g->nodes[k].inputs[3] >= 0
               ? twin_of(g, twin, g->nodes[k].inputs[3], L)
               : -1;
  int y = g->nodes[k].outputs[0], yb = blocked_tensor(g, y, L);
  kiln_node *n = &g->nodes[k];
  int *in = kiln_pool_alloc(&g->pool, sizeof(int) * (size_t)n->n_inputs);
  memcpy(in, n->inputs, sizeof(int) * (size_t)n->n_inputs);
  in[0] = xb;
  if (zb >= 0) in[3] = zb;
  n->inputs = in;
  n->outputs = kiln_pool_alloc(&g->pool, sizeof(int));
  n->outputs[0] = yb;
  n->op = KILN_OP_FusedConv;  // a Conv's attributes are FusedConv's without an epilogue
  add_layout_attrs(g, n, "NCHWc", L);
  twin[y] = yb;
  add_reorder(g, yb, y, "NCHW", L);
}

bool kiln_pass_select_layout(kiln_compilation *c, kiln_diag *d, bool *changed) {
  kiln_graph *g = c->g;
  int64_t L = c->f32_lanes > 0 ? c->f32_lanes : 16;
  bool *reads = conv_reads(g, L);
  bool *chosen = calloc((size_t)g->n_nodes + 1, sizeof(bool));
  int *twin = malloc(sizeof(int) * ((size_t)g->n_tensors + 1));  // per original tensor
  if (!chosen || !twin) abort();
  for (int t = 0; t < g->n_tensors; t++) twin[t] = -1;
  int n_nodes = g->n_nodes, converted = 0;
  for (int i = 0; i < n_nodes; i++)  // decide on the original graph
    chosen[i] = convertible(g, &g->nodes[i], L) && in_chain(g, &g->nodes[i], reads, L);
  for (int i = 0; i < n_nodes; i++)
    if (chosen[i]) convert(g, i, twin, L), converted++;
  free(reads);
  free(chosen);
  free(twin);
  *changed = converted > 0;
  return !converted || kiln_graph_toposort(g, d);
}
