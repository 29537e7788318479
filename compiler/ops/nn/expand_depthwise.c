// FusedExpandDepthwise (Kiln's own, made by the fuse-expand-depthwise pass,
// compiler/passes/fuse_expand_depthwise.c): the expansion 1x1 conv and the depthwise conv of an
// inverted-bottleneck block in one kernel, so the wide expanded tensor never reaches memory.
//   e = act_e(Conv1x1(x, we, be))                    we: (M, C, 1, 1), be: (M)
//   y = act(DepthwiseConv(e, wd, bd))               wd: (M, 1, kH, kW), bd: (M), group = M
// x (N, C, H, W) is planar or NCHWc (`input_layout`), y (N, M / L, OH, OW, L) NCHWc with L =
// `lanes`. Attributes: the depthwise conv's (strides, pads, dilations, kernel_shape, group,
// activation, activation_params: FusedConv's meaning) and the expansion's activation as
// `expand_activation` / `expand_activation_params`.
//
// Lowering: the parallel loop runs over (image, channel block of L channels, band of R output
// rows); a band's output rows go in order, and before each one the expanded rows it reads for the
// first time are computed (one channel block, by register tiles of up to 28 columns) into a ring
// of (kH - 1) * dh + 1 rows, a local array (21 KB at 112 x 112) that stays in L1, with zero columns
// and rows where the depthwise conv pads; then the row's depthwise tiles read the ring. A band
// recomputes the (kH - 1) * dh + 1 - sh expanded rows the band above it shared. Every sum adds the
// same terms in the same order as the unfused FusedConv kernels (bias, then the input channels;
// bias, then the taps in (kh, kw) order, padding reading 0), so the results are theirs bit for
// bit.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../target.h"
#include "conv_internal.h"

static const kiln_window_opts opts = {.dilations = true};

// clang-format off
static const kiln_attr_spec attrs[] = {
    {"dilations", KILN_ATTR_INTS, false},          {"group", KILN_ATTR_INT, false},
    {"kernel_shape", KILN_ATTR_INTS, false},       {"pads", KILN_ATTR_INTS, false},
    {"strides", KILN_ATTR_INTS, false},            {"activation", KILN_ATTR_STRING, false},
    {"activation_params", KILN_ATTR_FLOATS, false}, {"expand_activation", KILN_ATTR_STRING, false},
    {"expand_activation_params", KILN_ATTR_FLOATS, false},
    {"layout", KILN_ATTR_STRING, false},           {"input_layout", KILN_ATTR_STRING, false},
    {"lanes", KILN_ATTR_INT, true},                {0},
};
// clang-format on

enum { IN_X, IN_WE, IN_BE, IN_WD, IN_BD };

// The lanes of x's layout (0: NCHW).
static int64_t x_lanes(const kiln_node *n) {
  return strcmp(kiln_attr_string(n, "input_layout", "NCHW"), "NCHWc") == 0
             ? kiln_attr_int(n, "lanes", 0)
             : 0;
}

// ---- Checks ----

// Input i: a constant f32 param of shape dims[0..rank).
static bool check_param(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i, int rank,
                        const int64_t *dims) {
  const kiln_tensor *t = kiln_in(g, n, i);
  bool ok =
      t && t->dtype == KILN_F32 && t->kind == KILN_TENSOR_PARAM && t->data && t->shape.rank == rank;
  for (int k = 0; ok && k < rank; k++) ok = t->shape.dim[k] == dims[k];
  if (ok) return true;
  char want[64];
  kiln_op_error(d, n, "inputs[%d] (%s): expected a constant f32 param of shape %s, got %s", i,
                t ? t->name : "missing", kiln_ints_str(dims, rank, want, sizeof want),
                t ? kiln_describe(t).text : "nothing");
  return false;
}

