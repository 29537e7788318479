// Helpers shared by the quantization ops (compiler/ops/quant/, docs/quantization.md):
//   quantized dtypes     the range of i8 / u8 and the dtype checks of scales and zero points
//   quantization params  a scale or zero point per tensor (one element) or per channel (1-D)
//   requantization       acc * multiplier rounded half to even, shifted by a zero point, saturated
//   integer windows      the 2-D convolution core of QLinearConv and ConvInteger (qconv.c)
//   integer matmul       the core of QLinearMatMul and MatMulInteger (qmatmul.c)
//   integer GEMM         the fast path of all four: u8 rows times i8 rows packed at compile time,
//                        loop IR dot4 statements (vpdpbusd) into lane accumulators
//                        (qmatmul.c; docs/quantization.md, "Integer kernels")
// Every reference kernel here computes exactly in integers (held in doubles, all below 2^53); every
// lowering computes the same integers in i32, and the float steps in the same precision and order
// as the reference, so the generated code matches the interpreter bit for bit.
#ifndef KILN_OPS_QUANT_QUANT_H
#define KILN_OPS_QUANT_QUANT_H

#include "../op_internal.h"

#define KILN_DT_QUANT (KILN_DT(KILN_I8) | KILN_DT(KILN_U8))

// The values a quantized dtype holds: [-128, 127] for i8, [0, 255] for u8.
void kiln_quant_range(kiln_dtype t, int64_t *lo, int64_t *hi);

// Checks optional input i (a scale or zero point named `what`): when present, a dtype in `dtypes`
// and either one element (per tensor) or, when channels > 0, a 1-D tensor of `channels` elements
// (per channel; `axis_text` says which, for the message). Reports and returns false otherwise.
bool kiln_quant_check_param(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                            const char *what, unsigned dtypes, int64_t channels,
                            const char *axis_text);
// Zero point input i must have input `data`'s dtype (ONNX: they share the type T).
bool kiln_quant_check_same_dtype(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                                 int data);

// eval: input i's value for channel k (element 0 when it has one element); 0 when absent.
double kiln_quant_param_ref(const kiln_node *n, const kiln_eval_tensor *in, int i, int64_t k);
// lower: a fresh load of input i's value for channel `ch` (an i64 expression; element 0 when the
// input has one element, `ch` then unused), converted to dtype t; the constant 0 when absent.
kiln_lexpr *kiln_quant_param_lx(const kiln_lower_ctx *c, int i, kiln_lexpr *ch, kiln_dtype t);
// True when input i is present with more than one element (per channel).
bool kiln_quant_per_channel(const kiln_graph *g, const kiln_node *n, int i);

// The requantize multiplier of QLinearConv / QLinearMatMul, in f32 as ONNX computes it:
// (x_scale * w_scale) / y_scale, each step rounded to f32.
double kiln_quant_multiplier_ref(double x_scale, double w_scale, double y_scale);
kiln_lexpr *kiln_quant_multiplier_lx(kiln_lb *b, kiln_lexpr *x_scale, kiln_lexpr *w_scale,
                                     kiln_lexpr *y_scale);  // f32 operands; an f32 result
// y = saturate(round_half_even(acc * m) + zp) to dtype t; the product in f64.
double kiln_quant_requantize_ref(double acc, double m, double zp, kiln_dtype t);
// acc: an i32 expression, m: an f64 expression, zp: an i32 expression; an expression of dtype t.
kiln_lexpr *kiln_quant_requantize_lx(kiln_lb *b, kiln_lexpr *acc, kiln_lexpr *m, kiln_lexpr *zp,
                                     kiln_dtype t);
