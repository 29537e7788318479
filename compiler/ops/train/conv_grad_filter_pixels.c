// ConvGradFilter (group 1, f32) vectorized over output pixels, for convs whose x is much smaller
// than dy (few input channels: a network's stem) and whose output rows are whole vectors (OW a
// multiple of the target's f32 width L). conv_grad_filter.c's tiles vectorize the output
// channels and need dy transposed to pixel-major (a pass over all of dy, the larger tensor);
// here dy is read in place, a row at a time, and x is copied once, padded and split by column
// phase so that every tap reads L consecutive values:
//   xs[n][c][ih][ph][j] = xp[n][c][ih][j * sw + ph]   (xp: x padded; (N, C, HQ, sw, J))
//   x at (ih, ow * sw + kw * dw) = xs[..][ih][(kw * dw) % sw][ow + (kw * dw) / sw]
// A tile holds RM output channels by the kW taps of one (c, kh) in RM * kW vector accumulators,
// lane l summing the pixels ow = l (mod L). The rows q = n * OH + oh go in chunks whose RM rows
// of dy stay in L1 while every tile reads them; between chunks a tile's accumulators wait in
// part (kernel scratch, one slot per group and tile); the lanes are added up at the end:
//   for group (parallel: GM blocks of RM channels), block mb of the group:
//     for chunk, tile (c, kh): acc = chunk ? part[group][tile] : 0
//       for q in chunk, v < OW / L: for kw, r (unrolled), l (vectorized):
//         acc[r][kw][l] = muladd(dy[n][m0 + r][oh][v * L + l], xs[n][c][oh * sh + kh * dh][ph]
//                                [v * L + l + shift], acc[r][kw][l])
//       part[group][tile] = acc
//     for tile, r, kw: dw[m0 + r][c][kh][kw] = part[..][r][kw][0] + ... + part[..][r][kw][L - 1]
// Each sum runs over the pixels lane by lane in (n, oh, v) order, then over the lanes.
#include "../nn/conv_internal.h"
#include "conv_grad_blocked.h"

typedef struct pixel_tiles {
  int64_t RM;      // output channels per tile
  int64_t GM, G;   // channel blocks per group, groups (G * GM * RM = M)
  int64_t HQ, J;   // rows of xs per plane, columns per phase
  int64_t rows;    // rows q per chunk
  int64_t chunks;  // chunks of rows
  int64_t A;       // accumulators of a tile: RM * kW * L
} pixel_tiles;

// Bytes of dy one chunk of a tile reads (a part of L1); the fewest groups that make MIN_GROUPS in
// all; output channels per tile at most MAX_RM (4 x 7 taps: 28 accumulators, 4 rows of dy and
// one of x live: 33 vectors; 3 x 7 measured slower).
enum { CHUNK_BYTES = 8 * 1024, MIN_GROUPS = 4, MAX_RM = 4 };

// Whether the variant applies (OW whole vectors, not 1x1, the taps of one (c, kh) fit the
// accumulators, xs smaller than dy) and its tiles.
static bool choose(const kiln_conv_plan *p, pixel_tiles *t) {
  if (p->OW % p->lanes || (p->KH == 1 && p->KW == 1) || p->KW > p->max_acc) return false;
  t->HQ = (p->OH - 1) * p->sh + (p->KH - 1) * p->dh + 1;
  t->J = p->OW + (p->KW - 1) * p->dw / p->sw;
  if (p->C * t->HQ * p->sw * t->J >= p->M * p->OH * p->OW) return false;
  t->RM = 1;
  for (int64_t rm = MAX_RM; rm > 1; rm--)
    if (p->M % rm == 0 && rm * p->KW <= p->max_acc) {
      t->RM = rm;
      break;
    }
  int64_t blocks = p->M / t->RM;
  t->G = blocks;
  for (int64_t g = MIN_GROUPS; g < blocks; g++)
    if (blocks % g == 0) {
      t->G = g;
      break;
    }
  t->GM = blocks / t->G;
  int64_t row_bytes = t->RM * p->OW * 4;  // a row of dy for a tile's channels
  t->rows = CHUNK_BYTES / row_bytes > 1 ? CHUNK_BYTES / row_bytes : 1;
  t->chunks = (p->N * p->OH + t->rows - 1) / t->rows;
  t->A = t->RM * p->KW * p->lanes;
  return true;
}

