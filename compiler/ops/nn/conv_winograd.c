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
} wino_vars;

// The tile's index t (the last tile for those past it).
static kiln_lexpr *tile_index(kiln_lb *b, const wino_plan *w, const wino_vars *v) {
  kiln_lexpr *t = lx_var(b, v->t);
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
  kiln_lexpr *row = lx_madd(b, lx_madd(b, lx_var(b, v->n), 16, lx_int(b, pos)), w->TB, t);
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
      kiln_lexpr *plane = lx_madd(b, lx_var(b, v->n), w->CB, lx_var(b, cb));
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
static void store_output(const kiln_lower_ctx *c, const wino_plan *w, const wino_vars *v, int mv,
                         int l, int a, int e, int val, int bias) {
  kiln_lb *b = c->b;
  kiln_lexpr *in = NULL;
  if (w->p.OH % 2) in = lx_bin(b, LB_LT, tile_pos(b, w, v, 0, a), lx_int(b, w->p.OH));
  if (w->p.OW % 2) {
    kiln_lexpr *col = lx_bin(b, LB_LT, tile_pos(b, w, v, 1, e), lx_int(b, w->p.OW));
    in = in ? lx_bin(b, LB_AND, in, col) : col;
  }
  if (in) kiln_lb_if(b, in);
  kiln_lexpr *plane = lx_madd(b, lx_var(b, v->n), w->MV, lx_var(b, mv));
  kiln_lexpr *row = lx_madd(b, plane, w->p.OH, tile_pos(b, w, v, 0, a));
  kiln_lexpr *col = lx_madd(b, row, w->p.OW, tile_pos(b, w, v, 1, e));
  kiln_lexpr *yi = lx_madd(b, col, w->L, lx_var(b, l));
  kiln_lexpr *sum = add(b, val, bias);
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
  int bias = kiln_lb_decl(b, "bias", KILN_F32,
                          lx_load(b, bp, lx_madd(b, lx_var(b, mv), w->L, lx_var(b, l))));
  for (int e = 0; e < 4; e++) output_1d(b, &m[e], &cols[e], 4);  // A^T m: rows 0, 1 (4 apart)
  for (int a = 0; a < 2; a++) output_1d(b, &cols[a * 4], &y[a * 2], 1);
  for (int a = 0; a < 2; a++)
    for (int e = 0; e < 2; e++) store_output(c, w, v, mv, l, a, e, y[a * 2 + e], bias);
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // l, mv
  if (w->TB > w->T) kiln_lb_end_if(b);
  for (int k = 0; k < 2; k++) kiln_lb_end_for(b);  // t, n
}

void kiln_conv_lower_winograd(const kiln_lower_ctx *c) {
  wino_plan w = make_plan(c);
  int bp;
  wino_vars v = {.n = -1, .t = -1};
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
