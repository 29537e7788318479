// ConvGradInput (group 1, f32) through the register-blocked direct convolution of
// compiler/ops/nn/conv.c. dx is the convolution of dy, zero-upsampled by the stride and padded by
// (k - 1) * d - p, with the weights flipped spatially and transposed (M <-> C):
//   dx[n, c, ih, iw] = sum over m, kh, kw of dyu[n, m, ih + kh*dh, iw + kw*dw] * wf[c, m, kh, kw]
//   wf[c, m, kh, kw] = w[m, c, kH-1-kh, kW-1-kw]
//   dyu[n, m, P_h + oh*sh, P_w + ow*sw] = dy[n, m, oh, ow], zero elsewhere; P = (k - 1) * d - p
// With stride 1, dyu is dy padded, which conv.c's own padding copy makes. With a larger stride,
// dx splits into stride * stride phases (sub-pixel): the positions a + s * i of one phase only
// meet some of the taps, and form a stride-1 conv of dy (padded) by that sub-kernel, computed
// into kernel scratch; the phases of one row phase are then stored into dx together (their
// columns interleaved in one loop), and phases no tap reaches store zeros. A phase that would read
// dy before its start (a pad past the taps' reach) makes the whole op take the old way: dy spread
// out over a zeroed plane, where 3 of 4 products of a stride-2 conv multiply zeros. wf (or a
// phase's taps of it) is packed at run time (the weights are state) into kernel scratch as
// conv.c's kernel reads them: (ceil(C / L), M, kH, kW, L). A 3x3 stride-1 one with enough
// channels (kiln_conv_winograd_runtime_fits) runs as Winograd F(2x2, 3x3) instead
// (conv_winograd.c: the flipped weights transformed at run time).
#include <stdlib.h>
#include <string.h>

#include "../nn/conv_internal.h"
#include "conv_grad_blocked.h"

// The window of the forward conv read backwards: over dy's plane (or dyu's, already padded when
// `spread`), stride 1, the forward dilation, output dx's plane.
static kiln_window grad_window(const kiln_conv_grad_dims *cd, const int64_t pad[2], bool spread) {
  const kiln_window *f = &cd->win;
  kiln_window g = {.rank = 2};
  for (int a = 0; a < 2; a++) {
    int64_t reach = (f->kernel[a] - 1) * f->dilation[a];
    g.kernel[a] = f->kernel[a];
    g.stride[a] = 1;
    g.dilation[a] = f->dilation[a];
    g.out[a] = cd->x.dim[2 + a];
    g.in[a] = spread ? g.out[a] + reach : cd->y.dim[2 + a];
    g.pad_begin[a] = spread ? 0 : pad[a];
    g.pad_end[a] = spread ? 0 : reach - f->pad_end[a];
  }
  return g;
}

// dyu (N, M, HP, WP), (HP, WP) the plane g reads: zero, then dyu[n][m][P_h + oh*sh][P_w + ow*sw] =
// dy[n][m][oh][ow] for the positions inside the plane (the others are never read). Returns its
// buffer.
static int spread_dy(const kiln_lower_ctx *c, const kiln_conv_grad_dims *cd, const kiln_window *g,
                     const int64_t pad[2]) {
  kiln_lb *b = c->b;
  const kiln_window *f = &cd->win;
  int64_t N = cd->y.dim[0], M = cd->y.dim[1], OH = cd->y.dim[2], OW = cd->y.dim[3];
  int64_t HP = g->in[0], WP = g->in[1], plane = HP * WP;
  int64_t rows = (HP - pad[0] + f->stride[0] - 1) / f->stride[0];
  int64_t cols = (WP - pad[1] + f->stride[1] - 1) / f->stride[1];
  rows = rows < OH ? rows : OH, cols = cols < OW ? cols : OW;
  int dyu = kiln_lower_scratch(c, KILN_F32, N * M * plane);
  int nm = kiln_lb_for_n(b, "nm", N * M);
  int i = kiln_lb_for_n(b, "i", plane);
  kiln_lb_store(b, dyu, lx_madd(b, lx_var(b, nm), plane, lx_var(b, i)), lx_float(b, KILN_F32, 0));
  kiln_lb_end_for(b);
  int oh = kiln_lb_for_n(b, "oh", rows), ow = kiln_lb_for_n(b, "ow", cols);
  kiln_lexpr *ih = lx_madd(b, lx_var(b, oh), f->stride[0], lx_int(b, pad[0]));
  kiln_lexpr *iw = lx_madd(b, lx_var(b, ow), f->stride[1], lx_int(b, pad[1]));
  kiln_lexpr *to = lx_madd(b, lx_madd(b, lx_var(b, nm), HP, ih), WP, iw);
  kiln_lexpr *from = lx_madd(b, lx_madd(b, lx_var(b, nm), OH, lx_var(b, oh)), OW, lx_var(b, ow));
  kiln_lb_store(b, dyu, to, lx_load(b, kiln_in_buf(c, 0), from));
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // ow, oh, nm
  return dyu;
}

