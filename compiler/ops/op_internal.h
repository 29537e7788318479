// Helpers shared between op files only (not part of the op contract in op.h):
//   attribute checks      reading INTS attributes with a value check and a uniform error message
//   eval helpers          optional inputs, unravelling flat indices
//   binary / unary        the shared elementwise implementations behind add.c ... tanh.c
//   sliding windows       auto_pad, pads, output sizes and clamped loop bounds for Conv and the
//                         pools (pool.c)
#ifndef KILN_OPS_OP_INTERNAL_H
#define KILN_OPS_OP_INTERNAL_H

#include "op.h"

// ---- Attributes (common.c) ----

typedef enum {
  KILN_INTS_ANY,
  KILN_INTS_POSITIVE,     // every value >= 1
  KILN_INTS_NONNEGATIVE,  // every value >= 0
} kiln_ints_rule;

// Reads INTS attribute `name` into out[count]. Absent: out is untouched and it returns true.
// Present with another length or a value breaking `rule`: reports
//   "attrs.strides: expected 2 positive integers, got [0, 1]"
// and returns false.
bool kiln_op_read_ints(const kiln_node *n, kiln_diag *d, const char *name, int count,
                       kiln_ints_rule rule, int64_t *out);
// Reads INT attribute `name` (default dflt) and checks lo <= value <= hi; reports otherwise.
bool kiln_op_read_int(const kiln_node *n, kiln_diag *d, const char *name, int64_t dflt, int64_t lo,
                      int64_t hi, int64_t *out);
// Formats "[0, 1]" into buf; returns buf.
char *kiln_ints_str(const int64_t *v, int count, char *buf, int size);

// "x (1, 3, 32, 32)": a tensor's name and shape, for comments and messages.
typedef struct kiln_tensor_desc {
  char text[160];
} kiln_tensor_desc;
kiln_tensor_desc kiln_describe(const kiln_tensor *t);
kiln_tensor_desc kiln_shape_text(const kiln_shape *s);  // "(1, 3, 32, 32)"
// Input i of the node being lowered / its output i.
static inline const kiln_tensor *kiln_lower_in(const kiln_lower_ctx *c, int i) {
  return &c->g->tensors[c->node->inputs[i]];
}
static inline const kiln_tensor *kiln_lower_out(const kiln_lower_ctx *c, int i) {
  return &c->g->tensors[c->node->outputs[i]];
}

// Flat index ((n * C + c) * H + h) * W + w of an NCHW tensor with dims (_, C, H, W); n and c are
// expressions (freshly built ones: expressions are not shared between statements).
kiln_lexpr *kiln_lx_nchw(kiln_lb *b, kiln_lexpr *n, kiln_lexpr *c, const int64_t dims[4],
                         kiln_lexpr *h, kiln_lexpr *w);
// The same for any rank >= 2: ((n * C + c) * D1 + pos[0]) * D2 + pos[1] ... for dims of s; pos
// holds s->rank - 2 expressions (all consumed).
kiln_lexpr *kiln_lx_ncx(kiln_lb *b, kiln_lexpr *n, kiln_lexpr *c, const kiln_shape *s,
                        kiln_lexpr *const *pos);

// ---- Reference kernels (common.c) ----

// True if optional input i was given (present in the node, not "").
static inline bool kiln_has_input(const kiln_node *n, int i) {
  return i < n->n_inputs && n->inputs[i] >= 0;
}
// Splits flat row-major index `flat` over shape s into idx[s->rank].
void kiln_unravel(int64_t flat, const kiln_shape *s, int64_t *idx);
// sum(idx[i] * strides[i]) over rank dimensions.
int64_t kiln_dot_index(int rank, const int64_t *idx, const int64_t *strides);
// out->data[i] = in->data[i]: Flatten and Reshape.
void kiln_copy_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out);
// One loop over every element: out[i] = in[i].
void kiln_copy_lower(const kiln_lower_ctx *c);
int64_t kiln_no_flops(const kiln_graph *g, const kiln_node *n);
int64_t kiln_output_numel_flops(const kiln_graph *g, const kiln_node *n);

// ---- Scratch memory for a kernel (compiler/passes/lower.c) ----

// A buffer of numel elements of dtype t that only the kernel being lowered uses (state the op
// keeps between loop iterations that is no graph tensor: RNN hidden states). It lies past the
// tensors plan-memory placed; every kernel's scratch starts there (kernels run one at a time), and
// the arena grows to the largest. Returns the buffer index.
int kiln_lower_scratch(const kiln_lower_ctx *c, kiln_dtype t, int64_t numel);
// A weights buffer of numel f32 values computed at compile time from constant params (a weight
// pre-packed into a blocked layout): the data is copied and appended to the weights payload.
// Returns the buffer index; the buffer is named <node>_<suffix>.
int kiln_lower_derived_weight(const kiln_lower_ctx *c, const char *suffix, const float *data,
                              int64_t numel);