// buf[i0 + i] = 0 for i < count.
static void zero_run(kiln_lb *b, int buf, kiln_lexpr *i0, int64_t count) {
  if (count <= 0) return;
  int i = kiln_lb_for_n(b, "i", count);
  kiln_lb_store(b, buf, lx_add(b, i0, lx_var(b, i)), lx_float(b, KILN_F32, 0));
  kiln_lb_end_for(b);
}

// One row of x into its sw phases of xs: for ph, j < J: xs[row][ph][j] = x[n][c][ih - pt][j * sw
// + ph - pl] inside x, else 0. row: the (nc, ih) row of xs; from: x's row (nc, ih - pt).
static void copy_row(const kiln_lower_ctx *c, const kiln_conv_plan *p, const pixel_tiles *t, int xs,
                     kiln_lexpr *row, kiln_lexpr *from) {
  kiln_lb *b = c->b;
  for (int64_t ph = 0; ph < p->sw; ph++) {
    int64_t lo = p->pl > ph ? (p->pl - ph + p->sw - 1) / p->sw : 0;  // first j inside x
    int64_t hi = (p->W + p->pl - ph + p->sw - 1) / p->sw;            // first j past x
    lo = lo < t->J ? lo : t->J, hi = hi < t->J ? hi : t->J, hi = hi > lo ? hi : lo;
    kiln_lexpr *start = lx_madd(b, kiln_lx_clone(b, row), p->sw * t->J, lx_int(b, ph * t->J));
    zero_run(b, xs, kiln_lx_clone(b, start), lo);
    if (hi > lo) {
      int j = kiln_lb_for(b, "j", lx_int(b, lo), lx_int(b, hi));
      kiln_lexpr *iw = lx_add(b, lx_mul(b, lx_var(b, j), lx_int(b, p->sw)), lx_int(b, ph - p->pl));
      kiln_lb_store(b, xs, lx_add(b, kiln_lx_clone(b, start), lx_var(b, j)),
                    lx_load(b, kiln_in_buf(c, 0), lx_madd(b, kiln_lx_clone(b, from), p->W, iw)));
      kiln_lb_end_for(b);
    }
    zero_run(b, xs, lx_add(b, start, lx_int(b, hi)), t->J - hi);
  }
}

// xs, each element written once (one parallel loop over the planes). Returns its buffer.
static int split_input(const kiln_lower_ctx *c, const kiln_conv_plan *p, const pixel_tiles *t) {
  kiln_lb *b = c->b;
  int64_t row_len = p->sw * t->J;
  int64_t above = p->pt < t->HQ ? p->pt : t->HQ;
  int64_t inside = (p->pt + p->H < t->HQ ? p->pt + p->H : t->HQ) - above;
  int xs = kiln_lower_scratch(c, KILN_F32, p->N * p->C * t->HQ * row_len);
  int nc = kiln_lb_for_n(b, "nc", p->N * p->C);
  zero_run(b, xs, lx_mul(b, lx_var(b, nc), lx_int(b, t->HQ * row_len)), above * row_len);
  if (inside > 0) {
    int ih = kiln_lb_for_n(b, "ih", inside);
    kiln_lexpr *row = lx_madd(b, lx_var(b, nc), t->HQ, lx_add(b, lx_var(b, ih), lx_int(b, above)));
    kiln_lexpr *from =
        lx_madd(b, lx_var(b, nc), p->H, lx_add(b, lx_var(b, ih), lx_int(b, above - p->pt)));
    copy_row(c, p, t, xs, row, from);
    kiln_lb_end_for(b);  // ih
  }
  zero_run(b, xs, lx_madd(b, lx_var(b, nc), t->HQ * row_len, lx_int(b, (above + inside) * row_len)),
           (t->HQ - above - inside) * row_len);
  kiln_lb_end_for(b);  // nc
  return xs;
}

typedef struct loop_vars {
  int group, chunk, mb, tile, acc, xs, part;
} loop_vars;

// The tile's first output channel (group * GM + mb) * RM, input channel and kernel row: fresh
// expressions of the loop variables (the schedule must see dw's stores indexed by the parallel
// loop's variable).
static kiln_lexpr *tile_m0(kiln_lb *b, const pixel_tiles *t, const loop_vars *v) {
  return lx_mul(b, lx_madd(b, lx_var(b, v->group), t->GM, lx_var(b, v->mb)), lx_int(b, t->RM));
}
static kiln_lexpr *tile_c(kiln_lb *b, const kiln_conv_plan *p, const loop_vars *v) {
  return lx_bin(b, LB_DIV, lx_var(b, v->tile), lx_int(b, p->KH));
}
static kiln_lexpr *tile_kh(kiln_lb *b, const kiln_conv_plan *p, const loop_vars *v) {
  return lx_bin(b, LB_MOD, lx_var(b, v->tile), lx_int(b, p->KH));
}