// wp[vb][m][th][tw][l] = c < C ? w[m][c][first[0] - step[0] * th][first[1] - step[1] * tw] : 0
// (c = vb*L + l): the flipped taps (the whole kernel: first = K - 1, step = 1); bp = 0. The m
// loop is split in blocks of BLOCK_M around vb: a block's slabs w[m] (C * kH * kW values each)
// are read from memory once and stay in L2 while each vb writes one contiguous run of the block's
// BLOCK_M * kH * kW vectors (vb outermost jumped a slab ahead for every m; m outermost wrote MV
// scattered runs of kH * kW vectors per m).
enum { BLOCK_M = 16 };

static void pack_flipped(const kiln_lower_ctx *c, const kiln_conv_plan *p, const int64_t first[2],
                         const int64_t step[2], int *wp, int *bp) {
  kiln_lb *b = c->b;
  int64_t C = p->M, M = p->C, KH = p->KH, KW = p->KW;  // p is the conv dy -> dx
  *wp = kiln_lower_scratch(c, KILN_F32, p->MV * M * KH * KW * p->lanes);
  *bp = kiln_lower_scratch(c, KILN_F32, p->MV * p->lanes);
  int i = kiln_lb_for_n(b, "i", p->MV * p->lanes);
  kiln_lb_store(b, *bp, lx_var(b, i), lx_float(b, KILN_F32, 0));
  kiln_lb_end_for(b);
  int64_t MB = M % BLOCK_M == 0 ? BLOCK_M : 1;
  int mb = kiln_lb_for_n(b, "mb", M / MB), vb = kiln_lb_for_n(b, "vb", p->MV);
  int mi = kiln_lb_for_n(b, "mi", MB);
  int kh = kiln_lb_for_n(b, "kh", KH), kw = kiln_lb_for_n(b, "kw", KW);
  int l = kiln_lb_for_n(b, "l", p->lanes);
  kiln_lexpr *ch = lx_madd(b, lx_var(b, vb), p->lanes, lx_var(b, l));
  kiln_lexpr *m = lx_madd(b, lx_var(b, mb), MB, lx_var(b, mi));
  kiln_lexpr *fh =
      lx_bin(b, LB_SUB, lx_int(b, first[0]), lx_mul(b, lx_var(b, kh), lx_int(b, step[0])));
  kiln_lexpr *fw =
      lx_bin(b, LB_SUB, lx_int(b, first[1]), lx_mul(b, lx_var(b, kw), lx_int(b, step[1])));
  const int64_t *wdims = kiln_lower_in(c, 1)->shape.dim;  // (M, C, kH, kW)
  kiln_lexpr *from = kiln_lx_nchw(
      b, m, kiln_conv_lane_channel(b, kiln_lx_clone(b, ch), C, p->lanes), wdims, fh, fw);
  kiln_lexpr *tap =
      lx_madd(b, lx_madd(b, kiln_lx_clone(b, m), KH, lx_var(b, kh)), KW, lx_var(b, kw));
  kiln_lexpr *to = lx_madd(b, lx_madd(b, lx_var(b, vb), M * KH * KW, tap), p->lanes, lx_var(b, l));
  kiln_lb_store(b, *wp, to,
                kiln_conv_lane_value(b, ch, C, p->lanes, lx_load(b, kiln_in_buf(c, 1), from)));
  for (int k = 0; k < 6; k++) kiln_lb_end_for(b);  // l, kw, kh, mi, vb, mb
}

// ---- Strides above 1: one stride-1 conv per phase ----
// Along one axis (stride s, dilation d, pad p, kernel K), the positions a + s * i of dx (a < s)
// meet the taps k with a + p - k * d a multiple of s: k = last - step * t (t < taps, step =
// s / gcd(s, d)), from dy[i + (a + p - k * d) / s]. That is a stride-1 conv of dy padded by
// pad = (last * d - a - p) / s in front, with dilation step * d / s, out = ceil((H - a) / s).
typedef struct phase_axis {
  int64_t out, taps, last, step, dil, pad;
} phase_axis;