// True when m is finite and |m| * bound < 2^30: a value of magnitude <= bound times m may take
// kiln_quant_saturate_small_lx.
bool kiln_quant_small(double m, double bound);
// saturate(round_half_even(v) + zp) to dtype t for an f64 expression v known to lie below 2^30 in
// magnitude (no NaN): the rounded value converted to i32 and saturated with integer min / max
// (cheaper than the f64 saturation, and vectorized by C compilers); zp an i32 expression. Equals
// kiln_quant_requantize_lx(v, 1, zp) for every such v.
kiln_lexpr *kiln_quant_saturate_small_lx(kiln_lb *b, kiln_lexpr *v, kiln_lexpr *zp, kiln_dtype t);
// y = saturate(round_half_even(x / scale) + zp) to dtype t; the quotient in f32 (QuantizeLinear).
double kiln_quant_quantize_ref(double x, double scale, double zp, kiln_dtype t);
kiln_lexpr *kiln_quant_quantize_lx(kiln_lb *b, kiln_lexpr *x, kiln_lexpr *scale, kiln_lexpr *zp,
                                   kiln_dtype t);  // x, scale: f32; zp: f32 holding an integer

// Elementwise over x with a per-channel parameter: y[e] = fn(x[e], channel of e), `axis` the
// channel axis (normalized) or -1 (per tensor). eval: fn_ref(x, k); lower: fn_lx(c, x, ch) with ch
// the channel's loop variable (-1 per tensor: see kiln_quant_ch), loops ordered (outer, channel,
// inner).
typedef double (*kiln_quant_elem_ref)(const kiln_node *n, const kiln_eval_tensor *in, double x,
                                      int64_t k);
typedef kiln_lexpr *(*kiln_quant_elem_lx)(const kiln_lower_ctx *c, kiln_lexpr *x, int ch_var);
// A fresh i64 expression of the channel: the variable, or 0 when ch_var is -1.
kiln_lexpr *kiln_quant_ch(kiln_lb *b, int ch_var);
void kiln_quant_channel_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out,
                             int axis, kiln_quant_elem_ref fn);
void kiln_quant_channel_lower(const kiln_lower_ctx *c, int axis, kiln_quant_elem_lx fn);

// QuantizeLinear / DequantizeLinear: checks the scale (input 1, f32) and zero point (input 2,
// optional, dtype `zp_dtypes`) against x (input 0) and `axis` (default 1); sets *axis to the
// normalized channel axis, or -1 when both are per tensor.
extern const kiln_attr_spec kiln_quant_linear_attrs[];
bool kiln_quant_linear_params(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                              unsigned zp_dtypes, int *axis);
// The channel axis of a checked node (as kiln_quant_linear_params sets it).
int kiln_quant_linear_axis(const kiln_node *n, const kiln_shape *x, bool per_channel);

// ---- Integer 2-D convolution (qconv.c): QLinearConv and ConvInteger ----
// Input positions of a QLinearConv / ConvInteger node: x, w, their zero points, and the bias.
// QLinearConv also names its scales and y's zero point (-1 for ConvInteger: the output is acc).
typedef struct kiln_qconv_inputs {
  int x, x_zp, w, w_zp, bias;  // bias -1: none
  int x_scale, w_scale, y_scale, y_zp;
} kiln_qconv_inputs;
extern const kiln_attr_spec kiln_qconv_attrs[];
// Checks x (N, C, H, W) and w (M, C / group, kH, kW) (i8 or u8), the zero points, the bias (i32,
// (M)) and the window attributes; returns the output shape (N, M, OH, OW) in *out.
bool kiln_qconv_check(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                      const kiln_qconv_inputs *q, kiln_shape *out);
// eval: acc[((n * M + oc) * OH + oh) * OW + ow], the exact integer sums (bias included).
void kiln_qconv_accumulate_ref(const kiln_node *n, const kiln_eval_tensor *in,
                               const kiln_qconv_inputs *q, double *acc);
// What is stored for one output element: `acc` an i32 expression, `oc` the output channel
// (an i64 expression); the value to store, of the output's dtype.
typedef kiln_lexpr *(*kiln_qconv_store_fn)(const kiln_lower_ctx *c, kiln_lexpr *acc, int oc_var,
                                           int scale_var);
// The lowering: per output row an i32 accumulator row; then y = finish(acc). `prologue`, when not
// NULL, declares a per-output-channel local (the requantize multiplier) whose id is passed to
// `finish` as scale_var.
typedef int (*kiln_qconv_prologue_fn)(const kiln_lower_ctx *c, int oc_var);
void kiln_qconv_lower(const kiln_lower_ctx *c, const kiln_qconv_inputs *q,
                      kiln_qconv_prologue_fn prologue, kiln_qconv_store_fn finish);
