// quantize, between the layers (docs/quantization.md, "Quantized graph ops"): the ops that stay in
// u8. A tensor made by a quantized layer, or by an op kept in u8, has a u8 version; an op whose
// data inputs all have one is rewritten onto them:
//   MaxPool, Flatten, Reshape   the same op on u8; the output keeps the input's scale and zero
//                               point (max commutes with the monotone dequantization, a reshape
//                               moves values without changing them)
//   Add (+ a Relu, its only reader)  QLinearAdd at the calibrated scale of the (Relu's) output;
//                               a fused Relu's range starts at 0: zero point 0, the u8 saturation
//                               is the Relu
//   GlobalAveragePool           QLinearGlobalAveragePool at its output's calibrated scale
//   AveragePool                 QLinearAveragePool (the same window) at its output's calibrated
//                               scale
//   Concat                      QLinearConcat at its output's calibrated scale
// Each rewritten op's u8 output is also dequantized into the original f32 tensor, for readers
// left in FP32; dce drops that DequantizeLinear when nothing reads it.
#include <stdlib.h>

#include "ptq_internal.h"

enum { MAX_CONCAT = 16 };  // QLinearConcat's limit

static bool keeps_scale(int op) {
  return op == KILN_OP_MaxPool || op == KILN_OP_Flatten || op == KILN_OP_Reshape;
}

static bool needs_scale(int op) {
  return op == KILN_OP_Add || op == KILN_OP_GlobalAveragePool || op == KILN_OP_Concat ||
         op == KILN_OP_AveragePool;
}

// The inputs carrying data (Reshape's shape is not one).
static int data_inputs(const kiln_node *n) { return n->op == KILN_OP_Reshape ? 1 : n->n_inputs; }

static bool eligible(const kiln_graph *g, const kiln_node *n, const bool *ready) {
  if (n->dead || n->n_outputs != 1 || kiln_out(g, n, 0)->dtype != KILN_F32) return false;
  if (!keeps_scale(n->op) && !needs_scale(n->op)) return false;
  if (n->op == KILN_OP_Concat && n->n_inputs > MAX_CONCAT) return false;
  for (int k = 0; k < data_inputs(n); k++)
    if (n->inputs[k] < 0 || !ready[n->inputs[k]]) return false;
  return true;
}

bool kiln_ptq_consider_graph_op(ptq *q, int i, bool *ready) {
  const kiln_graph *g = q->g;
  const kiln_node *n = &g->nodes[i];
  if (!eligible(g, n, ready) || kiln_ptq_skipped(q, i)) return false;
  graph_op op = {.name = n->name ? n->name : kiln_out(g, n, 0)->name,
                 .op = n->op,
                 .node = i,
                 .relu = n->op == KILN_OP_Add ? kiln_ptq_fusable_relu(g, n->outputs[0]) : -1,
                 .y = n->outputs[0],
                 .calibrated = needs_scale(n->op)};
  if (op.relu >= 0) op.y = g->nodes[op.relu].outputs[0];
  op.y_name = g->tensors[op.y].name;
  q->ops = realloc(q->ops, sizeof(graph_op) * (size_t)(q->n_ops + 1));
  q->ops[q->n_ops++] = op;
  ready[op.y] = true;
  if (op.calibrated || q->o->report || q->o->min_sqnr > 0) q->wanted[op.y] = true;
  return true;
}

void kiln_ptq_graph_op_scale(ptq *q, graph_op *op) {
  if (!op->calibrated) return;
  double lo, hi;
  const fbuf *b = &q->seen[op->y];
  kiln_calib_range(b->v, b->n, q->o->method, q->o->percentile, &lo, &hi);
  if (op->relu >= 0) lo = 0;  // the fused Relu
  kiln_calib_qparams(lo, hi, KILN_U8, &op->y_scale, &op->y_zp);
}

// The quantized node computing op's output y from the u8 inputs; its output tensor, or -1.
static int build(kiln_grad_ctx *c, const qtensor *have, const graph_op *op, qtensor y) {
  const kiln_node *n = &c->node;
  int in[2 + 3 * MAX_CONCAT], count = 0;
  if (op->op == KILN_OP_Concat) in[count++] = y.scale, in[count++] = y.zp;
  for (int k = 0; k < n->n_inputs; k++) {
    if (k >= data_inputs(n)) {  // Reshape's shape
      in[count++] = n->inputs[k];
      continue;
    }
    qtensor x = have[n->inputs[k]];
    in[count++] = x.q;
    if (!keeps_scale(op->op)) in[count++] = x.scale, in[count++] = x.zp;
  }
  switch (op->op) {
    case KILN_OP_Add:
      in[count++] = y.scale, in[count++] = y.zp;
      return kiln_gb_op(c, "QLinearAdd", in, count, NULL, 1);
    case KILN_OP_GlobalAveragePool:
      in[count++] = y.scale, in[count++] = y.zp;
      return kiln_gb_op(c, "QLinearGlobalAveragePool", in, count, NULL, 1);
    case KILN_OP_AveragePool:  // the window's attributes are AveragePool's
      in[count++] = y.scale, in[count++] = y.zp;
      return kiln_gb_op_like(c, "QLinearAveragePool", in, count, NULL);
    case KILN_OP_Concat: return kiln_gb_op_like(c, "QLinearConcat", in, count, NULL);
    default: return kiln_gb_op_like(c, kiln_op_get(op->op)->name, in, count, NULL);
  }
}

bool kiln_ptq_rewrite_graph_op(kiln_grad_ctx *c, qtensor *have, graph_op *op) {
  kiln_graph *g = c->g;
  c->node = g->nodes[op->node];
  qtensor y = op->calibrated ? kiln_ptq_qparams(c, op->y_scale, op->y_zp) : have[c->node.inputs[0]];
  if (y.scale < 0 || y.zp < 0) return false;
  op->y_scale = y.s, op->y_zp = y.z;  // the report's
  y.q = build(c, have, op, y);
  if (y.q < 0) return false;
  g->nodes[op->node].dead = true;
  if (op->relu >= 0) g->nodes[op->relu].dead = true;
  return kiln_ptq_dequantize_into(c, have, y, op->y);
}
