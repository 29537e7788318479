// Winograd F(2x2, 3x3) convolutions of conv.c: a FusedConv with algo = "winograd" (set by the
// select-conv-algo pass, compiler/passes/select_conv_algo.c): 2-D, 3x3, stride 1, dilation 1,
// group 1, f32, constant weights, x and y (and the residual z) NCHWc with L lanes.
// Each 2x2 output tile comes from a 4x4 input patch d (rows 2*th .. 2*th+3 of the padded input):
//   Y = A^T [ sum over c of U[c] (.) V[c] ] A     U = G g G^T (4x4, at compile time)   V = B^T d B
// 16 multiplications per tile and (c, m) instead of 36: the 16 positions of the 4x4 products are
// 16 independent GEMMs (M x C) by (C x tiles). B and A have coefficients 0 and +-1, G 0, +-1 and
// +-1/2: only the summation order differs from the direct conv (docs/performance.md, tolerance).
// Three loop nests, each parallel on its own (V and Mo in kernel scratch, whole images):
//   xp = x padded to (2*TH + 2, 2*TW + 2) (TH, TW = ceil(OH / 2), ceil(OW / 2))
//   for n, t < TB (parallel), cb, l (vectorized): V[n][pos][t][cb*L + l] = (B^T d B)[pos] of tile t
//   for q = (n, pos, mo) (parallel), tj < TB / RT: acc[RT][RO][L] (registers)
//     for c: for j, r (unrolled), l: acc[j][r][l] = muladd(V[n][pos][tj*RT + j][c],
//                                                          U[pos][mo*RO + r][c][l], acc[j][r][l])
//     Mo[n][pos][tj*RT + j][(mo*RO + r)*L + l] = acc[j][r][l]
//   for n, t < TB (parallel), mv, l (vectorized): y[n][mv][2*th + a][2*tw + b][l] =
//       epilogue((A^T m A)[a][b] + bias[mv*L + l])     m[pos] = Mo[n][pos][t][mv*L + l]
// The GEMMs of one (n, pos, mo) read a V[n][pos] of TB x C and a U slice of C x RO*L, reused
// across all the image's tiles. TB is the image's T tiles padded to whole register tiles: those
// past the last read the last tile again and store nothing; a partial last row or column of
// tiles (odd OH or OW) stores only the outputs inside y. Tried and not kept: blocks of tiles
// with the three steps in one parallel loop (V and Mo of a block in L2) took as much or more CPU
// time on every ResNet-18 layer (docs/performance.md).
// Training (weights are state, x and y planar): the same transforms with U made at the start of
// the kernel, for Conv and ConvGradInput (its conv of dy by the flipped weights), and the
// transposed transform for ConvGradFilter; see the sections "Run-time weights" and
// "ConvGradFilter" below.
#include <stdlib.h>
#include <string.h>

#include "../../target.h"
#include "conv_internal.h"

typedef struct wino_plan {
  kiln_conv_plan p;  // x's padded copy (HP, WP), N, C, M, OH, OW, lanes
  int64_t L, CB, MV;
  int64_t TH, TW, T;  // tiles per image: rows, columns, all
  int64_t RT, RO;     // register tile: tiles by channel vectors
  int64_t TB;         // T padded to whole register tiles
  bool planar;        // x and y planar (run-time weights): xp is an NCHWc copy, y stored NCHW
} wino_plan;

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- Eligibility (the pass and the attribute's check) ----

// 3x3 kernel, strides and dilations 1, one group, pads at most 1, both layouts NCHWc.
bool kiln_conv_winograd_eligible(const kiln_graph *g, const kiln_node *n) {
  if (n->op != KILN_OP_FusedConv || kiln_attr_int(n, "group", 1) != 1) return false;
  const kiln_tensor *x = kiln_in(g, n, 0), *w = kiln_in(g, n, 1);
  const char *layout = kiln_attr_string(n, "layout", "NCHW");
  if (strcmp(layout, "NCHWc") || strcmp(kiln_attr_string(n, "input_layout", layout), "NCHWc"))
    return false;
  if (x->dtype != KILN_F32 || w->dtype != KILN_F32 || w->shape.rank != 4) return false;
  if (w->shape.dim[2] != 3 || w->shape.dim[3] != 3 || !w->data) return false;
  kiln_shape xs = kiln_nchw_shape(&x->shape);
  kiln_window win;
  if (!kiln_window_resolve_nd(n, NULL, 2, &xs.dim[2], &w->shape.dim[2],
                              (kiln_window_opts){.dilations = true}, &win))
    return false;
  for (int a = 0; a < 2; a++)
    if (win.stride[a] != 1 || win.dilation[a] != 1 || win.pad_begin[a] > 1 || win.pad_end[a] > 1)
      return false;
  return true;
}

bool kiln_conv_winograd_check(const kiln_graph *g, const kiln_node *n, kiln_diag *d) {
  const char *algo = kiln_attr_string(n, "algo", "direct");
  if (!strcmp(algo, "direct")) return true;
  if (!strcmp(algo, "winograd") && kiln_conv_winograd_eligible(g, n)) return true;
  kiln_op_error(d, n,
                "attrs.algo: expected \"direct\", or \"winograd\" for a 3x3, stride-1, "
                "dilation-1, one-group f32 conv with pads <= 1, NCHWc in and out; got \"%s\"",
                algo);
  return false;
}

bool kiln_conv_winograd_applies(const kiln_lower_ctx *c) {
  return !strcmp(kiln_attr_string(c->node, "algo", "direct"), "winograd");
}

// ---- Plan ----

// The register tile: the widest of at most most_rt tiles (down to half of it) that pads the T
// tiles the least; TB the padded count.
static void register_tile(wino_plan *w) {
  int64_t most_rt = kiln_target_accumulators((int)w->L) / w->RO;
  if (w->T <= most_rt) {
    w->RT = w->TB = w->T;
    return;
  }
  w->RT = most_rt, w->TB = ceil_div(w->T, most_rt) * most_rt;
  for (int64_t rt = most_rt - 1; rt >= most_rt / 2 && rt >= 1; rt--)
    if (ceil_div(w->T, rt) * rt < w->TB) w->RT = rt, w->TB = ceil_div(w->T, rt) * rt;
}

static wino_plan make_plan(const kiln_lower_ctx *c) {
  wino_plan w = {.p = kiln_conv_node_plan(c)};
  kiln_conv_plan *p = &w.p;
  w.L = p->lanes, w.CB = p->C / w.L, w.MV = p->MV;
  w.TH = ceil_div(p->OH, 2), w.TW = ceil_div(p->OW, 2), w.T = w.TH * w.TW;
  // The padded input covers every tile's 4x4 patch (one more row or column for odd OH or OW).
  p->HP = 2 * w.TH + 2, p->WP = 2 * w.TW + 2;
  p->padded = p->HP != p->H || p->WP != p->W;
  w.RO = w.MV % 2 == 0 ? 2 : 1;
  register_tile(&w);
  return w;
}

// ---- Weights: U[pos][mv][c][l] = (G g G^T)[pos] of w[mv*L + l][c], bias padded ----

static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};

// u = G g G^T of the 3x3 kernel g, in double (rounded to f32 once, by the caller).
static void transform_kernel(const double g[9], double u[16]) {
  double gg[4][3];
  for (int a = 0; a < 4; a++)
    for (int k = 0; k < 3; k++) gg[a][k] = G[a][0] * g[k] + G[a][1] * g[3 + k] + G[a][2] * g[6 + k];
  for (int a = 0; a < 4; a++)
    for (int e = 0; e < 4; e++)
      u[a * 4 + e] = gg[a][0] * G[e][0] + gg[a][1] * G[e][1] + gg[a][2] * G[e][2];
}