// The fast lowering (u8 or i8 x, constant i8 w with zero w zero points, group 1, constant scales):
// x copied to padded NHWC, gathered into patches, and a kiln_qgemm against w packed at compile
// time. Emits nothing and returns false when it does not apply.
bool kiln_qconv_lower_fast(const kiln_lower_ctx *c, const kiln_qconv_inputs *q);
int64_t kiln_qconv_flops(const kiln_graph *g, const kiln_node *n);

// ---- Integer matmul (qmatmul.c): QLinearMatMul and MatMulInteger ----
// A (..., M, K) and B (..., K, N), rank >= 2 each, batch dims broadcast (numpy).
// QLinearMatMul also names its scales and y's zero point (-1 for MatMulInteger).
typedef struct kiln_qmatmul_inputs {
  int a, a_zp, b, b_zp;
  int a_scale, b_scale, y_scale, y_zp;
} kiln_qmatmul_inputs;
typedef struct kiln_qmatmul_plan {
  kiln_shape batch;  // broadcast batch dims
  int64_t M, N, K, batches;
  int64_t a_stride[KILN_MAX_RANK], b_stride[KILN_MAX_RANK];  // per batch dim; 0 if broadcast
} kiln_qmatmul_plan;
// Checks A and B (i8 or u8), their zero points (scalar, or per row of A (M) / per column of B
// (N)); sets *out to (batch..., M, N) and *p.
bool kiln_qmatmul_check(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                        const kiln_qmatmul_inputs *q, kiln_shape *out);
void kiln_qmatmul_plan_of(const kiln_shape *a, const kiln_shape *b, kiln_qmatmul_plan *p);
// eval: acc[(t * M + i) * N + j], exact integer sums.
void kiln_qmatmul_accumulate_ref(const kiln_node *n, const kiln_eval_tensor *in,
                                 const kiln_qmatmul_inputs *q, double *acc);
// The value to store for output element (row i, column j) from the i32 accumulator `acc`.
typedef kiln_lexpr *(*kiln_qmatmul_store_fn)(const kiln_lower_ctx *c, kiln_lexpr *acc, int i_var,
                                             int j_var);
void kiln_qmatmul_lower(const kiln_lower_ctx *c, const kiln_qmatmul_inputs *q,
                        kiln_qmatmul_store_fn finish);
// The fast lowering (u8 or i8 a with one zero point, constant 2-D i8 b with zero b zero points,
// constant scales): a kiln_qgemm against b transposed and packed at compile time. Emits nothing
// and returns false when it does not apply.
bool kiln_qmatmul_lower_fast(const kiln_lower_ctx *c, const kiln_qmatmul_inputs *q);

// ---- The integer GEMM of the fast lowerings (qmatmul.c) ----
// y[index(r, j)] = out(sum over k < kp of a[a_offset + r * kp + k] * w[j][k], j) for rows r and
// columns j: u8 rows of a (the activations, made unsigned; kp = k rounded up to 4, the padding
// multiplied by zero weights), i8 rows of w (the weights, packed at compile time). The tiles
// broadcast 4 bytes of a row against 4 bytes of each of `lanes` columns (loop IR dot4: vpdpbusd
// on AVX-512 VNNI), keeping rb rows by vb * lanes columns of sums in lane accumulators.
//   out(s, j) = s - x_zp * sum_w[j] (+ bias[j]), requantized with mult[j] and y_zp when mult >= 0
typedef struct kiln_qgemm_out {
  int x_zp;    // an i32 local: the zero point of a's (unsigned) values
  int sum_w;   // buf: sum over k of w[j][k] (i32, derived)
  int bias;    // input index of an i32 bias per column, or -1
  int mult;    // buf: the f32 requantize multiplier per column (derived), or -1: y = the i32 sum
  int y_zp;    // input index of y's zero point (with mult)
  bool small;  // every mult is kiln_quant_small for i32 sums: the integer saturation applies
} kiln_qgemm_out;
typedef kiln_lexpr *(*kiln_qgemm_index_fn)(const kiln_lower_ctx *c, const void *user,
                                           kiln_lexpr *row, kiln_lexpr *col);
