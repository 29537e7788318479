// ConvGradFilter (group 1, f32) as a register-tiled product: per image, dy (M x pixels) times the
// patches of x (pixels x C*kH*kW), summed over the images.
//   dw[m, c, kh, kw] = sum over n, oh, ow of dy[n, m, oh, ow] * xp[n, c, ih, iw]
//   ih = oh*sh + kh*dh, iw = ow*sw + kw*dw   (xp: x padded, so every position exists)
// xp is x as conv.c's blocked kernel reads it (its padded or subsampled copy, or x itself; a 1x1
// unpadded conv flattens the plane into one row). The output channels are vectorized at the
// target's f32 width L, so dy is first transposed into kernel scratch, zero past M:
//   dyt[n][pixel][m]   (N, OH * OW, ceil(M / L) * L)
// A tile holds RO x L output channels by T = RC x RK x kW taps (RC input channels, RK kernel rows,
// every kernel column) in T * RO vector accumulators. Tiles are grouped (a group: one channel
// vector block, GC channel blocks, every kernel row), the groups run in parallel, and each group
// walks the rows q = n * OH + oh in chunks small enough that the chunk's dyt stays in cache while
// every tile of the group reads it:
//   dw = 0
//   for group (parallel), chunk, tile of the group: acc = 0
//     for q in chunk, ow: for cc, kh, kw (unrolled): xv = xp[n][c0 + cc][oh*sh + (h0 + kh)*dh][..]
//       for r (unrolled), l (vectorized): acc[cc][kh][kw][r][l] = muladd(xv, dyt[q][ow][..], acc)
//     dw[tile] += acc     (dw[m][c0 + cc][h0 + kh][kw] for m = (ob*RO + r)*L + l < M; with one
//                          chunk, dw[tile] = acc and no zeroing pass)
// Each sum runs over the pixels in (n, oh, ow) order, in one partial sum per chunk.
#include "../nn/conv_internal.h"
#include "conv_grad_blocked.h"

typedef struct filter_tiles {
  int64_t RO, RC, RK;  // channel vectors, input channels and kernel rows per tile
  int64_t CB, HB;      // tiles along C and kH
  int64_t MVL;         // ceil(M / L) * L: a pixel's row of dyt
  int64_t G, GC;       // groups along C and the channel blocks in one (CB = G * GC)
  int64_t rows;        // rows q = n * OH + oh per chunk
} filter_tiles;

// Bytes of dyt one chunk of a tile may read (a part of L2).
enum { CHUNK_BYTES = 256 * 1024, MIN_GROUPS = 4 };

// Groups: the fewest along C that make MIN_GROUPS in all (or one per channel block); chunk rows:
// as many as fit CHUNK_BYTES.
static void choose_groups(const kiln_conv_plan *p, filter_tiles *t) {
  int64_t vector_blocks = p->MV / t->RO;
  t->G = t->CB;
  for (int64_t g = 1; g <= t->CB; g++)
    if (t->CB % g == 0 && vector_blocks * g >= MIN_GROUPS) {
      t->G = g;
      break;
    }
  t->GC = t->CB / t->G;
  int64_t row_bytes = p->OW * t->RO * p->lanes * 4;
  t->rows = CHUNK_BYTES / row_bytes > 1 ? CHUNK_BYTES / row_bytes : 1;
}

// The tile with the most accumulators (at most the target's), then the fewest loads per pixel
// (RO vectors of dy, T values of x); RO, RC and RK divide MV, C and kH. False if no tile fits.
static bool choose_tiles(const kiln_conv_plan *p, filter_tiles *t) {
  int64_t best = 0, best_loads = 0;
  *t = (filter_tiles){.RO = 1, .RC = 1, .RK = 1};
  for (int64_t ro = 1; ro <= 4 && ro <= p->MV; ro++)
    for (int64_t rc = 1; rc <= p->C && ro * rc * p->KW <= p->max_acc; rc++)
      for (int64_t rk = 1; rk <= p->KH && ro * rc * rk * p->KW <= p->max_acc; rk++) {
        int64_t taps = rc * rk * p->KW, acc = ro * taps, loads = ro + taps;
        if (p->MV % ro || p->C % rc || p->KH % rk) continue;
        if (acc < best || (acc == best && loads >= best_loads)) continue;
        best = acc, best_loads = loads;
        t->RO = ro, t->RC = rc, t->RK = rk;
      }
  t->CB = p->C / t->RC, t->HB = p->KH / t->RK, t->MVL = p->MV * p->lanes;
  return best > 0;
}