// x: (N, C, H, W) f32, or (N, C / L, H, W, L) with input_layout "NCHWc".
static bool check_x(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int64_t L) {
  const kiln_tensor *x = kiln_in(g, n, IN_X);
  int64_t xl = x_lanes(n);
  bool ok = x && x->dtype == KILN_F32 &&
            (xl ? x->shape.rank == 5 && x->shape.dim[4] == L : x->shape.rank == 4);
  if (ok) return true;
  kiln_op_error(d, n, "inputs[0] (%s): expected f32 %s (attrs.input_layout \"%s\"), got %s",
                x ? x->name : "missing", xl ? "(N, C / L, H, W, L)" : "(N, C, H, W)",
                xl ? "NCHWc" : "NCHW", x ? kiln_describe(x).text : "nothing");
  return false;
}

// Five inputs, y NCHWc, lanes >= 1.
static bool check_form(const kiln_node *n, kiln_diag *d) {
  const char *layout = kiln_attr_string(n, "layout", "NCHWc");
  if (n->n_inputs == 5 && kiln_attr_int(n, "lanes", 0) >= 1 && strcmp(layout, "NCHWc") == 0)
    return true;
  kiln_op_error(d, n,
                "expected 5 inputs (x, we, be, wd, bd), attrs.layout \"NCHWc\" and attrs.lanes "
                ">= 1, got %d inputs, \"%s\" and %lld",
                n->n_inputs, layout, (long long)kiln_attr_int(n, "lanes", 0));
  return false;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!check_form(n, d) || !kiln_conv_check_activation(n, d, "") ||
      !kiln_conv_check_activation(n, d, "expand_"))
    return false;
  int64_t L = kiln_attr_int(n, "lanes", 0);
  if (!check_x(g, n, d, L)) return false;
  kiln_shape xs = kiln_nchw_shape(&kiln_in(g, n, IN_X)->shape);
  const kiln_tensor *wd = kiln_in(g, n, IN_WD);
  int64_t C = xs.dim[1], M = wd && wd->shape.rank == 4 ? wd->shape.dim[0] : 0;
  int64_t we_dims[4] = {M, C, 1, 1}, wd_dims[4] = {M, 1, 0, 0};
  if (M) wd_dims[2] = wd->shape.dim[2], wd_dims[3] = wd->shape.dim[3];
  if (!check_param(g, n, d, IN_WD, 4, wd_dims) || !check_param(g, n, d, IN_WE, 4, we_dims) ||
      !check_param(g, n, d, IN_BE, 1, &M) || !check_param(g, n, d, IN_BD, 1, &M))
    return false;
  if (M % L != 0 || kiln_attr_int(n, "group", M) != M) {
    kiln_op_error(d, n,
                  "attrs.group, attrs.lanes: expected group = %lld channels, a multiple of "
                  "lanes %lld",
                  (long long)M, (long long)L);
    return false;
  }
  kiln_window win;
  if (!kiln_window_resolve_nd(n, d, 2, &xs.dim[2], &wd->shape.dim[2], opts, &win)) return false;
  kiln_shape out = xs;  // (N, M, OH, OW), blocked
  out.dim[1] = M, out.dim[2] = win.out[0], out.dim[3] = win.out[1];
  kiln_shape y = kiln_nchwc_shape(&out, L);
  kiln_op_set_output(g, n, 0, KILN_F32, &y);
  return true;
}

// ---- Reference ----

