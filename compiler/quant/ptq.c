// quantize: post-training static INT8 quantization (ptq.h, docs/quantization.md). Three steps:
//   calibrate  the interpreter runs the FP32 graph over the calibration samples, keeping the
//              values of every quantized layer's input and output (and of the outputs of the ops
//              between layers that get their own scale, qgraph.c);
//   rewrite    each layer becomes Q -> QLinearConv / QLinearMatMul -> DQ with the scales of
//              those values (a fused Relu's range starts at 0), in node order with the ops kept
//              in u8 between layers (qgraph.c);
//   report     the quantized graph runs over the same samples, and each layer's output is
//              compared with its FP32 value (SQNR, max abs error): --quant-report FILE.md.
#include "ptq.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/kiln_runtime.h"
#include "../interp.h"
#include "ptq_internal.h"

// ---- Choosing the layers ----

static bool is_f32_param(const kiln_tensor *t) {
  return t && t->kind == KILN_TENSOR_PARAM && t->data && t->dtype == KILN_F32;
}

static int readers(const kiln_graph *g, int tensor, int *only) {
  int count = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    for (int k = 0; !n->dead && k < n->n_inputs; k++)
      if (n->inputs[k] == tensor) count++, *only = i;
  }
  return count;
}

bool kiln_ptq_skipped(const ptq *q, int i) {
  const char *name = q->g->nodes[i].name;
  for (int k = 0; name && k < q->o->n_skip; k++)
    if (strcmp(q->o->skip[k], name) == 0) return true;
  return q->head[i];
}

// Whether node n is a layer the rewrite handles: float input, constant f32 weights.
static bool quantizable(const kiln_graph *g, const kiln_node *n) {
  const kiln_tensor *x = kiln_in(g, n, 0), *w = kiln_in(g, n, 1), *b = kiln_in(g, n, 2);
  if (n->dead || n->n_outputs != 1 || !x || x->dtype != KILN_F32 || !is_f32_param(w)) return false;
  if (n->op == KILN_OP_Conv)
    return x->shape.rank == 4 && w->shape.rank == 4 && (!b || is_f32_param(b));
  if (n->op == KILN_OP_MatMul) return x->shape.rank >= 2 && w->shape.rank == 2;
  if (n->op != KILN_OP_Gemm) return false;
  bool plain = kiln_attr_float(n, "alpha", 1) == 1 && kiln_attr_float(n, "beta", 1) == 1 &&
               kiln_attr_int(n, "transA", 0) == 0 && x->shape.rank == 2 && w->shape.rank == 2;
  int64_t cols = kiln_attr_int(n, "transB", 0) ? w->shape.dim[0] : w->shape.dim[1];
  return plain && (!b || (is_f32_param(b) && kiln_shape_numel(&b->shape) == cols));
}

int kiln_ptq_fusable_relu(const kiln_graph *g, int y) {
  int reader = -1;
  if (g->tensors[y].is_output || readers(g, y, &reader) != 1) return -1;
  return g->nodes[reader].op == KILN_OP_Relu ? reader : -1;
}

// Appends layer node i; its output will have a u8 version (ready) unless a bias is added in f32.
static void add_layer(ptq *q, int i, bool *ready) {
  kiln_graph *g = q->g;
  const kiln_node *n = &g->nodes[i];
  layer L = {.name = n->name ? n->name : kiln_out(g, n, 0)->name,
             .op = n->op,
             .node = i,
             .relu = -1,
             .x = n->inputs[0],
             .y = n->outputs[0]};
  L.has_bias = n->op == KILN_OP_Gemm && kiln_in(g, n, 2);
  if (!L.has_bias) L.relu = kiln_ptq_fusable_relu(g, L.y);
  if (L.relu >= 0) L.y = g->nodes[L.relu].outputs[0];
  L.y_name = g->tensors[L.y].name;
  q->layers = realloc(q->layers, sizeof(layer) * (size_t)(q->n_layers + 1));
  q->layers[q->n_layers++] = L;
  q->wanted[L.x] = q->wanted[L.y] = true;
  ready[L.y] = !L.has_bias;
}

// ---- The classifier head, kept in FP32 (--quant-head) ----

static int producer_of(const kiln_graph *g, int tensor) {
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; !g->nodes[i].dead && k < g->nodes[i].n_outputs; k++)
      if (g->nodes[i].outputs[k] == tensor) return i;
  return -1;
}