// acc[(r * kW + kw) * L + l]
static kiln_lexpr *acc_index(kiln_lb *b, const kiln_conv_plan *p, int r, int kw, kiln_lexpr *l) {
  return lx_madd(b, lx_madd(b, lx_var(b, r), p->KW, lx_var(b, kw)), p->lanes, l);
}

// for q in the chunk, v, kw, r, l: acc[r][kw][l] = muladd(dy[..], xs[..], acc[r][kw][l])
static void tile_accumulate(const kiln_lower_ctx *c, const kiln_conv_plan *p, const pixel_tiles *t,
                            const loop_vars *v) {
  kiln_lb *b = c->b;
  kiln_lexpr *q0 = lx_mul(b, lx_var(b, v->chunk), lx_int(b, t->rows));
  kiln_lexpr *q1 = lx_bin(b, LB_MIN, lx_int(b, p->N * p->OH),
                          lx_add(b, kiln_lx_clone(b, q0), lx_int(b, t->rows)));
  int q = kiln_lb_for(b, "q", q0, q1);
  int n = kiln_lb_decl(b, "n", KILN_I64, lx_bin(b, LB_DIV, lx_var(b, q), lx_int(b, p->OH)));
  int oh = kiln_lb_decl(b, "oh", KILN_I64, lx_bin(b, LB_MOD, lx_var(b, q), lx_int(b, p->OH)));
  int vec = kiln_lb_for_n(b, "v", p->OW / p->lanes);
  int kw = kiln_conv_unrolled_for(b, "kw", p->KW);
  int r = kiln_conv_unrolled_for(b, "r", t->RM);
  int l = kiln_lb_for_n(b, "l", p->lanes);
  kiln_lexpr *ow = lx_madd(b, lx_var(b, vec), p->lanes, lx_var(b, l));
  kiln_lexpr *m = lx_add(b, tile_m0(b, t, v), lx_var(b, r));
  kiln_lexpr *dyi = lx_madd(b, lx_madd(b, lx_madd(b, lx_var(b, n), p->M, m), p->OH, lx_var(b, oh)),
                            p->OW, kiln_lx_clone(b, ow));
  kiln_lexpr *tap = lx_mul(b, lx_var(b, kw), lx_int(b, p->dw));  // kw * dw: phase and shift
  kiln_lexpr *ph = lx_bin(b, LB_MOD, kiln_lx_clone(b, tap), lx_int(b, p->sw));
  kiln_lexpr *shift = lx_bin(b, LB_DIV, tap, lx_int(b, p->sw));
  kiln_lexpr *ih = lx_add(b, lx_mul(b, lx_var(b, oh), lx_int(b, p->sh)),
                          lx_mul(b, tile_kh(b, p, v), lx_int(b, p->dh)));
  kiln_lexpr *plane = lx_madd(b, lx_var(b, n), p->C, tile_c(b, p, v));
  kiln_lexpr *xi =
      lx_madd(b, lx_madd(b, lx_madd(b, plane, t->HQ, ih), p->sw, ph), t->J, lx_add(b, ow, shift));
  kiln_lexpr *ai = acc_index(b, p, r, kw, lx_var(b, l));
  kiln_lb_store_local(b, v->acc, ai,
                      lx_muladd(b, lx_load(b, kiln_in_buf(c, 1), dyi), lx_load(b, v->xs, xi),
                                lx_local(b, v->acc, kiln_lx_clone(b, ai))));
  for (int k = 0; k < 5; k++) kiln_lb_end_for(b);  // l, r, kw, v, q
}

// part[group][tile][i]: the tile's slot
static kiln_lexpr *part_index(kiln_lb *b, const kiln_conv_plan *p, const pixel_tiles *t,
                              const loop_vars *v, kiln_lexpr *i) {
  return lx_madd(b, lx_madd(b, lx_var(b, v->group), p->C * p->KH, lx_var(b, v->tile)), t->A, i);
}