// e[n][m][hw] = act_e(be[m] + sum over c of x[n][c][hw] * we[m][c])
static double *eval_expand(const kiln_node *n, const kiln_eval_tensor *in, const kiln_shape *xs,
                           int64_t M) {
  int64_t N = xs->dim[0], C = xs->dim[1], HW = xs->dim[2] * xs->dim[3];
  double *e = kiln_xcalloc((size_t)(N * M * HW), sizeof(double));
  const double *x = in[IN_X].data, *w = in[IN_WE].data, *b = in[IN_BE].data;
  for (int64_t i = 0; i < N * M; i++)
    for (int64_t p = 0; p < HW; p++) {
      double s = b[i % M];
      for (int64_t c = 0; c < C; c++) s += x[(i / M * C + c) * HW + p] * w[i % M * C + c];
      e[i * HW + p] =
          (float)kiln_conv_activate_value(n, "expand_", s);  // an f32 tensor when unfused
    }
  return e;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  int64_t L = kiln_attr_int(n, "lanes", 0), xl = x_lanes(n);
  kiln_shape xs, ys = kiln_nchw_shape(out->shape);
  kiln_eval_tensor x = xl ? kiln_eval_unblocked(&in[IN_X], xl, &xs) : in[IN_X];
  if (!xl) xs = *in[IN_X].shape;
  kiln_eval_tensor pin[5] = {x, in[1], in[2], in[3], in[4]};
  int64_t M = ys.dim[1], H = xs.dim[2], W = xs.dim[3];
  kiln_window win;
  kiln_window_resolve_nd(n, NULL, 2, &xs.dim[2], &in[IN_WD].shape->dim[2], opts, &win);
  double *e = eval_expand(n, pin, &xs, M), *y = kiln_xcalloc((size_t)kiln_shape_numel(&ys), 8);
  int64_t KH = win.kernel[0], KW = win.kernel[1], OH = win.out[0], OW = win.out[1];
  for (int64_t i = 0; i < xs.dim[0] * M; i++)
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) {
        double s = in[IN_BD].data[i % M];
        for (int64_t kh = 0; kh < KH; kh++)
          for (int64_t kw = 0; kw < KW; kw++) {
            int64_t ih = oh * win.stride[0] - win.pad_begin[0] + kh * win.dilation[0];
            int64_t iw = ow * win.stride[1] - win.pad_begin[1] + kw * win.dilation[1];
            if (ih >= 0 && ih < H && iw >= 0 && iw < W)
              s += e[(i * H + ih) * W + iw] * in[IN_WD].data[(i % M * KH + kh) * KW + kw];
          }
        y[(i * OH + oh) * OW + ow] = kiln_conv_activate_value(n, "", s);
      }
  kiln_nchwc_copy(&ys, L, y, out->data, true);
  free(e), free(y);
  if (xl) free(x.data);
}

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  kiln_shape xs = kiln_nchw_shape(&kiln_in(g, n, IN_X)->shape);
  kiln_shape ys = kiln_nchw_shape(&kiln_out(g, n, 0)->shape);
  const kiln_tensor *wd = kiln_in(g, n, IN_WD);
  int64_t expand = 2 * xs.dim[0] * ys.dim[1] * xs.dim[2] * xs.dim[3] * xs.dim[1];
  return expand + 2 * kiln_shape_numel(&ys) * wd->shape.dim[2] * wd->shape.dim[3];
}

// ---- Lowering ----
// Geometry: a band of R output rows reads RB expanded rows starting at oh0 * sh - pt, expanded
// row q of the band (input row oh0 * sh - pt + q) is computed just before the first output row
// that reads it, into slot q % S of a ring of S = (kH - 1) * dh + 1 rows (the rows one output row
// reads), each (WP, L): x's columns at [pl, pl + W), zeros around.
typedef struct band_plan {
  int64_t N, C, M, H, W, L, CB;  // CB = M / L channel blocks
  int64_t KH, KW, sh, sw, dh, dw, pt, pl, OH, OW;
  int64_t R, RB, WP, bands;  // rows per band, expanded rows per band, padded width, OH / R
  int64_t S;                 // rows in the ring
  int64_t xl;                // x's lanes (0: planar)
  int64_t rw_e, rw_d;        // columns per register tile: expansion, depthwise
} band_plan;

// Output rows per band at most: a band recomputes S - sh expanded rows of the band before it, and
// bands are what the threads share: at least MIN_ITERATIONS (image, channel block, band) triples
// (MobileNet-V2: 6 channel blocks x 3 bands of 19 rows at 56 x 56, 9 x 2 at 28 x 28; with 9 x 1
// one of two threads waited 5 / 4). The bands of a map are as even as they can be, the last one
// shorter when R does not divide OH.
enum { BAND_ROWS = 28, MIN_ITERATIONS = 16, DW_TILE_MAX = 8 };

