// FusedElementwise (compiler/ops/math/fused_elementwise.c), the node fuse-elementwise
// (compiler/passes/fuse_elementwise.c) makes of a chain of elementwise ops. Its program lives in
// two attributes:
//   ops       STRING  the member ops in evaluation order, separated by spaces: "Mul Add Sigmoid"
//   operands  INTS    each member's operands in turn (as many as its op takes): k >= 0 is the
//                     fused node's input k; -(j + 1) is the result of member j (j before it)
// The last member's result is the node's output. Members are ops with an `elementwise` hook
// (op.h) and a fixed arity, on one float dtype; every member's result has the output's shape
// (inputs may broadcast to it).
#ifndef KILN_OPS_MATH_FUSED_ELEMENTWISE_H
#define KILN_OPS_MATH_FUSED_ELEMENTWISE_H

#include "../op.h"

enum {
  KILN_FUSED_MAX_MEMBERS = 32,
  KILN_FUSED_MAX_INPUTS = 16,  // what the interpreter passes a node (compiler/interp.c)
  KILN_FUSED_MAX_ARITY = 4,
};

// Whether op `op` can be a member (it has an elementwise hook and a fixed arity).
bool kiln_fused_member_op(int op);

#endif
