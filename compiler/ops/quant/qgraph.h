// Helpers shared by the quantized graph ops the quantize pass inserts between quantized layers
// (QLinearAdd, QLinearGlobalAveragePool, QLinearConcat; docs/quantization.md, "Quantized graph
// ops"): the checks of their per-tensor scales and zero points, and the ratio of two scales that
// requantizes a tensor from one to the other. The rounding step itself is QLinearConv's
// (kiln_quant_requantize_ref / _lx in quant_util.c).
#ifndef KILN_OPS_QUANT_QGRAPH_H
#define KILN_OPS_QUANT_QGRAPH_H

#include "quant.h"

// Checks a quantized operand at inputs data, data + 1, data + 2: the tensor (i8 or u8), its scale
// (f32, one value) and its zero point (the tensor's dtype, one value), all present. `what` names
// the operand in messages ("a", "x").
bool kiln_qgraph_check_operand(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int data,
                               const char *what);
// Checks the output's scale (input `scale`, f32, one value) and zero point (input scale + 1, i8
// or u8, one value), both present. The output's dtype is the zero point's.
bool kiln_qgraph_check_output(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int scale);

// The multiplier from scale input `scale` to scale input `y_scale`: f32(scale / y_scale)
// (QLinearConv's multiplier with a weight scale of 1, kiln_quant_multiplier_ref).
double kiln_qgraph_ratio_ref(const kiln_eval_tensor *in, int scale, int y_scale);
// lower: declares an f32 local `name` = the same ratio; returns the variable.
int kiln_qgraph_ratio_var(const kiln_lower_ctx *c, const char *name, int scale, int y_scale);
// lower: declares an i32 local `name` = zero point input i; returns the variable.
int kiln_qgraph_zp_var(const kiln_lower_ctx *c, const char *name, int i);
// lower: x - zp in i32 (x any integer expression, zp_var an i32 variable).
kiln_lexpr *kiln_qgraph_centered(kiln_lb *b, kiln_lexpr *x, int zp_var);

#endif