static void pack_weights(const kiln_lower_ctx *c, const wino_plan *w, int *up, int *bp) {
  const kiln_tensor *wt = kiln_lower_in(c, 1);
  int64_t C = w->p.C, M = w->p.M, L = w->L, numel = 16 * w->MV * C * L;
  float *u = kiln_xcalloc((size_t)numel, sizeof(float));
  for (int64_t m = 0; m < M; m++)
    for (int64_t ch = 0; ch < C; ch++) {
      double g[9], t[16];
      for (int k = 0; k < 9; k++) g[k] = kiln_tensor_get(wt, (m * C + ch) * 9 + k);
      transform_kernel(g, t);
      for (int pos = 0; pos < 16; pos++)
        u[((pos * w->MV + m / L) * C + ch) * L + m % L] = (float)t[pos];
    }
  *up = kiln_lower_derived_weight(c, "winograd", u, numel);
  free(u);
  float *bias = kiln_xcalloc((size_t)(w->MV * L), sizeof(float));
  for (int64_t m = 0; kiln_has_input(c->node, 2) && m < M; m++)
    bias[m] = (float)kiln_tensor_get(kiln_lower_in(c, 2), m);
  *bp = kiln_lower_derived_weight(c, "bpacked", bias, w->MV * L);
  free(bias);
}

// ---- Index expressions (fresh trees each call) ----

typedef struct wino_vars {
  int n, t;           // the image and its tile (loop variables)
  int xp, v, mo, up;  // buffers: padded x, V, Mo, U
  int yb;             // planar: y as NCHWc before its transposition
  int q, j;           // fused_gemms (q >= 0): the image and tile come from q and j, not n and t
  int64_t NB, MO;     // fused_gemms: register tiles of all images, output vector pairs
  int vb, mv;         // fused_gemms: V local (vb >= 0): q = block, mv the output vector pair;
                      // else q = (mo, block)
} wino_vars;

// fused_gemms' register tile across all images: q, or q % NB. RT divides TB, so a register
// tile never spans two images: the image is block / (TB / RT) and its tiles (block % (TB / RT))
// * RT + j, V rows at constant distances j * C (session 11 divided block * RT + j by TB, and gcc
// kept the 14 row addresses of layer 2's tile in registers and on the stack).
static kiln_lexpr *tile_block(kiln_lb *b, const wino_vars *v) {
  if (v->vb >= 0) return lx_var(b, v->q);
  return lx_bin(b, LB_MOD, lx_var(b, v->q), lx_int(b, v->NB));
}

// The image: the loop variable n, or the register tile's.
static kiln_lexpr *image(kiln_lb *b, const wino_plan *w, const wino_vars *v) {
  if (v->q < 0) return lx_var(b, v->n);
  return lx_bin(b, LB_DIV, tile_block(b, v), lx_int(b, w->TB / w->RT));
}

// The tile in its image (unclamped): the loop variable t, or tile j of the register tile.
static kiln_lexpr *image_tile(kiln_lb *b, const wino_plan *w, const wino_vars *v) {
  if (v->q < 0) return lx_var(b, v->t);
  kiln_lexpr *first = lx_bin(b, LB_MOD, tile_block(b, v), lx_int(b, w->TB / w->RT));
  return lx_madd(b, first, w->RT, lx_var(b, v->j));
}

// The tile's index t (the last tile for those past it).
static kiln_lexpr *tile_index(kiln_lb *b, const wino_plan *w, const wino_vars *v) {
  kiln_lexpr *t = image_tile(b, w, v);
  return w->TB > w->T ? lx_bin(b, LB_MIN, t, lx_int(b, w->T - 1)) : t;
}

// Row (axis 0) or column (axis 1) 2 * (tile / TW or tile % TW) + k of the tile's patch or output.
static kiln_lexpr *tile_pos(kiln_lb *b, const wino_plan *w, const wino_vars *v, int axis,
                            int64_t k) {
  kiln_lexpr *q = lx_bin(b, axis ? LB_MOD : LB_DIV, tile_index(b, w, v), lx_int(b, w->TW));
  return lx_madd(b, q, 2, lx_int(b, k));
}

// Scratch element [n][pos][t][k] of rows of `width` (V: C, Mo: M).
static kiln_lexpr *scratch_index(kiln_lb *b, const wino_plan *w, const wino_vars *v, int64_t pos,
                                 kiln_lexpr *t, int64_t width, kiln_lexpr *k) {
  kiln_lexpr *row = lx_madd(b, lx_madd(b, image(b, w, v), 16, lx_int(b, pos)), w->TB, t);
  return lx_madd(b, row, width, k);
}

// ---- Input transform: V = B^T d B, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] ----

static kiln_lexpr *sub(kiln_lb *b, int x, int y) {
  return lx_bin(b, LB_SUB, lx_var(b, x), lx_var(b, y));
}
static kiln_lexpr *add(kiln_lb *b, int x, int y) {
  return lx_bin(b, LB_ADD, lx_var(b, x), lx_var(b, y));
}

// out[k * s] (k < 4) = B^T in[k * s]: the transform of 4 values s apart.
static void input_1d(kiln_lb *b, const int *in, int *out, int s) {
  out[0] = kiln_lb_decl(b, "bt", KILN_F32, sub(b, in[0], in[2 * s]));
  out[s] = kiln_lb_decl(b, "bt", KILN_F32, add(b, in[s], in[2 * s]));
  out[2 * s] = kiln_lb_decl(b, "bt", KILN_F32, sub(b, in[2 * s], in[s]));
  out[3 * s] = kiln_lb_decl(b, "bt", KILN_F32, sub(b, in[s], in[3 * s]));
}

// d[a][e] = xp[n][cb][2*th + a][2*tw + e][l]
static void load_patch(const kiln_lower_ctx *c, const wino_plan *w, const wino_vars *v, int cb,
                       int l, int d[16]) {
  kiln_lb *b = c->b;
  for (int a = 0; a < 4; a++)
    for (int e = 0; e < 4; e++) {
      kiln_lexpr *plane = lx_madd(b, image(b, w, v), w->CB, lx_var(b, cb));
      kiln_lexpr *row = lx_madd(b, plane, w->p.HP, tile_pos(b, w, v, 0, a));
      kiln_lexpr *col = lx_madd(b, row, w->p.WP, tile_pos(b, w, v, 1, e));
      kiln_lexpr *xi = lx_madd(b, col, w->L, lx_var(b, l));
      d[a * 4 + e] = kiln_lb_decl(b, "d", KILN_F32, lx_load(b, v->xp, xi));
    }
}

static void input_transform(const kiln_lower_ctx *c, const wino_plan *w, wino_vars *v) {
  kiln_lb *b = c->b;
  v->n = kiln_lb_for_n(b, "n", w->p.N), v->t = kiln_lb_for_n(b, "t", w->TB);
  int cb = kiln_lb_for_n(b, "cb", w->CB), l = kiln_lb_for_n(b, "l", w->L);
  int d[16], rows[16], out[16];
  load_patch(c, w, v, cb, l, d);
  for (int e = 0; e < 4; e++) input_1d(b, &d[e], &rows[e], 4);            // B^T d: down the columns
  for (int a = 0; a < 4; a++) input_1d(b, &rows[a * 4], &out[a * 4], 1);  // (B^T d) B: the rows
  for (int pos = 0; pos < 16; pos++)
    kiln_lb_store(b, v->v,
                  scratch_index(b, w, v, pos, lx_var(b, v->t), w->p.C,
                                lx_madd(b, lx_var(b, cb), w->L, lx_var(b, l))),
                  lx_var(b, out[pos]));
  for (int k = 0; k < 4; k++) kiln_lb_end_for(b);  // l, cb, t, n
}

// ---- The 16 GEMMs: Mo[pos] (tiles x M) = V[pos] (tiles x C) U[pos] (C x M) ----

// (j * RO + r) * L + l
static kiln_lexpr *acc_index(kiln_lb *b, const wino_plan *w, int j, int r, int l) {
  return lx_madd(b, lx_madd(b, lx_var(b, j), w->RO, lx_var(b, r)), w->L, lx_var(b, l));
}

// Where a register tile is: one loop q over (n, pos, mo), the parallel one: n = q / (16 * MO),
// pos = q / MO % 16, mo = q % MO (expressions of q, so the schedule pass sees the stores use it);
// tiles tj * RT...
typedef struct gemm_at {
  int q, tj;
  int64_t MO;
} gemm_at;