static band_plan make_plan(const kiln_lower_ctx *c) {
  const kiln_node *n = c->node;
  kiln_shape xs = kiln_nchw_shape(&kiln_lower_in(c, IN_X)->shape);
  const kiln_tensor *wd = kiln_lower_in(c, IN_WD);
  kiln_window win;
  kiln_window_resolve_nd(n, NULL, 2, &xs.dim[2], &wd->shape.dim[2], opts, &win);
  band_plan p = {.N = xs.dim[0],
                 .C = xs.dim[1],
                 .M = wd->shape.dim[0],
                 .H = xs.dim[2],
                 .W = xs.dim[3],
                 .L = kiln_attr_int(n, "lanes", 16),
                 .KH = win.kernel[0],
                 .KW = win.kernel[1],
                 .sh = win.stride[0],
                 .sw = win.stride[1],
                 .dh = win.dilation[0],
                 .dw = win.dilation[1],
                 .pt = win.pad_begin[0],
                 .pl = win.pad_begin[1],
                 .OH = win.out[0],
                 .OW = win.out[1],
                 .xl = x_lanes(n)};
  p.CB = p.M / p.L;
  int64_t need_w = (p.OW - 1) * p.sw + (p.KW - 1) * p.dw + 1;  // columns the windows reach
  p.WP = need_w > p.pl + p.W ? need_w : p.pl + p.W;
  p.bands = (p.OH + BAND_ROWS - 1) / BAND_ROWS;
  int64_t triples = p.N * p.CB;
  if (p.bands * triples < MIN_ITERATIONS) p.bands = (MIN_ITERATIONS + triples - 1) / triples;
  if (p.bands > p.OH) p.bands = p.OH;
  p.R = (p.OH + p.bands - 1) / p.bands;
  p.S = (p.KH - 1) * p.dh + 1;
  p.RB = (p.R - 1) * p.sh + (p.KH - 1) * p.dh + 1;
  int64_t acc = kiln_target_accumulators((int)p.L);
  p.rw_e = kiln_conv_tile_width(p.W, 1, acc);
  p.rw_d = kiln_conv_tile_width(p.OW, 1, DW_TILE_MAX < acc ? DW_TILE_MAX : acc);
  return p;
}

typedef struct band_vars {
  int it, nb, band;  // the parallel loop's (image * CB + channel block) * bands + band
  int arr;           // the ring of expanded rows (S, WP, L)
  int we, be, wd, bd;
} band_vars;

// we[cb][c][l] = w_e[cb * L + l][c], wd[cb][t][l] = w_d[cb * L + l][t], biases [cb][l].
static void pack(const kiln_lower_ctx *c, const band_plan *p, band_vars *v) {
  const kiln_tensor *we = kiln_lower_in(c, IN_WE), *wd = kiln_lower_in(c, IN_WD);
  const kiln_tensor *be = kiln_lower_in(c, IN_BE), *bd = kiln_lower_in(c, IN_BD);
  int64_t taps = p->KH * p->KW, L = p->L;
  float *pe = kiln_xcalloc((size_t)(p->M * p->C), sizeof(float));
  float *pd = kiln_xcalloc((size_t)(p->M * taps), sizeof(float));
  float *b1 = kiln_xcalloc((size_t)p->M, sizeof(float)), *b2 = kiln_xcalloc((size_t)p->M, 4);
  for (int64_t m = 0; m < p->M; m++) {
    for (int64_t ic = 0; ic < p->C; ic++)
      pe[((m / L) * p->C + ic) * L + m % L] = (float)kiln_tensor_get(we, m * p->C + ic);
    for (int64_t t = 0; t < taps; t++)
      pd[((m / L) * taps + t) * L + m % L] = (float)kiln_tensor_get(wd, m * taps + t);
    b1[m] = (float)kiln_tensor_get(be, m), b2[m] = (float)kiln_tensor_get(bd, m);
  }
  v->we = kiln_lower_derived_weight(c, "wexpand", pe, p->M * p->C);
  v->wd = kiln_lower_derived_weight(c, "wdepthwise", pd, p->M * taps);
  v->be = kiln_lower_derived_weight(c, "bexpand", b1, p->M);
  v->bd = kiln_lower_derived_weight(c, "bdepthwise", b2, p->M);
  free(pe), free(pd), free(b1), free(b2);
}

