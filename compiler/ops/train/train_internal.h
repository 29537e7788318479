// Helpers shared by the training ops (compiler/ops/train/): losses, their gradients, optimizer
// updates, schedules and backward kernels (docs/training.md).
#ifndef KILN_OPS_TRAIN_INTERNAL_H
#define KILN_OPS_TRAIN_INTERNAL_H

#include "../op_internal.h"

// The shape (1,) of a loss, a learning rate or the step counter.
static inline kiln_shape kiln_train_scalar_shape(void) {
  return (kiln_shape){.rank = 1, .dim = {1}};
}

// Checks input i has exactly `want`'s shape; reports "inputs[1] (y): expected shape (4, 2) like
// inputs[0], got (4, 3)".
bool kiln_train_check_shape(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                            const kiln_shape *want, const char *like);
// Checks input i is present with dtype `t` and shape (1,).
bool kiln_train_check_scalar(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                             kiln_dtype t, const char *what);
// Reads a STRING attribute that must be one of names[0..count); its index, or -1 after reporting
// (dflt when absent, d may be NULL).
int kiln_train_read_choice(const kiln_node *n, kiln_diag *d, const char *attr,
                           const char *const *names, int count, int dflt);

// Loss reductions: "mean" (over every element), "sum", "batchmean" (over dim 0).
extern const char *const kiln_train_reductions[3];
// The factor a summed loss is multiplied by under the node's `reduction`.
double kiln_train_reduction_scale(const kiln_node *n, const kiln_shape *pred);

#endif