static kiln_lexpr *at_image(kiln_lb *b, const gemm_at *g) {
  return lx_bin(b, LB_DIV, lx_var(b, g->q), lx_int(b, 16 * g->MO));
}
static kiln_lexpr *at_pos(kiln_lb *b, const gemm_at *g) {
  return lx_bin(b, LB_MOD, lx_bin(b, LB_DIV, lx_var(b, g->q), lx_int(b, g->MO)), lx_int(b, 16));
}
static kiln_lexpr *at_mo(kiln_lb *b, const gemm_at *g) {
  return lx_bin(b, LB_MOD, lx_var(b, g->q), lx_int(b, g->MO));
}

// Row (n * 16 + pos) * TB + tj * RT + j of V or Mo.
static kiln_lexpr *gemm_row(kiln_lb *b, const wino_plan *w, const gemm_at *g, int j) {
  kiln_lexpr *t = lx_madd(b, lx_var(b, g->tj), w->RT, lx_var(b, j));
  return lx_madd(b, lx_madd(b, at_image(b, g), 16, at_pos(b, g)), w->TB, t);
}

// Output channel vector mo * RO + r.
static kiln_lexpr *out_vector(kiln_lb *b, const wino_plan *w, const gemm_at *g, int r) {
  return lx_madd(b, at_mo(b, g), w->RO, lx_var(b, r));
}

static void gemm_tile(const kiln_lower_ctx *c, const wino_plan *w, const wino_vars *v,
                      const gemm_at *g) {
  kiln_lb *b = c->b;
  int acc = kiln_lb_decl_array(b, "acc", KILN_F32, w->RT * w->RO * w->L);
  int j = kiln_conv_unrolled_for(b, "j", w->RT), r = kiln_conv_unrolled_for(b, "r", w->RO);
  int l = kiln_lb_for_n(b, "l", w->L);
  kiln_lb_store_local(b, acc, acc_index(b, w, j, r, l), lx_float(b, KILN_F32, 0));
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // l, r, j
  int ch = kiln_lb_for_n(b, "c", w->p.C);
  j = kiln_conv_unrolled_for(b, "j", w->RT);
  kiln_lexpr *vi = lx_madd(b, gemm_row(b, w, g, j), w->p.C, lx_var(b, ch));
  int xv = kiln_lb_decl(b, "xv", KILN_F32, lx_load(b, v->v, vi));
  r = kiln_conv_unrolled_for(b, "r", w->RO), l = kiln_lb_for_n(b, "l", w->L);
  kiln_lexpr *vec = lx_madd(b, at_pos(b, g), w->MV, out_vector(b, w, g, r));
  kiln_lexpr *ui = lx_madd(b, lx_madd(b, vec, w->p.C, lx_var(b, ch)), w->L, lx_var(b, l));
  kiln_lb_store_local(b, acc, acc_index(b, w, j, r, l),
                      lx_muladd(b, lx_var(b, xv), lx_load(b, v->up, ui),
                                lx_local(b, acc, acc_index(b, w, j, r, l))));
  for (int k = 0; k < 4; k++) kiln_lb_end_for(b);  // l, r, j, c
  j = kiln_conv_unrolled_for(b, "j", w->RT), r = kiln_conv_unrolled_for(b, "r", w->RO);
  l = kiln_lb_for_n(b, "l", w->L);
  kiln_lexpr *m = lx_madd(b, out_vector(b, w, g, r), w->L, lx_var(b, l));
  kiln_lb_store(b, v->mo, lx_madd(b, gemm_row(b, w, g, j), w->p.M, m),
                lx_local(b, acc, acc_index(b, w, j, r, l)));
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // l, r, j
}

// for q = (n, pos, mo) (parallel), tj
static void gemms(const kiln_lower_ctx *c, const wino_plan *w, const wino_vars *v) {
  kiln_lb *b = c->b;
  gemm_at g = {.MO = w->MV / w->RO};
  g.q = kiln_lb_for_n(b, "q", w->p.N * 16 * g.MO);
  g.tj = kiln_lb_for_n(b, "tj", w->TB / w->RT);
  gemm_tile(c, w, v, &g);
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // tj, q
}

// ---- Output transform: Y = A^T m A, A^T = [1 1 1 0; 0 1 -1 -1], bias and epilogue ----

// out[k * s] (k < 2) = A^T in[k * s]: 4 values s apart to 2.
static void output_1d(kiln_lb *b, const int *in, int *out, int s) {
  kiln_lexpr *sum = lx_bin(b, LB_ADD, add(b, in[0], in[s]), lx_var(b, in[2 * s]));
  out[0] = kiln_lb_decl(b, "at", KILN_F32, sum);
  kiln_lexpr *diff = lx_bin(b, LB_SUB, sub(b, in[s], in[2 * s]), lx_var(b, in[3 * s]));
  out[s] = kiln_lb_decl(b, "at", KILN_F32, diff);
}

// y[n][mv][2*th + a][2*tw + e][l] = epilogue(val + bias), inside y when OH or OW is odd.
static void store_output(const kiln_lower_ctx *c, const wino_plan *w, const wino_vars *v,
                         kiln_lexpr *mv, int l, int a, int e, int val, int bias) {
  kiln_lb *b = c->b;
  kiln_lexpr *in = NULL;
  if (w->p.OH % 2) in = lx_bin(b, LB_LT, tile_pos(b, w, v, 0, a), lx_int(b, w->p.OH));
  if (w->p.OW % 2) {
    kiln_lexpr *col = lx_bin(b, LB_LT, tile_pos(b, w, v, 1, e), lx_int(b, w->p.OW));
    in = in ? lx_bin(b, LB_AND, in, col) : col;
  }
  if (in) kiln_lb_if(b, in);
  kiln_lexpr *plane = lx_madd(b, image(b, w, v), w->MV, mv);
  kiln_lexpr *row = lx_madd(b, plane, w->p.OH, tile_pos(b, w, v, 0, a));
  kiln_lexpr *col = lx_madd(b, row, w->p.OW, tile_pos(b, w, v, 1, e));
  kiln_lexpr *yi = lx_madd(b, col, w->L, lx_var(b, l));
  kiln_lexpr *sum = add(b, val, bias);
  if (w->planar)  // NCHWc into yb, the epilogue after the transposition (planar_store)
    kiln_lb_store(b, v->yb, yi, sum);
  else
    kiln_lb_store(b, kiln_out_buf(c, 0), yi, kiln_conv_epilogue(c, sum, kiln_lx_clone(b, yi)));
  if (in) kiln_lb_end_if(b);
}

static void output_transform(const kiln_lower_ctx *c, const wino_plan *w, wino_vars *v, int bp) {
  kiln_lb *b = c->b;
  v->n = kiln_lb_for_n(b, "n", w->p.N), v->t = kiln_lb_for_n(b, "t", w->TB);
  if (w->TB > w->T)  // tiles past the image's last store nothing
    kiln_lb_if(b, lx_bin(b, LB_LT, lx_var(b, v->t), lx_int(b, w->T)));
  int mv = kiln_lb_for_n(b, "mv", w->MV), l = kiln_lb_for_n(b, "l", w->L);
  int m[16], cols[8], y[4];
  for (int pos = 0; pos < 16; pos++) {
    kiln_lexpr *k = lx_madd(b, lx_var(b, mv), w->L, lx_var(b, l));
    kiln_lexpr *mi = scratch_index(b, w, v, pos, lx_var(b, v->t), w->p.M, k);
    m[pos] = kiln_lb_decl(b, "m", KILN_F32, lx_load(b, v->mo, mi));
  }
  kiln_lexpr *bv = bp < 0 ? lx_float(b, KILN_F32, 0)  // no bias
                          : lx_load(b, bp, lx_madd(b, lx_var(b, mv), w->L, lx_var(b, l)));
  int bias = kiln_lb_decl(b, "bias", KILN_F32, bv);
  for (int e = 0; e < 4; e++) output_1d(b, &m[e], &cols[e], 4);  // A^T m: rows 0, 1 (4 apart)
  for (int a = 0; a < 2; a++) output_1d(b, &cols[a * 4], &y[a * 2], 1);
  for (int a = 0; a < 2; a++)
    for (int e = 0; e < 2; e++) store_output(c, w, v, lx_var(b, mv), l, a, e, y[a * 2 + e], bias);
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // l, mv
  if (w->TB > w->T) kiln_lb_end_if(b);
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // t, n
}