// The channel block cb = nb % CB and its vector element cb * L + l (times `per`, plus `plus`).
static kiln_lexpr *block_elem(kiln_lb *b, const band_plan *p, const band_vars *v, int64_t per,
                              kiln_lexpr *plus, int l) {
  kiln_lexpr *cb = lx_bin(b, LB_MOD, lx_var(b, v->nb), lx_int(b, p->CB));
  return lx_madd(b, lx_madd(b, lx_mul(b, cb, lx_int(b, per)), 1, plus), p->L, lx_var(b, l));
}

// arr[(r * WP + col) * L + l]
static kiln_lexpr *arr_index(kiln_lb *b, const band_plan *p, kiln_lexpr *r, kiln_lexpr *col,
                             int l) {
  return lx_madd(b, lx_madd(b, r, p->WP, col), p->L, lx_var(b, l));
}

// arr[r][col][l] = 0 for col in [lo, hi)
static void zero_columns(kiln_lb *b, const band_plan *p, const band_vars *v, int r, int64_t lo,
                         int64_t hi) {
  if (hi <= lo) return;
  int col = kiln_lb_for(b, "col", lx_int(b, lo), lx_int(b, hi)), l = kiln_lb_for_n(b, "l", p->L);
  kiln_lb_store_local(b, v->arr, arr_index(b, p, lx_var(b, r), lx_var(b, col), l),
                      lx_float(b, KILN_F32, 0));
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // l, col
}

// x[n][ic][ih][iw] in x's layout (planar or NCHWc); n = nb / CB.
static kiln_lexpr *x_at(kiln_lb *b, const band_plan *p, const band_vars *v, int ic, int ih,
                        kiln_lexpr *iw) {
  kiln_lexpr *img = lx_bin(b, LB_DIV, lx_var(b, v->nb), lx_int(b, p->CB));
  if (!p->xl) {
    kiln_lexpr *plane = lx_madd(b, img, p->C, lx_var(b, ic));
    return lx_madd(b, lx_madd(b, plane, p->H, lx_var(b, ih)), p->W, iw);
  }
  kiln_lexpr *blk =
      lx_madd(b, img, p->C / p->xl, lx_bin(b, LB_DIV, lx_var(b, ic), lx_int(b, p->xl)));
  kiln_lexpr *pix = lx_madd(b, lx_madd(b, blk, p->H, lx_var(b, ih)), p->W, iw);
  return lx_madd(b, pix, p->xl, lx_bin(b, LB_MOD, lx_var(b, ic), lx_int(b, p->xl)));
}

// for ic in [ic0, ic1), j, l: acc[j][l] = muladd(x[..ic..][w0 + j], we[cb][ic][l], first ?
// be[cb][l] : acc[j][l]). The first input channel starts the sums from the bias, so the
// accumulators are never copied into (gcc makes such copies a memcpy, which keeps them in memory).
static void expand_sum(const kiln_lower_ctx *c, const band_plan *p, const band_vars *v, int acc,
                       int ih, kiln_lexpr *w0, int64_t rw, int64_t ic0, int64_t ic1, bool first) {
  kiln_lb *b = c->b;
  int ic = kiln_lb_for(b, "ic", lx_int(b, ic0), lx_int(b, ic1));
  int xi = kiln_lb_decl(b, "xi", KILN_I64, x_at(b, p, v, ic, ih, kiln_lx_clone(b, w0)));
  int j = kiln_conv_unrolled_for(b, "j", rw);  // x[xi + j * (x's column stride)]
  kiln_lexpr *at = lx_madd(b, lx_var(b, j), p->xl ? p->xl : 1, lx_var(b, xi));
  int xv = kiln_lb_decl(b, "xv", KILN_F32, lx_load(b, kiln_in_buf(c, IN_X), at));
  int l = kiln_lb_for_n(b, "l", p->L);
  kiln_lexpr *wv = lx_load(b, v->we, block_elem(b, p, v, p->C, lx_var(b, ic), l));
  kiln_lexpr *ai = lx_madd(b, lx_var(b, j), p->L, lx_var(b, l));
  kiln_lexpr *sum = first ? lx_load(b, v->be, block_elem(b, p, v, 1, lx_int(b, 0), l))
                          : lx_local(b, acc, kiln_lx_clone(b, ai));
  kiln_lb_store_local(b, acc, ai, lx_muladd(b, lx_var(b, xv), wv, sum));
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // l, j, ic
}

