// Depthwise 2-D convolutions (group = C = M, f32) of conv.c: each output channel reads its own
// input channel. Two lowerings, both summing bias, then the kH x kW taps in (kh, kw) order with
// one muladd each, as eval does — so they give the same bits:
//  - planar NCHW: one output per vector lane, the column loop vectorized;
//  - blocked NCHWc (FusedConv layout "NCHWc", placed by select-layout): a vector is L channels of
//    one pixel, a register tile RW pixels of a row.
#include <stdlib.h>

#include "conv_internal.h"

bool kiln_conv_depthwise_applies(const kiln_lower_ctx *c) {
  kiln_shape xs = kiln_nchw_shape(&kiln_lower_in(c, 0)->shape);
  const kiln_tensor *w = kiln_lower_in(c, 1);
  int64_t group = kiln_attr_int(c->node, "group", 1);
  return xs.rank == 4 && w->dtype == KILN_F32 && group > 1 && group == xs.dim[1] &&
         group == w->shape.dim[0];
}

// ---- Planar: one output computed per vector lane ----
//   xp = x with its padding made explicit (when there is any)
//   for nc (parallel), oh: for ow (vectorized):
//     acc = bias[c] (or 0)      c = nc % C
//     for kh, kw (fully unrolled):
//       acc = muladd(w[c][0][kh][kw], xp[nc][oh*sh + kh*dh][ow*sw + kw*dw], acc)
//     y[nc][oh][ow] = epilogue(acc)

// acc = muladd(w[c][0][kh][kw], xp[nc][oh*sh + kh*dh][ow*sw + kw*dw], acc) over the unrolled taps.
static void planar_taps(const kiln_lower_ctx *c, const kiln_conv_plan *p, int xp, int nc, int oh,
                        int ow, int acc) {
  kiln_lb *b = c->b;
  int kh = kiln_conv_unrolled_for(b, "kh", p->KH), kw = kiln_conv_unrolled_for(b, "kw", p->KW);
  kiln_lexpr *channel = lx_bin(b, LB_MOD, lx_var(b, nc), lx_int(b, p->C));
  kiln_lexpr *wi = lx_madd(b, lx_madd(b, channel, p->KH, lx_var(b, kh)), p->KW, lx_var(b, kw));
  kiln_lexpr *ih = lx_add(b, lx_mul(b, lx_var(b, oh), lx_int(b, p->sh)),
                          lx_mul(b, lx_var(b, kh), lx_int(b, p->dh)));
  kiln_lexpr *iw = lx_add(b, lx_mul(b, lx_var(b, ow), lx_int(b, p->sw)),
                          lx_mul(b, lx_var(b, kw), lx_int(b, p->dw)));
  kiln_lexpr *xi = lx_madd(b, lx_madd(b, lx_var(b, nc), p->HP, ih), p->WP, iw);
  kiln_lexpr *prod =
      lx_muladd(b, lx_load(b, kiln_in_buf(c, 1), wi), lx_load(b, xp, xi), lx_var(b, acc));
  kiln_lb_assign(b, acc, prod);
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // kw, kh
}

static void lower_planar(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  kiln_conv_plan p = kiln_conv_node_plan(c);
  int xp = kiln_conv_plan_input(c, &p);
  kiln_lb_comment(b, "depthwise: one output per lane%s", p.padded ? ", padded input" : "");
  int nc = kiln_lb_for_n(b, "nc", p.N * p.C), oh = kiln_lb_for_n(b, "oh", p.OH);
  int ow = kiln_lb_for_n(b, "ow", p.OW);
  kiln_lexpr *init = lx_float(b, KILN_F32, 0);
  if (kiln_has_input(c->node, 2))
    init = lx_load(b, kiln_in_buf(c, 2), lx_bin(b, LB_MOD, lx_var(b, nc), lx_int(b, p.C)));
  int acc = kiln_lb_decl(b, "acc", KILN_F32, init);
  planar_taps(c, &p, xp, nc, oh, ow, acc);
  kiln_lexpr *yi = lx_madd(b, lx_madd(b, lx_var(b, nc), p.OH, lx_var(b, oh)), p.OW, lx_var(b, ow));
  kiln_lb_store(b, kiln_out_buf(c, 0), yi,
                kiln_conv_epilogue(c, lx_var(b, acc), kiln_lx_clone(b, yi)));
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // ow, oh, nc
}