void kiln_conv_lower_winograd(const kiln_lower_ctx *c) {
  wino_plan w = make_plan(c);
  int bp;
  wino_vars v = {.n = -1, .t = -1, .q = -1, .vb = -1};
  pack_weights(c, &w, &v.up, &bp);
  v.xp = kiln_conv_plan_input(c, &w.p);
  v.v = kiln_lower_scratch(c, KILN_F32, w.p.N * 16 * w.TB * w.p.C);
  v.mo = kiln_lower_scratch(c, KILN_F32, w.p.N * 16 * w.TB * w.p.M);
  kiln_lb_comment(c->b,
                  "winograd F(2x2, 3x3): %lld tiles of 2x2 (%lld computed), register tile %lld "
                  "tiles x %lld x %lld channels%s",
                  (long long)w.T, (long long)w.TB, (long long)w.RT, (long long)w.RO, (long long)w.L,
                  w.p.padded ? ", padded input" : "");
  input_transform(c, &w, &v);
  gemms(c, &w, &v);
  output_transform(c, &w, &v, bp);
}

// ---- Run-time weights, planar x and y (training: Conv with state weights, ConvGradInput) ----
// At the start of the kernel, U is made from the weights (regrouped by output vector, then
// transformed in f32: G's coefficients are 0, +-1 and +-1/2) and x's padded copy is made NCHWc
// (the input transform is the blocked one). The GEMMs and the output transform run fused
// (fused_gemms: Mo stays in the cache) into y's NCHWc copy yb, which planar_store writes into y.
// Conditions: kiln_conv_winograd_runtime_fits.

// Where it paid in ResNet-18's training step at batch 8 (docs/performance.md, sessions 11 and 12;
// CPU samples per kernel against the direct kernel): layers 2 and 3 (128 and 256 channels)
// 0.7-0.8x; layer 1 (64 channels) 1.0-1.06x with V through memory (26 MB a conv), 0.6-0.7x since V
// stays in a local array (fused_gemms); layer 4 (7x7 planes: 128 tiles for a U of 16.8 MB
// transformed every run) 1.0-1.1x. Not on 8-lane targets (select-conv-algo's reason).
enum { RUNTIME_MIN_CHANNELS = 64, RUNTIME_SLOWER_LANES = 8 };
enum { RUNTIME_MIN_TILES = 256, RUNTIME_CACHED_U_BYTES = 4 << 20 };

bool kiln_conv_winograd_runtime_fits(const kiln_window *win, int64_t N, int64_t C, int64_t M,
                                     int64_t lanes) {
  if (win->rank != 2 || lanes == RUNTIME_SLOWER_LANES || C % lanes || M % lanes) return false;
  if (C < RUNTIME_MIN_CHANNELS || M < RUNTIME_MIN_CHANNELS) return false;
  for (int a = 0; a < 2; a++)
    if (win->kernel[a] != 3 || win->stride[a] != 1 || win->dilation[a] != 1 ||
        win->pad_begin[a] < 0 || win->pad_end[a] < 0)
      return false;
  int64_t tiles = N * ((win->out[0] + 1) / 2) * ((win->out[1] + 1) / 2);
  return tiles >= RUNTIME_MIN_TILES ||
         16 * C * M * (int64_t)sizeof(float) <= RUNTIME_CACHED_U_BYTES;
}

// ConvGradFilter: where the conv itself fits (P, the 16 sums per (m, c), is U's size: on layer 4,
// 1.24x the direct kernel) and the transforms of x and dy (V and Dy, 16/4 the size of x and dy
// each, written to memory and read back) are not too large: on layer 3 at batch 8 (13 MB) 0.8x
// the direct kernel, on layer 2 (26 MB) 0.88x since Dy's stores no longer evict each other (1.0x
// before), on layer 1 (51 MB) 1.4x (docs/performance.md, sessions 11 and 12).
enum { FILTER_MAX_TRANSFORM_BYTES = 32 << 20 };

bool kiln_conv_grad_filter_winograd_fits(const kiln_window *win, int64_t N, int64_t C, int64_t M,
                                         int64_t lanes) {
  if (!kiln_conv_winograd_runtime_fits(win, N, C, M, lanes)) return false;
  int64_t tiles = N * ((win->out[0] + 1) / 2) * ((win->out[1] + 1) / 2);
  return 16 * tiles * (C + M) * (int64_t)sizeof(float) <= FILTER_MAX_TRANSFORM_BYTES;
}

// The 4 values G g of 3 values s apart (one column or row of the kernel), into out[k * t].
static void kernel_1d(kiln_lb *b, const int *g, int s, int *out, int t) {
  kiln_lexpr *outer = lx_add(b, lx_var(b, g[0]), lx_var(b, g[2 * s]));
  int o = kiln_lb_decl(b, "go", KILN_F32, outer);
  out[0] = kiln_lb_decl(b, "gg", KILN_F32, lx_var(b, g[0]));
  out[t] =
      kiln_lb_decl(b, "gg", KILN_F32,
                   lx_mul(b, lx_float(b, KILN_F32, 0.5), lx_add(b, lx_var(b, o), lx_var(b, g[s]))));
  out[2 * t] = kiln_lb_decl(
      b, "gg", KILN_F32,
      lx_mul(b, lx_float(b, KILN_F32, 0.5), lx_bin(b, LB_SUB, lx_var(b, o), lx_var(b, g[s]))));
  out[3 * t] = kiln_lb_decl(b, "gg", KILN_F32, lx_var(b, g[2 * s]));
}

// wg[k][l] = w[mv*L + l][c][k] (w (M, C, 3, 3)), or when flipped w[c][mv*L + l][8 - k] (w
// (C, M, 3, 3): the backward weights of a conv; its 9 x L values of (c, mv) are one run of w,
// read in order). A local array: session 11 regrouped all of w into scratch first, with stores
// L floats apart over a whole row of w (147 KB on layer 2, past L1): 20-28 samples a kernel on
// layer 3 against ~7 for the transform (docs/performance.md, session 12).
static int gather_kernels(const kiln_lower_ctx *c, const wino_plan *w, bool flipped, int mv,
                          int ch) {
  kiln_lb *b = c->b;
  int64_t C = w->p.C, L = w->L;
  int wg = kiln_lb_decl_array(b, "wg", KILN_F32, 9 * L);
  int k = kiln_lb_for_n(b, "k", 9), l = kiln_lb_for_n(b, "l", L);
  kiln_lexpr *from;
  if (flipped) {
    kiln_lexpr *run = lx_madd(b, lx_var(b, ch), w->MV, lx_var(b, mv));
    kiln_lexpr *k8 = lx_bin(b, LB_SUB, lx_int(b, 8), lx_var(b, k));
    from = lx_madd(b, lx_madd(b, run, L, lx_var(b, l)), 9, k8);
  } else {
    kiln_lexpr *row = lx_madd(b, lx_madd(b, lx_var(b, mv), L, lx_var(b, l)), C, lx_var(b, ch));
    from = lx_madd(b, row, 9, lx_var(b, k));
  }
  kiln_lexpr *to = lx_madd(b, lx_var(b, k), L, lx_var(b, l));
  kiln_lb_store_local(b, wg, to, lx_load(b, kiln_in_buf(c, 1), from));
  for (int i = 0; i < 2; i++) kiln_lb_end_for(b);  // l, k
  return wg;
}

// U[pos][mv][c][l] = (G g G^T)[pos] of g = wg[.][l] (whole vectors over l).
static int transform_runtime_weights(const kiln_lower_ctx *c, const wino_plan *w, bool flipped) {
  kiln_lb *b = c->b;
  int64_t C = w->p.C, L = w->L;
  int up = kiln_lower_scratch(c, KILN_F32, 16 * w->MV * C * L);
  int mv = kiln_lb_for_n(b, "mv", w->MV), ch = kiln_lb_for_n(b, "c", C);
  int wg = gather_kernels(c, w, flipped, mv, ch);
  int l = kiln_lb_for_n(b, "l", L);
  int g[9], cols[12], u[16];
  for (int k = 0; k < 9; k++)
    g[k] =
        kiln_lb_decl(b, "g", KILN_F32, lx_local(b, wg, lx_madd(b, lx_int(b, k), L, lx_var(b, l))));
  for (int k = 0; k < 3; k++) kernel_1d(b, &g[k], 3, &cols[k], 3);          // G g: cols[a * 3 + k]
  for (int a = 0; a < 4; a++) kernel_1d(b, &cols[a * 3], 1, &u[a * 4], 1);  // (G g) G^T
  for (int pos = 0; pos < 16; pos++) {
    kiln_lexpr *vec = lx_madd(b, lx_int(b, pos), w->MV, lx_var(b, mv));
    kiln_lexpr *ui = lx_madd(b, lx_madd(b, vec, C, lx_var(b, ch)), L, lx_var(b, l));
    kiln_lb_store(b, up, ui, lx_var(b, u[pos]));
  }
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // l, c, mv
  return up;
}