static void note_head(ptq *q, int i) {
  const kiln_node *n = &q->g->nodes[i];
  size_t len = strlen(q->head_names);
  q->head[i] = true;
  snprintf(q->head_names + len, sizeof q->head_names - len, "%s%s", len ? ", " : "",
           n->name ? n->name : kiln_out(q->g, n, 0)->name);
}

// Marks each Gemm / MatMul layer making a graph output, and the Flatten / Reshape chain and the
// pooling before it that only it reads: there u8 would round the pooled features and the logits
// (ResNet-18: 95 -> 98 % top-1 agreement for a negligible share of the FLOPs).
static void find_head(ptq *q) {
  const kiln_graph *g = q->g;
  for (int o = 0; !q->o->head_int8 && o < g->n_outputs; o++) {
    int i = producer_of(g, g->outputs[o]), only = -1;
    const kiln_node *n = i >= 0 ? &g->nodes[i] : NULL;
    if (!n || (n->op != KILN_OP_Gemm && n->op != KILN_OP_MatMul) || !quantizable(g, n)) continue;
    note_head(q, i);
    if (n->op == KILN_OP_Gemm && kiln_in(g, n, 2) && kiln_ptq_bias_correction_wanted(q->o))
      q->head_fix = (layer){.name = n->name ? n->name : kiln_out(g, n, 0)->name,
                            .op = n->op,
                            .node = i,
                            .relu = -1,
                            .y = n->outputs[0],
                            .y_name = kiln_out(g, n, 0)->name,
                            .has_bias = true};
    if (q->head_fix.y_name) q->wanted[q->head_fix.y] = true;
    for (int x = n->inputs[0], p; (p = producer_of(g, x)) >= 0 && readers(g, x, &only) == 1;
         x = g->nodes[p].inputs[0]) {
      int op = g->nodes[p].op;
      bool pool = op == KILN_OP_GlobalAveragePool || op == KILN_OP_AveragePool;
      if (!pool && op != KILN_OP_Flatten && op != KILN_OP_Reshape) break;
      note_head(q, p);
      if (pool) break;
    }
  }
}

// The layers, and the ops between them kept in u8 (in node order: the graph is sorted).
static void find_layers(ptq *q) {
  bool *ready = calloc((size_t)q->g->n_tensors, sizeof(bool));  // will have a u8 version
  for (int i = 0; i < q->g->n_nodes; i++) {
    const kiln_node *n = &q->g->nodes[i];
    if (quantizable(q->g, n) && !kiln_ptq_skipped(q, i))
      add_layer(q, i, ready);
    else
      kiln_ptq_consider_graph_op(q, i, ready);
  }
  free(ready);
}

// ---- Calibration ----

static void fbuf_push(fbuf *b, const double *v, int64_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2;
    b->v = realloc(b->v, sizeof(float) * (size_t)b->cap);
    if (!b->v) abort();
  }
  for (int64_t i = 0; i < n; i++) b->v[b->n + i] = (float)v[i];
  b->n += n;
}

static void collect(const kiln_graph *g, int tensor, const double *values, void *ctx) {
  ptq *q = ctx;
  if (q->wanted[tensor])
    fbuf_push(&q->seen[tensor], values, kiln_shape_numel(&g->tensors[tensor].shape));
}

static bool calibrate(ptq *q) {
  if (q->g->n_inputs != 1) {
    kiln_diag_error(q->d, q->g->source_file,
                    "--quantize: calibration feeds one input; the model has %d", q->g->n_inputs);
    return false;
  }
  q->samples = kiln_ptq_run_samples(q, q->g, q->wanted, q->o->max_samples, collect, q);
  return q->samples >= 0;
}

// ---- Scales ----

// x's scale and zero point, and y's unless y stays wide (a Gemm with a bias: i32 sums).
static void choose_scales(ptq *q, layer *L) {
  double lo, hi;
  const fbuf *x = &q->seen[L->x], *y = &q->seen[L->y];
  kiln_calib_range(x->v, x->n, q->o->method, q->o->percentile, &lo, &hi);
  kiln_calib_qparams(lo, hi, KILN_U8, &L->x_scale, &L->x_zp);
  if (L->has_bias) return;
  kiln_calib_range(y->v, y->n, q->o->method, q->o->percentile, &lo, &hi);
  if (L->relu >= 0) lo = 0;  // the fused Relu: zero point 0, u8 saturation clips below
  kiln_calib_qparams(lo, hi, KILN_U8, &L->y_scale, &L->y_zp);
}