// ---- NCHWc: L channels of one pixel per vector, RW pixels per register tile ----
// x (N, C/L, H, W, L), y and the residual (N, C/L, OH, OW, L); the weights packed at compile time
// as wp (C/L, kH, kW, L), the bias as bp (C/L, L). x is read in place (no padded copy): rows whose
// taps all lie inside x run tiles over the columns whose taps do too, with plain loads; the
// other outputs (the border) read each tap through a check, zero outside x — the value the
// padding would give, so the sums are the planar kernel's bit for bit:
//   for row = (n, cb, oh) (parallel):
//     if r0 <= oh < r1: columns [0, c0) and [c1, OW) checked; tiles of RW columns in [c0, c1)
//     else: tiles over the row, checked
//   tile at ow0: acc[j][l] = bp[cb][l]                              j unrolled, l vectorized
//     for kh, kw (unrolled), j (unrolled), l:
//       acc[j][l] = muladd(wp[cb][kh][kw][l], x[n][cb][oh*sh - pt + kh*dh][(ow0+j)*sw - pl +
//       kw*dw][l], ..)
//     y[n][cb][oh][ow0 + j][l] = epilogue(acc[j][l])
// With kw unrolled, a stride-1 row's neighbouring taps load the same x vectors (RW + kW - 1 loads
// for RW * kW muladds per kernel row). A strided 1x1 conv reads its subsampled copy instead.

enum { DW_TILE_MAX = 8 };  // accumulator vectors per tile (x and w vectors need registers too)

typedef struct dw_vars {
  int row, nb, oh, acc;  // nb = n * C/L + cb, the image's channel block
  int x, wp, bp;
  bool checked;  // the tile being lowered reads x through bounds checks
} dw_vars;

// wp[cb][kh][kw][l] = w[cb*L + l][0][kh][kw]; bp[cb][l] = bias[cb*L + l] (or 0).
static void pack_depthwise(const kiln_lower_ctx *c, const kiln_conv_plan *p, dw_vars *v) {
  const kiln_tensor *w = kiln_lower_in(c, 1);
  const kiln_tensor *bias = kiln_has_input(c->node, 2) ? kiln_lower_in(c, 2) : NULL;
  int64_t taps = p->KH * p->KW, L = p->lanes;
  float *packed = kiln_xcalloc((size_t)(p->C * taps), sizeof(float));
  float *bp = kiln_xcalloc((size_t)p->C, sizeof(float));
  for (int64_t ch = 0; ch < p->C; ch++) {
    for (int64_t t = 0; t < taps; t++)
      packed[((ch / L) * taps + t) * L + ch % L] = (float)kiln_tensor_get(w, ch * taps + t);
    bp[ch] = bias ? (float)kiln_tensor_get(bias, ch) : 0.0f;
  }
  v->wp = kiln_lower_derived_weight(c, "wpacked", packed, p->C * taps);
  v->bp = kiln_lower_derived_weight(c, "bpacked", bp, p->C);
  free(packed), free(bp);
}

// The NCHWc index ((nb * rows + row) * cols + col) * L + l.
static kiln_lexpr *blocked_index(kiln_lb *b, const kiln_conv_plan *p, kiln_lexpr *nb, int64_t rows,
                                 kiln_lexpr *row, int64_t cols, kiln_lexpr *col, int l) {
  kiln_lexpr *pixel = lx_madd(b, lx_madd(b, nb, rows, row), cols, col);
  return lx_madd(b, pixel, p->lanes, lx_var(b, l));
}

// Channel block cb of the row's image: nb % (C / L).
static kiln_lexpr *channel_block(kiln_lb *b, const kiln_conv_plan *p, const dw_vars *v) {
  return lx_bin(b, LB_MOD, lx_var(b, v->nb), lx_int(b, p->C / p->lanes));
}

// o * s - pad + k * d: the input position of tap k of output o.
static kiln_lexpr *tap_pos(kiln_lb *b, kiln_lexpr *o, int64_t s, int64_t pad, int k, int64_t d) {
  return lx_add(b, lx_add(b, lx_mul(b, o, lx_int(b, s)), lx_int(b, -pad)),
                lx_mul(b, lx_var(b, k), lx_int(b, d)));
}

// lo <= e < hi (e cloned).
static kiln_lexpr *within(kiln_lb *b, kiln_lexpr *e, int64_t lo, int64_t hi) {
  return lx_bin(b, LB_AND, lx_bin(b, LB_LE, lx_int(b, lo), e),
                lx_bin(b, LB_LT, kiln_lx_clone(b, e), lx_int(b, hi)));
}

// min(max(e, 0), n - 1)
static kiln_lexpr *clamped(kiln_lb *b, kiln_lexpr *e, int64_t n) {
  return lx_bin(b, LB_MIN, lx_bin(b, LB_MAX, kiln_lx_clone(b, e), lx_int(b, 0)), lx_int(b, n - 1));
}