// Where run `run_var` (an i64 variable) of row `row` starts in buf a (implicit patches).
typedef kiln_lexpr *(*kiln_qgemm_run_fn)(const kiln_lower_ctx *c, const void *user, kiln_lexpr *row,
                                         int run_var);
typedef struct kiln_qgemm {
  int a, w;  // bufs: a u8 (rows, kp), w i8 (see kiln_qgemm_pack)
  int acc;   // buf: i32 sums (rows, cols), requantized from there (with out.mult >= 0)
  int64_t a_offset, rows, cols, kp;
  int64_t lanes;  // w's column vectors (set by kiln_qgemm_pack)
  kiln_qgemm_out out;
  kiln_qgemm_index_fn index;  // y's flat index of (row, col)
  const void *user;
  // Implicit patches (when run_at is not NULL): a row's kp bytes are `runs` runs of run_k bytes
  // each (run_k a multiple of 4), run s of row r read from a[run_at(r, s)] on instead of a row of
  // a (a_offset unused): a convolution's window rows read in place from its NHWC input.
  int64_t runs, run_k;
  kiln_qgemm_run_fn run_at;
  // With implicit patches on AMX (kiln_lower_ctx.amx): rows come in segments of row_seg rows
  // (one output row of a convolution) whose runs start row_ld bytes apart in a; a row's runs
  // start run_ld bytes apart.
  int64_t row_seg, row_ld, run_ld;
  bool out_by_cols;  // y's consecutive rows are contiguous (AMX keeps the sums column by column)
} kiln_qgemm;
// k rounded up to a multiple of 4 (dot4 consumes 4 bytes of a row at a time), of 64 with AMX
// (an A tile's row).
int64_t kiln_qgemm_kp(const kiln_lower_ctx *c, int64_t k);
// Registers packed (cols, kp) i8, rearranged as [cols / lanes][kp / 4][lanes][4] (zero columns
// up to whole vectors), as a derived weight (q->w), its column sums (q->out.sum_w) and sets
// q->lanes (the target's: 16, 8 or 4; 16 with AMX, whose B tiles have that layout).
void kiln_qgemm_pack(const kiln_lower_ctx *c, kiln_qgemm *q, const int8_t *packed);
void kiln_qgemm_lower(const kiln_lower_ctx *c, const kiln_qgemm *q);

// ---- Constant parameters (quant_util.c): what the fast lowerings ask of a node ----
bool kiln_quant_is_const(const kiln_graph *g, const kiln_node *n, int i);  // a param with data
// Absent, or a constant whose elements are all zero.
bool kiln_quant_zero_or_absent(const kiln_graph *g, const kiln_node *n, int i);
// The kernel's scratch (kiln_lower_scratch): acc_count i32 values (*acc; -1 when 0) and, after
// them, u8_bytes bytes (*bytes; -1 when 0).
void kiln_quant_scratch(const kiln_lower_ctx *c, int64_t acc_count, int64_t u8_bytes, int *acc,
                        int *bytes);
// The requantize multipliers x_scale * w_scale[j] / y_scale (kiln_quant_multiplier_ref) of cols
// columns as a derived f32 buffer; x_scale and y_scale one value, w_scale one or cols values. -1
// when a scale is not a constant. *small: every multiplier is kiln_quant_small for any i32 sum.
int kiln_quant_multipliers(const kiln_lower_ctx *c, int x_scale, int w_scale, int y_scale,
                           int64_t cols, bool *small);
// The fast lowerings compute on unsigned operands: an i8 value x becomes the u8 x + 128, and its
// zero point moves with it ((x + 128) - (zp + 128) = x - zp). x of dtype t; a u8 expression.
kiln_lexpr *kiln_quant_unsigned_lx(kiln_lb *b, kiln_lexpr *x, kiln_dtype t);
// Declares the i32 local xzp: input zp's value (0 when absent), + 128 when t is i8.
int kiln_quant_unsigned_zp(const kiln_lower_ctx *c, int zp, kiln_dtype t);
// True when the scales are constants as kiln_quant_multipliers needs them.
bool kiln_quant_scales_const(const kiln_graph *g, const kiln_node *n, int x_scale, int w_scale,
                             int y_scale);
int64_t kiln_qmatmul_flops(const kiln_graph *g, const kiln_node *n);

#endif