// ---- The rewrite ----

static double round_half_even(double v) { return v - remainder(v, 1.0); }

// Weights as i8 per output channel, symmetric. A layout is channel-major, (channels, per), or
// channel-minor, (per, channels) (a MatMul's (K, N) b): `from` is w's, `to` the result's (of
// shape `shape`). Returns the i8 tensor and fills scales[channels].
typedef enum { CHANNEL_MAJOR, CHANNEL_MINOR } layout;

static int64_t at(layout l, int64_t o, int64_t k, int64_t channels, int64_t per) {
  return l == CHANNEL_MAJOR ? o * per + k : k * channels + o;
}

static int quantize_weights(kiln_grad_ctx *c, const kiln_tensor *w, int64_t channels, layout from,
                            layout to, const kiln_shape *shape, float *scales, layer *L) {
  int64_t per = kiln_shape_numel(&w->shape) / channels, n = channels * per;
  float *rows = malloc(sizeof(float) * (size_t)n);  // (channels, per)
  for (int64_t o = 0; o < channels; o++)
    for (int64_t k = 0; k < per; k++)
      rows[o * per + k] = (float)kiln_tensor_get(w, at(from, o, k, channels, per));
  kiln_calib_weight_scales(rows, channels, per, scales);
  double *wq = malloc(sizeof(double) * (size_t)n);
  L->w_min = L->w_max = scales[0];
  for (int64_t o = 0; o < channels; o++) {
    L->w_min = fminf(L->w_min, scales[o]), L->w_max = fmaxf(L->w_max, scales[o]);
    for (int64_t k = 0; k < per; k++)
      wq[at(to, o, k, channels, per)] =
          fmin(127, fmax(-127, round_half_even(rows[o * per + k] / scales[o])));
  }
  int t = kiln_gb_const(c, KILN_I8, shape, wq);
  free(rows);
  free(wq);
  return t;
}

static int f32_values(kiln_grad_ctx *c, const float *v, int64_t n) {
  double *dv = malloc(sizeof(double) * (size_t)n);
  for (int64_t i = 0; i < n; i++) dv[i] = v[i];
  kiln_shape s = {.rank = 1, .dim = {n}};
  int t = kiln_gb_const(c, KILN_F32, &s, dv);
  free(dv);
  return t;
}

// A new constant with the values of f32 param t (the model's own params keep their bytes).
static int f32_copy(kiln_grad_ctx *c, int t) {
  const kiln_tensor *b = &c->g->tensors[t];
  kiln_shape shape = b->shape;
  int64_t n = kiln_shape_numel(&shape);
  double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++) v[i] = kiln_tensor_get(b, i);
  int copy = kiln_gb_const(c, KILN_F32, &shape, v);
  free(v);
  return copy;
}

qtensor kiln_ptq_qparams(kiln_grad_ctx *c, float s, int32_t z) {
  return (qtensor){.q = -1,
                   .scale = kiln_gb_scalar(c, KILN_F32, s),
                   .zp = kiln_gb_scalar(c, KILN_U8, z),
                   .s = s,
                   .z = z};
}

// The u8 version of f32 tensor x: an earlier layer's or op's output (whose scale and zero point
// L then uses), or a new QuantizeLinear.
static qtensor quantized_input(kiln_grad_ctx *c, qtensor *have, layer *L) {
  if (have[L->x].q >= 0) {
    L->x_scale = have[L->x].s, L->x_zp = have[L->x].z;
    return have[L->x];
  }
  qtensor t = kiln_ptq_qparams(c, L->x_scale, L->x_zp);
  int in[3] = {L->x, t.scale, t.zp};
  t.q = kiln_gb_op(c, "QuantizeLinear", in, 3, NULL, 1);
  have[L->x] = t;
  return t;
}