// x[n][cb][ih][iw][l]; checked: 0 where (ih, iw) lies outside x (the read clamped inside).
static kiln_lexpr *input_at(kiln_lb *b, const kiln_conv_plan *p, const dw_vars *v, kiln_lexpr *ih,
                            kiln_lexpr *iw, int l) {
  if (!v->checked)
    return lx_load(b, v->x, blocked_index(b, p, lx_var(b, v->nb), p->H, ih, p->W, iw, l));
  kiln_lexpr *inside = lx_bin(b, LB_AND, within(b, ih, 0, p->H), within(b, iw, 0, p->W));
  kiln_lexpr *at = blocked_index(b, p, lx_var(b, v->nb), p->H, clamped(b, ih, p->H), p->W,
                                 clamped(b, iw, p->W), l);
  return lx_select(b, inside, lx_load(b, v->x, at), lx_float(b, KILN_F32, 0));
}

// bp[cb][l]
static kiln_lexpr *bias_at(kiln_lb *b, const kiln_conv_plan *p, const dw_vars *v, int l) {
  return lx_load(b, v->bp, lx_madd(b, channel_block(b, p, v), p->lanes, lx_var(b, l)));
}

// for kh in [kh0, kh1), kw in [kw0, kw1) (unrolled), j, l:
//   acc[j][l] = muladd(wp[cb][kh][kw][l], x[..][l], first ? bp[cb][l] : acc[j][l])
// `first` (the tap (0, 0)) starts the sums from the bias: the accumulators are only ever set by
// muladds, never copied into, which gcc would turn into a memcpy that keeps them in memory
// (the stores and reloads took a third of the kernel's time).
static void blocked_taps(const kiln_lower_ctx *c, const kiln_conv_plan *p, const dw_vars *v,
                         kiln_lexpr *ow0, int64_t rw, const int64_t taps[4], bool first) {
  kiln_lb *b = c->b;
  int kh = kiln_lb_for(b, "kh", lx_int(b, taps[0]), lx_int(b, taps[1]));
  int kw = kiln_lb_for(b, "kw", lx_int(b, taps[2]), lx_int(b, taps[3]));
  kiln_lb_unroll(b, (int)(taps[3] - taps[2]));
  int j = kiln_conv_unrolled_for(b, "j", rw), l = kiln_lb_for_n(b, "l", p->lanes);
  kiln_lexpr *tap =
      lx_madd(b, lx_madd(b, channel_block(b, p, v), p->KH, lx_var(b, kh)), p->KW, lx_var(b, kw));
  kiln_lexpr *wv = lx_load(b, v->wp, lx_madd(b, tap, p->lanes, lx_var(b, l)));
  kiln_lexpr *ih = tap_pos(b, lx_var(b, v->oh), p->sh, p->pt, kh, p->dh);
  kiln_lexpr *ow = lx_add(b, kiln_lx_clone(b, ow0), lx_var(b, j));
  kiln_lexpr *iw = tap_pos(b, ow, p->sw, p->pl, kw, p->dw);
  kiln_lexpr *ai = lx_madd(b, lx_var(b, j), p->lanes, lx_var(b, l));
  kiln_lexpr *sum = first ? bias_at(b, p, v, l) : lx_local(b, v->acc, kiln_lx_clone(b, ai));
  kiln_lb_store_local(b, v->acc, ai, lx_muladd(b, wv, input_at(b, p, v, ih, iw, l), sum));
  for (int k = 0; k < 4; k++) kiln_lb_end_for(b);  // l, j, kw, kh
}

// One tile of rw columns at ow0 (an expression, cloned as needed): init, taps, epilogue.
static void blocked_tile(const kiln_lower_ctx *c, const kiln_conv_plan *p, dw_vars *v,
                         kiln_lexpr *ow0, int64_t rw) {
  kiln_lb *b = c->b;
  v->acc = kiln_lb_decl_array(b, "acc", KILN_F32, rw * p->lanes);
  const int64_t first[4] = {0, 1, 0, 1}, row0[4] = {0, 1, 1, p->KW}, rest[4] = {1, p->KH, 0, p->KW};
  blocked_taps(c, p, v, ow0, rw, first, true);  // bias, then taps in (kh, kw) order
  if (p->KW > 1) blocked_taps(c, p, v, ow0, rw, row0, false);
  if (p->KH > 1) blocked_taps(c, p, v, ow0, rw, rest, false);
  int j = kiln_conv_unrolled_for(b, "j", rw), l = kiln_lb_for_n(b, "l", p->lanes);
  kiln_lexpr *col = lx_add(b, kiln_lx_clone(b, ow0), lx_var(b, j));
  kiln_lexpr *yi = blocked_index(b, p, lx_var(b, v->row), 1, lx_int(b, 0), p->OW, col, l);
  kiln_lexpr *acc = lx_local(b, v->acc, lx_madd(b, lx_var(b, j), p->lanes, lx_var(b, l)));
  kiln_lb_store(b, kiln_out_buf(c, 0), yi, kiln_conv_epilogue(c, acc, kiln_lx_clone(b, yi)));
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // l, j
}

