// Memory planning.
//  1. Weights: every param gets a 64-byte aligned offset in one payload, and the payload is built
//     (it becomes NAME.weights or an embedded array).
//  2. Activations: every value that is not a model output lives in one arena. Values the in-place
//     pass paired (in_place_of) form one storage class and share bytes. A
//     value is live from the node that produces it to the last node that reads it (inclusive); two
//     values may share bytes only if their live ranges are disjoint. Placement is greedy by size,
//     largest first, each at the lowest offset that overlaps no live-overlapping value already
//     placed (the "greedy by size" heuristic of TFLite's and ggml's allocators). The arena size is
//     the highest end, known at compile time.
#include <stdlib.h>
#include <string.h>

#include "../../runtime/kiln_runtime.h"
#include "../ops/op.h"
#include "pipeline.h"

enum { ALIGN = 64 };

static int64_t align_up(int64_t v) { return (v + ALIGN - 1) / ALIGN * ALIGN; }

static int64_t tensor_bytes(const kiln_tensor *t) {
  return kiln_shape_numel(&t->shape) * (int64_t)kiln_dtype_size(t->dtype);
}

// Params and STATE tensors (mutable params: training) live in the weights payload.
static bool in_payload(const kiln_tensor *t) {
  return t->kind == KILN_TENSOR_PARAM || t->kind == KILN_TENSOR_STATE;
}

static bool plan_weights(kiln_compilation *c, kiln_diag *d) {
  kiln_graph *g = c->g;
  int64_t size = 0;
  for (int i = 0; i < g->n_tensors; i++) {
    kiln_tensor *t = &g->tensors[i];
    if (!in_payload(t)) continue;
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
    if (in_payload(t)) memcpy((char *)c->weights + t->offset, t->data, (size_t)tensor_bytes(t));
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

// A value's live range: from the node producing it to the last node reading it.
static interval live_range(const kiln_graph *g, int t) {
  interval iv = {t, g->tensors[t].producer, g->tensors[t].producer, tensor_bytes(&g->tensors[t])};
  for (int k = iv.first + 1; k < g->n_nodes; k++)
    for (int j = 0; j < g->nodes[k].n_inputs; j++)
      if (g->nodes[k].inputs[j] == t) iv.last = k;
  return iv;
}

static bool in_arena(const kiln_tensor *t) {
  return t->kind == KILN_TENSOR_VALUE && !t->is_output && t->producer >= 0;
}

// The storage class of t: follow in_place_of links to the tensor that owns the bytes.
static int owner(const kiln_graph *g, int t) {
  for (int hops = 0; g->tensors[t].in_place_of >= 0 && hops < g->n_tensors; hops++)
    t = g->tensors[t].in_place_of;
  return t;
}

// One interval per storage class, spanning its members' ranges.
static int collect_intervals(const kiln_graph *g, interval *out, int *class_of) {
  interval *range = kiln_xcalloc((size_t)g->n_tensors + 1, sizeof(interval));
  for (int t = 0; t < g->n_tensors; t++) {
    class_of[t] = in_arena(&g->tensors[t]) ? owner(g, t) : t;
    g->tensors[t].offset = in_payload(&g->tensors[t]) ? g->tensors[t].offset : -1;
    if (in_arena(&g->tensors[t])) range[t] = live_range(g, t);
  }
  int n = 0;
  for (int t = 0; t < g->n_tensors; t++) {
    if (!in_arena(&g->tensors[t])) continue;
    interval *iv = NULL;
    for (int j = 0; j < n && !iv; j++)
      if (out[j].tensor == class_of[t]) iv = &out[j];
    if (!iv) {
      out[n] = range[t];
      out[n++].tensor = class_of[t];
      continue;
    }
    if (range[t].first < iv->first) iv->first = range[t].first;
    if (range[t].last > iv->last) iv->last = range[t].last;
    if (range[t].bytes > iv->bytes) iv->bytes = range[t].bytes;
  }
  free(range);
  return n;
}

bool kiln_pass_plan_memory(kiln_compilation *c, kiln_diag *d, bool *changed) {
  if (!plan_weights(c, d)) return false;
  kiln_graph *g = c->g;
  interval *ivs = kiln_xcalloc((size_t)g->n_tensors + 1, sizeof(interval));
  int *class_of = kiln_xcalloc((size_t)g->n_tensors + 1, sizeof(int));
  int n = collect_intervals(g, ivs, class_of);
  qsort(ivs, (size_t)n, sizeof(interval), by_size_desc);
  int64_t arena = 0;
  for (int i = 0; i < n; i++) {
    int64_t off = first_fit(&ivs[i], ivs, i, g);
    g->tensors[ivs[i].tensor].offset = off;  // the class representative
    if (off + align_up(ivs[i].bytes) > arena) arena = off + align_up(ivs[i].bytes);
  }
  for (int t = 0; t < g->n_tensors; t++)
    if (in_arena(&g->tensors[t])) g->tensors[t].offset = g->tensors[class_of[t]].offset;
  free(class_of);
  free(ivs);
  c->arena_bytes = arena;
  *changed = true;
  return true;
}