// The i32 bias of a QLinearConv at scale units[o] = x_scale * w_scale[o], zero point 0: the
// Conv's bias b (-1: none, zeros) rounded. Tracked for bias correction when `correct`.
static int conv_bias(kiln_grad_ctx *c, layer *L, int b, const float *units, int64_t M,
                     bool correct) {
  double *bq = malloc(sizeof(double) * (size_t)M);
  for (int64_t o = 0; o < M; o++)
    bq[o] = b < 0 ? 0 : round_half_even(kiln_tensor_get(&c->g->tensors[b], o) / (double)units[o]);
  kiln_shape bs = {.rank = 1, .dim = {M}};
  int t = kiln_gb_const(c, KILN_I32, &bs, bq);
  free(bq);
  if (correct) kiln_ptq_track_bias(L, c->g->tensors[t].name, units, M);
  return t;
}

// Conv -> QLinearConv (the Conv's attributes): returns the u8 output tensor. With `correct`
// (bias correction), a Conv without a bias gets one of zeros.
static int rewrite_conv(kiln_grad_ctx *c, layer *L, qtensor x, qtensor y, bool correct) {
  kiln_graph *g = c->g;
  const kiln_node *n = &g->nodes[L->node];
  int w_idx = n->inputs[1], b_idx = n->n_inputs > 2 ? n->inputs[2] : -1;
  kiln_shape w_shape = g->tensors[w_idx].shape;  // (M, C / group, kH, kW)
  int64_t M = w_shape.dim[0];
  float *scales = malloc(sizeof(float) * (size_t)M);
  int wq =
      quantize_weights(c, &g->tensors[w_idx], M, CHANNEL_MAJOR, CHANNEL_MAJOR, &w_shape, scales, L);
  int in[9] = {x.q,     x.scale, x.zp, wq, f32_values(c, scales, M), kiln_gb_scalar(c, KILN_I8, 0),
               y.scale, y.zp,    -1};
  bool has_bias = b_idx >= 0 || correct;
  if (has_bias) {
    for (int64_t o = 0; o < M; o++) scales[o] = L->x_scale * scales[o];  // the bias's units
    in[8] = conv_bias(c, L, b_idx, scales, M, correct);
  }
  free(scales);
  return kiln_gb_op_like(c, "QLinearConv", in, has_bias ? 9 : 8, NULL);
}

// A Gemm with a bias, whose output goes on in f32: MatMulInteger, then DequantizeLinear of the
// i32 sums at scale x_scale * w_scale[j] (f32) per column, so the output is not rounded to u8
// (for a classifier, the logits). Returns the f32 tensor.
static int wide_matmul(kiln_grad_ctx *c, const layer *L, qtensor x, int bq, const float *w_scales,
                       int64_t N) {
  float *scales = malloc(sizeof(float) * (size_t)N);
  for (int64_t j = 0; j < N; j++) scales[j] = L->x_scale * w_scales[j];
  int in[4] = {x.q, bq, x.zp, kiln_gb_scalar(c, KILN_I8, 0)};
  int acc = kiln_gb_op(c, "MatMulInteger", in, 4, NULL, 1);
  kiln_gb_attr last_axis[] = {KILN_GB_INT("axis", -1), KILN_GB_END};
  int dq_in[2] = {acc, f32_values(c, scales, N)};
  free(scales);
  return acc < 0 ? -1 : kiln_gb_op(c, "DequantizeLinear", dq_in, 2, last_axis, 1);
}

// Gemm / MatMul -> QLinearMatMul with b as (K, N): returns the u8 output tensor; with a bias, the
// f32 output of wide_matmul.
static int rewrite_matmul(kiln_grad_ctx *c, const layer *L, qtensor x, qtensor y) {
  kiln_graph *g = c->g;
  const kiln_node *n = &g->nodes[L->node];
  int w_idx = n->inputs[1];
  bool trans_b = n->op == KILN_OP_Gemm && kiln_attr_int(n, "transB", 0);
  kiln_shape w_shape = g->tensors[w_idx].shape;
  int64_t N = trans_b ? w_shape.dim[0] : w_shape.dim[1],
          K = trans_b ? w_shape.dim[1] : w_shape.dim[0];
  kiln_shape b_shape = {.rank = 2, .dim = {K, N}};
  float *scales = malloc(sizeof(float) * (size_t)N);
  int bq = quantize_weights(c, &g->tensors[w_idx], N, trans_b ? CHANNEL_MAJOR : CHANNEL_MINOR,
                            CHANNEL_MINOR, &b_shape, scales, (layer *)L);
  if (L->has_bias) {
    int out = wide_matmul(c, L, x, bq, scales, N);
    free(scales);
    return out;
  }
  int in[8] = {x.q,     x.scale, x.zp, bq, f32_values(c, scales, N), kiln_gb_scalar(c, KILN_I8, 0),
               y.scale, y.zp};
  free(scales);
  return kiln_gb_op(c, "QLinearMatMul", in, 8, NULL, 1);
}