// The same for numel elements of any dtype t (indices of a compressed sparse weight: i32).
int kiln_lower_derived(const kiln_lower_ctx *c, const char *suffix, kiln_dtype t, const void *data,
                       int64_t numel);

// ---- Binary elementwise ops with numpy broadcasting (binary.c) ----

typedef double (*kiln_binary_fn)(double a, double b);
bool kiln_binary_infer(kiln_graph *g, kiln_node *n, kiln_diag *d);
void kiln_binary_eval(const kiln_eval_tensor *in, kiln_eval_tensor *out, kiln_binary_fn fn);
void kiln_binary_lower(const kiln_lower_ctx *c, kiln_lbin op);
extern const kiln_attr_spec kiln_binary_attrs[];

// Defines `kiln_op_<Name>` from a scalar function (the reference semantics), the loop-IR
// operator that computes the same thing, and the op's tolerance (kiln_tolerance).
#define KILN_DEFINE_BINARY_OP(Name, scalar_fn, lbin_op, atol, rtol) \
  KILN_DEFINE_BINARY_OP_GRAD(Name, scalar_fn, lbin_op, atol, rtol, NULL)
// The same with a gradient rule (kiln_op_def.grad; docs/training.md).
#define KILN_DEFINE_BINARY_OP_GRAD(Name, scalar_fn, lbin_op, atol, rtol, grad_fn)                  \
  static void Name##_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) { \
    (void)n;                                                                                       \
    kiln_binary_eval(in, out, scalar_fn);                                                          \
  }                                                                                                \
  static void Name##_lower(const kiln_lower_ctx *c) { kiln_binary_lower(c, lbin_op); }             \
  static kiln_lexpr *Name##_elementwise(kiln_lb *b, const kiln_node *n, kiln_dtype t,              \
                                        kiln_lexpr **v, int count) {                               \
    (void)n, (void)t, (void)count;                                                                 \
    return lx_bin(b, lbin_op, v[0], v[1]);                                                         \
  }                                                                                                \
  const kiln_op_def kiln_op_##Name = {                                                             \
      .name = #Name,                                                                               \
      .min_inputs = 2,                                                                             \
      .max_inputs = 2,                                                                             \
      .min_outputs = 1,                                                                            \
      .max_outputs = 1,                                                                            \
      .attrs = kiln_binary_attrs,                                                                  \
      .fuse = KILN_FUSE_BROADCAST,                                                                 \
      .infer = kiln_binary_infer,                                                                  \
      .eval = Name##_eval,                                                                         \
      .lower = Name##_lower,                                                                       \
      .flops = kiln_output_numel_flops,                                                            \
      .tol = {atol, rtol},                                                                         \
      .grad = grad_fn,                                                                             \
      .elementwise = Name##_elementwise,                                                           \
  }

// ---- Unary elementwise ops (unary.c) ----

typedef double (*kiln_unary_fn)(double x);
// Builds the loop-IR expression for one element x of dtype t.
typedef kiln_lexpr *(*kiln_unary_lx)(kiln_lb *b, kiln_dtype t, kiln_lexpr *x);
bool kiln_unary_infer(kiln_graph *g, kiln_node *n, kiln_diag *d);
void kiln_unary_eval(const kiln_eval_tensor *in, kiln_eval_tensor *out, kiln_unary_fn fn);
void kiln_unary_lower(const kiln_lower_ctx *c, kiln_unary_lx lx);
extern const kiln_attr_spec kiln_unary_attrs[];

#define KILN_DEFINE_UNARY_OP(Name, scalar_fn, lx_fn, atol, rtol) \
  KILN_DEFINE_UNARY_OP_GRAD(Name, scalar_fn, lx_fn, atol, rtol, NULL)
// The same with a gradient rule (kiln_op_def.grad; docs/training.md).
#define KILN_DEFINE_UNARY_OP_GRAD(Name, scalar_fn, lx_fn, atol, rtol, grad_fn)                     \
  static void Name##_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) { \
    (void)n;                                                                                       \
    kiln_unary_eval(in, out, scalar_fn);                                                           \
  }                                                                                                \
  static void Name##_lower(const kiln_lower_ctx *c) { kiln_unary_lower(c, lx_fn); }                \
  static kiln_lexpr *Name##_elementwise(kiln_lb *b, const kiln_node *n, kiln_dtype t,              \
                                        kiln_lexpr **v, int count) {                               \
    (void)n, (void)count;                                                                          \
    return lx_fn(b, t, v[0]);                                                                      \
  }                                                                                                \
  const kiln_op_def kiln_op_##Name = {                                                             \
      .name = #Name,                                                                               \
      .min_inputs = 1,                                                                             \
      .max_inputs = 1,                                                                             \
      .min_outputs = 1,                                                                            \
      .max_outputs = 1,                                                                            \
      .attrs = kiln_unary_attrs,                                                                   \
      .fuse = KILN_FUSE_ELEMENTWISE,                                                               \
      .infer = kiln_unary_infer,                                                                   \
      .eval = Name##_eval,                                                                         \
      .lower = Name##_lower,                                                                       \
      .flops = kiln_output_numel_flops,                                                            \
      .tol = {atol, rtol},                                                                         \
      .grad = grad_fn,                                                                             \
      .elementwise = Name##_elementwise,                                                           \
  }

