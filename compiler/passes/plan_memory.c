// Memory planning.
//  1. Weights: every param gets a 64-byte aligned offset in one payload, and the payload is built
//     (it becomes NAME.weights or an embedded array).
//  2. Activations: every value that is not a model output lives in one arena. A value is live from
//     the node that produces it to the last node that reads it (inclusive); two values may share
//     bytes only if their live ranges are disjoint. Placement is greedy by size, largest first,
//     each at the lowest offset that overlaps no live-overlapping value already placed (the
//     "greedy by size" heuristic of TFLite's and ggml's allocators). The arena size is the
//     highest end, known at compile time.
#include <stdlib.h>
#include <string.h>

#include "../../runtime/kiln_runtime.h"
#include "pipeline.h"

enum { ALIGN = 64 };

static int64_t align_up(int64_t v) { return (v + ALIGN - 1) / ALIGN * ALIGN; }

static int64_t tensor_bytes(const kiln_tensor *t) {
  return kiln_shape_numel(&t->shape) * (int64_t)kiln_dtype_size(t->dtype);
}

static bool plan_weights(kiln_compilation *c, kiln_diag *d) {
  kiln_graph *g = c->g;
  int64_t size = 0;
  for (int i = 0; i < g->n_tensors; i++) {
    kiln_tensor *t = &g->tensors[i];
    if (t->kind != KILN_TENSOR_PARAM) continue;
    t->offset = size;
    size = align_up(size + tensor_bytes(t));
  }
  kiln_aligned_free(c->weights);
  c->weights = kiln_aligned_alloc((size_t)(size ? size : ALIGN));
  if (!c->weights) {
    kiln_diag_error(d, NULL, "cannot allocate %lld bytes of weights", (long long)size);
    return false;
  }
  memset(c->weights, 0, (size_t)(size ? size : ALIGN));
  for (int i = 0; i < g->n_tensors; i++) {
    kiln_tensor *t = &g->tensors[i];
    if (t->kind == KILN_TENSOR_PARAM)
      memcpy((char *)c->weights + t->offset, t->data, (size_t)tensor_bytes(t));
  }
  c->weights_bytes = size;
  return true;
}

typedef struct interval {
  int tensor;
  int first, last;  // node indices, inclusive
  int64_t bytes;
} interval;

static int by_size_desc(const void *a, const void *b) {
  const interval *x = a, *y = b;
  if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
  return x->tensor - y->tensor;  // deterministic
}

static bool overlaps(const interval *a, const interval *b) {
  return a->first <= b->last && b->first <= a->last;
}

// Lowest offset for iv that avoids every placed interval live at the same time.
static int64_t first_fit(const interval *iv, const interval *placed, int n_placed,
                         const kiln_graph *g) {
  int64_t offset = 0;
  for (bool moved = true; moved;) {
    moved = false;
    for (int j = 0; j < n_placed; j++) {
      if (!overlaps(iv, &placed[j])) continue;
      int64_t lo = g->tensors[placed[j].tensor].offset, hi = lo + align_up(placed[j].bytes);
      if (offset < hi && lo < offset + align_up(iv->bytes)) {
        offset = hi;
        moved = true;
      }
    }
  }
  return offset;
}

static int collect_intervals(const kiln_graph *g, interval *out) {
  int n = 0;
  for (int i = 0; i < g->n_tensors; i++) {
    const kiln_tensor *t = &g->tensors[i];
    g->tensors[i].offset = t->kind == KILN_TENSOR_PARAM ? t->offset : -1;
    if (t->kind != KILN_TENSOR_VALUE || t->is_output || t->producer < 0) continue;
    interval iv = {i, t->producer, t->producer, tensor_bytes(t)};
    for (int k = t->producer + 1; k < g->n_nodes; k++)
      for (int j = 0; j < g->nodes[k].n_inputs; j++)
        if (g->nodes[k].inputs[j] == i) iv.last = k;
    out[n++] = iv;
  }
  return n;
}

bool kiln_pass_plan_memory(kiln_compilation *c, kiln_diag *d, bool *changed) {
  if (!plan_weights(c, d)) return false;
  kiln_graph *g = c->g;
  interval *ivs = kiln_xcalloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof(interval));
  int n = collect_intervals(g, ivs);
  qsort(ivs, (size_t)n, sizeof(interval), by_size_desc);
  int64_t arena = 0;
  for (int i = 0; i < n; i++) {
    int64_t off = first_fit(&ivs[i], ivs, i, g);
    g->tensors[ivs[i].tensor].offset = off;
    if (off + align_up(ivs[i].bytes) > arena) arena = off + align_up(ivs[i].bytes);
  }
  free(ivs);
  c->arena_bytes = arena;
  *changed = true;
  return true;
}
