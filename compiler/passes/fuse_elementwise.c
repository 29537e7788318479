// fuse-elementwise: a chain of elementwise ops becomes one FusedElementwise node
// (compiler/ops/math/fused_elementwise.h): one kernel computing the whole expression per element,
// with no intermediate tensor in memory. Mul -> Add -> Sigmoid -> Mul (an LSTM gate, Swish, whose
// Add result is read twice inside the chain), Sub -> Div (normalization), a MatMul's bias Add ->
// Relu all qualify.
//
// A member is an op with an `elementwise` hook (op.h), no attributes, all inputs of the output's
// float dtype, none of them STATE (training updates may write those between the member and the
// end of the chain). A group grows backwards from its last node: a producer joins when every node
// reading its output is already in the group, that output is no model output, and it has the
// group's output shape (inputs may broadcast; intermediates may not, or the fused kernel would
// recompute a small intermediate for every output element). Nothing outside the group reads an
// intermediate, so the fused node can take the slot and the name of the group's last node (every
// input is computed by then). A group holds at most KILN_FUSED_MAX_MEMBERS ops and
// KILN_FUSED_MAX_INPUTS distinct inputs.
#include <stdlib.h>
#include <string.h>

#include "../ops/math/fused_elementwise.h"
#include "../ops/op.h"
#include "pipeline.h"

typedef struct group {
  int members[KILN_FUSED_MAX_MEMBERS];  // node indices, producers before consumers
  int n;
  int inputs[KILN_FUSED_MAX_INPUTS];  // distinct outside tensors
  int n_inputs;
} group;

typedef struct fuse_state {
  kiln_graph *g;
  int *readers;   // per tensor
  bool *grouped;  // per node: already a member of a group
} fuse_state;

static bool candidate(const kiln_graph *g, const kiln_node *n) {
  if (n->dead || n->n_attrs || n->n_outputs != 1 || !kiln_fused_member_op(n->op)) return false;
  const kiln_tensor *y = kiln_out(g, n, 0);
  if (!kiln_dtype_is_float(y->dtype) || n->n_inputs != kiln_op_get(n->op)->min_inputs) return false;
  for (int k = 0; k < n->n_inputs; k++) {
    const kiln_tensor *x = kiln_in(g, n, k);
    if (!x || x->dtype != y->dtype || x->kind == KILN_TENSOR_STATE) return false;
  }
  return true;
}

// Position in grp->members of the node producing tensor t, or -1.
static int member_of(const kiln_graph *g, const group *grp, int t) {
  for (int j = 0; j < grp->n; j++)
    if (g->tensors[t].producer == grp->members[j]) return j;
  return -1;
}

// Recomputes grp->inputs; false when there are too many.
static bool gather_inputs(const kiln_graph *g, group *grp) {
  grp->n_inputs = 0;
  for (int j = 0; j < grp->n; j++) {
    const kiln_node *m = &g->nodes[grp->members[j]];
    for (int k = 0; k < m->n_inputs; k++) {
      int t = m->inputs[k], seen = 0;
      if (member_of(g, grp, t) >= 0) continue;
      for (int i = 0; i < grp->n_inputs; i++) seen |= grp->inputs[i] == t;
      if (seen) continue;
      if (grp->n_inputs == KILN_FUSED_MAX_INPUTS) return false;
      grp->inputs[grp->n_inputs++] = t;
    }
  }
  return true;
}

// How many of tensor t's reads the group's members make.
static int reads_in_group(const kiln_graph *g, const group *grp, int t) {
  int count = 0;
  for (int j = 0; j < grp->n; j++) {
    const kiln_node *m = &g->nodes[grp->members[j]];
    for (int k = 0; k < m->n_inputs; k++) count += m->inputs[k] == t;
  }
  return count;
}

// The node producing tensor t if it can join the group; -1 otherwise.
static int joinable_producer(const fuse_state *f, const group *grp, int t) {
  const kiln_tensor *x = &f->g->tensors[t];
  if (x->kind != KILN_TENSOR_VALUE || x->is_output || x->producer < 0) return -1;
  if (f->grouped[x->producer] || member_of(f->g, grp, t) >= 0) return -1;
  const kiln_shape *out = &kiln_out(f->g, &f->g->nodes[grp->members[grp->n - 1]], 0)->shape;
  if (!kiln_shape_equal(&x->shape, out) || !candidate(f->g, &f->g->nodes[x->producer])) return -1;
  return reads_in_group(f->g, grp, t) == f->readers[t] ? x->producer : -1;
}

