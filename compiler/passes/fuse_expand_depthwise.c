// fuse-expand-depthwise: an inverted-bottleneck block's expansion and depthwise conv in one
// kernel. After select-layout, MobileNet-V2's blocks are
//   FusedConv 1x1 (C -> M, bias, ReLU6; writes NCHWc) -> e -> FusedConv depthwise (M, NCHWc) -> y
// and on large maps the expanded tensor e (6x wider than x) goes to memory and back: 4.8 MB at
// 112x112 with 96 channels, more than a core's L2. Where e is read only by the depthwise conv and
// holds at least MIN_EXPANDED_BYTES, the pair becomes one FusedExpandDepthwise(x, we, be, wd, bd)
// (compiler/ops/nn/expand_depthwise.c), which computes e band by band into a local array the
// depthwise conv reads while it is in cache; the results are bit-identical. The fused node takes
// the depthwise conv's slot, name and output; the expansion node is dropped.
// Smaller maps keep the two kernels: their e stays in L2 anyway, and the band's halo rows would be
// computed twice for nothing.
#include <stdlib.h>
#include <string.h>

#include "../ops/op.h"
#include "pipeline.h"

// The smallest expanded tensor worth fusing (MobileNet-V2: 4.8 MB at 112x112 and 1.8 MB at
// 56x56 fuse; 0.6 MB at 28x28 does not).
// The fused kernel keeps (kH - 1) * dh + 1 expanded rows of one channel block on each thread's
// stack: at most MAX_RING_BYTES (MobileNet-V2: 21 KB at 112 x 112).
enum { MIN_EXPANDED_BYTES = 1 << 20, MAX_RING_BYTES = 64 << 10 };

static bool all_equal(const kiln_node *n, const char *name, int64_t v) {
  const kiln_attr *a = kiln_node_attr(n, name);
  for (int i = 0; a && i < a->count; i++)
    if (a->ints[i] != v) return false;
  return true;
}

static bool is_const(const kiln_graph *g, const kiln_node *n, int i) {
  const kiln_tensor *t = kiln_in(g, n, i);
  return t && t->kind == KILN_TENSOR_PARAM && t->data && t->dtype == KILN_F32;
}

static bool plain_padding(const kiln_node *n) {
  const char *pad = kiln_attr_string(n, "auto_pad", "NOTSET");
  return strcmp(pad, "NOTSET") == 0 && !kiln_node_attr(n, "algo");
}

// A FusedConv writing NCHWc with lanes L, constant weights and bias, no residual.
static bool blocked_fused_conv(const kiln_graph *g, const kiln_node *n, int64_t L) {
  return !n->dead && n->op == KILN_OP_FusedConv && n->n_outputs == 1 && plain_padding(n) &&
         strcmp(kiln_attr_string(n, "layout", ""), "NCHWc") == 0 &&
         kiln_attr_int(n, "lanes", 0) == L && is_const(g, n, 1) && is_const(g, n, 2) &&
         !kiln_in(g, n, 3);
}

// A 2-D depthwise conv (group = M, w (M, 1, kH, kW)).
static bool depthwise(const kiln_graph *g, const kiln_node *n) {
  const kiln_tensor *w = kiln_in(g, n, 1);
  return w->shape.rank == 4 && w->shape.dim[1] == 1 && kiln_attr_int(n, "group", 1) > 1 &&
         kiln_attr_int(n, "group", 1) == w->shape.dim[0];
}

// A 1x1 conv, stride 1, no padding, one group.
static bool pointwise(const kiln_graph *g, const kiln_node *n) {
  const kiln_tensor *w = kiln_in(g, n, 1);
  return w->shape.rank == 4 && w->shape.dim[2] == 1 && w->shape.dim[3] == 1 &&
         kiln_attr_int(n, "group", 1) == 1 && all_equal(n, "strides", 1) && all_equal(n, "pads", 0);
}

