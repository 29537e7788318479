// The reference interpreter: runs a graph node by node with each op's naive reference kernel,
// holding every tensor as doubles rounded to its dtype. The oracle for tests, constant folding
// and calibration.
#ifndef KILN_INTERP_H
#define KILN_INTERP_H

#include "../ir/graph.h"
#include "../runtime/kiln_runtime.h"

// inputs[i] matches g->inputs[i] (checked: dtype and shape, reported through d).
// On success outputs[i] are allocated arrays matching g->outputs[i].
bool kiln_interp_run(const kiln_graph *g, const kiln_array *inputs, kiln_array *outputs,
                     kiln_diag *d);

// Called for every input, then every value a node computes (rounded to its dtype), in order: the
// tensor's index in g and its kiln_shape_numel(&g->tensors[tensor].shape) values.
typedef void (*kiln_interp_observer)(const kiln_graph *g, int tensor, const double *values,
                                     void *ctx);
// kiln_interp_run, showing each intermediate value to observe (calibration, per-layer errors).
bool kiln_interp_run_observed(const kiln_graph *g, const kiln_array *inputs, kiln_array *outputs,
                              kiln_diag *d, kiln_interp_observer observe, void *ctx);

// A zeroed array of t's dtype and shape (64-byte aligned; aborts when out of memory).
void kiln_array_like(const kiln_tensor *t, kiln_array *a);

#endif
