// ConvGradInput (group 1, f32) through the register-blocked direct convolution of
// compiler/ops/nn/conv.c. dx is the convolution of dy, zero-upsampled by the stride and padded by
// (k - 1) * d - p, with the weights flipped spatially and transposed (M <-> C):
//   dx[n, c, ih, iw] = sum over m, kh, kw of dyu[n, m, ih + kh*dh, iw + kw*dw] * wf[c, m, kh, kw]
//   wf[c, m, kh, kw] = w[m, c, kH-1-kh, kW-1-kw]
//   dyu[n, m, P_h + oh*sh, P_w + ow*sw] = dy[n, m, oh, ow], zero elsewhere; P = (k - 1) * d - p
// With stride 1, dyu is dy padded, which conv.c's own padding copy makes. With a larger stride,
// a copy here spreads dy out (3 of 4 products of a stride-2 conv then multiply zeros: simple,
// and still far faster than the row-wise loops). wf is packed at run time (the weights are state)
// into kernel scratch as conv.c's kernel reads them: (ceil(C / L), M, kH, kW, L).
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

// wp[vb][m][kh][kw][l] = c < C ? w[m][c][kH-1-kh][kW-1-kw] : 0 (c = vb*L + l); bp = 0.
static void pack_flipped(const kiln_lower_ctx *c, const kiln_conv_plan *p, int *wp, int *bp) {
  kiln_lb *b = c->b;
  int64_t C = p->M, M = p->C, KH = p->KH, KW = p->KW;  // p is the conv dy -> dx
  *wp = kiln_lower_scratch(c, KILN_F32, p->MV * M * KH * KW * p->lanes);
  *bp = kiln_lower_scratch(c, KILN_F32, p->MV * p->lanes);
  int i = kiln_lb_for_n(b, "i", p->MV * p->lanes);
  kiln_lb_store(b, *bp, lx_var(b, i), lx_float(b, KILN_F32, 0));
  kiln_lb_end_for(b);
  int vb = kiln_lb_for_n(b, "vb", p->MV), m = kiln_lb_for_n(b, "m", M);
  int kh = kiln_lb_for_n(b, "kh", KH), kw = kiln_lb_for_n(b, "kw", KW);
  int l = kiln_lb_for_n(b, "l", p->lanes);
  kiln_lexpr *ch = lx_madd(b, lx_var(b, vb), p->lanes, lx_var(b, l));
  kiln_lexpr *real = lx_bin(b, LB_LT, ch, lx_int(b, C));
  kiln_lexpr *clamped = lx_bin(b, LB_MIN, kiln_lx_clone(b, ch), lx_int(b, C - 1));
  kiln_lexpr *fh = lx_bin(b, LB_SUB, lx_int(b, KH - 1), lx_var(b, kh));
  kiln_lexpr *fw = lx_bin(b, LB_SUB, lx_int(b, KW - 1), lx_var(b, kw));
  int64_t wdims[4] = {M, C, KH, KW};
  kiln_lexpr *from = kiln_lx_nchw(b, lx_var(b, m), clamped, wdims, fh, fw);
  kiln_lexpr *tap = lx_madd(b, lx_madd(b, lx_var(b, m), KH, lx_var(b, kh)), KW, lx_var(b, kw));
  kiln_lexpr *to = lx_madd(b, lx_madd(b, lx_var(b, vb), M * KH * KW, tap), p->lanes, lx_var(b, l));
  kiln_lb_store(b, *wp, to,
                lx_select(b, real, lx_load(b, kiln_in_buf(c, 1), from), lx_float(b, KILN_F32, 0)));
  for (int k = 0; k < 5; k++) kiln_lb_end_for(b);  // l, kw, kh, m, vb
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
  kiln_window g = grad_window(cd, pad, spread);
  int64_t lanes = c->f32_lanes > 0 ? c->f32_lanes : 16;
  // the conv dy (N, M, ...) -> dx (N, C, ...)
  kiln_conv_plan p = kiln_conv_plan_make(&g, cd->x.dim[0], cd->y.dim[1], cd->x.dim[1], lanes, 0);
  int wp, bp;
  pack_flipped(c, &p, &wp, &bp);
  int xp = spread ? spread_dy(c, cd, &g, pad) : kiln_conv_plan_input(c, &p);
  kiln_conv_lower_tiles(c, &p, xp, wp, bp);
  return true;
}