// ---- Sliding windows: Conv, ConvTranspose, MaxPool, AveragePool (pool.c) ----

// Spatial axes a windowed op takes: 1 (L), 2 (H, W) or 3 (D, H, W).
enum { KILN_MAX_SPATIAL = 3 };

// One window configuration over `rank` spatial axes, resolved from the attributes and the input's
// spatial size. For 2-D, axis 0 is H and axis 1 is W. Input position of window element k for
// output position o: i = o * stride - pad_begin + k * dilation, valid when 0 <= i < in.
typedef struct kiln_window {
  int rank;                            // spatial axes, 1..3
  int64_t in[KILN_MAX_SPATIAL];        // input spatial size (H, W)
  int64_t kernel[KILN_MAX_SPATIAL];    // (kH, kW)
  int64_t stride[KILN_MAX_SPATIAL];    // default 1
  int64_t dilation[KILN_MAX_SPATIAL];  // default 1
  // After auto_pad; the pads attribute is [all begins, all ends], [top, left, bottom, right] in 2-D
  int64_t pad_begin[KILN_MAX_SPATIAL], pad_end[KILN_MAX_SPATIAL];
  int64_t out[KILN_MAX_SPATIAL];  // output spatial size (OH, OW)
} kiln_window;

typedef struct kiln_window_opts {
  bool dilations;  // the op accepts `dilations`
  bool ceil_mode;  // the op accepts `ceil_mode`
  bool quantized;  // the op accepts i8 / u8 inputs too (MaxPool: max commutes with dequantizing)
} kiln_window_opts;

// Reads strides, pads, dilations, auto_pad and ceil_mode from n (each `rank` long, pads 2 * rank:
// all begins, then all ends), checks their values, and computes pads and output size for spatial
// input size in[rank] and kernel[rank]. d may be NULL (eval, after infer has checked). Returns
// false after reporting a problem.
bool kiln_window_resolve_nd(const kiln_node *n, kiln_diag *d, int rank, const int64_t *in,
                            const int64_t *kernel, kiln_window_opts opts, kiln_window *w);
// The same for 2 spatial axes (in[2], kernel[2]).
bool kiln_window_resolve(const kiln_node *n, kiln_diag *d, const int64_t in[2],
                         const int64_t kernel[2], kiln_window_opts opts, kiln_window *w);
// Reads and checks `kernel_shape` (rank positive integers); if `required`, reports its absence.
// Returns false after reporting; sets *present.
bool kiln_window_kernel_attr_nd(const kiln_node *n, kiln_diag *d, int rank, bool required,
                                int64_t *kernel, bool *present);
bool kiln_window_kernel_attr(const kiln_node *n, kiln_diag *d, bool required, int64_t kernel[2],
                             bool *present);  // rank 2
// The name of spatial axis `axis` of `rank` in messages: L; H, W; D, H, W.
const char *kiln_spatial_axis_name(int rank, int axis);
// Reference kernels: the flat index, within one (n, c) plane of the input, of window element
// (tap) t at output position o (both flat row-major over w->out and w->kernel). False when that
// element lies in the padding.
bool kiln_window_tap(const kiln_window *w, int64_t o, int64_t t, int64_t *at);
int64_t kiln_window_taps(const kiln_window *w);      // kernel elements: kD * kH * kW
int64_t kiln_window_out_size(const kiln_window *w);  // output positions per plane
int64_t kiln_window_in_size(const kiln_window *w);   // input positions per plane
// Input position (i64) oh * stride - pad_begin + kh * dilation of window element k_var for output
// position o_var along axis.
kiln_lexpr *kiln_window_lower_pos(kiln_lb *b, const kiln_window *w, int axis, int o_var, int k_var);
// The kernel index range [lo, hi) along axis at output position o_var, clamped so the input
// position stays inside [0, in): the kernel loops need no padding checks. A bound that varies
// with the output position is declared where this is called, as an i64 local <k_name>_lo or
// <k_name>_hi (var >= 0); a bound that does not stays a constant (var -1).
typedef struct kiln_krange {
  int lo_var, hi_var;
  int64_t lo, hi;
} kiln_krange;
kiln_krange kiln_window_lower_range(kiln_lb *b, const kiln_window *w, int axis, int o_var,
                                    const char *k_name);
