// The integer 2-D convolution behind QLinearConv and ConvInteger (quant.h):
//   acc[n][oc][oh][ow] = bias[oc] + sum over ic, kh, kw of
//       (w[oc][ic][kh][kw] - w_zero_point[oc]) * (x[n][g * C/group + ic][ih][iw] - x_zero_point)
//   ih = oh * stride_h - pad_top + kh * dilation_h (likewise iw); positions in the padding add 0
//   (ONNX pads x with its zero point).
//   x: (N, C, H, W) i8/u8   w: (M, C / group, kH, kW) i8/u8   acc: (N, M, OH, OW) i32
// Every product and sum is exact in i32 for the sizes of real networks: |product| <= 2^16, so
// a window of up to 2^15 elements cannot overflow.
// Two lowerings: the fast one (kiln_qconv_lower_fast: patches times weights packed at compile
// time, through kiln_qgemm) where it applies, the general loop nest (kiln_qconv_lower) otherwise.
#include <stdlib.h>

#include "quant.h"

static const kiln_window_opts opts = {.dilations = true, .ceil_mode = false};

const kiln_attr_spec kiln_qconv_attrs[] = {
    {"auto_pad", KILN_ATTR_STRING, false},
    {"dilations", KILN_ATTR_INTS, false},
    {"group", KILN_ATTR_INT, false},
    {"kernel_shape", KILN_ATTR_INTS, false},
    {"pads", KILN_ATTR_INTS, false},
    {"strides", KILN_ATTR_INTS, false},
    {0},
};

static bool check_rank4(const kiln_node *n, kiln_diag *d, int i, const kiln_tensor *t,
                        const char *layout) {
  if (t->shape.rank == 4) return true;
  kiln_op_error(d, n, "inputs[%d] (%s): expected a 4-D tensor %s (only 2-D convolutions), got %s",
                i, t->name, layout, kiln_shape_text(&t->shape).text);
  return false;
}

// group divides C and M; w has C / group input channels; kernel_shape, if given, matches w.
static bool check_weights(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                          const kiln_qconv_inputs *q) {
  const kiln_tensor *x = kiln_in(g, n, q->x), *w = kiln_in(g, n, q->w);
  int64_t group, C = x->shape.dim[1], M = w->shape.dim[0], kernel[2];
  if (!kiln_op_read_int(n, d, "group", 1, 1, INT64_MAX, &group)) return false;
  if (C % group != 0 || M % group != 0 || w->shape.dim[1] != C / group) {
    kiln_op_error(d, n,
                  "attrs.group: %lld must divide the input channels (%lld) and the output "
                  "channels (%lld), and inputs[%d] %s must have C / group input channels",
                  (long long)group, (long long)C, (long long)M, q->w, kiln_describe(w).text);
    return false;
  }
  bool present;
  if (!kiln_window_kernel_attr(n, d, false, kernel, &present)) return false;
  if (present && (kernel[0] != w->shape.dim[2] || kernel[1] != w->shape.dim[3])) {
    char got[64];
    kiln_op_error(d, n, "attrs.kernel_shape: expected [%lld, %lld] (the dims of %s), got %s",
                  (long long)w->shape.dim[2], (long long)w->shape.dim[3], kiln_describe(w).text,
                  kiln_ints_str(kernel, 2, got, sizeof got));
    return false;
  }
  return true;
}

static bool check_params(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                         const kiln_qconv_inputs *q) {
  int64_t M = kiln_in(g, n, q->w)->shape.dim[0];
  if (!kiln_quant_check_param(g, n, d, q->x_zp, "zero point of x", KILN_DT_QUANT, 0, "") ||
      !kiln_quant_check_same_dtype(g, n, d, q->x_zp, q->x) ||
      !kiln_quant_check_param(g, n, d, q->w_zp, "zero point of w", KILN_DT_QUANT, M,
                              "output channel") ||
      !kiln_quant_check_same_dtype(g, n, d, q->w_zp, q->w))
    return false;
  if (q->bias < 0 || !kiln_has_input(n, q->bias)) return true;
  const kiln_tensor *bias = kiln_in(g, n, q->bias);
  if (!kiln_op_check_dtypes(g, n, q->bias, 1, KILN_DT(KILN_I32), false, d)) return false;
  if (bias->shape.rank == 1 && bias->shape.dim[0] == M) return true;
  kiln_op_error(d, n,
                "inputs[%d] (%s): expected shape (%lld) (one i32 bias per output channel), got %s",
                q->bias, bias->name, (long long)M, kiln_shape_text(&bias->shape).text);
  return false;
}