// One expansion tile: rw columns of row r at w0, the sums over the input channels, then
// ring[r][pl + w0 + j][l] = act_e(acc[j][l]).
static void expand_tile(const kiln_lower_ctx *c, const band_plan *p, const band_vars *v, int r,
                        int ih, kiln_lexpr *w0, int64_t rw) {
  kiln_lb *b = c->b;
  int acc = kiln_lb_decl_array(b, "acc", KILN_F32, rw * p->L);
  expand_sum(c, p, v, acc, ih, w0, rw, 0, 1, true);
  if (p->C > 1) expand_sum(c, p, v, acc, ih, w0, rw, 1, p->C, false);
  int j = kiln_conv_unrolled_for(b, "j", rw), l = kiln_lb_for_n(b, "l", p->L);
  kiln_lexpr *col = lx_add(b, lx_add(b, kiln_lx_clone(b, w0), lx_var(b, j)), lx_int(b, p->pl));
  kiln_lexpr *val = lx_local(b, acc, lx_madd(b, lx_var(b, j), p->L, lx_var(b, l)));
  kiln_lb_store_local(b, v->arr, arr_index(b, p, lx_var(b, r), col, l),
                      kiln_conv_activate(b, c->node, "expand_", val));
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // l, j
}

// The expanded rows output row o of the band reads first: q in [0, S) for o = 0, else
// [S + (o - 1) * sh, S + o * sh). Each into slot r = q % S (input row ih = band * R * sh - pt +
// q): inside x, the expansion between zero columns; outside, zeros (the depthwise conv's padding).
static void expand_rows(const kiln_lower_ctx *c, const band_plan *p, const band_vars *v, int o) {
  kiln_lb *b = c->b;
  kiln_lexpr *later = lx_madd(b, lx_var(b, o), p->sh, lx_int(b, p->S - p->sh));
  kiln_lexpr *lo = lx_select(b, lx_bin(b, LB_EQ, lx_var(b, o), lx_int(b, 0)), lx_int(b, 0), later);
  int q = kiln_lb_for(b, "q", lo, lx_madd(b, lx_var(b, o), p->sh, lx_int(b, p->S)));
  int r = kiln_lb_decl(b, "slot", KILN_I64, lx_bin(b, LB_MOD, lx_var(b, q), lx_int(b, p->S)));
  kiln_lexpr *first = lx_mul(b, lx_var(b, v->band), lx_int(b, p->R * p->sh));
  int ih =
      kiln_lb_decl(b, "ih", KILN_I64, lx_add(b, lx_add(b, first, lx_int(b, -p->pt)), lx_var(b, q)));
  kiln_lb_if(b, lx_bin(b, LB_AND, lx_bin(b, LB_LE, lx_int(b, 0), lx_var(b, ih)),
                       lx_bin(b, LB_LT, lx_var(b, ih), lx_int(b, p->H))));
  zero_columns(b, p, v, r, 0, p->pl);
  zero_columns(b, p, v, r, p->pl + p->W, p->WP);
  int64_t full = p->W / p->rw_e, rest = p->W % p->rw_e;
  if (full) {
    int t = kiln_lb_for_n(b, "t", full);
    expand_tile(c, p, v, r, ih, lx_mul(b, lx_var(b, t), lx_int(b, p->rw_e)), p->rw_e);
    kiln_lb_end_for(b);  // t
  }
  if (rest) expand_tile(c, p, v, r, ih, lx_int(b, full * p->rw_e), rest);
  kiln_lb_else(b);
  zero_columns(b, p, v, r, 0, p->WP);
  kiln_lb_end_if(b);
  kiln_lb_end_for(b);  // q
}

