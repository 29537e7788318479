// What the parts of `kiln prune` share: the layers found in the model, the pruning context, and
// the steps (magnitude.c, filters.c, write.c, report.c) that prune.c runs in order.
#ifndef KILN_PRUNE_INTERNAL_H
#define KILN_PRUNE_INTERNAL_H

#include <json-c/json.h>
#include <stdio.h>

#include "../../ir/graph.h"
#include "../../runtime/kiln_runtime.h"
#include "prune.h"

// A Conv, Gemm or MatMul node with a constant float weight.
typedef struct prune_layer {
  int node;          // index in the loaded graph
  const char *name;  // the node's name
  const char *op;
  int weight;              // the weight param's tensor index
  int64_t numel_before;    // weight elements
  int64_t numel_after;     // after structured pruning (numel_before otherwise)
  int64_t nonzero_after;   // non-zero weight elements after pruning
  int64_t flops_before;    // the node's FLOPs (compiler/ops/op.h `flops`)
  int64_t flops_after;     // in the pruned model, as reloaded
  int64_t filters_before;  // structured: output filters (conv channels, Gemm rows)
  int64_t filters_after;
  const char *skipped;  // structured: why the layer was left alone (in the graph's pool), or NULL
} prune_layer;

typedef struct prune_ctx {
  const kiln_prune_options *o;
  kiln_graph *g;  // loaded with its weights; pruning rewrites params' data and shapes in place
  kiln_diag *d;
  prune_layer *layers;
  int n_layers;
  bool *changed;  // [tensor]: a param whose data or shape was rewritten
  float **mask;   // [tensor]: unstructured pruning's keep-mask (1 kept, 0 pruned), or NULL
  // The whole model: learned weights (role `weight`), how many are not zero, and FLOPs.
  struct {
    int64_t params, nonzero, flops;
  } before, after;
} prune_ctx;

// A weight (or a filter) ranked by magnitude; ties are broken by group (the tensor) and then by
// index, so that the order, and so the pruning, is deterministic.
typedef struct prune_ranked {
  double magnitude;
  int group;
  int64_t index;
} prune_ranked;
// qsort comparator: ascending magnitude, then group, then index.
int prune_by_magnitude(const void *a, const void *b);

// Unstructured magnitude pruning of every layer's weight (layer-wise or global). False after
// reporting when nothing could be pruned.
bool prune_magnitude(prune_ctx *c);
// Structured filter pruning; layers that cannot be shrunk get `skipped`. False after reporting
// when no layer could be pruned.
bool prune_filters(prune_ctx *c);

// Where params that the graph does not hold (folded or unused) are read from.
typedef struct prune_sources {
  const kiln_safetensors *override;  // --weights, or NULL
  const kiln_safetensors *model;     // the model's own weights file (or an ONNX file's), or NULL
} prune_sources;
// Rewrites the model document `doc` (params, masks, training.init) and writes it to c->o->out
// with its params in OUT.safetensors. False after reporting.
bool prune_write(prune_ctx *c, json_object *doc, const prune_sources *src);

// Counts the learned weights of c->g into c->before or c->after (params, nonzero).
void prune_count_weights(prune_ctx *c, bool after);
// The FLOPs (compiler/ops/op.h `flops`) of the original and of the pruned model, both as
// inference builds load them, into the layers and the totals; the layers' weight counts.
void prune_measure(prune_ctx *c, const kiln_graph *original, const kiln_graph *pruned);
// The per-layer table and the totals: plain text (stdout) or Markdown (--report).
void prune_report(const prune_ctx *c, FILE *out, bool markdown);

#endif