bool kiln_qconv_check(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                      const kiln_qconv_inputs *q, kiln_shape *out) {
  if (!kiln_op_check_dtypes(g, n, q->x, 1, KILN_DT_QUANT, false, d) ||
      !kiln_op_check_dtypes(g, n, q->w, 1, KILN_DT_QUANT, false, d))
    return false;
  const kiln_tensor *x = kiln_in(g, n, q->x), *w = kiln_in(g, n, q->w);
  if (!check_rank4(n, d, q->x, x, "(N, C, H, W)") ||
      !check_rank4(n, d, q->w, w, "(M, C/group, kH, kW)"))
    return false;
  if (!check_weights(g, n, d, q) || !check_params(g, n, d, q)) return false;
  kiln_window win;
  if (!kiln_window_resolve(n, d, &x->shape.dim[2], &w->shape.dim[2], opts, &win)) return false;
  // out: (N, M, OH, OW)
  *out = (kiln_shape){.rank = 4, .dim = {x->shape.dim[0], w->shape.dim[0], win.out[0], win.out[1]}};
  return kiln_op_check_dims(n, d, out, "the window");
}

static kiln_window window_of(const kiln_node *n, const kiln_shape *x, const kiln_shape *w) {
  kiln_window win;
  kiln_window_resolve(n, NULL, &x->dim[2], &w->dim[2], opts, &win);
  return win;
}

// The reference: a 7-deep loop straight from the definition, padding checked explicitly.
void kiln_qconv_accumulate_ref(const kiln_node *n, const kiln_eval_tensor *in,
                               const kiln_qconv_inputs *q, double *acc) {
  const double *x = in[q->x].data, *w = in[q->w].data;
  const int64_t *xd = in[q->x].shape->dim, *wd = in[q->w].shape->dim;
  int64_t N = xd[0], C = xd[1], H = xd[2], W = xd[3], M = wd[0], CG = wd[1], KH = wd[2], KW = wd[3];
  int64_t MG = M / kiln_attr_int(n, "group", 1);
  bool has_bias = q->bias >= 0 && kiln_has_input(n, q->bias);
  kiln_window win = window_of(n, in[q->x].shape, in[q->w].shape);
  int64_t OH = win.out[0], OW = win.out[1], x_zp = (int64_t)kiln_quant_param_ref(n, in, q->x_zp, 0);
  for (int64_t b = 0; b < N; b++)
    for (int64_t oc = 0; oc < M; oc++) {
      int64_t w_zp = (int64_t)kiln_quant_param_ref(n, in, q->w_zp, oc);
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          int64_t sum = has_bias ? (int64_t)in[q->bias].data[oc] : 0;
          for (int64_t ic = 0; ic < CG; ic++)
            for (int64_t kh = 0; kh < KH; kh++)
              for (int64_t kw = 0; kw < KW; kw++) {
                int64_t ih = oh * win.stride[0] - win.pad_begin[0] + kh * win.dilation[0];
                int64_t iw = ow * win.stride[1] - win.pad_begin[1] + kw * win.dilation[1];
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;  // padding adds 0
                int64_t c = oc / MG * CG + ic;
                int64_t xv = (int64_t)x[((b * C + c) * H + ih) * W + iw] - x_zp;
                int64_t wv = (int64_t)w[((oc * CG + ic) * KH + kh) * KW + kw] - w_zp;
                sum += xv * wv;
              }
          acc[((b * M + oc) * OH + oh) * OW + ow] = (double)sum;
        }
    }
}