// The bytes of the fused kernel's ring of expanded rows for depthwise conv dw (an upper bound:
// its input's width plus the kernel's reach on both sides).
static int64_t ring_bytes(const kiln_graph *g, const kiln_node *dw) {
  const kiln_tensor *e = kiln_in(g, dw, 0), *w = kiln_in(g, dw, 1);
  int64_t dil[2] = {1, 1};
  kiln_attr_ints(dw, "dilations", dil, 2);
  int64_t rows = (w->shape.dim[2] - 1) * dil[0] + 1;
  int64_t cols = e->shape.dim[3] + 2 * (w->shape.dim[3] - 1) * dil[1];
  return rows * cols * e->shape.dim[4] * (int64_t)sizeof(float);
}

// The expansion feeding depthwise conv dw, if the pair may fuse; NULL otherwise.
static kiln_node *expansion_of(kiln_graph *g, const kiln_node *dw, const int *readers) {
  int64_t L = kiln_attr_int(dw, "lanes", 0);
  if (!blocked_fused_conv(g, dw, L) || !depthwise(g, dw)) return NULL;
  const kiln_tensor *e = kiln_in(g, dw, 0);
  if (e->producer < 0 || e->is_output || e->kind != KILN_TENSOR_VALUE ||
      readers[dw->inputs[0]] != 1)
    return NULL;
  kiln_node *pw = &g->nodes[e->producer];
  if (!blocked_fused_conv(g, pw, L) || !pointwise(g, pw)) return NULL;
  int64_t bytes = kiln_shape_numel(&e->shape) * (int64_t)kiln_dtype_size(e->dtype);
  return bytes >= MIN_EXPANDED_BYTES && ring_bytes(g, dw) <= MAX_RING_BYTES ? pw : NULL;
}

static void copy_attr(kiln_graph *g, kiln_node *to, const kiln_attr *a, const char *name) {
  kiln_attr *c = kiln_node_add_attr(g, to, name, a->type);
  const char *keep = c->name;
  *c = *a;
  c->name = keep;
}

// dw becomes FusedExpandDepthwise(pw's x, w, b, dw's w, b); pw is dropped.
static void fuse(kiln_graph *g, kiln_node *pw, kiln_node *dw) {
  kiln_node f = *dw;
  f.op = KILN_OP_FusedExpandDepthwise;
  f.n_attrs = 0, f.attrs = NULL;
  for (int i = 0; i < dw->n_attrs; i++)
    if (strcmp(dw->attrs[i].name, "input_layout") && strcmp(dw->attrs[i].name, "auto_pad"))
      copy_attr(g, &f, &dw->attrs[i], dw->attrs[i].name);
  kiln_attr *in = kiln_node_add_attr(g, &f, "input_layout", KILN_ATTR_STRING);
  in->s = kiln_pool_strdup(
      &g->pool, kiln_attr_string(pw, "input_layout", kiln_attr_string(pw, "layout", "")));
  const kiln_attr *act = kiln_node_attr(pw, "activation");
  const kiln_attr *params = kiln_node_attr(pw, "activation_params");
  if (act) copy_attr(g, &f, act, "expand_activation");
  if (params) copy_attr(g, &f, params, "expand_activation_params");
  f.inputs = kiln_pool_alloc(&g->pool, 5 * sizeof(int));
  int ins[5] = {pw->inputs[0], pw->inputs[1], pw->inputs[2], dw->inputs[1], dw->inputs[2]};
  memcpy(f.inputs, ins, sizeof ins);
  f.n_inputs = 5;
  *dw = f;
  pw->dead = true;
}

bool kiln_pass_fuse_expand_depthwise(kiln_compilation *c, kiln_diag *d, bool *changed) {
  (void)d;
  kiln_graph *g = c->g;
  int *readers = kiln_reader_counts(g);
  int fused = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    kiln_node *pw = expansion_of(g, &g->nodes[i], readers);
    if (pw) fuse(g, pw, &g->nodes[i]), fused++;
  }
  free(readers);
  if (fused) kiln_graph_compact(g);
  *changed = fused > 0;
  return true;
}
