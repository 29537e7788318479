// select-layout: runs chains of convolutions in the channel-blocked layout NCHWc (c = the
// target's f32 lanes), where a register tile's output channels are adjacent in memory and are
// stored as whole vectors instead of being scattered one plane apart. A convolution is converted
// (to FusedConv with layout = "NCHWc", compiler/ops/nn/conv.c) when it can run blocked — 2-D, f32,
// one group or depthwise (group = C = M: a vector is c channels of one pixel,
// compiler/ops/nn/conv_depthwise.c), constant weights, input and output channels multiples of c
// — and it is part of a chain: its input comes from a converted convolution, or a convertible
// convolution reads its output (as input or residual). Reorders (compiler/ops/tensor/reorder.c)
// are placed only at the chain's borders and each planar tensor is blocked at most once, however
// many convolutions read it (a ResNet block's input feeds both its first conv and, as the
// residual, its last); the planar copy of a converted output is kept only where something still
// reads it (dce drops the rest). Values are unchanged: each output sums the same terms in the
// same order.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/op_internal.h"
#include "pipeline.h"

static bool constant(const kiln_tensor *t) {
  return !t || (t->kind == KILN_TENSOR_PARAM && t->data);
}

// How a convolution can run blocked: x and y NCHWc (BOTH); planar x, NCHWc y (OUT: C is no
// multiple of L, as a stem's 3 channels); NCHWc x, planar y (IN: M is none). A planar x costs the
// blocked kernel nothing (it broadcasts one x value at a time either way); a depthwise conv runs
// blocked only as BOTH (a vector is L channels of one pixel).
typedef enum { MODE_NONE, MODE_BOTH, MODE_OUT, MODE_IN } conv_mode;

static bool eligible(const kiln_graph *g, const kiln_node *n) {
  if (n->dead || (n->op != KILN_OP_Conv && n->op != KILN_OP_FusedConv)) return false;
  if (kiln_node_attr(n, "layout")) return false;  // already chosen
  const kiln_tensor *x = kiln_in(g, n, 0), *w = kiln_in(g, n, 1);
  if (x->shape.rank != 4 || x->dtype != KILN_F32 || w->dtype != KILN_F32) return false;
  return constant(w) && constant(kiln_in(g, n, 2));
}

static conv_mode capability(const kiln_graph *g, const kiln_node *n, int64_t L) {
  if (!eligible(g, n)) return MODE_NONE;
  int64_t C = kiln_in(g, n, 0)->shape.dim[1], M = kiln_out(g, n, 0)->shape.dim[1];
  int64_t group = kiln_attr_int(n, "group", 1);
  bool x_blocks = C % L == 0, y_blocks = M % L == 0;
  if (group > 1) return group == C && group == M && x_blocks ? MODE_BOTH : MODE_NONE;
  return x_blocks && y_blocks ? MODE_BOTH : y_blocks ? MODE_OUT : x_blocks ? MODE_IN : MODE_NONE;
}

static bool convertible(const kiln_graph *g, const kiln_node *n, int64_t L) {
  return capability(g, n, L) == MODE_BOTH;
}

// A MaxPool that can run on NCHWc (compiler/ops/nn/maxpool.c): 2-D, f32, no Indices output,
// channels a multiple of L. It is converted when its input comes from a convolution that writes
// NCHWc (a stem's MaxPool then reads and writes whole vectors, and no Reorder sits between the
// stem and the first blocked convolution).
static bool pool_eligible(const kiln_graph *g, const kiln_node *n, int64_t L) {
  if (n->dead || n->op != KILN_OP_MaxPool || kiln_node_attr(n, "layout")) return false;
  const kiln_tensor *x = kiln_in(g, n, 0);
  bool indices = n->n_outputs > 1 && n->outputs[1] >= 0;
  return !indices && x->shape.rank == 4 && x->dtype == KILN_F32 && x->shape.dim[1] % L == 0;
}

// reads[t]: a convertible convolution reads tensor t as its input or its residual, directly or
// through eligible MaxPools.
static bool *conv_reads(const kiln_graph *g, int64_t L) {
  bool *reads = calloc((size_t)g->n_tensors + 1, sizeof(bool));
  if (!reads) abort();
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (!convertible(g, n, L)) continue;
    reads[n->inputs[0]] = true;
    if (n->n_inputs > 3 && n->inputs[3] >= 0) reads[n->inputs[3]] = true;
  }
  for (int i = g->n_nodes - 1; i >= 0; i--)  // readers come after: a chain of pools in one sweep
    if (pool_eligible(g, &g->nodes[i], L) && reads[g->nodes[i].outputs[0]])
      reads[g->nodes[i].inputs[0]] = true;
  return reads;
}

// The mode chosen for x's producer (MODE_NONE: no convolution, or one left planar).
static conv_mode producer_mode(const kiln_graph *g, const kiln_node *n, const conv_mode *mode) {
  int p = kiln_in(g, n, 0)->producer;
  return p >= 0 ? mode[p] : MODE_NONE;
}

