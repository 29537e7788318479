// Structured filter pruning: per Conv or Gemm layer, the round(s * M) output filters (conv output
// channels, Gemm output features) of smallest L1 norm are removed and the network shrinks with
// them: the layer's weight and bias, every BatchNormalization its output reaches through
// channel-wise ops (activations, pooling, Dropout), and the input channels of the Conv and Gemm
// layers that read it (through a Flatten, a Gemm's columns come in blocks of H*W per channel).
// A layer whose output reaches anything else (a residual Add, a Concat, a graph output) is
// skipped with the reason. Layers are visited in graph order, so a layer's norms are taken after
// its own input channels were sliced by the layer before it.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/op.h"
#include "prune_internal.h"

enum { MAX_SITES = 64 };

typedef enum { SITE_BATCHNORM, SITE_CONV_INPUT, SITE_GEMM_INPUT } site_kind;

// A node downstream of the layer whose params are sliced along with its filters.
typedef struct rewrite_site {
  int node;
  site_kind kind;
  int64_t inner;  // consecutive features per filter: H*W after a Flatten, 1 otherwise
} rewrite_site;

typedef struct reach {
  rewrite_site site[MAX_SITES];
  int n;
  const char *why_not;  // in the graph's pool
} reach;

static const char *op_name(const kiln_node *n) { return kiln_op_get(n->op)->name; }

// Ops that act on each channel separately and keep axis 1 as the channel axis.
static bool is_channelwise(const kiln_node *n) {
  static const char *const ops[] = {"Relu",
                                    "Tanh",
                                    "Sigmoid",
                                    "LeakyRelu",
                                    "Elu",
                                    "Selu",
                                    "Celu",
                                    "Gelu",
                                    "HardSigmoid",
                                    "HardSwish",
                                    "Softplus",
                                    "Softsign",
                                    "Abs",
                                    "Neg",
                                    "Identity",
                                    "Dropout",
                                    "MaxPool",
                                    "AveragePool",
                                    "ThresholdedRelu",
                                    "GlobalAveragePool",
                                    "GlobalMaxPool",
                                    "Clip",
                                    NULL};
  for (int i = 0; ops[i]; i++)
    if (strcmp(op_name(n), ops[i]) == 0) return n->n_outputs == 1;
  return false;
}

// How many node inputs read tensor t.
static int uses(const kiln_graph *g, int t) {
  int count = 0;
  for (int i = 0; i < g->n_nodes; i++)
    for (int j = 0; !g->nodes[i].dead && j < g->nodes[i].n_inputs; j++)
      count += g->nodes[i].inputs[j] == t;
  return count;
}

// Input j of n is a param that nothing else reads (it may be rewritten for this node alone).
static bool own_param(const kiln_graph *g, const kiln_node *n, int j) {
  const kiln_tensor *t = kiln_in(g, n, j);
  return t && t->kind == KILN_TENSOR_PARAM && uses(g, n->inputs[j]) == 1;
}

static bool why_not(kiln_graph *g, reach *r, const char *fmt, const char *a, const char *b) {
  r->why_not = kiln_pool_printf(&g->pool, fmt, a, b);
  return false;
}

static bool add_site(kiln_graph *g, reach *r, int node, site_kind kind, int64_t inner) {
  if (r->n == MAX_SITES) return why_not(g, r, "its output reaches more than 64 layers%s%s", "", "");
  r->site[r->n++] = (rewrite_site){.node = node, .kind = kind, .inner = inner};
  return true;
}

static bool follow(kiln_graph *g, int t, int64_t inner, reach *r);
static const char not_rewritten[] =
    "its output feeds %s %s, which is not rewritten (docs/pruning.md)";