bool kiln_ptq_dequantize_into(kiln_grad_ctx *c, qtensor *have, qtensor y, int f32) {
  int dq_in[3] = {y.q, y.scale, y.zp};
  if (kiln_gb_op_into(c, "DequantizeLinear", dq_in, 3, NULL, &f32, 1) < 0) return false;
  have[f32] = y;  // the next layer or op reads y.q directly
  return true;
}

// Rewrites layer L; with `correct`, tracks the biases of Convs and Gemms for bias correction.
static bool rewrite_layer(kiln_grad_ctx *c, qtensor *have, layer *L, bool correct) {
  kiln_graph *g = c->g;
  c->node = g->nodes[L->node];
  qtensor x = quantized_input(c, have, L);
  qtensor y = L->has_bias ? (qtensor){.q = -1} : kiln_ptq_qparams(c, L->y_scale, L->y_zp);
  if (x.q < 0 || y.scale < 0 || y.zp < 0) return false;
  y.q = L->op == KILN_OP_Conv ? rewrite_conv(c, L, x, y, correct) : rewrite_matmul(c, L, x, y);
  if (y.q < 0) return false;
  int bias = L->has_bias ? g->nodes[L->node].inputs[2] : -1;
  if (bias >= 0 && correct) {  // a copy of the f32 bias, which correction changes
    bias = f32_copy(c, bias);
    kiln_ptq_track_bias(L, g->tensors[bias].name, NULL, kiln_shape_numel(&g->tensors[bias].shape));
  }
  g->nodes[L->node].dead = true;
  if (L->relu >= 0) g->nodes[L->relu].dead = true;
  if (bias < 0) return kiln_ptq_dequantize_into(c, have, y, L->y);
  int add_in[2] = {y.q, bias};  // y.q: wide_matmul's f32 output
  return kiln_gb_op_into(c, "Add", add_in, 2, NULL, &L->y, 1) >= 0;
}

// Whether bias correction applies to the layer making tensor y: only to the network's outputs
// (a layer's measured error includes the shifts of every layer upstream, so correcting them all
// at once over-corrects: ResNet-18 95.1 -> 93.3 % top-1 agreement, logits 41 -> 31 dB).
static bool corrected(const ptq *q, int y) {
  return kiln_ptq_bias_correction_wanted(q->o) && q->g->tensors[y].is_output;
}

static bool rewrite(ptq *q) {
  kiln_graph *g = q->g;
  kiln_grad_ctx c = {.g = g, .d = q->d};
  // Indexed by the layers' x and y, tensors of the graph as it was: what is added comes after.
  int cap = g->n_tensors;
  qtensor *have = malloc(sizeof(qtensor) * (size_t)cap);
  for (int t = 0; t < cap; t++) have[t] = (qtensor){.q = -1, .scale = -1, .zp = -1};
  bool ok = true;
  for (int i = 0, k = 0; ok && (i < q->n_layers || k < q->n_ops);) {  // merged in node order
    bool layer_next = k == q->n_ops || (i < q->n_layers && q->layers[i].node < q->ops[k].node);
    ok = layer_next ? rewrite_layer(&c, have, &q->layers[i], corrected(q, q->layers[i].y))
                    : kiln_ptq_rewrite_graph_op(&c, have, &q->ops[k++]);
    i += layer_next;
  }
  free(have);
  if (ok && q->head_fix.y_name) {  // the FP32 head's bias, a copy that correction changes
    kiln_node *n = &g->nodes[q->head_fix.node];
    c.node = *n;
    n->inputs[2] = f32_copy(&c, n->inputs[2]);
    const kiln_tensor *b = &g->tensors[n->inputs[2]];
    kiln_ptq_track_bias(&q->head_fix, b->name, NULL, kiln_shape_numel(&b->shape));
  }
  if (!ok) return false;
  kiln_graph_compact(g);
  return kiln_graph_toposort(g, q->d);
}

// ---- The report ----

