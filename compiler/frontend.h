// JSON model format v1 → graph IR (docs/model-format.md).
#ifndef KILN_FRONTEND_H
#define KILN_FRONTEND_H

#include "../ir/graph.h"

// Parses and checks a model file: schema, names, op support (all unsupported ops at once),
// attributes, weights (from .safetensors or initializers), topological order and shape/dtype
// inference. Every problem is reported through d; returns NULL if there was any.
kiln_graph *kiln_load_model(const char *path, kiln_diag *d);

// Runs every node's shape/dtype inference in order (the graph must be topologically sorted).
bool kiln_infer_shapes(kiln_graph *g, kiln_diag *d);

#endif
