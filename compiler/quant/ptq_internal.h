// What the files of the quantize pass share (ptq.h): ptq.c chooses, calibrates and rewrites the
// quantized layers (Conv, Gemm, MatMul) and writes the report; qgraph.c keeps the ops between
// them in u8 (MaxPool, Flatten, Reshape, Add + Relu, GlobalAveragePool, AveragePool, Concat).
#ifndef KILN_QUANT_PTQ_INTERNAL_H
#define KILN_QUANT_PTQ_INTERNAL_H

#include "../autodiff/builder.h"
#include "../interp.h"
#include "../ops/op.h"
#include "ptq.h"

typedef struct fbuf {  // values seen for one tensor over the calibration run
  float *v;
  int64_t n, cap;
} fbuf;

typedef struct layer {
  const char *name;    // the node's name (or its output's)
  int op;              // KILN_OP_Conv, KILN_OP_Gemm or KILN_OP_MatMul
  int node, relu;      // node indices before the rewrite; relu -1 when not fused
  int x, y;            // tensors: the input quantized, the output (the Relu's when fused)
  const char *y_name;  // y's name: indices change when the graph is compacted
  bool has_bias;       // Gemm's C: y stays wide (i32 sums, dequantized), C added in f32
  float x_scale, y_scale, w_min, w_max;
  int32_t x_zp, y_zp;
  double sqnr, max_err;  // the quantized graph's y against the FP32 one
  // Bias correction (bias_correct.c; err_sum NULL: not corrected): the bias tensor's name, the
  // value of one unit of it per output channel, the error sums and counts per channel
  const char *bias_name;
  int64_t channels;
  double *bias_unit, *err_sum, *err_count;
} layer;

typedef struct graph_op {  // an op between quantized layers kept in u8 (qgraph.c)
  const char *name;        // the node's name (or its output's)
  int op, node, relu;      // node indices before the rewrite; relu -1 when not fused (Add only)
  int y;                   // the output (the Relu's when fused)
  const char *y_name;      // y's name: indices change when the graph is compacted
  bool calibrated;         // y gets its own scale (Add, the pools, Concat); else x's (MaxPool ...)
  float y_scale;           // set by the rewrite for the ops that keep their input's
  int32_t y_zp;
  double sqnr, max_err;  // the quantized graph's y against the FP32 one (the report)
} graph_op;

typedef struct ptq {
  kiln_graph *g;
  kiln_quant_options *o;
  kiln_diag *d;
  layer *layers;
  int n_layers;
  graph_op *ops;
  int n_ops;
  fbuf *seen;    // per tensor index of the FP32 graph: values collected (n == 0: not wanted)
  bool *wanted;  // per tensor index: collect its values
  bool *head;    // per node index: the classifier head, kept in FP32 (--quant-head fp32)
  char head_names[256];  // their names, for the report
  layer head_fix;        // bias correction of an FP32 head Gemm (y_name NULL: none); not rewritten
  int64_t samples;       // calibration samples run
} ptq;

// A u8 tensor standing for an f32 one: the tensors of it, its scale and its zero point, and their
// values.
typedef struct qtensor {
  int q, scale, zp;
  float s;
  int32_t z;
} qtensor;

// ptq.c
// Whether node i stays in FP32: --quant-skip names it, or it is part of the classifier head.
bool kiln_ptq_skipped(const ptq *q, int i);
// The Relu node that is the only reader of tensor y (not a graph output), or -1.
int kiln_ptq_fusable_relu(const kiln_graph *g, int y);
// New scale and zero point params of value s, z (q unset).
qtensor kiln_ptq_qparams(kiln_grad_ctx *c, float s, int32_t z);
// Rewrites the f32 tensor `f32` as the DequantizeLinear of u8 y (its producer must be dead by
// now), and records y as its u8 version in have[]. False after reporting.
bool kiln_ptq_dequantize_into(kiln_grad_ctx *c, qtensor *have, qtensor y, int f32);

// calib_run.c
// Runs g over the calibration samples (at most `limit`, 0: all; whole batches of g's input) and
// shows values to observe, batch by batch, as kiln_interp_run_observed does: every tensor with
// the interpreter, the tensors t with watch[t] (and not params) with the compiled binary
// (o->engine). Returns the samples run, or -1 after reporting.
int64_t kiln_ptq_run_samples(ptq *q, const kiln_graph *g, const bool *watch, int64_t limit,
                             kiln_interp_observer observe, void *ctx);

// bias_correct.c
// Whether the pass corrects biases (--quant-bias-correction, or the default).
bool kiln_ptq_bias_correction_wanted(const kiln_quant_options *o);
// Tracks L's output channel errors for bias tensor `bias_name`, unit[c] the value of one unit of
// it (NULL: 1, an f32 bias).
void kiln_ptq_track_bias(layer *L, const char *bias_name, const float *unit, int64_t channels);
// Adds n values of L's output y, from element `from` of the samples seen: FP32 ref, quantized got.
void kiln_ptq_channel_errors(layer *L, const kiln_shape *y, int64_t from, const float *ref,
                             const double *got, int64_t n);
// Subtracts each tracked channel's mean error from its bias; clears the sums.
void kiln_ptq_correct_biases(ptq *q);
void kiln_ptq_free_bias_tracking(layer *L);

// qgraph.c
// If node i is an op kept in u8 — its data inputs all have u8 versions (ready[t]) — appends it to
// q->ops, marks its output ready, and its output wanted for calibration when it needs a scale.
bool kiln_ptq_consider_graph_op(ptq *q, int i, bool *ready);
// The output's scale and zero point from the calibration values (calibrated ops only).
void kiln_ptq_graph_op_scale(ptq *q, graph_op *op);
// Rewrites op onto the u8 versions of its inputs (have[]); false after reporting.
bool kiln_ptq_rewrite_graph_op(kiln_grad_ctx *c, qtensor *have, graph_op *op);

#endif