// ---- Lowering ----
// Output channels outermost (the parallel loop), an i32 accumulator row per output row, the
// innermost loop over output columns:
//   for oc: wzp, bias[, prologue]
//     for n, oh [kh range]:
//       acc[0..OW) = bias
//       for ic, kh, kw [ow range of kw]: wv = w[oc][ic][kh][kw] - wzp
//         for ow: acc[ow] += wv * (x[n][c][ih][iw] - xzp)
//       for ow: y[n][oc][oh][ow] = finish(acc[ow])

typedef struct qconv_vars {
  int oc, n, oh, ic, kh, kw, acc, x_zp, w_zp, scale;
  kiln_window win;
  int64_t C, CG, MG, group;
} qconv_vars;

// ceil(x / s) for x >= 0; a value <= 0 for x < 0 (enough for the clamps below).
static kiln_lexpr *ceil_div(kiln_lb *b, kiln_lexpr *x, int64_t s) {
  if (s == 1) return x;
  return lx_bin(b, LB_DIV, lx_add(b, x, lx_int(b, s - 1)), lx_int(b, s));
}

// The output columns [lo, hi) whose input column ow * sw - pl + kw * dw is inside [0, W).
static void column_range(kiln_lb *b, const kiln_window *win, int kw, kiln_lexpr **lo,
                         kiln_lexpr **hi) {
  int64_t s = win->stride[1], p = win->pad_begin[1], dil = win->dilation[1], OW = win->out[1];
  *lo = lx_int(b, 0);
  *hi = lx_int(b, OW);
  if (p > 0) {  // ow >= ceil((p - kw * dw) / sw)
    kiln_lexpr *first = lx_bin(b, LB_SUB, lx_int(b, p), lx_mul(b, lx_var(b, kw), lx_int(b, dil)));
    kiln_lexpr *v = lx_bin(b, LB_MAX, *lo, ceil_div(b, first, s));
    *lo = lx_var(b, kiln_lb_decl(b, "ow_lo", KILN_I64, v));
  }
  if ((OW - 1) * s - p + (win->kernel[1] - 1) * dil >=
      win->in[1]) {  // ow < ceil((W + p - kw*dw) / sw)
    kiln_lexpr *rest =
        lx_bin(b, LB_SUB, lx_int(b, win->in[1] + p), lx_mul(b, lx_var(b, kw), lx_int(b, dil)));
    kiln_lexpr *v = lx_bin(b, LB_MIN, *hi, ceil_div(b, rest, s));
    *hi = lx_var(b, kiln_lb_decl(b, "ow_hi", KILN_I64, v));
  }
}

// x[n][c][ih][iw] - xzp, as i32, for output column ow.
static kiln_lexpr *x_value(const kiln_lower_ctx *c, const kiln_qconv_inputs *q, const qconv_vars *v,
                           int ow) {
  kiln_lb *b = c->b;
  kiln_lexpr *ch = lx_var(b, v->ic);
  if (v->group > 1)
    ch = lx_add(
        b, lx_mul(b, lx_bin(b, LB_DIV, lx_var(b, v->oc), lx_int(b, v->MG)), lx_int(b, v->CG)), ch);
  kiln_lexpr *ih = kiln_window_lower_pos(b, &v->win, 0, v->oh, v->kh);
  kiln_lexpr *iw = kiln_window_lower_pos(b, &v->win, 1, ow, v->kw);
  const int64_t *xd = kiln_lower_in(c, q->x)->shape.dim;
  kiln_lexpr *x =
      lx_load(b, kiln_in_buf(c, q->x), kiln_lx_nchw(b, lx_var(b, v->n), ch, xd, ih, iw));
  return lx_bin(b, LB_SUB, lx_cast(b, KILN_I32, x), lx_var(b, v->x_zp));
}