// xp[n][cb][r][q][l] = x[n][cb*L + l][r - pt][q - pl] inside x, else 0 (x planar (N, C, H, W)).
static int blocked_padded_copy(const kiln_lower_ctx *c, const wino_plan *w) {
  kiln_lb *b = c->b;
  const kiln_conv_plan *p = &w->p;
  int xp = kiln_lower_scratch(c, KILN_F32, p->N * p->C * p->HP * p->WP);
  int nc = kiln_lb_for_n(b, "ncb", p->N * w->CB), r = kiln_lb_for_n(b, "r", p->HP);
  int q = kiln_lb_for_n(b, "q", p->WP), l = kiln_lb_for_n(b, "l", w->L);
  kiln_lexpr *ih = lx_bin(b, LB_SUB, lx_var(b, r), lx_int(b, p->pt));
  kiln_lexpr *iw = lx_bin(b, LB_SUB, lx_var(b, q), lx_int(b, p->pl));
  kiln_lexpr *rows = lx_bin(b, LB_AND, lx_bin(b, LB_LE, lx_int(b, p->pt), lx_var(b, r)),
                            lx_bin(b, LB_LT, lx_var(b, r), lx_int(b, p->pt + p->H)));
  kiln_lexpr *cols = lx_bin(b, LB_AND, lx_bin(b, LB_LE, lx_int(b, p->pl), lx_var(b, q)),
                            lx_bin(b, LB_LT, lx_var(b, q), lx_int(b, p->pl + p->W)));
  kiln_lexpr *inside = lx_bin(b, LB_AND, rows, cols);
  // row and column clamped into x (the select's other side reads in bounds too)
  kiln_lexpr *ch = lx_madd(b, lx_var(b, nc), w->L, lx_var(b, l));  // n * C + cb * L + l
  kiln_lexpr *hc = lx_bin(b, LB_MIN, lx_bin(b, LB_MAX, ih, lx_int(b, 0)), lx_int(b, p->H - 1));
  kiln_lexpr *wc = lx_bin(b, LB_MIN, lx_bin(b, LB_MAX, iw, lx_int(b, 0)), lx_int(b, p->W - 1));
  kiln_lexpr *xi = lx_madd(b, lx_madd(b, ch, p->H, hc), p->W, wc);
  kiln_lexpr *to =
      lx_madd(b, lx_madd(b, lx_madd(b, lx_var(b, nc), p->HP, lx_var(b, r)), p->WP, lx_var(b, q)),
              w->L, lx_var(b, l));
  kiln_lb_store(b, xp, to,
                lx_select(b, inside, lx_load(b, kiln_in_buf(c, 0), xi), lx_float(b, KILN_F32, 0)));
  for (int k = 0; k < 4; k++) kiln_lb_end_for(b);  // l, q, r, ncb
  return xp;
}

// ---- Planar path: the GEMMs of one register tile at all 16 positions, then its output ----
// for q = (mo, register tile of all images' tiles) (parallel):
//   for pos: mb[pos][j][r][l] = sum over c of V[n][pos][t][c] U[pos][mo*RO + r][c][l]
//   for j (t < T), r, l: yb[n][mo*RO + r][2*th + a][2*tw + b][l] = (A^T m A)[a][b] + bias
// (n, t: the image and tile of tile j). Mo never leaves the cache (the whole-batch phases of the
// blocked path wrote and read it back from memory: at batch 8, 26 MB a conv on layer 1). When
// all of U fits in L2 (U_IN_L2), V never goes to memory either: q runs over the register tiles,
// each transforms its tiles' patches into a local vb[pos][j][c] (16 x RT x C, 114 KB on layer 2)
// and then runs over the output vector pairs (U stays in L2). That took the kernels of layer 2
// from ~290 to ~217 samples and made layer 1 pay (docs/performance.md, session 12). Otherwise V
// is made beforehand (input_transform) and q runs over the register tiles of an mo first, so that
// U's slice for mo (16 x C x RO*L) stays in L2 (a local V there reads all of U per register
// tile: layer 3 1.1-1.2x).
enum { U_IN_L2 = 1 << 20 };

static bool u_in_l2(const wino_plan *w) {
  return 16 * w->p.C * w->MV * w->L * (int64_t)sizeof(float) <= U_IN_L2;
}

// vb[pos][j][c]: the register tile's V, a local array (fused_gemms with local V).
static kiln_lexpr *local_v_index(kiln_lb *b, const wino_plan *w, const wino_vars *v,
                                 kiln_lexpr *pos, kiln_lexpr *ch) {
  return lx_madd(b, lx_madd(b, pos, w->RT, lx_var(b, v->j)), w->p.C, ch);
}

// vb[pos][j][cb*L + l] = (B^T d B)[pos] of the register tile's tile j.
static void local_input_transform(const kiln_lower_ctx *c, const wino_plan *w, wino_vars *v) {
  kiln_lb *b = c->b;
  v->j = kiln_lb_for_n(b, "j", w->RT);
  int cb = kiln_lb_for_n(b, "cb", w->CB), l = kiln_lb_for_n(b, "l", w->L);
  int d[16], rows[16], out[16];
  load_patch(c, w, v, cb, l, d);
  for (int e = 0; e < 4; e++) input_1d(b, &d[e], &rows[e], 4);            // B^T d: down the columns
  for (int a = 0; a < 4; a++) input_1d(b, &rows[a * 4], &out[a * 4], 1);  // (B^T d) B: the rows
  for (int pos = 0; pos < 16; pos++) {
    kiln_lexpr *ch = lx_madd(b, lx_var(b, cb), w->L, lx_var(b, l));
    kiln_lb_store_local(b, v->vb, local_v_index(b, w, v, lx_int(b, pos), ch), lx_var(b, out[pos]));
  }
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // l, cb, j
}

// V[n][pos][t][c] of tile j
static kiln_lexpr *fused_v_index(kiln_lb *b, const wino_plan *w, const wino_vars *v, int pos,
                                 int ch) {
  if (v->vb >= 0) return local_v_index(b, w, v, lx_var(b, pos), lx_var(b, ch));
  kiln_lexpr *row =
      lx_madd(b, lx_madd(b, image(b, w, v), 16, lx_var(b, pos)), w->TB, image_tile(b, w, v));
  return lx_madd(b, row, w->p.C, lx_var(b, ch));
}

// Output channel vector mo * RO + r (mo: the loop variable mv, or q / NB).
static kiln_lexpr *fused_vector(kiln_lb *b, const wino_plan *w, const wino_vars *v, int r) {
  kiln_lexpr *mo =
      v->vb >= 0 ? lx_var(b, v->mv) : lx_bin(b, LB_DIV, lx_var(b, v->q), lx_int(b, v->NB));
  return lx_madd(b, mo, w->RO, lx_var(b, r));
}