static int64_t gcd(int64_t a, int64_t b) {
  while (b) {
    int64_t r = a % b;
    a = b, b = r;
  }
  return a;
}

// False when the phase reads dy before its start (pad < 0).
static bool phase_axis_make(const kiln_window *f, int ax, int64_t H, int64_t a, phase_axis *pa) {
  int64_t s = f->stride[ax], d = f->dilation[ax], p = f->pad_begin[ax];
  *pa = (phase_axis){.out = H > a ? (H - a + s - 1) / s : 0, .step = s / gcd(s, d)};
  pa->dil = pa->step * d / s;
  for (int64_t k = 0; k < f->kernel[ax]; k++)
    if ((a + p - k * d) % s == 0) pa->taps++, pa->last = k;
  pa->pad = pa->taps ? (pa->last * d - a - p) / s : 0;  // exact: a multiple of s
  return pa->pad >= 0;
}

// The phases of row phase a0 (a1 < s1, ph[a1] their buffers, -1: zeros, out1[a1] their widths),
// columns [j0, j1) of phases a1 < count, in one loop over j, so that the stores interleave into
// whole rows of dx:
//   dx[n][c][a0 + s0 * i][a1 + s1 * j] = ph[a1][n][c][i][j]   (i < out0)
static void store_columns(const kiln_lower_ctx *c, const kiln_conv_grad_dims *cd, int64_t a0,
                          int64_t out0, const int *ph, const int64_t *out1, int64_t j0, int64_t j1,
                          int64_t count) {
  kiln_lb *b = c->b;
  int64_t H = cd->x.dim[2], W = cd->x.dim[3], s0 = cd->win.stride[0], s1 = cd->win.stride[1];
  int nc = kiln_lb_for_n(b, "nc", cd->x.dim[0] * cd->x.dim[1]);
  int i = kiln_lb_for_n(b, "i", out0);
  int j = kiln_lb_for(b, "j", lx_int(b, j0), lx_int(b, j1));
  for (int64_t a1 = 0; a1 < count; a1++) {
    kiln_lexpr *ih = lx_madd(b, lx_var(b, i), s0, lx_int(b, a0));
    kiln_lexpr *iw = lx_madd(b, lx_var(b, j), s1, lx_int(b, a1));
    kiln_lexpr *to = lx_madd(b, lx_madd(b, lx_var(b, nc), H, ih), W, iw);
    kiln_lexpr *v = lx_float(b, KILN_F32, 0);
    if (ph[a1] >= 0)
      v = lx_load(
          b, ph[a1],
          lx_madd(b, lx_madd(b, lx_var(b, nc), out0, lx_var(b, i)), out1[a1], lx_var(b, j)));
    kiln_lb_store(b, kiln_out_buf(c, 0), to, v);
  }
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // j, i, nc
}

// Row phase a0 into dx: the columns every phase has, then the last column of the wider ones (a
// phase's width ceil((W - a1) / s1) falls by at most 1 as a1 grows).
static void store_row(const kiln_lower_ctx *c, const kiln_conv_grad_dims *cd, int64_t a0,
                      int64_t out0, const int *ph, const int64_t *out1) {
  int64_t s1 = cd->win.stride[1], narrow = out1[s1 - 1], wide = 0;
  while (wide < s1 && out1[wide] > narrow) wide++;
  if (narrow > 0) store_columns(c, cd, a0, out0, ph, out1, 0, narrow, s1);
  if (wide > 0) store_columns(c, cd, a0, out0, ph, out1, narrow, narrow + 1, wide);
}

// conv.c's tiles, storing into buffer `out` (N, C, OH, OW) instead of the node's output.
static void lower_tiles_into(const kiln_lower_ctx *c, const kiln_conv_plan *p, int xp, int wp,
                             int bp, int out) {
  int n = c->g->n_tensors, *tensor_buf = kiln_xmalloc((size_t)n * sizeof *tensor_buf);
  memcpy(tensor_buf, c->tensor_buf, (size_t)n * sizeof *tensor_buf);
  tensor_buf[c->node->outputs[0]] = out;
  kiln_lower_ctx into = *c;
  into.tensor_buf = tensor_buf;
  kiln_conv_lower_tiles(&into, p, xp, wp, bp);
  free(tensor_buf);
}