// for ic, kh [range], kw: wv = w[oc][ic][kh][kw] - wzp; for ow [range]: acc[ow] += wv * x
static void accumulate(const kiln_lower_ctx *c, const kiln_qconv_inputs *q, qconv_vars *v,
                       const kiln_krange *kh) {
  kiln_lb *b = c->b;
  const int64_t *wd = kiln_lower_in(c, q->w)->shape.dim;
  v->ic = kiln_lb_for_n(b, "ic", wd[1]);
  v->kh = kiln_lb_for(b, "kh", kiln_krange_lo(b, kh), kiln_krange_hi(b, kh));
  v->kw = kiln_lb_for_n(b, "kw", wd[3]);
  kiln_lexpr *w_index =
      kiln_lx_nchw(b, lx_var(b, v->oc), lx_var(b, v->ic), wd, lx_var(b, v->kh), lx_var(b, v->kw));
  kiln_lexpr *w = lx_cast(b, KILN_I32, lx_load(b, kiln_in_buf(c, q->w), w_index));
  int wv = kiln_lb_decl(b, "wv", KILN_I32, lx_bin(b, LB_SUB, w, lx_var(b, v->w_zp)));
  kiln_lexpr *lo, *hi;
  column_range(b, &v->win, v->kw, &lo, &hi);
  int ow = kiln_lb_for(b, "ow", lo, hi);
  kiln_lexpr *prod = lx_bin(b, LB_MUL, lx_var(b, wv), x_value(c, q, v, ow));
  kiln_lb_store_local(b, v->acc, lx_var(b, ow),
                      lx_bin(b, LB_ADD, lx_local(b, v->acc, lx_var(b, ow)), prod));
  kiln_lb_end_for(b);  // ow
  kiln_lb_end_for(b);  // kw
  kiln_lb_end_for(b);  // kh
  kiln_lb_end_for(b);  // ic
}

// for n, oh: acc = bias; accumulate; y = finish(acc)
static void output_rows(const kiln_lower_ctx *c, const kiln_qconv_inputs *q, qconv_vars *v,
                        int bias, kiln_qconv_store_fn finish) {
  kiln_lb *b = c->b;
  const int64_t *yd = kiln_lower_out(c, 0)->shape.dim;
  v->n = kiln_lb_for_n(b, "n", yd[0]);
  v->oh = kiln_lb_for_n(b, "oh", yd[2]);
  kiln_krange kh = kiln_window_lower_range(b, &v->win, 0, v->oh, "kh");
  v->acc = kiln_lb_decl_array(b, "acc", KILN_I32, yd[3]);
  int ow = kiln_lb_for_n(b, "ow", yd[3]);
  kiln_lb_store_local(b, v->acc, lx_var(b, ow), lx_var(b, bias));
  kiln_lb_end_for(b);
  accumulate(c, q, v, &kh);
  ow = kiln_lb_for_n(b, "ow", yd[3]);
  kiln_lexpr *y = finish(c, lx_local(b, v->acc, lx_var(b, ow)), v->oc, v->scale);
  kiln_lexpr *index =
      kiln_lx_nchw(b, lx_var(b, v->n), lx_var(b, v->oc), yd, lx_var(b, v->oh), lx_var(b, ow));
  kiln_lb_store(b, kiln_out_buf(c, 0), index, y);
  kiln_lb_end_for(b);  // ow
  kiln_lb_end_for(b);  // oh
  kiln_lb_end_for(b);  // n
}