static void fused_gemm(const kiln_lower_ctx *c, const wino_plan *w, wino_vars *v, int mb) {
  kiln_lb *b = c->b;
  int acc = kiln_lb_decl_array(b, "acc", KILN_F32, w->RT * w->RO * w->L);
  int pos = kiln_lb_for_n(b, "pos", 16);
  int j = kiln_conv_unrolled_for(b, "j", w->RT), r = kiln_conv_unrolled_for(b, "r", w->RO);
  int l = kiln_lb_for_n(b, "l", w->L);
  kiln_lb_store_local(b, acc, acc_index(b, w, j, r, l), lx_float(b, KILN_F32, 0));
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // l, r, j
  int ch = kiln_lb_for_n(b, "c", w->p.C);
  v->j = kiln_conv_unrolled_for(b, "j", w->RT);
  kiln_lexpr *x = v->vb >= 0 ? lx_local(b, v->vb, fused_v_index(b, w, v, pos, ch))
                             : lx_load(b, v->v, fused_v_index(b, w, v, pos, ch));
  int xv = kiln_lb_decl(b, "xv", KILN_F32, x);
  r = kiln_conv_unrolled_for(b, "r", w->RO), l = kiln_lb_for_n(b, "l", w->L);
  kiln_lexpr *vec = lx_madd(b, lx_var(b, pos), w->MV, fused_vector(b, w, v, r));
  kiln_lexpr *ui = lx_madd(b, lx_madd(b, vec, w->p.C, lx_var(b, ch)), w->L, lx_var(b, l));
  kiln_lb_store_local(b, acc, acc_index(b, w, v->j, r, l),
                      lx_muladd(b, lx_var(b, xv), lx_load(b, v->up, ui),
                                lx_local(b, acc, acc_index(b, w, v->j, r, l))));
  for (int k = 0; k < 4; k++) kiln_lb_end_for(b);  // l, r, j, c
  j = kiln_conv_unrolled_for(b, "j", w->RT), r = kiln_conv_unrolled_for(b, "r", w->RO);
  l = kiln_lb_for_n(b, "l", w->L);
  kiln_lexpr *at = lx_madd(b, lx_var(b, pos), w->RT * w->RO * w->L, acc_index(b, w, j, r, l));
  kiln_lb_store_local(b, mb, at, lx_local(b, acc, acc_index(b, w, j, r, l)));
  for (int k = 0; k < 4; k++) kiln_lb_end_for(b);  // l, r, j, pos
}

static void fused_output(const kiln_lower_ctx *c, const wino_plan *w, wino_vars *v, int mb,
                         int bp) {
  kiln_lb *b = c->b;
  v->j = kiln_lb_for_n(b, "j", w->RT);
  if (w->TB > w->T) kiln_lb_if(b, lx_bin(b, LB_LT, image_tile(b, w, v), lx_int(b, w->T)));
  int r = kiln_lb_for_n(b, "r", w->RO), l = kiln_lb_for_n(b, "l", w->L);
  int m[16], cols[8], y[4];
  for (int pos = 0; pos < 16; pos++) {
    kiln_lexpr *at = lx_madd(b, lx_int(b, pos), w->RT * w->RO * w->L, acc_index(b, w, v->j, r, l));
    m[pos] = kiln_lb_decl(b, "m", KILN_F32, lx_local(b, mb, at));
  }
  kiln_lexpr *bv = bp < 0
                       ? lx_float(b, KILN_F32, 0)
                       : lx_load(b, bp, lx_madd(b, fused_vector(b, w, v, r), w->L, lx_var(b, l)));
  int bias = kiln_lb_decl(b, "bias", KILN_F32, bv);
  for (int e = 0; e < 4; e++) output_1d(b, &m[e], &cols[e], 4);
  for (int a = 0; a < 2; a++) output_1d(b, &cols[a * 4], &y[a * 2], 1);
  for (int a = 0; a < 2; a++)
    for (int e = 0; e < 2; e++)
      store_output(c, w, v, fused_vector(b, w, v, r), l, a, e, y[a * 2 + e], bias);
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // l, r
  if (w->TB > w->T) kiln_lb_end_if(b);
  kiln_lb_end_for(b);  // j
}

// With V local (when U fits in L2): for q = register tile (parallel): vb = its V; for mv < MO:
// the GEMMs and output transform of output vector pair mv. Otherwise for q = (mo, register tile).
static void fused_gemms(const kiln_lower_ctx *c, const wino_plan *w, wino_vars *v, int bp,
                        bool local_v) {
  kiln_lb *b = c->b;
  v->MO = w->MV / w->RO, v->NB = w->p.N * w->TB / w->RT;
  v->q = kiln_lb_for_n(b, "q", local_v ? v->NB : v->MO * v->NB);
  if (local_v) {
    v->vb = kiln_lb_decl_array(b, "vb", KILN_F32, 16 * w->RT * w->p.C);
    local_input_transform(c, w, v);
    v->mv = kiln_lb_for_n(b, "mo", v->MO);
  }
  int mb = kiln_lb_decl_array(b, "mb", KILN_F32, 16 * w->RT * w->RO * w->L);
  fused_gemm(c, w, v, mb);
  fused_output(c, w, v, mb, bp);
  if (local_v) kiln_lb_end_for(b);  // mo
  kiln_lb_end_for(b);               // q
}

// y[n][mv*L + l][h][w] = epilogue(yb[n][mv][h][w][l]): whole rows of y stored in order. When a
// vector's planes in yb (OH x OW x L) pass PLANES_IN_L1, l runs inside h (yb's OW x L rows stay
// in L1 for the L rows of y; otherwise the planes were read L times from L2): layer 1 (200 KB)
// 37-40 -> 22-27 samples a kernel, layer 2 even; on layer 3 (12.5 KB) l outside h measured
// faster (docs/performance.md, session 12).
enum { PLANES_IN_L1 = 32 << 10 };

static void planar_store(const kiln_lower_ctx *c, const wino_plan *w, const wino_vars *v) {
  kiln_lb *b = c->b;
  int64_t OH = w->p.OH, OW = w->p.OW;
  bool rows = OH * OW * w->L * (int64_t)sizeof(float) > PLANES_IN_L1;
  int nmv = kiln_lb_for_n(b, "nmv", w->p.N * w->MV), l, h;
  if (rows)
    h = kiln_lb_for_n(b, "h", OH), l = kiln_lb_for_n(b, "l", w->L);
  else
    l = kiln_lb_for_n(b, "l", w->L), h = kiln_lb_for_n(b, "h", OH);
  int x = kiln_lb_for_n(b, "w", OW);
  kiln_lexpr *pix = lx_madd(b, lx_var(b, h), OW, lx_var(b, x));
  kiln_lexpr *from = lx_madd(b, lx_madd(b, lx_var(b, nmv), OH * OW, pix), w->L, lx_var(b, l));
  kiln_lexpr *to =
      lx_madd(b, lx_madd(b, lx_var(b, nmv), w->L, lx_var(b, l)), OH * OW, kiln_lx_clone(b, pix));
  kiln_lb_store(b, kiln_out_buf(c, 0), to,
                kiln_conv_epilogue(c, lx_load(b, v->yb, from), kiln_lx_clone(b, to)));
  for (int k = 0; k < 4; k++) kiln_lb_end_for(b);  // w, l and h, nmv
}

void kiln_conv_lower_winograd_runtime(const kiln_lower_ctx *c, const kiln_window *win, int64_t N,
                                      int64_t C, int64_t M, bool flipped) {
  int64_t L = c->f32_lanes > 0 ? c->f32_lanes : 16;
  wino_plan w = {.p = kiln_conv_plan_make(win, N, C, M, L, 0), .planar = true};
  w.L = L, w.CB = C / L, w.MV = M / L;
  w.TH = ceil_div(w.p.OH, 2), w.TW = ceil_div(w.p.OW, 2), w.T = w.TH * w.TW;
  w.p.HP = 2 * w.TH + 2, w.p.WP = 2 * w.TW + 2;
  w.RO = w.MV % 2 == 0 ? 2 : 1;
  register_tile(&w);
  kiln_lb_comment(c->b,
                  "winograd F(2x2, 3x3), run-time weights%s, planar x and y: %lld tiles of 2x2 "
                  "(%lld computed), register tile %lld tiles x %lld x %lld channels",
                  flipped ? " (flipped, transposed)" : "", (long long)w.T, (long long)w.TB,
                  (long long)w.RT, (long long)w.RO, (long long)w.L);
  wino_vars v = {.n = -1, .t = -1, .q = -1, .vb = -1};
  v.up = transform_runtime_weights(c, &w, flipped);
  v.xp = blocked_padded_copy(c, &w);
  bool local_v = u_in_l2(&w);  // V of a register tile in a local array: see fused_gemms
  if (!local_v) v.v = kiln_lower_scratch(c, KILN_F32, N * 16 * w.TB * C);
  v.yb = kiln_lower_scratch(c, KILN_F32, N * M * w.p.OH * w.p.OW);
  if (!local_v) input_transform(c, &w, &v);
  bool bias = !flipped && kiln_has_input(c->node, 2);
  fused_gemms(c, &w, &v, bias ? kiln_in_buf(c, 2) : -1, local_v);
  planar_store(c, &w, &v);
}