// dyt[n][pixel][m] = m < M ? dy[n][m][pixel] : 0, each pixel's row written in one go. Returns
// its buffer.
static int transpose_dy(const kiln_lower_ctx *c, const kiln_conv_plan *p, const filter_tiles *t) {
  kiln_lb *b = c->b;
  int64_t P = p->OH * p->OW;
  int dyt = kiln_lower_scratch(c, KILN_F32, p->N * P * t->MVL);
  int n = kiln_lb_for_n(b, "n", p->N), px = kiln_lb_for_n(b, "px", P);
  int m = kiln_lb_for_n(b, "m", t->MVL);
  kiln_lexpr *to = lx_madd(b, lx_madd(b, lx_var(b, n), P, lx_var(b, px)), t->MVL, lx_var(b, m));
  kiln_lexpr *ch = kiln_conv_lane_channel(b, lx_var(b, m), p->M, p->lanes);
  kiln_lexpr *from = lx_madd(b, lx_madd(b, lx_var(b, n), p->M, ch), P, lx_var(b, px));
  kiln_lb_store(
      b, dyt, to,
      kiln_conv_lane_value(b, lx_var(b, m), p->M, p->lanes, lx_load(b, kiln_in_buf(c, 1), from)));
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // m, px, n
  return dyt;
}

typedef struct tile_vars {
  int group, tile, acc, q, xp, dyt;
} tile_vars;

// The tile's first channel vector, input channel and kernel row: fresh expressions of the group
// and tile variables (not locals: the schedule must see the stores indexed by the parallel loop's
// variable).
static kiln_lexpr *tile_ob(kiln_lb *b, const filter_tiles *t, const tile_vars *v) {
  return lx_mul(b, lx_bin(b, LB_DIV, lx_var(b, v->group), lx_int(b, t->G)), lx_int(b, t->RO));
}
static kiln_lexpr *tile_c0(kiln_lb *b, const filter_tiles *t, const tile_vars *v) {
  kiln_lexpr *g = lx_bin(b, LB_MOD, lx_var(b, v->group), lx_int(b, t->G));
  kiln_lexpr *cb = lx_madd(b, g, t->GC, lx_bin(b, LB_DIV, lx_var(b, v->tile), lx_int(b, t->HB)));
  return lx_mul(b, cb, lx_int(b, t->RC));
}
static kiln_lexpr *tile_h0(kiln_lb *b, const filter_tiles *t, const tile_vars *v) {
  return lx_mul(b, lx_bin(b, LB_MOD, lx_var(b, v->tile), lx_int(b, t->HB)), lx_int(b, t->RK));
}

// for v in [0, n) with full unrolling (a register block dimension).
static int unrolled_for(kiln_lb *b, const char *name, int64_t n) {
  int v = kiln_lb_for_n(b, name, n);
  kiln_lb_unroll(b, (int)n);
  return v;
}

// The taps of a tile: for cc, kh, kw (unrolled), tap j = (cc * RK + kh) * kW + kw.
typedef struct tap_vars {
  int cc, kh, kw;
} tap_vars;
static tap_vars open_taps(kiln_lb *b, const kiln_conv_plan *p, const filter_tiles *t) {
  tap_vars v;
  v.cc = unrolled_for(b, "cc", t->RC);
  v.kh = unrolled_for(b, "kh", t->RK);
  v.kw = unrolled_for(b, "kw", p->KW);
  return v;
}

// acc[(j * RO + r) * L + l]
static kiln_lexpr *acc_index(kiln_lb *b, const kiln_conv_plan *p, const filter_tiles *t,
                             const tap_vars *tv, int r, int l) {
  kiln_lexpr *j =
      lx_madd(b, lx_madd(b, lx_var(b, tv->cc), t->RK, lx_var(b, tv->kh)), p->KW, lx_var(b, tv->kw));
  return lx_madd(b, lx_madd(b, j, t->RO, lx_var(b, r)), p->lanes, lx_var(b, l));
}