void kiln_qconv_lower(const kiln_lower_ctx *c, const kiln_qconv_inputs *q,
                      kiln_qconv_prologue_fn prologue, kiln_qconv_store_fn finish) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, q->x), *w = kiln_lower_in(c, q->w);
  kiln_lb_comment(b, "%s %s: x %s, w %s -> %s", kiln_op_get(c->node->op)->name, c->node->name,
                  kiln_describe(x).text, kiln_describe(w).text,
                  kiln_describe(kiln_lower_out(c, 0)).text);
  qconv_vars v = {.win = window_of(c->node, &x->shape, &w->shape),
                  .C = x->shape.dim[1],
                  .CG = w->shape.dim[1],
                  .group = kiln_attr_int(c->node, "group", 1),
                  .scale = -1};
  v.MG = w->shape.dim[0] / v.group;
  v.x_zp =
      kiln_lb_decl(b, "xzp", KILN_I32, kiln_quant_param_lx(c, q->x_zp, lx_int(b, 0), KILN_I32));
  v.oc = kiln_lb_for_n(b, "oc", w->shape.dim[0]);
  v.w_zp =
      kiln_lb_decl(b, "wzp", KILN_I32, kiln_quant_param_lx(c, q->w_zp, lx_var(b, v.oc), KILN_I32));
  bool has_bias = q->bias >= 0 && kiln_has_input(c->node, q->bias);
  kiln_lexpr *bias_value = has_bias ? lx_load(b, kiln_in_buf(c, q->bias), lx_var(b, v.oc))
                                    : lx_cast(b, KILN_I32, lx_int(b, 0));
  int bias = kiln_lb_decl(b, "bias", KILN_I32, bias_value);
  if (prologue) v.scale = prologue(c, v.oc);
  output_rows(c, q, &v, bias, finish);
  kiln_lb_end_for(b);  // oc
}

// Two operations (multiply, add) per window element of every output element.
int64_t kiln_qconv_flops(const kiln_graph *g, const kiln_node *n) {
  const kiln_tensor *w = kiln_in(g, n, n->op == KILN_OP_ConvInteger ? 1 : 3);
  int64_t window = w->shape.dim[1] * w->shape.dim[2] * w->shape.dim[3];
  return 2 * kiln_shape_numel(&kiln_out(g, n, 0)->shape) * window;
}

// ---- The fast lowering (quant.h) ----
// Group 1, u8 or i8 x, constant i8 w with zero w zero points, constant scales (QLinearConv):
//   xs = x as padded NHWC u8 (N, HP, WP, C): x's values made unsigned, the padding its zero point
//   patches[(n * OH + oh) * OW + ow][(kh * kW + kw) * C + ic] = xs[n][oh*sh + kh*dh][ow*sw +
//       kw*dw][ic], zeros up to kp (the GEMM reads xs itself for a 1x1 stride-1 unpadded conv
//       with C == kp)
//   w packed at compile time as (M, kp): w'[oc][(kh * kW + kw) * C + ic] = w[oc][ic][kh][kw]
//   y[n][oc][oh][ow] = kiln_qgemm over the patches and w' (zero point, bias, requantize)
// xs and the patches share the kernel's scratch buffer, the patches 64-byte aligned after xs.

enum { AMX_MIN_ROW = 16 };

typedef struct qfast_plan {
  int64_t N, C, H, W, M, KH, KW, OH, OW, sh, sw, dh, dw, pt, pl;
  int64_t HP, WP;       // xs's planes: the input and the padding its windows reach
  int64_t K, kp;        // elements per window, padded to whole vectors
  int64_t patches;      // where the patches start in the scratch buffer
  bool padded, direct;  // direct: the GEMM reads xs
  bool implicit;        // no patches: the GEMM reads each window row's kW * C bytes from xs
} qfast_plan;