// A row of the report: a layer's or a graph op's output, against its FP32 values.
typedef struct row {
  const fbuf *ref;  // the FP32 values
  const char *y_name;
  double *sqnr, *max_err;
  layer *L;  // the layer whose output it is (bias correction's channel errors), or NULL
} row;

typedef struct compare_ctx {
  int *row_of;  // per tensor index of the quantized graph: the row whose y it is, or -1
  row *rows;
  int64_t *at;  // per row: how many FP32 values were compared so far
  double *signal, *noise;
} compare_ctx;

static void compare(const kiln_graph *g, int tensor, const double *values, void *ctx) {
  compare_ctx *cc = ctx;
  int r = cc->row_of[tensor];
  if (r < 0) return;
  const fbuf *ref = cc->rows[r].ref;
  double *max_err = cc->rows[r].max_err;
  int64_t n = kiln_shape_numel(&g->tensors[tensor].shape);
  if (cc->rows[r].L && cc->at[r] + n <= ref->n)
    kiln_ptq_channel_errors(cc->rows[r].L, &g->tensors[tensor].shape, cc->at[r], ref->v + cc->at[r],
                            values, n);
  for (int64_t i = 0; i < n && cc->at[r] < ref->n; i++, cc->at[r]++) {
    double v = ref->v[cc->at[r]], e = (float)values[i] - v;
    cc->signal[r] += v * v, cc->noise[r] += e * e;
    *max_err = fmax(*max_err, fabs(e));
  }
}

// The report's rows: the layers, then the graph ops, then the FP32 head's Gemm when its bias is
// corrected (not printed).
static row *report_rows(ptq *q, int *n) {
  row *rows = malloc(sizeof(row) * (size_t)(q->n_layers + q->n_ops + 1));
  for (int l = 0; l < q->n_layers; l++) {
    layer *L = &q->layers[l];
    rows[l] = (row){&q->seen[L->y], L->y_name, &L->sqnr, &L->max_err, L};
  }
  for (int k = 0; k < q->n_ops; k++) {
    graph_op *op = &q->ops[k];
    rows[q->n_layers + k] = (row){&q->seen[op->y], op->y_name, &op->sqnr, &op->max_err, NULL};
  }
  *n = q->n_layers + q->n_ops;
  layer *h = &q->head_fix;
  if (h->y_name) rows[(*n)++] = (row){&q->seen[h->y], h->y_name, &h->sqnr, &h->max_err, h};
  return rows;
}

// Runs the quantized graph over the calibration samples again: each row's SQNR and max error.
static bool measure(ptq *q) {
  kiln_graph *g = q->g;
  int n;
  row *rows = report_rows(q, &n);
  compare_ctx cc = {.row_of = malloc(sizeof(int) * (size_t)g->n_tensors),
                    .rows = rows,
                    .at = calloc((size_t)n + 1, sizeof(int64_t)),
                    .signal = calloc((size_t)n + 1, sizeof(double)),
                    .noise = calloc((size_t)n + 1, sizeof(double))};
  bool *watch = calloc((size_t)g->n_tensors, sizeof(bool));
  for (int t = 0; t < g->n_tensors; t++) cc.row_of[t] = -1;
  for (int r = 0; r < n; r++) {
    int t = kiln_graph_find_tensor(g, cc.rows[r].y_name);
    if (t >= 0) cc.row_of[t] = r, watch[t] = true;
  }
  bool ok = kiln_ptq_run_samples(q, g, watch, q->samples, compare, &cc) >= 0;
  for (int r = 0; r < n; r++)
    *cc.rows[r].sqnr = cc.noise[r] > 0 ? 10 * log10(cc.signal[r] / cc.noise[r]) : INFINITY;
  free(cc.row_of), free(cc.rows), free(cc.at), free(cc.signal), free(cc.noise), free(watch);
  return ok;
}

static const char *op_name(int op) { return kiln_op_get(op)->name; }

// The ops kept in u8 between the layers (qgraph.c): their output's scale and error.
static void write_graph_ops(FILE *f, const ptq *q) {
  if (!q->n_ops) return;
  fprintf(f,
          "\nBetween the layers, in u8 (y scale and zero point: the input's for MaxPool, "
          "Flatten, Reshape):\n\n| op | type | y scale | y zp | relu fused | SQNR dB | max abs err "
          "|\n|---|---|---|---|---|---|---|\n");
  for (int k = 0; k < q->n_ops; k++) {
    const graph_op *op = &q->ops[k];
    fprintf(f, "| %s | %s | %.6g | %d | %s | %.2f | %.4g |\n", op->name, op_name(op->op),
            op->y_scale, op->y_zp, op->relu >= 0 ? "yes" : "no", op->sqnr, op->max_err);
  }
}