// A planar 2-D Conv (or FusedConv) of f32 whose weights are not constants (training state) and
// that kiln_conv_winograd_runtime_fits; its window in *win.
static bool runtime_applies(const kiln_lower_ctx *c, kiln_window *win) {
  const kiln_node *n = c->node;
  const kiln_tensor *x = kiln_lower_in(c, 0), *w = kiln_lower_in(c, 1);
  if (kiln_conv_blocked_lanes(n) || strcmp(kiln_attr_string(n, "algo", "auto"), "auto"))
    return false;
  if (kiln_attr_int(n, "group", 1) != 1 || x->dtype != KILN_F32 || w->dtype != KILN_F32)
    return false;
  if (x->shape.rank != 4 || (w->kind == KILN_TENSOR_PARAM && w->data)) return false;
  if (!kiln_window_resolve_nd(n, NULL, 2, &x->shape.dim[2], &w->shape.dim[2],
                              (kiln_window_opts){.dilations = true}, win))
    return false;
  int64_t lanes = c->f32_lanes > 0 ? c->f32_lanes : 16;
  return kiln_conv_winograd_runtime_fits(win, x->shape.dim[0], x->shape.dim[1], w->shape.dim[0],
                                         lanes);
}

bool kiln_conv_lower_winograd_node_runtime(const kiln_lower_ctx *c) {
  kiln_window win;
  if (!runtime_applies(c, &win)) return false;
  const kiln_shape *x = &kiln_lower_in(c, 0)->shape;
  kiln_conv_lower_winograd_runtime(c, &win, x->dim[0], x->dim[1], kiln_lower_in(c, 1)->shape.dim[0],
                                   false);
  return true;
}

// ---- ConvGradFilter of a 3x3 stride-1 conv: dw = G^T [sum over tiles of Dy (.) V] G ----
// The transpose of F(2x2, 3x3): the 2x2 tile dy_t of dy meets the 4x4 patch d_t of x (the
// forward's), and dw[m][c] = sum over t of corr(d_t[c], dy_t[m]) = G^T [sum over t of
// (A dy_t[m] A^T) (.) (B^T d_t[c] B)] G: 16 GEMMs P[pos] (M x C) = Dy[pos] (M x N*T) V[pos]
// (N*T x C), 16 products per tile and (m, c) instead of 36. Four loop nests after x's NCHWc
// padded copy (blocked_padded_copy), each parallel:
//   V = B^T d B (input_transform; TB = T: the GEMMs reduce over tiles, none is padded)
//   Dy[pos][m][n*T + t] = (A dy_t A^T)[pos]   (dy outside its plane: 0)
//   for q = (pos, c vectors, m rows) (parallel): acc[RT][RO][L] over n, t
//     P[pos][m][c] = sum over n, t of Dy[pos][m][n*T + t] V[n][pos][t][c]
//   dw[m][c][kh][kw] = (G^T P[.][m][c] G)[kh][kw]
// q runs over the m rows of one c block last: its V columns (N*T x RO*L) stay in L1/L2.

// out[k * t] (k < 4) = A in[k * t] (in: 2 values s apart): u0, u0 + u1, u0 - u1, -u1.
static void dy_1d(kiln_lb *b, const int *in, int s, int *out, int t) {
  out[0] = kiln_lb_decl(b, "ad", KILN_F32, lx_var(b, in[0]));
  out[t] = kiln_lb_decl(b, "ad", KILN_F32, add(b, in[0], in[s]));
  out[2 * t] = kiln_lb_decl(b, "ad", KILN_F32, sub(b, in[0], in[s]));
  out[3 * t] = kiln_lb_decl(b, "ad", KILN_F32, lx_unary(b, LU_NEG, lx_var(b, in[s])));
}

// dy[n][m][2*th + i][2*tw + j], 0 outside the plane (odd OH or OW); mn = m*N + n.
static int load_dy(const kiln_lower_ctx *c, const wino_plan *w, int mn, int th, int tw, int i,
                   int j) {
  kiln_lb *b = c->b;
  int64_t N = w->p.N, M = w->p.M, OH = w->p.OH, OW = w->p.OW;
  kiln_lexpr *row = lx_madd(b, lx_var(b, th), 2, lx_int(b, i));
  kiln_lexpr *col = lx_madd(b, lx_var(b, tw), 2, lx_int(b, j));
  kiln_lexpr *in = NULL;
  if (OH % 2 && i) in = lx_bin(b, LB_LT, kiln_lx_clone(b, row), lx_int(b, OH));
  if (OW % 2 && j) {
    kiln_lexpr *cin = lx_bin(b, LB_LT, kiln_lx_clone(b, col), lx_int(b, OW));
    in = in ? lx_bin(b, LB_AND, in, cin) : cin;
  }
  if (OH % 2 && i) row = lx_bin(b, LB_MIN, row, lx_int(b, OH - 1));
  if (OW % 2 && j) col = lx_bin(b, LB_MIN, col, lx_int(b, OW - 1));
  kiln_lexpr *n = lx_bin(b, LB_MOD, lx_var(b, mn), lx_int(b, N));
  kiln_lexpr *plane = lx_madd(b, n, M, lx_bin(b, LB_DIV, lx_var(b, mn), lx_int(b, N)));
  kiln_lexpr *di = lx_madd(b, lx_madd(b, plane, OH, row), OW, col);
  kiln_lexpr *v = lx_load(b, kiln_in_buf(c, 1), di);
  if (in) v = lx_select(b, in, v, lx_float(b, KILN_F32, 0));
  return kiln_lb_decl(b, "u", KILN_F32, v);
}

// Dy's 16 position blocks (M x N*T each) lie DY_POS_PAD floats apart more than their size: at
// M * N*T floats apart (a multiple of 4 KiB on ResNet-18's layer 3), the 16 stores of a tile
// went to one L1 set and evicted each other (docs/performance.md, session 12).
enum { DY_POS_PAD = 16 };

static int64_t dy_pos_stride(const wino_plan *w) { return w->p.M * w->p.N * w->T + DY_POS_PAD; }

// Dy[pos][m][n*T + t] = (A dy_t A^T)[pos] (mn = m*N + n: each Dy row written in order; along
// the tiles of a row).
static int dy_transform(const kiln_lower_ctx *c, const wino_plan *w) {
  kiln_lb *b = c->b;
  int64_t N = w->p.N, M = w->p.M;
  int dy = kiln_lower_scratch(c, KILN_F32, 16 * dy_pos_stride(w));
  int mn = kiln_lb_for_n(b, "mn", M * N), th = kiln_lb_for_n(b, "th", w->TH);
  int tw = kiln_lb_for_n(b, "tw", w->TW);
  int u[4], rows[8], out[16];
  for (int k = 0; k < 4; k++) u[k] = load_dy(c, w, mn, th, tw, k / 2, k % 2);
  for (int j = 0; j < 2; j++) dy_1d(b, &u[j], 2, &rows[j], 2);            // A u: rows[a * 2 + j]
  for (int a = 0; a < 4; a++) dy_1d(b, &rows[a * 2], 1, &out[a * 4], 1);  // (A u) A^T
  kiln_lexpr *t = lx_madd(b, lx_var(b, th), w->TW, lx_var(b, tw));
  for (int pos = 0; pos < 16; pos++) {  // row m*N*T + n*T + t = mn*T + t of the block
    kiln_lexpr *k = lx_madd(b, lx_var(b, mn), w->T, pos ? kiln_lx_clone(b, t) : t);
    kiln_lb_store(b, dy, lx_add(b, lx_int(b, pos * dy_pos_stride(w)), k), lx_var(b, out[pos]));
  }
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // tw, th, mn
  return dy;
}