// acc = chunk ? part[group][tile] : 0   (the test as 0 < chunk: clang warns on `if ((a == b))`)
static void tile_load(kiln_lb *b, const kiln_conv_plan *p, const pixel_tiles *t,
                      const loop_vars *v) {
  kiln_lb_if(b, lx_bin(b, LB_LT, lx_int(b, 0), lx_var(b, v->chunk)));
  int i = kiln_lb_for_n(b, "i", t->A);
  kiln_lexpr *at = part_index(b, p, t, v, lx_var(b, i));
  kiln_lb_store_local(b, v->acc, lx_var(b, i), lx_load(b, v->part, at));
  kiln_lb_end_for(b);
  kiln_lb_else(b);
  i = kiln_lb_for_n(b, "i", t->A);
  kiln_lb_store_local(b, v->acc, lx_var(b, i), lx_float(b, KILN_F32, 0));
  kiln_lb_end_for(b);
  kiln_lb_end_if(b);
}

// part[group][tile] = acc
static void tile_save(kiln_lb *b, const kiln_conv_plan *p, const pixel_tiles *t,
                      const loop_vars *v) {
  int i = kiln_lb_for_n(b, "i", t->A);
  kiln_lexpr *at = part_index(b, p, t, v, lx_var(b, i));
  kiln_lb_store(b, v->part, at, lx_local(b, v->acc, lx_var(b, i)));
  kiln_lb_end_for(b);
}

// for tile, r, kw: dw[m0 + r][c][kh][kw] = part[group][tile][r][kw][0] + ... + [L - 1]
static void store_sums(const kiln_lower_ctx *c, const kiln_conv_plan *p, const pixel_tiles *t,
                       loop_vars *v) {
  kiln_lb *b = c->b;
  v->tile = kiln_lb_for_n(b, "tile", p->C * p->KH);
  int r = kiln_lb_for_n(b, "r", t->RM), kw = kiln_lb_for_n(b, "kw", p->KW);
  kiln_lexpr *first = part_index(b, p, t, v, acc_index(b, p, r, kw, lx_int(b, 0)));
  int sum = kiln_lb_decl(b, "sum", KILN_F32, lx_load(b, v->part, first));
  int l = kiln_lb_for(b, "l", lx_int(b, 1), lx_int(b, p->lanes));
  kiln_lexpr *at = part_index(b, p, t, v, acc_index(b, p, r, kw, lx_var(b, l)));
  kiln_lb_assign(b, sum, lx_bin(b, LB_ADD, lx_var(b, sum), lx_load(b, v->part, at)));
  kiln_lb_end_for(b);  // l
  int64_t wdims[4] = {p->M, p->C, p->KH, p->KW};
  kiln_lexpr *wi = kiln_lx_nchw(b, lx_add(b, tile_m0(b, t, v), lx_var(b, r)), tile_c(b, p, v),
                                wdims, tile_kh(b, p, v), lx_var(b, kw));
  kiln_lb_store(b, kiln_out_buf(c, 0), wi, lx_var(b, sum));
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // kw, r, tile
}

bool kiln_conv_grad_filter_pixels(const kiln_lower_ctx *c, const kiln_conv_plan *p) {
  pixel_tiles t;
  if (!choose(p, &t)) return false;
  kiln_lb *b = c->b;
  loop_vars v;
  v.xs = split_input(c, p, &t);
  v.part = kiln_lower_scratch(c, KILN_F32, t.G * p->C * p->KH * t.A);
  kiln_lb_comment(b,
                  "by pixels: %lld channels by %lld taps per tile, %lld x %lld channels per group, "
                  "%lld rows per chunk",
                  (long long)t.RM, (long long)p->KW, (long long)t.GM, (long long)t.RM,
                  (long long)t.rows);
  v.group = kiln_lb_for_n(b, "group", t.G);
  v.mb = kiln_lb_for_n(b, "mb", t.GM);
  v.chunk = kiln_lb_for_n(b, "chunk", t.chunks);
  v.tile = kiln_lb_for_n(b, "tile", p->C * p->KH);
  v.acc = kiln_lb_decl_array(b, "acc", KILN_F32, t.A);
  tile_load(b, p, &t, &v);
  tile_accumulate(c, p, &t, &v);
  tile_save(b, p, &t, &v);
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // tile, chunk
  store_sums(c, p, &t, &v);
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // mb, group
  return true;
}
