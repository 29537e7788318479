// Unstructured magnitude pruning: the weights of smallest |w| become zero, round(s * n) of them
// (n: the layer's elements, layer-wise; every prunable weight's together, global). Ties in |w|
// are broken by position (tensor, then flat index), so the result is deterministic. Each pruned
// weight gets a keep-mask (c->mask) that write.c can put in the graph for fine-tuning.
#include <math.h>
#include <stdlib.h>

#include "prune_internal.h"

int prune_by_magnitude(const void *pa, const void *pb) {
  const prune_ranked *a = pa, *b = pb;
  if (a->magnitude != b->magnitude) return a->magnitude < b->magnitude ? -1 : 1;
  if (a->group != b->group) return a->group < b->group ? -1 : 1;
  return a->index < b->index ? -1 : a->index > b->index;
}

// Appends |w| of every element of tensor t to r[*n].
static void rank_tensor(const kiln_graph *g, int t, prune_ranked *r, int64_t *n) {
  const kiln_tensor *w = &g->tensors[t];
  int64_t numel = kiln_shape_numel(&w->shape);
  for (int64_t i = 0; i < numel; i++)
    r[(*n)++] = (prune_ranked){.magnitude = fabs(kiln_tensor_get(w, i)), .group = t, .index = i};
}

static float *keep_mask(prune_ctx *c, int t) {
  if (!c->mask[t]) {
    int64_t numel = kiln_shape_numel(&c->g->tensors[t].shape);
    c->mask[t] = kiln_xmalloc((size_t)numel * sizeof(float) + 1);
    for (int64_t i = 0; i < numel; i++) c->mask[t][i] = 1;
  }
  return c->mask[t];
}

// Zeroes the first `count` ranked weights and records them in the masks.
static void zero_smallest(prune_ctx *c, prune_ranked *r, int64_t n, double sparsity) {
  int64_t count = (int64_t)nearbyint(sparsity * (double)n);
  qsort(r, (size_t)n, sizeof *r, prune_by_magnitude);
  for (int64_t i = 0; i < count; i++) {
    kiln_tensor *w = &c->g->tensors[r[i].group];
    kiln_element_set(w->data, (int)w->dtype, r[i].index, 0.0);
    keep_mask(c, r[i].group)[r[i].index] = 0;
    c->changed[r[i].group] = true;
  }
}

// Whether layer i's weight already appeared in an earlier layer (a shared weight).
static bool seen_before(const prune_ctx *c, int i) {
  for (int k = 0; k < i; k++)
    if (c->layers[k].weight == c->layers[i].weight) return true;
  return false;
}

bool prune_magnitude(prune_ctx *c) {
  int64_t total = 0;
  for (int i = 0; i < c->n_layers; i++)
    if (!seen_before(c, i)) total += c->layers[i].numel_before;
  prune_ranked *r = kiln_xmalloc((size_t)total * sizeof *r + 1);
  int64_t n = 0;
  for (int i = 0; i < c->n_layers; i++) {
    if (seen_before(c, i)) continue;
    if (c->o->scope == KILN_PRUNE_LAYERWISE) n = 0;
    rank_tensor(c->g, c->layers[i].weight, r, &n);
    if (c->o->scope == KILN_PRUNE_LAYERWISE) zero_smallest(c, r, n, c->o->sparsity);
  }
  if (c->o->scope == KILN_PRUNE_GLOBAL) zero_smallest(c, r, n, c->o->sparsity);
  free(r);
  return true;
}