// The output range [lo, hi) along axis whose input position o*s - p + k*dil, for the kernel index
// in k_var, lies inside [0, in): the transpose of kiln_window_lower_range, for loops that run over
// output positions inside a kernel loop. Bounds that vary with k are declared as i64 locals
// <o_name>_lo / <o_name>_hi; the others are the constants 0 / out.
void kiln_window_lower_cols(kiln_lb *b, const kiln_window *w, int axis, int k_var,
                            const char *o_name, kiln_lexpr **lo, kiln_lexpr **hi);
kiln_lexpr *kiln_krange_lo(kiln_lb *b, const kiln_krange *r);  // a fresh expression each call
kiln_lexpr *kiln_krange_hi(kiln_lb *b, const kiln_krange *r);
// Gradient rules: the backward kernels (ConvGradInput, ConvGradFilter, MaxPoolGrad,
// AveragePoolGrad) are 2-D. True when input `input` of the forward node is (N, C, H, W); otherwise
// reports "training: ... 2-D only" about the node and returns false.
bool kiln_window_grad_is_2d(kiln_grad_ctx *c, int input);

// ---- MaxPool and AveragePool (pool.c) ----

// Checks x (N, C, D1, ..., Dk), k = 1..3 the length of kernel_shape, and the window attributes;
// sets output 0 (N, C, OD1, ..., ODk).
bool kiln_pool_infer(kiln_graph *g, kiln_node *n, kiln_diag *d, kiln_window_opts opts);
// The window of a pool node over input shape x (already checked by infer).
kiln_window kiln_pool_window(const kiln_node *n, const kiln_shape *x, kiln_window_opts opts);
// Lowering shared by the pools, per spatial axis i of the window's rank:
//   for n, c, o[0] [k[0] range], ..., o[r-1] [k[r-1] range]: acc = init
//     for k[0] ... k[r-1]: acc = combine(acc, x[...])
//     y[n][c][o...] = finish(acc)   (just acc when finish is NULL)
typedef struct kiln_pool_vars {
  int n, c, o[KILN_MAX_SPATIAL], acc;
  kiln_krange k[KILN_MAX_SPATIAL];
} kiln_pool_vars;
typedef kiln_lexpr *(*kiln_pool_finish)(const kiln_lower_ctx *c, const kiln_window *w,
                                        const kiln_pool_vars *v);
void kiln_pool_lower(const kiln_lower_ctx *c, kiln_window_opts opts, double init, kiln_lbin combine,
                     kiln_pool_finish finish);
// The pieces of kiln_pool_lower, for pools that do more per element (MaxPool's Indices): open
// the output loops (n, c, o[i] with their kernel ranges) / the kernel loops (vars in k_vars) /
// the flat index of x at the current tap. Close each with kiln_lb_end_for, one per loop.
void kiln_pool_open_outputs(const kiln_lower_ctx *c, const kiln_window *w, kiln_pool_vars *v);
void kiln_pool_open_taps(const kiln_lower_ctx *c, const kiln_window *w, const kiln_pool_vars *v,
                         int *k_vars);
kiln_lexpr *kiln_pool_x_index(const kiln_lower_ctx *c, const kiln_window *w,
                              const kiln_pool_vars *v, const int *k_vars);
kiln_lexpr *kiln_pool_y_index(const kiln_lower_ctx *c, const kiln_pool_vars *v, int output);
// The row form of a 2-D pool without a finish step (MaxPool): output rows combined in place, the
// innermost loop over output columns with clamped bounds (vectorizes, no padding checks):
//   for n*c, oh [kh range]: y[nc][oh][:] = init
//     for kh, kw: for ow in [ow_lo(kw), ow_hi(kw)): y[nc][oh][ow] = combine(y[..], x[..])
// x and y may be NCHWc (rank 5, MaxPool's layout attribute): a pixel is then L values, combined
// as one vector (nc runs over N * C / L channel blocks).
void kiln_pool_lower_rows(const kiln_lower_ctx *c, kiln_window_opts opts, double init,
                          kiln_lbin combine);
// Window elements summed or compared: N * C * (output positions) * (kernel elements).
int64_t kiln_pool_flops(const kiln_graph *g, const kiln_node *n, kiln_window_opts opts);

// ---- GlobalMaxPool and GlobalAveragePool (pool.c) ----

// AveragePool's attributes (averagepool.c), shared by QLinearAveragePool.
extern const kiln_attr_spec kiln_average_pool_attrs[];
// Checks x (N, C, D1, ...), rank >= 3; sets the output (N, C, 1, ..., 1).
bool kiln_global_pool_infer(kiln_graph *g, kiln_node *n, kiln_diag *d);
// The output shape (N, C, 1, ..., 1) of a global pool over input 0 (rank >= 3, else reported).
bool kiln_global_pool_shape(const kiln_graph *g, const kiln_node *n, kiln_diag *d, kiln_shape *out);
// D1 * ... * Dk: the elements pooled per (n, c).
int64_t kiln_global_pool_size(const kiln_shape *x);
// for nc: acc = init; for i: acc = combine(acc, x[nc][i]); y[nc] = acc (/ size when mean)
void kiln_global_pool_lower(const kiln_lower_ctx *c, double init, kiln_lbin combine, bool mean);
int64_t kiln_global_pool_flops(const kiln_graph *g, const kiln_node *n);  // numel(x)

