// JSON model format v1 → graph IR (docs/model-format.md).
#ifndef KILN_FRONTEND_H
#define KILN_FRONTEND_H

#include "../ir/graph.h"

// Parses and checks a model file: schema, names, op support (all unsupported ops at once),
// attributes, weights (from .safetensors or initializers), topological order and shape/dtype
// inference. Every problem is reported through d; returns NULL if there was any.
kiln_graph *kiln_load_model(const char *path, kiln_diag *d);

// A model input's shape from the command line (`--shape x=1x3x224x224`): fixes the dynamic
// dimensions of an ONNX model's inputs.
typedef struct kiln_input_shape {
  const char *name;
  kiln_shape shape;
} kiln_input_shape;
// `--freeze-input NAME=FILE.npy`: the graph input NAME becomes a constant param holding the
// array in FILE (its dtype and shape must match the input's). For values that determine shapes
// (Reshape's shape, Slice's starts, Resize's sizes, ...), which Kiln compiles in.
typedef struct kiln_frozen_input {
  const char *name;
  const char *file;
} kiln_frozen_input;
struct kiln_training;
typedef struct kiln_load_options {
  const kiln_input_shape *shapes;
  int n_shapes;
  const kiln_frozen_input *frozen;
  int n_frozen;
  // `kiln build --weights FILE`: every param this .safetensors file holds (with or without `init`)
  // is read from it instead of the model's own weights (trained weights, checkpoints).
  const char *weights_file;
  // Out: when not NULL, receives the model's checked `training` section (docs/training.md);
  // training->present is false when the model has none. A model's training section is checked
  // (and otherwise ignored) whether or not this is set.
  struct kiln_training *training;
} kiln_load_options;
// Reads f->file for `--freeze-input`, checking it against the input's declared dtype and shape
// (a dimension < 0 in `declared` takes any size, a rank < 0 any shape). Errors name the flag, the
// input and the file.
struct kiln_array;
bool kiln_frozen_input_read(const kiln_frozen_input *f, kiln_dtype dtype,
                            const kiln_shape *declared, struct kiln_array *out, kiln_diag *d);

// kiln_load_model with options (o may be NULL). A path ending in ".onnx" is imported first
// (compiler/onnx, docs/onnx.md) and then goes through exactly the same checks and inference.
kiln_graph *kiln_load_model_ex(const char *path, const kiln_load_options *o, kiln_diag *d);

// Builds the graph from a parsed JSON model document (not consumed). Params without `init` are
// read from `weights` when it is not NULL, instead of the document's `weights` file. `path` names
// the model in messages.
struct json_object;
struct kiln_safetensors;
kiln_graph *kiln_load_model_json(struct json_object *root, const char *path,
                                 const struct kiln_safetensors *weights, kiln_diag *d);

// Runs every node's shape/dtype inference in order (the graph must be topologically sorted).
bool kiln_infer_shapes(kiln_graph *g, kiln_diag *d);

#endif
