// Small compositions shared by the gradient rules of elementwise and reduction ops
// (docs/training.md): every helper appends graph nodes through the builder and returns the new
// tensor, or -1 after an error. A -1 argument makes a helper return -1 at once, so calls chain
// without a check after each.
#ifndef KILN_OPS_TRAIN_GRAD_COMPOSE_H
#define KILN_OPS_TRAIN_GRAD_COMPOSE_H

#include "../../autodiff/builder.h"

// op(a, b) for a binary op; -1 if a or b is -1.
int kiln_gc_binary(kiln_grad_ctx *c, const char *op, int a, int b);
// op(x) for a unary op; -1 if x is -1.
int kiln_gc_unary(kiln_grad_ctx *c, const char *op, int x);
// op(a, v) with v a (1,) constant of a's dtype: Mul(x, 0.5), Less(x, 0), ...
int kiln_gc_scalar_op(kiln_grad_ctx *c, const char *op, int a, double v);
// Where(cond, a, v) with v a (1,) constant of a's dtype.
int kiln_gc_where_else(kiln_grad_ctx *c, int cond, int a, double v);
// The forward input i's tensor, output i's tensor, and output 0's gradient.
static inline int kiln_gc_x(const kiln_grad_ctx *c, int i) { return c->node.inputs[i]; }
static inline int kiln_gc_y(const kiln_grad_ctx *c) { return c->node.outputs[0]; }
// dx[0] = dy * d (d: the local derivative, x's shape); returns whether it worked.
bool kiln_gc_chain(kiln_grad_ctx *c, int d);
// The reduced axes of a Reduce* node, in [0, rank), as a mask over x's axes (all axes when none
// are given; none when noop_with_empty_axes applies).
unsigned kiln_gc_reduced_axes(const kiln_grad_ctx *c);
// dy of a node whose output is x's shape with the axes in `mask` reduced (kept as 1 or dropped)
// broadcast back to x's shape and multiplied by `scale`.
int kiln_gc_broadcast_back(kiln_grad_ctx *c, int dy, int x, unsigned mask, double scale);

#endif