// Inserts node p in order; undoes it and returns false when the group would outgrow its limits.
static bool try_add(const kiln_graph *g, group *grp, int p) {
  if (grp->n == KILN_FUSED_MAX_MEMBERS) return false;
  int at = grp->n;
  for (; at > 0 && grp->members[at - 1] > p; at--) grp->members[at] = grp->members[at - 1];
  grp->members[at] = p;
  grp->n++;
  if (gather_inputs(g, grp)) return true;
  memmove(&grp->members[at], &grp->members[at + 1], sizeof(int) * (size_t)(grp->n - 1 - at));
  grp->n--;
  gather_inputs(g, grp);
  return false;
}

// Adds producers of the members' inputs until none can join.
static void grow(const fuse_state *f, group *grp) {
  for (bool grew = true; grew;) {
    grew = false;
    for (int j = grp->n - 1; j >= 0 && !grew; j--) {
      const kiln_node *m = &f->g->nodes[grp->members[j]];
      for (int k = 0; k < m->n_inputs && !grew; k++) {
        int p = joinable_producer(f, grp, m->inputs[k]);
        grew = p >= 0 && try_add(f->g, grp, p);
      }
    }
  }
}

// "Mul Add Sigmoid" and the operand references (fused_elementwise.h) of the group.
static void set_program(kiln_graph *g, kiln_node *fused, const group *grp,
                        const kiln_node *members) {
  size_t len = 1;
  int count = 0;
  for (int j = 0; j < grp->n; j++) {
    len += strlen(kiln_op_get(members[j].op)->name) + 1;
    count += members[j].n_inputs;
  }
  char *ops = kiln_pool_alloc(&g->pool, len);
  int64_t *operands = kiln_pool_alloc(&g->pool, sizeof(int64_t) * (size_t)count);
  ops[0] = 0;
  count = 0;
  for (int j = 0; j < grp->n; j++) {
    strcat(strcat(ops, j ? " " : ""), kiln_op_get(members[j].op)->name);
    for (int k = 0; k < members[j].n_inputs; k++) {
      int t = members[j].inputs[k], m = member_of(g, grp, t), at = 0;
      while (m < 0 && grp->inputs[at] != t) at++;
      operands[count++] = m >= 0 ? -(m + 1) : at;
    }
  }
  kiln_node_add_attr(g, fused, "ops", KILN_ATTR_STRING)->s = ops;
  kiln_attr *a = kiln_node_add_attr(g, fused, "operands", KILN_ATTR_INTS);
  a->ints = operands;
  a->count = count;
}

// The group's last node becomes the FusedElementwise node; the others die.
static void fuse(fuse_state *f, const group *grp) {
  kiln_graph *g = f->g;
  kiln_node members[KILN_FUSED_MAX_MEMBERS];
  for (int j = 0; j < grp->n; j++) {
    members[j] = g->nodes[grp->members[j]];
    f->grouped[grp->members[j]] = true;
    if (j < grp->n - 1) g->nodes[grp->members[j]].dead = true;
  }
  kiln_node *last = &g->nodes[grp->members[grp->n - 1]];
  last->op = KILN_OP_FusedElementwise;
  last->inputs = kiln_pool_alloc(&g->pool, sizeof(int) * (size_t)grp->n_inputs);
  memcpy(last->inputs, grp->inputs, sizeof(int) * (size_t)grp->n_inputs);
  last->n_inputs = grp->n_inputs;
  set_program(g, last, grp, members);
}

bool kiln_pass_fuse_elementwise(kiln_compilation *c, kiln_diag *d, bool *changed) {
  (void)d;
  kiln_graph *g = c->g;
  fuse_state f = {.g = g,
                  .readers = kiln_reader_counts(g),
                  .grouped = kiln_xcalloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof(bool))};
  int fused = 0;
  // From the end: each group grows backwards from its last node.
  for (int i = g->n_nodes - 1; i >= 0; i--) {
    if (f.grouped[i] || !candidate(g, &g->nodes[i])) continue;
    group grp = {.members = {i}, .n = 1};
    grow(&f, &grp);
    if (grp.n >= 2) {
      fuse(&f, &grp);
      fused++;
    }
  }
  free(f.readers);
  free(f.grouped);
  if (fused) kiln_graph_compact(g);
  *changed = fused > 0;
  return true;
}