// ---- Tensor ops: constant inputs, axes, strided copies (tensor/tensor_util.c) ----

// Reads input i, which must be a constant (a param with data) scalar or 1-D tensor of at most max
// values, dtype i32/i64 (ints) or f32/f64 (floats), into out. Returns the count, or -1 after
// reporting "inputs[1] (s): Slice needs a constant starts (a param with data, dtype i32 or i64)".
// `what` names the input ("starts", "shape", ...).
int kiln_op_const_ints(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                       const char *what, int64_t *out, int max);
int kiln_op_const_floats(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                         const char *what, double *out, int max);
// Integer values of an eval tensor (saturating: INT64_MAX survives the trip through double).
int kiln_eval_ints(const kiln_eval_tensor *t, int64_t *out, int max);
int64_t kiln_saturate_i64(double v);
// Checks -rank <= axis < rank ("<field>: expected an axis in [-2, 1], got 5"); *out in [0, rank).
bool kiln_op_check_axis(const kiln_node *n, kiln_diag *d, const char *field, int64_t axis, int rank,
                        int64_t *out);
// Reports "<why> gives an output of shape (2, 0); Kiln needs every dimension >= 1".
bool kiln_op_check_dims(const kiln_node *n, kiln_diag *d, const kiln_shape *s, const char *why);
// A strided copy: for every index v of `shape`,
//   dst[dst_base + sum v[i] * dst_stride[i]] = src[src_base + sum v[i] * src_stride[i]]
typedef struct kiln_strided {
  kiln_shape shape;
  int64_t src_base, dst_base;
  int64_t src_stride[KILN_MAX_RANK], dst_stride[KILN_MAX_RANK];
} kiln_strided;
void kiln_strided_lower(kiln_lb *b, int src_buf, int dst_buf, const kiln_strided *s);

// Squeeze / Unsqueeze axes: the INTS attribute (opset < 13) or constant input 1 (13+). Returns
// their count, -1 when neither is given, -2 after reporting a problem.
int kiln_op_axes_arg(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int64_t *axes);
// Gradient of ops whose data does not move (docs/training.md): dx = dy reshaped to x's shape.
bool kiln_reshape_grad(kiln_grad_ctx *c);
// Defines `kiln_op_<Name>`: an op of any dtype that only changes the shape (a copy loop), with
// inputs [1, max_in], the attributes `attr_specs` and shape inference `infer_fn`.
#define KILN_DEFINE_RESHAPING_OP(Name, max_in, attr_specs, infer_fn) \
  const kiln_op_def kiln_op_##Name = {                               \
      .name = #Name,                                                 \
      .min_inputs = 1,                                               \
      .max_inputs = max_in,                                          \
      .min_outputs = 1,                                              \
      .max_outputs = 1,                                              \
      .attrs = attr_specs,                                           \
      .fuse = KILN_FUSE_INJECTIVE,                                   \
      .infer = infer_fn,                                             \
      .eval = kiln_copy_eval,                                        \
      .lower = kiln_copy_lower,                                      \
      .flops = kiln_no_flops,                                        \
      .tol = {0, 0},                                                 \
      .grad = kiln_reshape_grad,                                     \
  }

// ---- Math family: dtype sets, expression copies, elementwise ops with attributes (unary.c) ----

#define KILN_DT(t) (1u << (t))
#define KILN_DT_FLOAT (KILN_DT(KILN_F32) | KILN_DT(KILN_F64))
#define KILN_DT_INT (KILN_DT(KILN_I8) | KILN_DT(KILN_U8) | KILN_DT(KILN_I32) | KILN_DT(KILN_I64))
#define KILN_DT_NUMERIC (KILN_DT_FLOAT | KILN_DT_INT)
#define KILN_DT_ANY (KILN_DT_NUMERIC | KILN_DT(KILN_BOOL))
// Checks inputs [first, first + count) are present with a dtype in `allowed` and, when `same`,
// the dtype of inputs[first]; reports "inputs[1] (b): expected dtype f32 or f64, got bool".
bool kiln_op_check_dtypes(const kiln_graph *g, const kiln_node *n, int first, int count,
                          unsigned allowed, bool same, kiln_diag *d);