// The layers whose bias absorbed their mean error (bias_correct.c), after the measurement above.
static void write_corrected(FILE *f, const ptq *q) {
  int n = 0;
  for (int l = 0; l <= q->n_layers; l++) {
    const layer *L = l < q->n_layers ? &q->layers[l] : &q->head_fix;
    if (!L->err_sum) continue;
    const char *first = "\nBias corrected (--quant-bias-correction) after the measurement above: ";
    fprintf(f, "%s%s", n++ ? ", " : first, L->name);
  }
  if (n) fprintf(f, "\n");
}

static void write_report_to(FILE *f, const ptq *q) {
  fprintf(f, "# INT8 quantization report: %s\n\n", q->g->source_file ? q->g->source_file : "");
  fprintf(f, "Calibration: %lld samples, method %s", (long long)q->samples,
          kiln_calib_method_name(q->o->method));
  if (q->o->method == KILN_CALIB_PERCENTILE) fprintf(f, " (%g)", q->o->percentile);
  fprintf(f,
          ". SQNR and max abs error: the quantized model's layer output against the FP32\n"
          "model's, over the calibration samples (errors accumulate along the network).\n\n");
  fprintf(f,
          "| layer | op | x scale | x zp | w scale min..max | y scale | y zp | relu fused | "
          "SQNR dB | max abs err |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (int l = 0; l < q->n_layers; l++) {
    const layer *L = &q->layers[l];
    char y_scale[32] = "i32 (wide)", y_zp[16] = "-";
    if (!L->has_bias)
      snprintf(y_scale, sizeof y_scale, "%.6g", L->y_scale),
          snprintf(y_zp, sizeof y_zp, "%d", L->y_zp);
    fprintf(f, "| %s | %s | %.6g | %d | %.4g..%.4g | %s | %s | %s | %.2f | %.4g |\n", L->name,
            op_name(L->op), L->x_scale, L->x_zp, L->w_min, L->w_max, y_scale, y_zp,
            L->relu >= 0 ? "yes" : "no", L->sqnr, L->max_err);
  }
  write_graph_ops(f, q);
  for (int i = 0; i < q->o->n_skip; i++)
    fprintf(f, "\nKept in FP32 (--quant-skip, --quant-min-sqnr): %s", q->o->skip[i]);
  if (q->head_names[0])
    fprintf(f, "\nKept in FP32 (the classifier head, --quant-head fp32): %s", q->head_names);
  if (q->o->n_skip || q->head_names[0]) fprintf(f, "\n");
  write_corrected(f, q);
  if (q->o->min_sqnr > 0)
    fprintf(
        f,
        "\nLayers are kept in FP32 until every quantized one reaches %g dB (--quant-min-sqnr).\n",
        q->o->min_sqnr);
}

static bool write_report(const ptq *q) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", q->o->report);
  FILE *f = fopen(tmp, "w");
  if (!f) {
    kiln_diag_error(q->d, q->o->report, "--quant-report: cannot write: %s", strerror(errno));
    return false;
  }
  write_report_to(f, q);
  if (fclose(f) != 0 || kiln_rename_into_place(tmp, q->o->report) != 0) {
    kiln_diag_error(q->d, q->o->report, "--quant-report: cannot write: %s", strerror(errno));
    remove(tmp);
    return false;
  }
  return true;
}

// --quant-min-sqnr: the first layer below the threshold, for the caller to keep in FP32.
static void note_first_below(ptq *q) {
  kiln_quant_options *o = q->o;
  free((char *)o->below_threshold);
  o->below_threshold = NULL;
  for (int l = 0; o->min_sqnr > 0 && l < q->n_layers; l++)
    if (q->layers[l].sqnr < o->min_sqnr) {
      o->below_threshold = strdup(q->layers[l].name);
      o->below_sqnr = q->layers[l].sqnr;
      return;
    }
}

// ---- The pass ----

