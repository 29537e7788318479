// Graph IR: tensors (values with a static shape and dtype), nodes (one op application each) and
// the graph that owns them. Everything lives in the graph's pool and is freed with the graph.
//
// Tensors and nodes are addressed by index (int) so passes can rebuild arrays freely.
#ifndef KILN_IR_GRAPH_H
#define KILN_IR_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "diag.h"
#include "dtype.h"
#include "pool.h"

#define KILN_MAX_RANK 8

typedef struct kiln_shape {
  int rank;
  int64_t dim[KILN_MAX_RANK];
} kiln_shape;

int64_t kiln_shape_numel(const kiln_shape *s);
bool kiln_shape_equal(const kiln_shape *a, const kiln_shape *b);
// Formats "(1, 3, 32, 32)" into buf; returns buf.
char *kiln_shape_str(const kiln_shape *s, char *buf, int size);

typedef enum {
  KILN_TENSOR_INPUT,  // fed by the caller
  KILN_TENSOR_PARAM,  // a weight or constant, data known at compile time
  KILN_TENSOR_VALUE,  // computed by a node
  KILN_TENSOR_STATE,  // a mutable param (training: trainable weights, optimizer state): initial
                      // data like a param, in the weights payload, written in place by
                      // side-effect nodes (docs/training.md)
} kiln_tensor_kind;

// What a param is for (the model format's `role`): learned weights are what `kiln inspect` counts
// as parameters (PyTorch's `parameters()`); buffers are state that is not learned (BatchNorm
// running statistics); constants are part of the computation (shapes, masks, tables).
typedef enum {
  KILN_ROLE_WEIGHT = 0,
  KILN_ROLE_BUFFER,
  KILN_ROLE_CONSTANT,
} kiln_param_role;

typedef struct kiln_tensor {
  const char *name;
  kiln_tensor_kind kind;
  kiln_dtype dtype;
  kiln_shape shape;
  bool is_output;     // a graph output
  int producer;       // node index, -1 for inputs and params
  void *data;         // PARAM: raw little-endian elements, kiln_shape_numel * dtype size bytes
  const char *where;  // JSON path of the declaration, for diagnostics
  // plan-memory: byte offset in the arena (VALUE) or the weights payload (PARAM, STATE); -1: none
  int64_t offset;
  int in_place_of;       // in-place: the input whose storage this value reuses (-1: none)
  kiln_param_role role;  // PARAM / STATE: weight (default), buffer or constant
} kiln_tensor;

typedef enum {
  KILN_ATTR_INT,
  KILN_ATTR_FLOAT,
  KILN_ATTR_INTS,
  KILN_ATTR_FLOATS,
  KILN_ATTR_STRING,
} kiln_attr_type;

typedef struct kiln_attr {
  const char *name;
  kiln_attr_type type;
  int64_t i;
  double f;
  int count;  // INTS / FLOATS
  int64_t *ints;
  double *floats;
  const char *s;
} kiln_attr;

typedef struct kiln_node {
  int op;  // kiln_op_id (compiler/ops/ops.h)
  const char *name;
  int n_inputs, n_outputs;
  int *inputs;  // tensor indices; -1 for an omitted optional input
  int *outputs;
  int n_attrs;
  kiln_attr *attrs;
  const char *where;  // JSON path, e.g. "nodes[3]"
  bool dead;          // removed by a pass; skipped everywhere, compacted by kiln_graph_compact
} kiln_node;

typedef struct kiln_graph {
  kiln_pool pool;
  const char *name;         // C identifier used for generated symbols
  const char *source_file;  // model file, for diagnostics
  kiln_tensor *tensors;
  int n_tensors, cap_tensors;
  kiln_node *nodes;  // in topological order once kiln_graph_toposort succeeded
  int n_nodes, cap_nodes;
  int *inputs, n_inputs, cap_inputs;     // tensor indices in declaration order
  int *outputs, n_outputs, cap_outputs;  // tensor indices in declaration order
} kiln_graph;

kiln_graph *kiln_graph_new(const char *name, const char *source_file);
void kiln_graph_free(kiln_graph *g);

// Adds a tensor; the name is copied. Returns its index.
int kiln_graph_add_tensor(kiln_graph *g, const char *name, kiln_tensor_kind kind, kiln_dtype dtype,
                          const kiln_shape *shape);
int kiln_graph_find_tensor(const kiln_graph *g, const char *name);  // -1 if absent
// Adds a node; arrays are copied. Returns its index.
int kiln_graph_add_node(kiln_graph *g, int op, const char *name, int n_in, const int *in, int n_out,
                        const int *out);
kiln_attr *kiln_node_add_attr(kiln_graph *g, kiln_node *n, const char *name, kiln_attr_type type);

// Attribute lookup with defaults. Types are checked by the frontend against the op schema.
const kiln_attr *kiln_node_attr(const kiln_node *n, const char *name);
int64_t kiln_attr_int(const kiln_node *n, const char *name, int64_t dflt);
double kiln_attr_float(const kiln_node *n, const char *name, double dflt);
const char *kiln_attr_string(const kiln_node *n, const char *name, const char *dflt);
// Copies an INTS attribute into out[max]; returns its length, or -1 if absent (out untouched).
int kiln_attr_ints(const kiln_node *n, const char *name, int64_t *out, int max);

static inline kiln_tensor *kiln_in(const kiln_graph *g, const kiln_node *n, int i) {
  return i < n->n_inputs && n->inputs[i] >= 0 ? &g->tensors[n->inputs[i]] : 0;
}
static inline kiln_tensor *kiln_out(const kiln_graph *g, const kiln_node *n, int i) {
  return &g->tensors[n->outputs[i]];
}

// Orders nodes so producers come before consumers and sets tensor producers. Reports cycles,
// tensors produced twice and tensors read but never produced. Returns false on error.
bool kiln_graph_toposort(kiln_graph *g, kiln_diag *d);
// Drops dead nodes and tensors nothing refers to; renumbers indices.
void kiln_graph_compact(kiln_graph *g);

// Element type of a PARAM tensor as double; i is a flat index.
double kiln_tensor_get(const kiln_tensor *t, int64_t i);

#endif