// A deep copy of e, to use a value twice without sharing expression nodes.
kiln_lexpr *kiln_lx_clone(kiln_lb *b, const kiln_lexpr *e);
// Elementwise ops whose math reads the node's attributes: y[i] = fn(n, x[i]). The lowering loads
// x[i] (input dtype) and stores lx(b, n, t, x) where t is the output dtype.
typedef double (*kiln_unary_node_fn)(const kiln_node *n, double x);
typedef kiln_lexpr *(*kiln_unary_node_lx)(kiln_lb *b, const kiln_node *n, kiln_dtype t,
                                          kiln_lexpr *x);
void kiln_unary_node_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out,
                          kiln_unary_node_fn fn);
void kiln_unary_node_lower(const kiln_lower_ctx *c, kiln_unary_node_lx lx);

// Defines `kiln_op_<Name>`: an elementwise op whose math reads the node's attributes `attr_specs`
// (y[i] = fn(n, x[i]); lx builds the same in loop IR), with its shape inference (kiln_unary_infer
// for float x -> same dtype) and tolerance.
#define KILN_DEFINE_UNARY_NODE_OP(Name, attr_specs, infer_fn, fn, lx, atol, rtol)                  \
  static void Name##_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) { \
    kiln_unary_node_eval(n, in, out, fn);                                                          \
  }                                                                                                \
  static void Name##_lower(const kiln_lower_ctx *c) { kiln_unary_node_lower(c, lx); }              \
  const kiln_op_def kiln_op_##Name = {                                                             \
      .name = #Name,                                                                               \
      .min_inputs = 1,                                                                             \
      .max_inputs = 1,                                                                             \
      .min_outputs = 1,                                                                            \
      .max_outputs = 1,                                                                            \
      .attrs = attr_specs,                                                                         \
      .fuse = KILN_FUSE_ELEMENTWISE,                                                               \
      .infer = infer_fn,                                                                           \
      .eval = Name##_eval,                                                                         \
      .lower = Name##_lower,                                                                       \
      .flops = kiln_output_numel_flops,                                                            \
      .tol = {atol, rtol},                                                                         \
  }

// ---- Math family: elementwise ops over all inputs, numpy broadcasting (binary.c) ----

// The broadcast of every input's shape (all present); reports shapes that do not broadcast.
bool kiln_broadcast_inputs(const kiln_graph *g, const kiln_node *n, kiln_diag *d, kiln_shape *out);
// y[i] = fn(n, v, count) with v[k] input k's element broadcast to output element i.
typedef double (*kiln_nary_fn)(const kiln_node *n, const double *v, int count);
void kiln_nary_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out,
                    kiln_nary_fn fn);
// v[k]: a fresh load of input k's element; t: the output dtype.
typedef kiln_lexpr *(*kiln_nary_lx)(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr **v,
                                    int count);
void kiln_nary_lower(const kiln_lower_ctx *c, kiln_nary_lx lx);
// The loops over the output of a broadcasting op. When every input has the output's shape: one
// flat loop. Otherwise one loop per output dimension, inputs indexed with stride 0 along their
// broadcast dimensions.
typedef struct kiln_bcast_nest {
  bool flat;         // every input has the output's shape
  kiln_shape shape;  // the loop nest: the output's shape, or (numel) when flat
  int vars[KILN_MAX_RANK];
  int64_t out_strides[KILN_MAX_RANK];
} kiln_bcast_nest;
// Opens the nest over node c->node's output 0 (every input present).
void kiln_bcast_open(const kiln_lower_ctx *c, kiln_bcast_nest *nest);
// A fresh load of input k's element at the current point of the nest.
kiln_lexpr *kiln_bcast_load(const kiln_lower_ctx *c, const kiln_bcast_nest *nest, int k);
// Stores value into output 0 at the current point and closes the nest.
void kiln_bcast_store_close(const kiln_lower_ctx *c, const kiln_bcast_nest *nest,
                            kiln_lexpr *value);
// Every input one dtype from `dtypes`; the output is their broadcast, of dtype out_dtype (or the
// inputs' dtype when out_dtype < 0).
bool kiln_nary_infer(kiln_graph *g, kiln_node *n, kiln_diag *d, unsigned dtypes, int out_dtype);

// Variadic elementwise folds (Min, Max, Sum, Mean): ((v0 op v1) op v2) ..., divided by the count
// when `mean`; combine is LB_MIN or LB_MAX (fmin/fmax: a NaN loses to a number) or LB_ADD.
double kiln_fold_ref(kiln_lbin combine, bool mean, const double *v, int count);
kiln_lexpr *kiln_fold_lx(kiln_lb *b, kiln_dtype t, kiln_lbin combine, bool mean, kiln_lexpr **v,
                         int count);