// Tiles of rw columns over [lo, hi) (rw = 1: a loop over single columns), the last one narrower.
static void blocked_tiles(const kiln_lower_ctx *c, const kiln_conv_plan *p, dw_vars *v, int64_t lo,
                          int64_t hi, int64_t rw, bool checked) {
  kiln_lb *b = c->b;
  int64_t full = (hi - lo) / rw, rest = (hi - lo) % rw;
  v->checked = checked;
  if (full > 0) {
    int ot = kiln_lb_for_n(b, "ot", full);
    blocked_tile(c, p, v, lx_madd(b, lx_var(b, ot), rw, lx_int(b, lo)), rw);
    kiln_lb_end_for(b);  // ot
  }
  if (rest) blocked_tile(c, p, v, lx_int(b, lo + full * rw), rest);
}

// The outputs o whose taps o * s - pad + k * d (k < K) all lie in [0, n): [*lo, *hi), within
// [0, out).
static void interior(int64_t n, int64_t out, int64_t K, int64_t s, int64_t pad, int64_t d,
                     int64_t *lo, int64_t *hi) {
  int64_t last = n - 1 + pad - (K - 1) * d;  // o * s may reach this
  *lo = (pad + s - 1) / s;
  *hi = last < 0 ? 0 : last / s + 1;
  if (*lo > out) *lo = out;
  if (*hi > out) *hi = out;
  if (*hi < *lo) *hi = *lo;
}

// One output row: interior rows run plain tiles between checked border columns, border rows
// checked tiles.
static void blocked_row(const kiln_lower_ctx *c, const kiln_conv_plan *p, dw_vars *v, int64_t rw) {
  kiln_lb *b = c->b;
  int64_t r0, r1, c0, c1;
  interior(p->H, p->OH, p->KH, p->sh, p->pt, p->dh, &r0, &r1);
  interior(p->W, p->OW, p->KW, p->sw, p->pl, p->dw, &c0, &c1);
  if (r0 == 0 && r1 == p->OH && c0 == 0 && c1 == p->OW) {  // no padding reached
    blocked_tiles(c, p, v, 0, p->OW, rw, false);
    return;
  }
  kiln_lb_if(b, within(b, lx_var(b, v->oh), r0, r1));
  blocked_tiles(c, p, v, 0, c0, 1, true);
  blocked_tiles(c, p, v, c0, c1, rw, false);
  blocked_tiles(c, p, v, c1, p->OW, 1, true);
  kiln_lb_else(b);
  blocked_tiles(c, p, v, 0, p->OW, rw, true);
  kiln_lb_end_if(b);
}

static void lower_blocked(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  kiln_conv_plan p = kiln_conv_node_plan(c);
  dw_vars v;
  pack_depthwise(c, &p, &v);
  v.x = p.subsampled ? kiln_conv_plan_input(c, &p) : kiln_in_buf(c, 0);
  int64_t rw = kiln_conv_tile_width(p.OW, 1, DW_TILE_MAX < p.max_acc ? DW_TILE_MAX : p.max_acc);
  kiln_lb_comment(b, "depthwise NCHWc: %lld channels by %lld columns per tile%s",
                  (long long)p.lanes, (long long)rw,
                  p.padded ? ", padding checked at the border" : "");
  v.row = kiln_lb_for_n(b, "row", p.N * (p.C / p.lanes) * p.OH);  // out: (N, C/L, OH) rows
  v.nb = kiln_lb_decl(b, "nb", KILN_I64, lx_bin(b, LB_DIV, lx_var(b, v.row), lx_int(b, p.OH)));
  v.oh = kiln_lb_decl(b, "oh", KILN_I64, lx_bin(b, LB_MOD, lx_var(b, v.row), lx_int(b, p.OH)));
  blocked_row(c, &p, &v, rw);
  kiln_lb_end_for(b);  // row
}

void kiln_conv_lower_depthwise(const kiln_lower_ctx *c) {
  if (kiln_conv_blocked_lanes(c->node))
    lower_blocked(c);
  else
    lower_planar(c);
}