static bool qconv_fast_applies(const kiln_lower_ctx *c, const kiln_qconv_inputs *q) {
  const kiln_graph *g = c->g;
  const kiln_node *n = c->node;
  const kiln_tensor *w = kiln_lower_in(c, q->w);
  if (kiln_attr_int(n, "group", 1) != 1 || w->dtype != KILN_I8 || !kiln_quant_is_const(g, n, q->w))
    return false;
  if (!kiln_quant_zero_or_absent(g, n, q->w_zp)) return false;
  return q->y_zp < 0 || kiln_quant_scales_const(g, n, q->x_scale, q->w_scale, q->y_scale);
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static qfast_plan qfast_plan_of(const kiln_lower_ctx *c, const kiln_qconv_inputs *q) {
  const kiln_tensor *x = kiln_lower_in(c, q->x), *w = kiln_lower_in(c, q->w);
  kiln_window win = window_of(c->node, &x->shape, &w->shape);
  const int64_t *xd = x->shape.dim, *wd = w->shape.dim;
  qfast_plan p = {.N = xd[0],
                  .C = xd[1],
                  .H = xd[2],
                  .W = xd[3],
                  .M = wd[0],
                  .KH = wd[2],
                  .KW = wd[3],
                  .OH = win.out[0],
                  .OW = win.out[1],
                  .sh = win.stride[0],
                  .sw = win.stride[1],
                  .dh = win.dilation[0],
                  .dw = win.dilation[1],
                  .pt = win.pad_begin[0],
                  .pl = win.pad_begin[1]};
  p.HP = max64((p.OH - 1) * p.sh + (p.KH - 1) * p.dh + 1, p.H + p.pt);
  p.WP = max64((p.OW - 1) * p.sw + (p.KW - 1) * p.dw + 1, p.W + p.pl);
  p.padded = p.HP != p.H || p.WP != p.W;
  p.K = p.KH * p.KW * p.C;
  p.kp = kiln_qgemm_kp(c, p.K);
  p.direct = !p.padded && p.KH == 1 && p.KW == 1 && p.sh == 1 && p.sw == 1 && p.kp == p.C;
  p.implicit = !p.direct && p.dw == 1 && p.KW * p.C % 4 == 0;
  // AMX: a tile's rows lie in one output row and a row's runs fill its kp bytes; an output row
  // narrower than a tile leaves most of it idle, patches copied once do better
  if (c->amx) p.implicit = p.implicit && p.kp == p.K && p.OW >= AMX_MIN_ROW;
  p.patches = (p.N * p.HP * p.WP * p.C + 63) / 64 * 64;
  return p;
}

// xs = x's zero point everywhere (when padded), then xs[n][ih + pt][iw + pl][ic] =
// x[n][ic][ih][iw].
static void qfast_nhwc(const kiln_lower_ctx *c, const kiln_qconv_inputs *q, const qfast_plan *p,
                       int xs, int xzp) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, q->x);
  if (p->padded) {
    int i = kiln_lb_for_n(b, "i", p->N * p->HP * p->WP * p->C);
    kiln_lb_store(b, xs, lx_var(b, i), lx_cast(b, KILN_U8, lx_var(b, xzp)));
    kiln_lb_end_for(b);
  }
  int n = kiln_lb_for_n(b, "n", p->N), ih = kiln_lb_for_n(b, "ih", p->H);
  int iw = kiln_lb_for_n(b, "iw", p->W), ic = kiln_lb_for_n(b, "ic", p->C);
  kiln_lexpr *row = lx_madd(b, lx_var(b, n), p->HP, lx_add(b, lx_var(b, ih), lx_int(b, p->pt)));
  kiln_lexpr *col = lx_madd(b, row, p->WP, lx_add(b, lx_var(b, iw), lx_int(b, p->pl)));
  kiln_lexpr *from =
      kiln_lx_nchw(b, lx_var(b, n), lx_var(b, ic), x->shape.dim, lx_var(b, ih), lx_var(b, iw));
  kiln_lb_store(b, xs, lx_madd(b, col, p->C, lx_var(b, ic)),
                kiln_quant_unsigned_lx(b, lx_load(b, kiln_in_buf(c, q->x), from), x->dtype));
  for (int k = 0; k < 4; k++) kiln_lb_end_for(b);  // ic, iw, ih, n
}

// (n * OH + oh) * OW + ow: the patch row of an output pixel (a fresh expression).
static kiln_lexpr *qfast_row(kiln_lb *b, const qfast_plan *p, int n, int oh, int ow) {
  return lx_madd(b, lx_madd(b, lx_var(b, n), p->OH, lx_var(b, oh)), p->OW, lx_var(b, ow));
}