// Consumer n reads the channels (input 0): a rewrite site, a channel-wise op to look through, or
// a reason to skip the layer.
static bool follow_consumer(kiln_graph *g, int i, int64_t inner, reach *r) {
  const kiln_node *n = &g->nodes[i];
  const char *op = op_name(n);
  if (is_channelwise(n)) return follow(g, n->outputs[0], inner, r);
  if (strcmp(op, "BatchNormalization") == 0 && n->n_outputs == 1) {
    for (int j = 1; j <= 4; j++)
      if (!own_param(g, n, j))
        return why_not(g, r, "BatchNormalization %s: its params are not constants of its own%s",
                       n->name, "");
    return add_site(g, r, i, SITE_BATCHNORM, inner) && follow(g, n->outputs[0], inner, r);
  }
  if (strcmp(op, "Conv") == 0 && inner == 1 && kiln_attr_int(n, "group", 1) == 1 &&
      own_param(g, n, 1))
    return add_site(g, r, i, SITE_CONV_INPUT, 1);
  if (strcmp(op, "Gemm") == 0 && kiln_attr_int(n, "transA", 0) == 0 && own_param(g, n, 1))
    return add_site(g, r, i, SITE_GEMM_INPUT, inner);
  if (strcmp(op, "Flatten") == 0 && inner == 1 && kiln_attr_int(n, "axis", 1) == 1) {
    const kiln_shape *s = &kiln_in(g, n, 0)->shape;
    int64_t spatial = 1;
    for (int k = 2; k < s->rank; k++) spatial *= s->dim[k];
    return follow(g, n->outputs[0], spatial, r);
  }
  return why_not(g, r, not_rewritten, op, n->name);
}

// Every consumer of tensor t, which carries the layer's channels on axis 1.
static bool follow(kiln_graph *g, int t, int64_t inner, reach *r) {
  if (g->tensors[t].is_output)
    return why_not(g, r, "its output reaches the graph output %s%s", g->tensors[t].name, "");
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    for (int j = 0; !n->dead && j < n->n_inputs; j++) {
      if (n->inputs[j] != t) continue;
      if (j != 0) return why_not(g, r, not_rewritten, op_name(n), n->name);
      if (!follow_consumer(g, i, inner, r)) return false;
    }
  }
  return true;
}

// ---- Slicing params ----

static int64_t dims_product(const kiln_shape *s, int from, int to) {
  int64_t p = 1;
  for (int k = from; k < to; k++) p *= s->dim[k];
  return p;
}

// Keeps, along `axis` of param t, blocks keep[0..n_keep) of `inner` consecutive entries each.
static void slice_param(prune_ctx *c, int t, int axis, const int64_t *keep, int64_t n_keep,
                        int64_t inner) {
  kiln_tensor *p = &c->g->tensors[t];
  int64_t outer = dims_product(&p->shape, 0, axis), dim = p->shape.dim[axis];
  int64_t rest = dims_product(&p->shape, axis + 1, p->shape.rank), new_dim = n_keep * inner;
  size_t elem = kiln_dtype_size(p->dtype), block = (size_t)(inner * rest) * elem;
  char *dst = kiln_pool_alloc(&c->g->pool, (size_t)(outer * new_dim * rest) * elem + 1);
  const char *src = p->data;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t k = 0; k < n_keep; k++)
      memcpy(dst + (size_t)((o * new_dim + k * inner) * rest) * elem,
             src + (size_t)((o * dim + keep[k] * inner) * rest) * elem, block);
  p->data = dst;
  p->shape.dim[axis] = new_dim;
  c->changed[t] = true;
}

// ---- One layer ----

// The weight's axis that indexes output filters: Conv 0, Gemm 0 with transB, else 1.
static int filter_axis(const kiln_node *n) {
  return strcmp(op_name(n), "Gemm") == 0 && kiln_attr_int(n, "transB", 0) == 0 ? 1 : 0;
}

// Whether the layer itself can lose filters; else sets l->skipped.
static bool layer_is_prunable(prune_ctx *c, prune_layer *l, reach *r) {
  kiln_graph *g = c->g;
  const kiln_node *n = &g->nodes[l->node];
  const kiln_tensor *bias = kiln_in(g, n, 2);
  int64_t filters = g->tensors[l->weight].shape.dim[filter_axis(n)];
  if (strcmp(l->op, "MatMul") == 0)
    why_not(g, r, "MatMul: filter pruning rewrites Conv and Gemm layers%s%s", "", "");
  else if (strcmp(l->op, "Conv") == 0 && kiln_attr_int(n, "group", 1) != 1)
    why_not(g, r, "a grouped convolution%s%s", "", "");
  else if (n->n_outputs != 1 || uses(g, l->weight) != 1)
    why_not(g, r, "its weight is shared with another node%s%s", "", "");
  else if (bias && (!own_param(g, n, 2) || kiln_shape_numel(&bias->shape) != filters ||
                    bias->shape.dim[bias->shape.rank - 1] != filters))
    why_not(g, r, "its bias is not a constant vector of its own%s%s", "", "");
  else
    follow(g, n->outputs[0], 1, r);
  l->skipped = r->why_not;
  return !r->why_not;
}