// One phase with taps: dy (N, M, OH, OW) -> ph (N, C, out0, out1), a buffer of kernel scratch.
static int lower_phase(const kiln_lower_ctx *c, const kiln_conv_grad_dims *cd,
                       const phase_axis ax[2], int64_t lanes) {
  kiln_window g = {.rank = 2};
  for (int k = 0; k < 2; k++) {
    int64_t reach = (ax[k].taps - 1) * ax[k].dil, in = cd->y.dim[2 + k];
    g.kernel[k] = ax[k].taps, g.stride[k] = 1, g.dilation[k] = ax[k].dil;
    g.in[k] = in, g.out[k] = ax[k].out, g.pad_begin[k] = ax[k].pad;
    g.pad_end[k] = ax[k].out + reach - in - ax[k].pad;
  }
  int64_t N = cd->x.dim[0], C = cd->x.dim[1];
  kiln_conv_plan p = kiln_conv_plan_make(&g, N, cd->y.dim[1], C, lanes, 0);
  int64_t first[2] = {ax[0].last, ax[1].last}, step[2] = {ax[0].step, ax[1].step};
  int wp, bp;
  pack_flipped(c, &p, first, step, &wp, &bp);
  int xp = kiln_conv_plan_input(c, &p);
  int ph = kiln_lower_scratch(c, KILN_F32, N * C * ax[0].out * ax[1].out);
  lower_tiles_into(c, &p, xp, wp, bp, ph);
  return ph;
}

enum { MAX_PHASES = 8 };  // along W: larger strides spread dy out instead

// Every phase, row phase by row phase; or nothing and false when one would read dy before its
// start.
static bool lower_phases(const kiln_lower_ctx *c, const kiln_conv_grad_dims *cd, int64_t lanes) {
  const kiln_window *f = &cd->win;
  phase_axis ax[2];
  if (f->stride[1] > MAX_PHASES) return false;
  for (int k = 0; k < 2; k++)
    for (int64_t a = 0; a < f->stride[k]; a++)
      if (!phase_axis_make(f, k, cd->x.dim[2 + k], a, &ax[k])) return false;
  kiln_lb_comment(c->b, "sub-pixel: %lld x %lld phases, each a stride-1 conv by its taps",
                  (long long)f->stride[0], (long long)f->stride[1]);
  for (int64_t a0 = 0; a0 < f->stride[0]; a0++) {
    int ph[MAX_PHASES];
    int64_t out1[MAX_PHASES];
    phase_axis_make(f, 0, cd->x.dim[2], a0, &ax[0]);
    if (ax[0].out == 0) continue;
    for (int64_t a1 = 0; a1 < f->stride[1]; a1++) {
      phase_axis_make(f, 1, cd->x.dim[3], a1, &ax[1]);
      bool taps = ax[0].taps && ax[1].taps && ax[1].out;
      ph[a1] = taps ? lower_phase(c, cd, ax, lanes) : -1;  // -1: no tap reaches it, zeros
      out1[a1] = ax[1].out;
    }
    store_row(c, cd, a0, ax[0].out, ph, out1);
  }
  return true;
}

bool kiln_conv_grad_input_blocked(const kiln_lower_ctx *c, const kiln_conv_grad_dims *cd) {
  const kiln_window *f = &cd->win;
  if (cd->group != 1 || kiln_lower_out(c, 0)->dtype != KILN_F32) return false;
  int64_t pad[2];
  for (int a = 0; a < 2; a++) {
    pad[a] = (f->kernel[a] - 1) * f->dilation[a] - f->pad_begin[a];
    if (pad[a] < 0) return false;  // pads wider than the kernel's reach: the row-wise loops
  }
  bool spread = f->stride[0] > 1 || f->stride[1] > 1;
  int64_t lanes = c->f32_lanes > 0 ? c->f32_lanes : 16;
  if (spread && lower_phases(c, cd, lanes)) return true;
  kiln_window g = grad_window(cd, pad, spread);
  int64_t N = cd->x.dim[0], M = cd->y.dim[1], C = cd->x.dim[1];
  if (!spread && kiln_conv_winograd_runtime_fits(&g, N, M, C, lanes)) {  // 3x3, stride 1
    kiln_conv_lower_winograd_runtime(c, &g, N, M, C, true);
    return true;
  }
  // the conv dy (N, M, ...) -> dx (N, C, ...)
  kiln_conv_plan p = kiln_conv_plan_make(&g, N, M, C, lanes, 0);
  int wp, bp;
  int64_t first[2] = {f->kernel[0] - 1, f->kernel[1] - 1}, step[2] = {1, 1};
  pack_flipped(c, &p, first, step, &wp, &bp);
  int xp = spread ? spread_dy(c, cd, &g, pad) : kiln_conv_plan_input(c, &p);
  kiln_conv_lower_tiles(c, &p, xp, wp, bp);
  return true;
}