// One patch row: for kh[, kw]: a run of C bytes (kW * C when dw is 1: one copy per kh).
static void qfast_patch_row(kiln_lb *b, const qfast_plan *p, int s, int n, int oh, int ow) {
  int kh = kiln_lb_for_n(b, "kh", p->KH);
  int kw = p->dw == 1 ? -1 : kiln_lb_for_n(b, "kw", p->KW);
  int e = kiln_lb_for_n(b, "e", p->dw == 1 ? p->KW * p->C : p->C);
  kiln_lexpr *ih = lx_add(b, lx_mul(b, lx_var(b, oh), lx_int(b, p->sh)),
                          lx_mul(b, lx_var(b, kh), lx_int(b, p->dh)));
  kiln_lexpr *iw = lx_mul(b, lx_var(b, ow), lx_int(b, p->sw));
  kiln_lexpr *tap = lx_mul(b, lx_var(b, kh), lx_int(b, p->KW));
  if (kw >= 0) {
    iw = lx_add(b, iw, lx_mul(b, lx_var(b, kw), lx_int(b, p->dw)));
    tap = lx_add(b, tap, lx_var(b, kw));
  }
  kiln_lexpr *from =
      lx_madd(b, lx_madd(b, lx_madd(b, lx_var(b, n), p->HP, ih), p->WP, iw), p->C, lx_var(b, e));
  kiln_lexpr *to =
      lx_madd(b, qfast_row(b, p, n, oh, ow), p->kp, lx_madd(b, tap, p->C, lx_var(b, e)));
  kiln_lb_store(b, s, lx_add(b, lx_int(b, p->patches), to), lx_load(b, s, from));
  kiln_lb_end_for(b);  // e
  if (kw >= 0) kiln_lb_end_for(b);
  kiln_lb_end_for(b);  // kh
  if (p->kp == p->K) return;
  e = kiln_lb_for(b, "e", lx_int(b, p->K), lx_int(b, p->kp));
  kiln_lexpr *pad = lx_madd(b, qfast_row(b, p, n, oh, ow), p->kp, lx_var(b, e));
  kiln_lb_store(b, s, lx_add(b, lx_int(b, p->patches), pad), lx_cast(b, KILN_U8, lx_int(b, 0)));
  kiln_lb_end_for(b);
}

// for n, oh, ow: the patch of output pixel (n, oh, ow)
static void qfast_patches(const kiln_lower_ctx *c, const qfast_plan *p, int s) {
  kiln_lb *b = c->b;
  int n = kiln_lb_for_n(b, "n", p->N), oh = kiln_lb_for_n(b, "oh", p->OH);
  int ow = kiln_lb_for_n(b, "ow", p->OW);
  qfast_patch_row(b, p, s, n, oh, ow);
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // ow, oh, n
}

// Implicit patches: where window row kh (the variable `run`) of GEMM row (n * OH + oh) * OW + ow
// starts in xs: ((n * HP + oh * sh + kh * dh) * WP + ow * sw) * C, its kW * C bytes contiguous.
static kiln_lexpr *qconv_run_at(const kiln_lower_ctx *c, const void *user, kiln_lexpr *row,
                                int run) {
  kiln_lb *b = c->b;
  const qfast_plan *p = user;
  int64_t plane = p->OH * p->OW;
  kiln_lexpr *pixel = p->N == 1 ? row : lx_bin(b, LB_MOD, kiln_lx_clone(b, row), lx_int(b, plane));
  kiln_lexpr *n = p->N == 1 ? lx_int(b, 0) : lx_bin(b, LB_DIV, row, lx_int(b, plane));
  kiln_lexpr *oh = lx_bin(b, LB_DIV, kiln_lx_clone(b, pixel), lx_int(b, p->OW));
  kiln_lexpr *ow = lx_bin(b, LB_MOD, pixel, lx_int(b, p->OW));
  kiln_lexpr *ih =
      lx_add(b, lx_mul(b, oh, lx_int(b, p->sh)), lx_mul(b, lx_var(b, run), lx_int(b, p->dh)));
  kiln_lexpr *iw = lx_mul(b, ow, lx_int(b, p->sw));
  return lx_mul(b, lx_madd(b, lx_madd(b, n, p->HP, ih), p->WP, iw), lx_int(b, p->C));
}