// Taps kh in [t[0], t[1]), kw in [t[2], t[3]) (unrolled) of a depthwise tile at ow0 of the band's
// output row o: acc[j][l] = muladd(wd[cb][kh][kw][l], ring[(o * sh + kh * dh) % S][(ow0 + j) * sw
// + kw * dw][l], first ? bd[cb][l] : acc[j][l]) (the tap (0, 0) starts from the bias, as in
// expand_sum).
static void depthwise_sum(const kiln_lower_ctx *c, const band_plan *p, const band_vars *v, int o,
                          int acc, kiln_lexpr *ow0, int64_t rw, const int64_t t[4], bool first) {
  kiln_lb *b = c->b;
  int kh = kiln_lb_for(b, "kh", lx_int(b, t[0]), lx_int(b, t[1]));
  kiln_lb_unroll(b, (int)(t[1] - t[0]));
  int kw = kiln_lb_for(b, "kw", lx_int(b, t[2]), lx_int(b, t[3]));
  kiln_lb_unroll(b, (int)(t[3] - t[2]));
  int j = kiln_conv_unrolled_for(b, "j", rw), l = kiln_lb_for_n(b, "l", p->L);
  kiln_lexpr *tap = lx_madd(b, lx_var(b, kh), p->KW, lx_var(b, kw));
  kiln_lexpr *wv = lx_load(b, v->wd, block_elem(b, p, v, p->KH * p->KW, tap, l));
  kiln_lexpr *row =
      lx_bin(b, LB_MOD, lx_madd(b, lx_var(b, o), p->sh, lx_mul(b, lx_var(b, kh), lx_int(b, p->dh))),
             lx_int(b, p->S));
  kiln_lexpr *col =
      lx_add(b, lx_mul(b, lx_add(b, kiln_lx_clone(b, ow0), lx_var(b, j)), lx_int(b, p->sw)),
             lx_mul(b, lx_var(b, kw), lx_int(b, p->dw)));
  kiln_lexpr *ai = lx_madd(b, lx_var(b, j), p->L, lx_var(b, l));
  kiln_lexpr *xv = lx_local(b, v->arr, arr_index(b, p, row, col, l));
  kiln_lexpr *sum = first ? lx_load(b, v->bd, block_elem(b, p, v, 1, lx_int(b, 0), l))
                          : lx_local(b, acc, kiln_lx_clone(b, ai));
  kiln_lb_store_local(b, acc, ai, lx_muladd(b, wv, xv, sum));
  for (int k = 0; k < 4; k++) kiln_lb_end_for(b);  // l, j, kw, kh
}