typedef struct filter_gemm {
  int64_t RT, RO, MB, CB2;  // register tile: m rows by c vectors; m blocks, c-vector blocks
  int q;
} filter_gemm;

static kiln_lexpr *fg_pos(kiln_lb *b, const filter_gemm *f) {
  return lx_bin(b, LB_DIV, lx_var(b, f->q), lx_int(b, f->CB2 * f->MB));
}
static kiln_lexpr *fg_m(kiln_lb *b, const filter_gemm *f, int j) {  // (q % MB) * RT + j
  kiln_lexpr *mb = lx_bin(b, LB_MOD, lx_var(b, f->q), lx_int(b, f->MB));
  return lx_madd(b, mb, f->RT, lx_var(b, j));
}
static kiln_lexpr *fg_c(kiln_lb *b, const wino_plan *w, const filter_gemm *f, int r, int l) {
  kiln_lexpr *cb =
      lx_bin(b, LB_MOD, lx_bin(b, LB_DIV, lx_var(b, f->q), lx_int(b, f->MB)), lx_int(b, f->CB2));
  return lx_madd(b, lx_madd(b, cb, f->RO, lx_var(b, r)), w->L, lx_var(b, l));
}

static int filter_gemms(const kiln_lower_ctx *c, const wino_plan *w, int v, int dy) {
  kiln_lb *b = c->b;
  int64_t M = w->p.M, C = w->p.C, N = w->p.N, T = w->T;
  filter_gemm f = {.RO = w->RO};  // acc_index's
  int64_t most = kiln_target_accumulators((int)w->L) / f.RO;
  for (f.RT = most; M % f.RT; f.RT--) {
  }
  f.MB = M / f.RT, f.CB2 = w->CB / f.RO;
  int p = kiln_lower_scratch(c, KILN_F32, 16 * M * C);
  kiln_lb_comment(b, "winograd dw: 16 GEMMs over %lld tiles, register tile %lld rows x %lld x %lld",
                  (long long)(N * T), (long long)f.RT, (long long)f.RO, (long long)w->L);
  f.q = kiln_lb_for_n(b, "q", 16 * f.CB2 * f.MB);
  int acc = kiln_lb_decl_array(b, "acc", KILN_F32, f.RT * f.RO * w->L);
  int j = kiln_conv_unrolled_for(b, "j", f.RT), r = kiln_conv_unrolled_for(b, "r", f.RO);
  int l = kiln_lb_for_n(b, "l", w->L);
  kiln_lb_store_local(b, acc, acc_index(b, w, j, r, l), lx_float(b, KILN_F32, 0));
  for (int k = 0; k < 3; k++) kiln_lb_end_for(b);  // l, r, j
  int n = kiln_lb_for_n(b, "n", N), t = kiln_lb_for_n(b, "t", T);
  j = kiln_conv_unrolled_for(b, "j", f.RT);
  // Dy[pos][m][n*T + t]: pos * dy_pos_stride + (m*N + n)*T + t
  kiln_lexpr *mn = lx_madd(b, fg_m(b, &f, j), N, lx_var(b, n));
  kiln_lexpr *di = lx_madd(b, fg_pos(b, &f), dy_pos_stride(w), lx_madd(b, mn, T, lx_var(b, t)));
  int dv = kiln_lb_decl(b, "dv", KILN_F32, lx_load(b, dy, di));
  r = kiln_conv_unrolled_for(b, "r", f.RO), l = kiln_lb_for_n(b, "l", w->L);
  kiln_lexpr *vrow = lx_madd(b, lx_madd(b, lx_var(b, n), 16, fg_pos(b, &f)), T, lx_var(b, t));
  kiln_lexpr *vi = lx_madd(b, vrow, C, fg_c(b, w, &f, r, l));
  kiln_lb_store_local(
      b, acc, acc_index(b, w, j, r, l),
      lx_muladd(b, lx_var(b, dv), lx_load(b, v, vi), lx_local(b, acc, acc_index(b, w, j, r, l))));
  for (int k = 0; k < 5; k++) kiln_lb_end_for(b);  // l, r, j, t, n
  j = kiln_conv_unrolled_for(b, "j", f.RT), r = kiln_conv_unrolled_for(b, "r", f.RO);
  l = kiln_lb_for_n(b, "l", w->L);
  kiln_lexpr *prow = lx_madd(b, fg_pos(b, &f), M, fg_m(b, &f, j));
  kiln_lb_store(b, p, lx_madd(b, prow, C, fg_c(b, w, &f, r, l)),
                lx_local(b, acc, acc_index(b, w, j, r, l)));
  for (int k = 0; k < 4; k++) kiln_lb_end_for(b);  // l, r, j, q
  return p;
}

// out[k * t] (k < 3) = G^T in[k * s] (4 values s apart): p0 + (p1 + p2) / 2, (p1 - p2) / 2,
// (p1 + p2) / 2 + p3.
static void filter_1d(kiln_lb *b, const int *in, int s, int *out, int t) {
  int h = kiln_lb_decl(b, "gs", KILN_F32,
                       lx_mul(b, lx_float(b, KILN_F32, 0.5), add(b, in[s], in[2 * s])));
  out[0] = kiln_lb_decl(b, "gt", KILN_F32, add(b, in[0], h));
  out[t] = kiln_lb_decl(b, "gt", KILN_F32,
                        lx_mul(b, lx_float(b, KILN_F32, 0.5), sub(b, in[s], in[2 * s])));
  out[2 * t] = kiln_lb_decl(b, "gt", KILN_F32, add(b, h, in[3 * s]));
}

// dw[m][c][kh][kw] = (G^T P[.][m][c] G)[kh][kw]
static void filter_output(const kiln_lower_ctx *c, const wino_plan *w, int p) {
  kiln_lb *b = c->b;
  int64_t M = w->p.M, C = w->p.C;
  int m = kiln_lb_for_n(b, "m", M), ch = kiln_lb_for_n(b, "c", C);
  int in[16], rows[12], out[9];
  for (int pos = 0; pos < 16; pos++) {
    kiln_lexpr *pi = lx_madd(b, lx_madd(b, lx_int(b, pos), M, lx_var(b, m)), C, lx_var(b, ch));
    in[pos] = kiln_lb_decl(b, "p", KILN_F32, lx_load(b, p, pi));
  }
  for (int e = 0; e < 4; e++) filter_1d(b, &in[e], 4, &rows[e], 4);  // G^T P: rows[k * 4 + e]
  for (int k = 0; k < 3; k++) filter_1d(b, &rows[k * 4], 1, &out[k * 3], 1);  // (G^T P) G
  for (int k = 0; k < 9; k++) {
    kiln_lexpr *di = lx_madd(b, lx_madd(b, lx_var(b, m), C, lx_var(b, ch)), 9, lx_int(b, k));
    kiln_lb_store(b, kiln_out_buf(c, 0), di, lx_var(b, out[k]));
  }
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // c, m
}

void kiln_conv_grad_filter_winograd(const kiln_lower_ctx *c, const kiln_window *win, int64_t N,
                                    int64_t C, int64_t M) {
  int64_t L = c->f32_lanes > 0 ? c->f32_lanes : 16;
  wino_plan w = {.p = kiln_conv_plan_make(win, N, C, M, L, 0), .planar = true};
  w.L = L, w.CB = C / L, w.MV = M / L;
  w.TH = ceil_div(w.p.OH, 2), w.TW = ceil_div(w.p.OW, 2), w.T = w.TB = w.TH * w.TW;
  w.p.HP = 2 * w.TH + 2, w.p.WP = 2 * w.TW + 2;
  w.RO = w.CB % 2 == 0 ? 2 : 1;  // c vectors per register tile of the GEMMs
  kiln_lb_comment(c->b, "winograd F(2x2, 3x3) transposed for dw: %lld tiles of 2x2 per image",
                  (long long)w.T);
  wino_vars v = {.n = -1, .t = -1, .q = -1, .vb = -1};
  v.xp = blocked_padded_copy(c, &w);
  v.v = kiln_lower_scratch(c, KILN_F32, N * 16 * w.T * C);
  input_transform(c, &w, &v);
  int dy = dy_transform(c, &w);
  int p = filter_gemms(c, &w, v.v, dy);
  filter_output(c, &w, p);
}