static double filter_l1(const kiln_tensor *w, int axis, int64_t f) {
  int64_t outer = dims_product(&w->shape, 0, axis), dim = w->shape.dim[axis];
  int64_t rest = dims_product(&w->shape, axis + 1, w->shape.rank);
  double sum = 0;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t k = 0; k < rest; k++) sum += fabs(kiln_tensor_get(w, (o * dim + f) * rest + k));
  return sum;
}

static int by_index(const void *pa, const void *pb) {
  int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
  return a < b ? -1 : a > b;
}

// The filters kept: all but the `drop` of smallest L1 norm, in ascending order, into keep[].
static int64_t choose_filters(const kiln_tensor *w, int axis, int64_t drop, int64_t *keep) {
  int64_t m = w->shape.dim[axis];
  prune_ranked *r = kiln_xmalloc((size_t)m * sizeof *r);
  for (int64_t f = 0; f < m; f++)
    r[f] = (prune_ranked){.magnitude = filter_l1(w, axis, f), .index = f};
  qsort(r, (size_t)m, sizeof *r, prune_by_magnitude);
  for (int64_t f = drop; f < m; f++) keep[f - drop] = r[f].index;
  free(r);
  qsort(keep, (size_t)(m - drop), sizeof *keep, by_index);
  return m - drop;
}

static void rewrite_site_params(prune_ctx *c, const rewrite_site *s, const int64_t *keep,
                                int64_t n_keep) {
  const kiln_node *n = &c->g->nodes[s->node];
  if (s->kind == SITE_BATCHNORM) {
    for (int j = 1; j <= 4; j++) slice_param(c, n->inputs[j], 0, keep, n_keep, s->inner);
  } else if (s->kind == SITE_CONV_INPUT) {
    slice_param(c, n->inputs[1], 1, keep, n_keep, 1);
  } else {  // Gemm: B's input-feature axis is 1 with transB, else 0
    int axis = kiln_attr_int(n, "transB", 0) ? 1 : 0;
    slice_param(c, n->inputs[1], axis, keep, n_keep, s->inner);
  }
}

static void prune_layer_filters(prune_ctx *c, prune_layer *l, const reach *r) {
  const kiln_node *n = &c->g->nodes[l->node];
  int axis = filter_axis(n);
  const kiln_tensor *w = &c->g->tensors[l->weight];
  int64_t m = w->shape.dim[axis];
  int64_t drop = (int64_t)nearbyint(c->o->sparsity * (double)m);
  if (drop > m - 1) drop = m - 1;
  l->filters_before = l->filters_after = m;
  if (drop == 0) return;
  int64_t *keep = kiln_xmalloc((size_t)m * sizeof *keep);
  int64_t n_keep = choose_filters(w, axis, drop, keep);
  slice_param(c, l->weight, axis, keep, n_keep, 1);
  const kiln_tensor *bias = kiln_in(c->g, n, 2);
  if (bias) slice_param(c, n->inputs[2], bias->shape.rank - 1, keep, n_keep, 1);
  for (int i = 0; i < r->n; i++) rewrite_site_params(c, &r->site[i], keep, n_keep);
  l->filters_after = n_keep;
  free(keep);
}

bool prune_filters(prune_ctx *c) {
  int pruned = 0;
  for (int i = 0; i < c->n_layers; i++) {
    prune_layer *l = &c->layers[i];
    reach r = {.n = 0};
    if (!layer_is_prunable(c, l, &r)) continue;
    prune_layer_filters(c, l, &r);
    pruned++;
  }
  if (pruned) return true;
  kiln_diag_error(c->d, NULL, "nothing to prune by filters: every layer was skipped:");
  for (int i = 0; i < c->n_layers; i++)
    fprintf(stderr, "  %s (%s): %s\n", c->layers[i].name, c->layers[i].op, c->layers[i].skipped);
  return false;
}