// Defines `kiln_op_<Name>`: 1..16 inputs of one dtype in `dtypes`, numpy broadcasting, y = the
// fold of the inputs' elements.
#define KILN_DEFINE_FOLD_OP(Name, dtypes, combine, mean, atol, rtol)                               \
  static double Name##_ref(const kiln_node *n, const double *v, int count) {                       \
    (void)n;                                                                                       \
    return kiln_fold_ref(combine, mean, v, count);                                                 \
  }                                                                                                \
  static kiln_lexpr *Name##_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr **v,       \
                               int count) {                                                        \
    (void)n;                                                                                       \
    return kiln_fold_lx(b, t, combine, mean, v, count);                                            \
  }                                                                                                \
  static bool Name##_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {                            \
    return kiln_nary_infer(g, n, d, dtypes, -1);                                                   \
  }                                                                                                \
  static void Name##_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) { \
    kiln_nary_eval(n, in, out, Name##_ref);                                                        \
  }                                                                                                \
  static void Name##_lower(const kiln_lower_ctx *c) { kiln_nary_lower(c, Name##_lx); }             \
  const kiln_op_def kiln_op_##Name = {                                                             \
      .name = #Name,                                                                               \
      .min_inputs = 1,                                                                             \
      .max_inputs = 16,                                                                            \
      .min_outputs = 1,                                                                            \
      .max_outputs = 1,                                                                            \
      .attrs = kiln_unary_attrs,                                                                   \
      .fuse = KILN_FUSE_BROADCAST,                                                                 \
      .infer = Name##_infer,                                                                       \
      .eval = Name##_eval,                                                                         \
      .lower = Name##_lower,                                                                       \
      .flops = kiln_output_numel_flops,                                                            \
      .tol = {atol, rtol},                                                                         \
  }

// Logic on bool (And, Or, Xor): op is LB_AND, LB_OR or LB_NE (xor); two bool inputs, numpy
// broadcasting, a bool output.
double kiln_logic_ref(kiln_lbin op, double a, double b);
#define KILN_DEFINE_LOGIC_OP(Name, op)                                                             \
  static double Name##_ref(const kiln_node *n, const double *v, int count) {                       \
    (void)n, (void)count;                                                                          \
    return kiln_logic_ref(op, v[0], v[1]);                                                         \
  }                                                                                                \
  static kiln_lexpr *Name##_lx(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr **v,       \
                               int count) {                                                        \
    (void)n, (void)t, (void)count;                                                                 \
    return lx_bin(b, op, v[0], v[1]);                                                              \
  }                                                                                                \
  static bool Name##_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {                            \
    return kiln_nary_infer(g, n, d, KILN_DT(KILN_BOOL), KILN_BOOL);                                \
  }                                                                                                \
  static void Name##_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) { \
    kiln_nary_eval(n, in, out, Name##_ref);                                                        \
  }                                                                                                \
  static void Name##_lower(const kiln_lower_ctx *c) { kiln_nary_lower(c, Name##_lx); }             \
  const kiln_op_def kiln_op_##Name = {                                                             \
      .name = #Name,                                                                               \
      .min_inputs = 2,                                                                             \
      .max_inputs = 2,                                                                             \
      .min_outputs = 1,                                                                            \
      .max_outputs = 1,                                                                            \
      .attrs = kiln_binary_attrs,                                                                  \
      .fuse = KILN_FUSE_BROADCAST,                                                                 \
      .infer = Name##_infer,                                                                       \
      .eval = Name##_eval,                                                                         \
      .lower = Name##_lower,                                                                       \
      .flops = kiln_output_numel_flops,                                                            \
      .tol = {0, 0},                                                                               \
  }

// ---- Math family: Softmax and LogSoftmax (softmax.c) ----

extern const kiln_attr_spec kiln_softmax_attrs[];  // axis
bool kiln_softmax_infer(kiln_graph *g, kiln_node *n, kiln_diag *d);
void kiln_softmax_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out);
void kiln_softmax_lower(const kiln_lower_ctx *c);
int64_t kiln_softmax_flops(const kiln_graph *g, const kiln_node *n);

// ---- Math family: reductions (reduce.c) ----

// The Reduce* ops: `axes` (INTS, opset < 18) or a constant i64 input 1 (opset 13/18+),
// `keepdims` (1), `noop_with_empty_axes` (0). Each output element is
//   finish(combine over its reduced elements of map(x)), combine one of LB_ADD, LB_MUL, LB_MAX,
//   LB_MIN (starting from 0, 1, -inf, +inf).
typedef enum { KILN_RMAP_NONE, KILN_RMAP_SQUARE, KILN_RMAP_ABS, KILN_RMAP_EXP } kiln_reduce_map;
typedef enum {
  KILN_RFINISH_NONE,
  KILN_RFINISH_MEAN,  // / the number of reduced elements
  KILN_RFINISH_SQRT,
  KILN_RFINISH_LOG,
} kiln_reduce_finish;
typedef struct kiln_reduce_kind {
  kiln_lbin combine;
  kiln_reduce_map map;
  kiln_reduce_finish finish;
} kiln_reduce_kind;
extern const kiln_attr_spec kiln_reduce_attrs[];
bool kiln_reduce_infer(kiln_graph *g, kiln_node *n, kiln_diag *d, unsigned dtypes);
void kiln_reduce_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out,
                      kiln_reduce_kind kind);
