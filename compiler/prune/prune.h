// `kiln prune` (docs/pruning.md): magnitude pruning of the constant weights of Conv, Gemm and
// MatMul, layer-wise or global, and structured filter pruning that shrinks the network (the
// layer's filters and bias, the BatchNormalization after it and the next layer's input
// channels). The result is a model JSON and a .safetensors file beside it, plus a report.
#ifndef KILN_PRUNE_H
#define KILN_PRUNE_H

#include <stdbool.h>

typedef enum { KILN_PRUNE_LAYERWISE, KILN_PRUNE_GLOBAL } kiln_prune_scope;

typedef struct kiln_prune_options {
  const char *model;    // the input model (.json or .onnx)
  const char *out;      // -o OUT.json (+ OUT.safetensors)
  const char *weights;  // --weights W.safetensors: params taken from W (trained weights)
  const char *report;   // --report FILE.md, or NULL
  double sparsity;      // in [0, 1): the fraction of weights (or filters) removed
  kiln_prune_scope scope;
  bool structured;  // --structured filters
  // Unstructured: the zeros are kept through fine-tuning by a constant mask multiplied into each
  // pruned weight in the graph (folded away in inference builds); --no-mask leaves it out.
  bool mask;
} kiln_prune_options;

// `kiln prune MODEL ...`: argv[0] is "prune". Returns the exit status (0, 2 bad input, 1 bug).
int kiln_prune_main(int argc, char **argv);

// Prunes o->model into o->out; prints the summary on stdout. Returns the exit status.
int kiln_prune(const kiln_prune_options *o);

#endif