// One depthwise tile: rw columns at ow0 of the band's output row o, the taps in (kh, kw) order,
// then y[nb * OH + band * R + o][ow0 + j][l] = act(acc[j][l]), the row as it * R + o - nb * (bands
// * R - OH) (the parallel loop variable in the index: iterations store disjoint rows).
static void depthwise_tile(const kiln_lower_ctx *c, const band_plan *p, const band_vars *v, int o,
                           kiln_lexpr *ow0, int64_t rw) {
  kiln_lb *b = c->b;
  int acc = kiln_lb_decl_array(b, "acc", KILN_F32, rw * p->L);
  const int64_t first[4] = {0, 1, 0, 1}, row0[4] = {0, 1, 1, p->KW}, rest[4] = {1, p->KH, 0, p->KW};
  depthwise_sum(c, p, v, o, acc, ow0, rw, first, true);
  if (p->KW > 1) depthwise_sum(c, p, v, o, acc, ow0, rw, row0, false);
  if (p->KH > 1) depthwise_sum(c, p, v, o, acc, ow0, rw, rest, false);
  int j = kiln_conv_unrolled_for(b, "j", rw), l = kiln_lb_for_n(b, "l", p->L);
  kiln_lexpr *yrow =
      lx_madd(b, lx_var(b, v->it), p->R, lx_var(b, o));  // + nb * OH - nb * bands * R
  if (p->bands * p->R != p->OH)
    yrow = lx_add(b, yrow, lx_mul(b, lx_var(b, v->nb), lx_int(b, p->OH - p->bands * p->R)));
  kiln_lexpr *yi =
      lx_madd(b, lx_madd(b, yrow, p->OW, lx_add(b, kiln_lx_clone(b, ow0), lx_var(b, j))), p->L,
              lx_var(b, l));
  kiln_lexpr *val = lx_local(b, acc, lx_madd(b, lx_var(b, j), p->L, lx_var(b, l)));
  kiln_lb_store(b, kiln_out_buf(c, 0), yi, kiln_conv_activate(b, c->node, "", val));
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // l, j
}

// Output row o of the band: the expanded rows it needs first, then its tiles.
static void band_row(const kiln_lower_ctx *c, const band_plan *p, const band_vars *v) {
  kiln_lb *b = c->b;
  kiln_lexpr *rows = lx_int(b, p->R);  // min(R, OH - band * R): the last band may be shorter
  if (p->bands * p->R != p->OH)
    rows = lx_bin(b, LB_MIN, rows, lx_madd(b, lx_var(b, v->band), -p->R, lx_int(b, p->OH)));
  int o = kiln_lb_for(b, "o", lx_int(b, 0), rows);
  expand_rows(c, p, v, o);
  int64_t full = p->OW / p->rw_d, rest = p->OW % p->rw_d;
  if (full) {
    int t = kiln_lb_for_n(b, "t", full);
    depthwise_tile(c, p, v, o, lx_mul(b, lx_var(b, t), lx_int(b, p->rw_d)), p->rw_d);
    kiln_lb_end_for(b);  // t
  }
  if (rest) depthwise_tile(c, p, v, o, lx_int(b, full * p->rw_d), rest);
  kiln_lb_end_for(b);  // o
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  band_plan p = make_plan(c);
  band_vars v;
  pack(c, &p, &v);
  kiln_lb_comment(b,
                  "expand %lld -> %lld (%s x) and depthwise %lldx%lld stride %lld: bands of %lld "
                  "output rows from %lld expanded rows, a ring of %lld rows of %lld x %lld",
                  (long long)p.C, (long long)p.M, p.xl ? "NCHWc" : "planar", (long long)p.KH,
                  (long long)p.KW, (long long)p.sh, (long long)p.R, (long long)p.RB, (long long)p.S,
                  (long long)p.WP, (long long)p.L);
  v.it = kiln_lb_for_n(b, "it", p.N * p.CB * p.bands);  // (n, cb, band)
  v.nb = kiln_lb_decl(b, "nb", KILN_I64, lx_bin(b, LB_DIV, lx_var(b, v.it), lx_int(b, p.bands)));
  v.band =
      kiln_lb_decl(b, "band", KILN_I64, lx_bin(b, LB_MOD, lx_var(b, v.it), lx_int(b, p.bands)));
  v.arr = kiln_lb_decl_array(b, "ring", KILN_F32, p.S * p.WP * p.L);
  band_row(c, &p, &v);
  kiln_lb_end_for(b);  // it
}

const kiln_op_def kiln_op_FusedExpandDepthwise = {
    .name = "FusedExpandDepthwise",
    .min_inputs = 5,
    .max_inputs = 5,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    .tol = {1e-5, 1e-5},  // FusedConv's, twice over: the same sums
};