static void ptq_free(ptq *q, int n_tensors) {
  for (int t = 0; t < n_tensors; t++) free(q->seen[t].v);
  for (int l = 0; l < q->n_layers; l++) kiln_ptq_free_bias_tracking(&q->layers[l]);
  kiln_ptq_free_bias_tracking(&q->head_fix);
  free(q->seen), free(q->wanted), free(q->head), free(q->layers), free(q->ops);
}

bool kiln_pass_quantize(kiln_compilation *c, kiln_diag *d, bool *changed) {
  *changed = false;
  if (!c->quant) return true;
  int n_tensors = c->g->n_tensors;
  ptq q = {.g = c->g,
           .o = c->quant,
           .d = d,
           .seen = calloc((size_t)n_tensors, sizeof(fbuf)),
           .wanted = calloc((size_t)n_tensors, sizeof(bool)),
           .head = calloc((size_t)c->g->n_nodes, sizeof(bool))};
  find_head(&q);
  find_layers(&q);
  bool ok = q.n_layers > 0 && calibrate(&q);
  if (q.n_layers == 0)
    kiln_diag_error(d, c->g->source_file,
                    "--quantize int8: no Conv, Gemm or MatMul with constant f32 weights left to "
                    "quantize (%d kept in FP32)",
                    c->quant->n_skip);
  for (int l = 0; ok && l < q.n_layers; l++) choose_scales(&q, &q.layers[l]);
  for (int k = 0; ok && k < q.n_ops; k++) kiln_ptq_graph_op_scale(&q, &q.ops[k]);
  ok = ok && rewrite(&q);
  *changed = ok;
  // One run of the quantized graph gives the report's errors and bias correction's means (the
  // corrected outputs' rows show the error before the correction).
  bool correct = kiln_ptq_bias_correction_wanted(q.o);
  bool wants_errors = c->quant->report || c->quant->min_sqnr > 0;
  ok = ok && (!(correct || wants_errors) || measure(&q));
  if (ok && correct) kiln_ptq_correct_biases(&q);
  if (ok) note_first_below(&q);
  ok = ok && (!c->quant->report || write_report(&q));
  ptq_free(&q, n_tensors);
  return ok;
}

bool kiln_quant_parse_files(const char *list, kiln_quant_options *o) {
  for (const char *s = list; s && *s;) {
    size_t len = strcspn(s, ",");
    if (len == 0 || o->n_files == KILN_QUANT_MAX_FILES) {
      fprintf(stderr, "kiln: --calibrate takes 1 to %d .npy files separated by commas, got: %s\n",
              KILN_QUANT_MAX_FILES, list);
      return false;
    }
    o->files[o->n_files++] = strndup(s, len);
    s += len + (s[len] == ',');
  }
  return o->n_files > 0;
}

bool kiln_quant_head_parse(const char *s, bool *head_int8) {
  if (strcmp(s, "fp32") != 0 && strcmp(s, "int8") != 0) return false;
  *head_int8 = strcmp(s, "int8") == 0;
  return true;
}

bool kiln_bias_correction_parse(const char *s, kiln_bias_correction *out) {
  if (strcmp(s, "on") == 0) return *out = KILN_BIAS_CORRECTION_ON, true;
  if (strcmp(s, "off") == 0) return *out = KILN_BIAS_CORRECTION_OFF, true;
  return false;
}

bool kiln_calib_engine_parse(const char *s, kiln_calib_engine *out) {
  const char *names[] = {"auto", "interp", "binary"};
  for (int e = 0; e < 3; e++)
    if (strcmp(s, names[e]) == 0) return *out = (kiln_calib_engine)e, true;
  return false;
}

bool kiln_quant_keep_fp32(kiln_quant_options *o, const char *name) {
  if (o->n_skip == KILN_QUANT_MAX_SKIP) {
    fprintf(stderr, "kiln: at most %d layers can be kept in FP32 (at %s)\n", KILN_QUANT_MAX_SKIP,
            name);
    return false;
  }
  o->skip[o->n_skip++] = strdup(name);
  return true;
}

void kiln_quant_options_free(kiln_quant_options *o) {
  for (int i = 0; i < o->n_files; i++) free((char *)o->files[i]);
  for (int i = 0; i < o->n_skip; i++) free((char *)o->skip[i]);
  free((char *)o->below_threshold);
  o->n_files = o->n_skip = 0;
  o->below_threshold = NULL;
}