// BOTH when x comes from a convolution that writes NCHWc or a convertible convolution reads y;
// OUT when a convertible convolution reads y; IN when x comes from a convolution that writes NCHWc.
// Producers are decided first (the nodes are in topological order).
static conv_mode decide(const kiln_graph *g, const kiln_node *n, const bool *reads,
                        const conv_mode *mode, int64_t L) {
  if (pool_eligible(g, n, L)) {  // NCHWc in and out when its producer writes NCHWc
    conv_mode from = producer_mode(g, n, mode);
    return from == MODE_BOTH || from == MODE_OUT ? MODE_BOTH : MODE_NONE;
  }
  conv_mode can = capability(g, n, L);
  if (can == MODE_NONE) return MODE_NONE;
  conv_mode from = producer_mode(g, n, mode);
  bool x_blocked = from == MODE_BOTH || from == MODE_OUT, y_read = reads[n->outputs[0]];
  if (can == MODE_BOTH) return x_blocked || y_read ? MODE_BOTH : MODE_NONE;
  if (can == MODE_OUT) return y_read ? MODE_OUT : MODE_NONE;
  return x_blocked ? MODE_IN : MODE_NONE;  // MODE_IN
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

// Input i of node k (residual: 3) replaced by tensor t.
static void set_input(kiln_graph *g, int k, int i, int t) {
  kiln_node *n = &g->nodes[k];
  int *in = kiln_pool_alloc(&g->pool, sizeof(int) * (size_t)n->n_inputs);
  memcpy(in, n->inputs, sizeof(int) * (size_t)n->n_inputs);
  in[i] = t;
  n->inputs = in;
}

// Node k writes its output 0 blocked, whose planar form a Reorder rebuilds for other readers (dce
// drops it if there are none).
static void block_output(kiln_graph *g, int k, int *twin, int64_t L) {
  kiln_node *n = &g->nodes[k];
  int y = n->outputs[0], yb = blocked_tensor(g, y, L);
  int *out = kiln_pool_alloc(&g->pool, sizeof(int) * (size_t)n->n_outputs);
  memcpy(out, n->outputs, sizeof(int) * (size_t)n->n_outputs);
  out[0] = yb;
  n->outputs = out;
  twin[y] = yb;
  add_reorder(g, yb, y, "NCHW", L);
}

// A MaxPool reads x's blocked twin (its producer's NCHWc output) and writes NCHWc.
static void convert_pool(kiln_graph *g, int k, int *twin, int64_t L) {
  set_input(g, k, 0, twin_of(g, twin, g->nodes[k].inputs[0], L));
  add_layout_attrs(g, &g->nodes[k], "NCHWc", L);
  block_output(g, k, twin, L);
}

// Node k reads x and the residual in their blocked twins (made by a Reorder unless a blocked
// convolution wrote them) when `mode` says so, and writes its output blocked (block_output).
static void convert(kiln_graph *g, int k, int *twin, conv_mode mode, int64_t L) {
  if (g->nodes[k].op == KILN_OP_MaxPool) {
    convert_pool(g, k, twin, L);
    return;
  }
  bool x_blocked = mode != MODE_OUT, y_blocked = mode != MODE_IN;
  if (x_blocked) set_input(g, k, 0, twin_of(g, twin, g->nodes[k].inputs[0], L));
  if (y_blocked && g->nodes[k].n_inputs > 3 && g->nodes[k].inputs[3] >= 0)
    set_input(g, k, 3, twin_of(g, twin, g->nodes[k].inputs[3], L));
  g->nodes[k].op = KILN_OP_FusedConv;  // a Conv's attributes are FusedConv's without an epilogue
  add_layout_attrs(g, &g->nodes[k], y_blocked ? "NCHWc" : "NCHW", L);
  if (x_blocked != y_blocked) {
    kiln_attr *a = kiln_node_add_attr(g, &g->nodes[k], "input_layout", KILN_ATTR_STRING);
    a->s = kiln_pool_strdup(&g->pool, x_blocked ? "NCHWc" : "NCHW");
  }
  if (y_blocked) block_output(g, k, twin, L);
}

bool kiln_pass_select_layout(kiln_compilation *c, kiln_diag *d, bool *changed) {
  kiln_graph *g = c->g;
  int64_t L = c->f32_lanes > 0 ? c->f32_lanes : 16;
  bool *reads = conv_reads(g, L);
  conv_mode *mode = calloc((size_t)g->n_nodes + 1, sizeof(conv_mode));
  int *twin = malloc(sizeof(int) * ((size_t)g->n_tensors + 1));  // per original tensor
  if (!mode || !twin) abort();
  for (int t = 0; t < g->n_tensors; t++) twin[t] = -1;
  int n_nodes = g->n_nodes, converted = 0;
  for (int i = 0; i < n_nodes; i++)  // decide on the original graph
    mode[i] = decide(g, &g->nodes[i], reads, mode, L);
  for (int i = 0; i < n_nodes; i++)
    if (mode[i] != MODE_NONE) convert(g, i, twin, mode[i], L), converted++;
  free(reads);
  free(mode);
  free(twin);
  *changed = converted > 0;
  return !converted || kiln_graph_toposort(g, d);
}