// for q in the chunk, ow, taps: xv = xp[..]; for r, l: acc = muladd(xv, dyt[..], acc)
static void tile_accumulate(const kiln_lower_ctx *c, const kiln_conv_plan *p, const filter_tiles *t,
                            const tile_vars *v, int chunk) {
  kiln_lb *b = c->b;
  kiln_lexpr *q0 = lx_mul(b, lx_var(b, chunk), lx_int(b, t->rows));
  kiln_lexpr *q1 = lx_bin(b, LB_MIN, lx_int(b, p->N * p->OH),
                          lx_add(b, kiln_lx_clone(b, q0), lx_int(b, t->rows)));
  int q = kiln_lb_for(b, "q", q0, q1);
  int n = kiln_lb_decl(b, "n", KILN_I64, lx_bin(b, LB_DIV, lx_var(b, q), lx_int(b, p->OH)));
  int oh = kiln_lb_decl(b, "oh", KILN_I64, lx_bin(b, LB_MOD, lx_var(b, q), lx_int(b, p->OH)));
  int ow = kiln_lb_for_n(b, "ow", p->OW);
  tap_vars tv = open_taps(b, p, t);
  kiln_lexpr *plane = lx_madd(b, lx_var(b, n), p->C, lx_add(b, tile_c0(b, t, v), lx_var(b, tv.cc)));
  kiln_lexpr *kh = lx_add(b, tile_h0(b, t, v), lx_var(b, tv.kh));
  kiln_lexpr *ih =
      lx_add(b, lx_mul(b, lx_var(b, oh), lx_int(b, p->sh)), lx_mul(b, kh, lx_int(b, p->dh)));
  kiln_lexpr *iw = lx_add(b, lx_mul(b, lx_var(b, ow), lx_int(b, p->sw)),
                          lx_mul(b, lx_var(b, tv.kw), lx_int(b, p->dw)));
  kiln_lexpr *xi = lx_madd(b, lx_madd(b, plane, p->HP, ih), p->WP, iw);
  int xv = kiln_lb_decl(b, "xv", KILN_F32, lx_load(b, v->xp, xi));
  int r = unrolled_for(b, "r", t->RO), l = kiln_lb_for_n(b, "l", p->lanes);
  kiln_lexpr *px = lx_madd(b, lx_var(b, q), p->OW, lx_var(b, ow));  // (n * OH + oh) * OW + ow
  kiln_lexpr *m = lx_madd(b, lx_add(b, tile_ob(b, t, v), lx_var(b, r)), p->lanes, lx_var(b, l));
  kiln_lexpr *dv = lx_load(b, v->dyt, lx_madd(b, px, t->MVL, m));
  kiln_lb_store_local(
      b, v->acc, acc_index(b, p, t, &tv, r, l),
      lx_muladd(b, lx_var(b, xv), dv, lx_local(b, v->acc, acc_index(b, p, t, &tv, r, l))));
  for (int k = 0; k < 7; k++) kiln_lb_end_for(b);  // l, r, kw, kh, cc, ow, q
}

// for r, l (m < M), taps: opens the loops over the tile's real outputs; returns dw's index
// dw[m][c0 + cc][h0 + kh][kw]. Close with close_outputs.
static kiln_lexpr *open_outputs(kiln_lb *b, const kiln_conv_plan *p, const filter_tiles *t,
                                const tile_vars *v, int *r, int *l, tap_vars *tv) {
  *r = unrolled_for(b, "r", t->RO);
  kiln_lexpr *lanes = lx_int(b, p->lanes);
  if (p->M % p->lanes)  // the last vector is partly padding
    lanes =
        lx_bin(b, LB_MIN, lanes,
               lx_bin(b, LB_SUB, lx_int(b, p->M),
                      lx_mul(b, lx_add(b, tile_ob(b, t, v), lx_var(b, *r)), lx_int(b, p->lanes))));
  *l = kiln_lb_for(b, "l", lx_int(b, 0), lanes);
  *tv = open_taps(b, p, t);
  kiln_lexpr *m = lx_madd(b, lx_add(b, tile_ob(b, t, v), lx_var(b, *r)), p->lanes, lx_var(b, *l));
  kiln_lexpr *ch = lx_add(b, tile_c0(b, t, v), lx_var(b, tv->cc));
  kiln_lexpr *kh = lx_add(b, tile_h0(b, t, v), lx_var(b, tv->kh));
  int64_t wdims[4] = {p->M, p->C, p->KH, p->KW};
  return kiln_lx_nchw(b, m, ch, wdims, kh, lx_var(b, tv->kw));
}
static void close_outputs(kiln_lb *b) {
  for (int k = 0; k < 5; k++) kiln_lb_end_for(b);  // kw, kh, cc, l, r
}