// y's flat index of GEMM row (n * OH + oh) * OW + ow and column oc: (n * M + oc) * OH * OW + ...
static kiln_lexpr *qconv_index(const kiln_lower_ctx *c, const void *user, kiln_lexpr *row,
                               kiln_lexpr *col) {
  kiln_lb *b = c->b;
  const qfast_plan *p = user;
  int64_t plane = p->OH * p->OW;
  if (p->N == 1) return lx_madd(b, col, plane, row);
  kiln_lexpr *n = lx_bin(b, LB_DIV, kiln_lx_clone(b, row), lx_int(b, plane));
  kiln_lexpr *pixel = lx_bin(b, LB_MOD, row, lx_int(b, plane));
  return lx_madd(b, lx_madd(b, n, p->M, col), plane, pixel);
}

// w (M, C, kH, kW) as (M, kp): w'[oc][(kh * kW + kw) * C + ic], zeros past K.
static void qfast_pack(const kiln_lower_ctx *c, const kiln_qconv_inputs *q, const qfast_plan *p,
                       kiln_qgemm *g) {
  const kiln_tensor *w = kiln_lower_in(c, q->w);
  int8_t *packed = kiln_xcalloc((size_t)(p->M * p->kp), 1);
  for (int64_t oc = 0; oc < p->M; oc++)
    for (int64_t ic = 0; ic < p->C; ic++)
      for (int64_t t = 0; t < p->KH * p->KW; t++)
        packed[oc * p->kp + t * p->C + ic] =
            (int8_t)kiln_tensor_get(w, (oc * p->C + ic) * p->KH * p->KW + t);
  kiln_qgemm_pack(c, g, packed);
  free(packed);
}

bool kiln_qconv_lower_fast(const kiln_lower_ctx *c, const kiln_qconv_inputs *q) {
  if (!qconv_fast_applies(c, q)) return false;
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, q->x), *w = kiln_lower_in(c, q->w);
  kiln_lb_comment(b, "%s %s (VNNI-friendly): x %s, w %s -> %s", kiln_op_get(c->node->op)->name,
                  c->node->name, kiln_describe(x).text, kiln_describe(w).text,
                  kiln_describe(kiln_lower_out(c, 0)).text);
  qfast_plan p = qfast_plan_of(c, q);
  bool patches = !p.direct && !p.implicit;
  kiln_qgemm g = {.rows = p.N * p.OH * p.OW,
                  .cols = p.M,
                  .kp = p.kp,
                  .a_offset = patches ? p.patches : 0,
                  .out = {.bias = q->bias, .mult = -1, .y_zp = q->y_zp},
                  .index = qconv_index,
                  .user = &p,
                  .runs = p.KH,
                  .run_k = p.KW * p.C,
                  .run_at = p.implicit ? qconv_run_at : NULL,
                  .row_seg = p.OW,
                  .row_ld = p.sw * p.C,
                  .run_ld = p.dh * p.WP * p.C,
                  .out_by_cols = true};
  qfast_pack(c, q, &p, &g);
  if (q->y_zp >= 0)
    g.out.mult = kiln_quant_multipliers(c, q->x_scale, q->w_scale, q->y_scale, p.M, &g.out.small);
  g.out.x_zp = kiln_quant_unsigned_zp(c, q->x_zp, x->dtype);
  int64_t acc_count = g.out.mult >= 0 || c->amx ? g.rows * p.M : 0;  // AMX: always
  kiln_quant_scratch(c, acc_count, patches ? p.patches + g.rows * p.kp : p.patches, &g.acc, &g.a);
  qfast_nhwc(c, q, &p, g.a, g.out.x_zp);
  if (patches) qfast_patches(c, &p, g.a);
  kiln_qgemm_lower(c, &g);
  return true;
}
