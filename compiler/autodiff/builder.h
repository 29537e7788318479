// Building graph nodes from gradient rules and the training-graph construction: one call adds a
// node, names its output uniquely, and runs the op's shape inference on it at once, so a rule can
// read the shapes of what it built.
#ifndef KILN_AUTODIFF_BUILDER_H
#define KILN_AUTODIFF_BUILDER_H

#include "../ops/op.h"

// An attribute for kiln_gb_op; terminate arrays with KILN_GB_END.
typedef struct kiln_gb_attr {
  const char *name;
  kiln_attr_type type;
  int64_t i;
  double f;
  const int64_t *ints;
  const double *floats;
  int count;
  const char *s;
} kiln_gb_attr;

#define KILN_GB_INT(n, v) ((kiln_gb_attr){.name = (n), .type = KILN_ATTR_INT, .i = (v)})
#define KILN_GB_FLOAT(n, v) ((kiln_gb_attr){.name = (n), .type = KILN_ATTR_FLOAT, .f = (v)})
#define KILN_GB_INTS(n, p, c) \
  ((kiln_gb_attr){.name = (n), .type = KILN_ATTR_INTS, .ints = (p), .count = (c)})
#define KILN_GB_STRING(n, v) ((kiln_gb_attr){.name = (n), .type = KILN_ATTR_STRING, .s = (v)})
#define KILN_GB_END ((kiln_gb_attr){0})

// Adds `op` applied to inputs (-1 = omitted optional input) with attributes `attrs` (NULL or
// KILN_GB_END-terminated) and n_outputs outputs; infers them; returns the first output's tensor
// index (the others follow it consecutively), or -1 after reporting an error through c->d.
int kiln_gb_op(kiln_grad_ctx *c, const char *op, const int *inputs, int n_inputs,
               const kiln_gb_attr *attrs, int n_outputs);
// Shorthands for one output.
int kiln_gb_unary(kiln_grad_ctx *c, const char *op, int x);
int kiln_gb_binary(kiln_grad_ctx *c, const char *op, int a, int b);
// A constant param of the given dtype and shape, every element `value` (or values[i]).
int kiln_gb_scalar(kiln_grad_ctx *c, kiln_dtype t, double value);  // shape (1,)
int kiln_gb_const(kiln_grad_ctx *c, kiln_dtype t, const kiln_shape *shape, const double *values);
// Functions taking a shape copy it first, so &g->tensors[i].shape is a valid argument (adding a
// tensor moves g->tensors: never hold such a pointer across a call that adds nodes).
// Sums `dy` down to `shape` (undoing numpy broadcasting): ReduceSum over the broadcast axes, then
// a Reshape. Returns dy itself when the shapes already agree.
int kiln_gb_sum_to(kiln_grad_ctx *c, int dy, const kiln_shape *shape);
// Reshape x to shape (a constant shape param is made for it).
int kiln_gb_reshape(kiln_grad_ctx *c, int x, const kiln_shape *shape);
// Copies the forward node's attributes into out[max] (KILN_GB_END-terminated), leaving out the
// names in `skip` (NULL-terminated, may be NULL). Returns the count copied.
int kiln_gb_forward_attrs(const kiln_grad_ctx *c, const char *const *skip, kiln_gb_attr *out,
                          int max);
// dx = op(inputs) with the forward node's attributes plus `extra` (KILN_GB_END-terminated; an
// extra attribute replaces a forward one of the same name). One output.
int kiln_gb_op_like(kiln_grad_ctx *c, const char *op, const int *inputs, int n_inputs,
                    const kiln_gb_attr *extra);
// Adds `op` writing existing tensors outputs[0..n_outputs) (a rewrite keeping a node's output
// names); infers them. Returns outputs[0], or -1 after reporting.
int kiln_gb_op_into(kiln_grad_ctx *c, const char *op, const int *inputs, int n_inputs,
                    const kiln_gb_attr *attrs, const int *outputs, int n_outputs);
// An i64 constant of shape (count) holding values (Slice bounds, Reshape shapes).
int kiln_gb_ints(kiln_grad_ctx *c, const int64_t *values, int count);
// Slice of x along `axis`: [start, end) (step 1).
int kiln_gb_slice(kiln_grad_ctx *c, int x, int64_t axis, int64_t start, int64_t end);

// Reverse-mode differentiation of the nodes [first_node, last_node) a rule built (a rule that
// recomputes its op from graph ops, such as the recurrent ops, then differentiates that): seeds
// are the gradients `seed_grad[i]` of tensors `seed[i]` (-1: none); on return wrt_grad[i] holds
// the gradient of tensor wrt[i] (-1 when none flows to it). Each node's own rule runs, so every
// op used needs one. Returns false after reporting.
bool kiln_gb_differentiate(kiln_grad_ctx *c, int first_node, int last_node, const int *seed,
                           const int *seed_grad, int n_seeds, const int *wrt, int *wrt_grad,
                           int n_wrt);

#endif