// acc = 0
static void tile_init(kiln_lb *b, const kiln_conv_plan *p, const filter_tiles *t, int acc) {
  int i = kiln_lb_for_n(b, "i", t->RO * t->RC * t->RK * p->KW * p->lanes);
  kiln_lb_store_local(b, acc, lx_var(b, i), lx_float(b, KILN_F32, 0));
  kiln_lb_end_for(b);
}

// dw[..] += acc[j][r][l] for the real outputs (dw = acc when there is one chunk).
static void tile_store(const kiln_lower_ctx *c, const kiln_conv_plan *p, const filter_tiles *t,
                       const tile_vars *v, bool one_chunk) {
  kiln_lb *b = c->b;
  int r, l;
  tap_vars tv;
  kiln_lexpr *wi = open_outputs(b, p, t, v, &r, &l, &tv);
  kiln_lexpr *sum = lx_local(b, v->acc, acc_index(b, p, t, &tv, r, l));
  if (!one_chunk)
    sum = lx_bin(b, LB_ADD, lx_load(b, kiln_out_buf(c, 0), kiln_lx_clone(b, wi)), sum);
  kiln_lb_store(b, kiln_out_buf(c, 0), wi, sum);
  close_outputs(b);
}

// dw = 0
static void zero_output(const kiln_lower_ctx *c, const kiln_conv_plan *p) {
  kiln_lb *b = c->b;
  int i = kiln_lb_for_n(b, "i", p->M * p->C * p->KH * p->KW);
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i), lx_float(b, KILN_F32, 0));
  kiln_lb_end_for(b);
}

bool kiln_conv_grad_filter_blocked(const kiln_lower_ctx *c, const kiln_conv_grad_dims *cd) {
  if (cd->group != 1 || kiln_lower_out(c, 0)->dtype != KILN_F32) return false;
  int64_t lanes = c->f32_lanes > 0 ? c->f32_lanes : 16;
  int64_t N = cd->x.dim[0], C = cd->x.dim[1], M = cd->w.dim[0];
  if (kiln_conv_grad_filter_winograd_fits(&cd->win, N, C, M, lanes)) {  // 3x3 stride 1
    kiln_conv_grad_filter_winograd(c, &cd->win, N, C, M);
    return true;
  }
  kiln_conv_plan p = kiln_conv_plan_make(&cd->win, N, C, M, lanes, 0);
  if (kiln_conv_grad_filter_pixels(c, &p)) return true;  // few input channels: the stem
  filter_tiles t;
  if (!choose_tiles(&p, &t)) return false;
  choose_groups(&p, &t);
  kiln_lb *b = c->b;
  tile_vars v;
  v.dyt = transpose_dy(c, &p, &t);
  v.xp = kiln_conv_plan_input(c, &p);
  int64_t chunks = (p.N * p.OH + t.rows - 1) / t.rows;
  if (chunks > 1) zero_output(c, &p);  // else each tile stores its sum once: no zeroing pass
  kiln_lb_comment(b,
                  "blocked: %lld x %lld channels by %lld x %lld x %lld taps per tile, %lld rows "
                  "per chunk",
                  (long long)t.RO, (long long)p.lanes, (long long)t.RC, (long long)t.RK,
                  (long long)p.KW, (long long)t.rows);
  v.group = kiln_lb_for_n(b, "group", p.MV / t.RO * t.G);
  int chunk = kiln_lb_for_n(b, "chunk", chunks);
  v.tile = kiln_lb_for_n(b, "tile", t.GC * t.HB);
  v.acc = kiln_lb_decl_array(b, "acc", KILN_F32, t.RO * t.RC * t.RK * p.KW * p.lanes);
  tile_init(b, &p, &t, v.acc);
  tile_accumulate(c, &p, &t, &v, chunk);
  tile_store(c, &p, &t, &v, chunks == 1);
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // tile, chunk, group
  return true;
}