void kiln_reduce_lower(const kiln_lower_ctx *c, kiln_reduce_kind kind);
int64_t kiln_reduce_flops(const kiln_graph *g, const kiln_node *n);  // numel(x)

// Defines `kiln_op_<Name>`, a Reduce* op of input dtypes `dtypes` computing the kiln_reduce_kind
// {combine, map, finish}, with its tolerance and gradient rule (or NULL).
#define KILN_DEFINE_REDUCE_OP(Name, dtypes, combine, map, finish, atol, rtol, grad_fn)             \
  static bool Name##_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {                            \
    return kiln_reduce_infer(g, n, d, dtypes);                                                     \
  }                                                                                                \
  static void Name##_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) { \
    kiln_reduce_eval(n, in, out, (kiln_reduce_kind){combine, map, finish});                        \
  }                                                                                                \
  static void Name##_lower(const kiln_lower_ctx *c) {                                              \
    kiln_reduce_lower(c, (kiln_reduce_kind){combine, map, finish});                                \
  }                                                                                                \
  const kiln_op_def kiln_op_##Name = {                                                             \
      .name = #Name,                                                                               \
      .min_inputs = 1,                                                                             \
      .max_inputs = 2,                                                                             \
      .min_outputs = 1,                                                                            \
      .max_outputs = 1,                                                                            \
      .attrs = kiln_reduce_attrs,                                                                  \
      .fuse = KILN_FUSE_REDUCTION,                                                                 \
      .infer = Name##_infer,                                                                       \
      .eval = Name##_eval,                                                                         \
      .lower = Name##_lower,                                                                       \
      .flops = kiln_reduce_flops,                                                                  \
      .tol = {atol, rtol},                                                                         \
      .grad = grad_fn,                                                                             \
  }
// A shape viewed as (outer, axis, inner) around one axis (normalized, 0 <= axis < rank):
// element j of row (o, i) is at (o * axis + j) * inner + i.
typedef struct kiln_axis_view {
  int64_t outer, axis, inner;
} kiln_axis_view;
kiln_axis_view kiln_axis_view_of(const kiln_shape *s, int axis);
// The flat index of element j (an i64 expression) of row (o, i); o or i is -1 for a loop of
// extent 1 that was left out.
kiln_lexpr *kiln_axis_element(kiln_lb *b, const kiln_axis_view *v, int o, int i, kiln_lexpr *j);

// Counter-based random streams (random.c): RandomNormalLike, NormalNoise, DropoutMask.
// splitmix64's finalizer.
uint64_t kiln_mix64(uint64_t z);
// A stream keyed by a seed alone: mix64(seed ^ G), G = 0x9e3779b97f4a7c15.
uint64_t kiln_seed_key(uint64_t seed);
// The training stream of (seed, step, salt): mix64(mix64(mix64(seed ^ G) ^ step) ^ salt).
uint64_t kiln_train_stream_key(uint64_t seed, uint64_t step, uint64_t salt);
// out[i] = mean + scale * sqrt(-2 ln u1) cos(2 pi u2) for i < n (Box-Muller), with
// u1 = ((mix64(key ^ 2i) >> 11) + 1) 2^-53 and u2 = (mix64(key ^ (2i + 1)) >> 11) 2^-53.
void kiln_normal_fill(uint64_t key, double mean, double scale, double *out, int64_t n);
// Lowering: declares var s = the training stream key of (input 0's seed, input 1's step, the
// node's "salt" attribute) and returns it.
int kiln_lower_train_stream_key(const kiln_lower_ctx *c);
// Lowering of kiln_normal_fill into buffer buf (n elements of dtype t); key is an i64 var.
void kiln_lower_normal_fill(kiln_lb *b, int key, int buf, kiln_dtype t, int64_t n, double mean,
                            double scale);

// ---- The channel-blocked layout NCHWc (select-layout; Reorder; FusedConv layout "NCHWc") ----
// (N, C, H, W) -> (N, C / L, H, W, L), C a multiple of L.
kiln_shape kiln_nchwc_shape(const kiln_shape *planar, int64_t L);
// (N, CB, H, W, L) -> (N, CB * L, H, W); other shapes as they are.
kiln_shape kiln_nchw_shape(const kiln_shape *s);
// Copies a planar (N, C, H, W) array of doubles into its NCHWc form, or back (to_blocked false).
void kiln_nchwc_copy(const kiln_shape *planar, int64_t L, const double *from, double *to,
                     bool to_blocked);
// A planar copy of an NCHWc eval tensor t (its data to free), its planar shape in *shape.
kiln_eval_tensor kiln_eval_unblocked(const kiln_eval_tensor *t, int64_t L, kiln_shape *shape);

#endif
