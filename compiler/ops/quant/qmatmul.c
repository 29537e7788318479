// The integer matmul behind QLinearMatMul and MatMulInteger (quant.h):
//   acc[t][i][j] = sum over k of (a[t][i][k] - a_zero_point[i]) * (b[t][k][j] - b_zero_point[j])
//   a: (..., M, K) i8/u8   b: (..., K, N) i8/u8   acc: (broadcast(...), M, N) i32
// Zero points are one value or one per row of a (M) / per column of b (N). Products are at most
// 2^16 in magnitude, so sums over K < 2^15 are exact in i32.
// Also the integer GEMM behind the fast lowerings of all four integer ops (kiln_qgemm_lower), and
// the fast lowering of the matmuls (kiln_qmatmul_lower_fast).
#include <stdlib.h>

#include "quant.h"

static kiln_shape batch_of(const kiln_shape *s) {
  kiln_shape b = {.rank = s->rank - 2};
  for (int i = 0; i < b.rank; i++) b.dim[i] = s->dim[i];
  return b;
}

// Element strides of s's batch dims aligned to `batch` (0 where broadcast).
static void batch_strides(const kiln_shape *s, const kiln_shape *batch, int64_t *strides) {
  kiln_shape sb = batch_of(s);
  kiln_broadcast_strides(&sb, batch, strides);
  for (int i = 0; i < batch->rank; i++) strides[i] *= s->dim[s->rank - 2] * s->dim[s->rank - 1];
}

static bool plan(const kiln_shape *a, const kiln_shape *b, kiln_qmatmul_plan *p) {
  kiln_shape ba = batch_of(a), bb = batch_of(b);
  if (!kiln_broadcast_shapes(&ba, &bb, &p->batch)) return false;
  p->M = a->dim[a->rank - 2];
  p->K = a->dim[a->rank - 1];
  p->N = b->dim[b->rank - 1];
  p->batches = kiln_shape_numel(&p->batch);
  batch_strides(a, &p->batch, p->a_stride);
  batch_strides(b, &p->batch, p->b_stride);
  return true;
}

void kiln_qmatmul_plan_of(const kiln_shape *a, const kiln_shape *b, kiln_qmatmul_plan *p) {
  plan(a, b, p);
}

static bool check_operands(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                           const kiln_qmatmul_inputs *q, kiln_qmatmul_plan *p) {
  if (!kiln_op_check_dtypes(g, n, q->a, 1, KILN_DT_QUANT, false, d) ||
      !kiln_op_check_dtypes(g, n, q->b, 1, KILN_DT_QUANT, false, d))
    return false;
  const kiln_tensor *a = kiln_in(g, n, q->a), *b = kiln_in(g, n, q->b);
  if (a->shape.rank < 2 || b->shape.rank < 2) {
    kiln_op_error(
        d, n,
        "inputs: expected tensors of rank >= 2 (1-D operands are not supported), got %s and %s",
        kiln_describe(a).text, kiln_describe(b).text);
    return false;
  }
  if (!plan(&a->shape, &b->shape, p)) {
    kiln_op_error(d, n, "inputs: %s @ %s: batch dimensions do not broadcast (numpy rules)",
                  kiln_describe(a).text, kiln_describe(b).text);
    return false;
  }
  if (b->shape.dim[b->shape.rank - 2] == p->K) return true;
  kiln_op_error(d, n, "inputs: %s @ %s: inner dimensions disagree (K = %lld vs %lld)",
                kiln_describe(a).text, kiln_describe(b).text, (long long)p->K,
                (long long)b->shape.dim[b->shape.rank - 2]);
  return false;
}

bool kiln_qmatmul_check(const kiln_graph *g, const kiln_node *n, kiln_diag *d,
                        const kiln_qmatmul_inputs *q, kiln_shape *out) {
  kiln_qmatmul_plan p;
  if (!check_operands(g, n, d, q, &p)) return false;
  if (!kiln_quant_check_param(g, n, d, q->a_zp, "zero point of a", KILN_DT_QUANT, p.M,
                              "row of a") ||
      !kiln_quant_check_same_dtype(g, n, d, q->a_zp, q->a) ||
      !kiln_quant_check_param(g, n, d, q->b_zp, "zero point of b", KILN_DT_QUANT, p.N,
                              "column of b") ||
      !kiln_quant_check_same_dtype(g, n, d, q->b_zp, q->b))
    return false;
  *out = p.batch;  // out: (batch..., M, N)
  out->dim[out->rank++] = p.M;
  out->dim[out->rank++] = p.N;
  return true;
}

void kiln_qmatmul_accumulate_ref(const kiln_node *n, const kiln_eval_tensor *in,
                                 const kiln_qmatmul_inputs *q, double *acc) {
  kiln_qmatmul_plan p;
  plan(in[q->a].shape, in[q->b].shape, &p);
  int64_t idx[KILN_MAX_RANK];
  for (int64_t t = 0; t < p.batches; t++) {
    kiln_unravel(t, &p.batch, idx);
    const double *a = in[q->a].data + kiln_dot_index(p.batch.rank, idx, p.a_stride);
    const double *b = in[q->b].data + kiln_dot_index(p.batch.rank, idx, p.b_stride);
    for (int64_t i = 0; i < p.M; i++)
      for (int64_t j = 0; j < p.N; j++) {
        int64_t a_zp = (int64_t)kiln_quant_param_ref(n, in, q->a_zp, i);
        int64_t b_zp = (int64_t)kiln_quant_param_ref(n, in, q->b_zp, j);
        int64_t sum = 0;
        for (int64_t k = 0; k < p.K; k++)
          sum += ((int64_t)a[i * p.K + k] - a_zp) * ((int64_t)b[k * p.N + j] - b_zp);
        acc[(t * p.M + i) * p.N + j] = (double)sum;
      }
  }
}

// ---- Lowering ----
// One loop over the output rows r = t * M + i of every batch t (the parallel loop), an i32
// accumulator row per output row, the innermost loop over columns:
//   for r: t = r / M, i = r % M, a_row = base_a(t) + i * K, b_base = base_b(t), azp = a_zp[i]
//     acc[0..N) = 0
//     for k: av = a[a_row + k] - azp; for j: acc[j] += av * (b[b_base + k * N + j] - b_zp[j])
//     for j: y[r * N + j] = finish(acc[j])

// The element offset of batch t (an i64 expression of the variable t) in an operand with the
// given per-batch-dim strides: sum over d of ((t / inner_d) % batch_d) * stride_d.
static kiln_lexpr *batch_offset(kiln_lb *b, const kiln_qmatmul_plan *p, const int64_t *strides,
                                int t) {
  kiln_lexpr *offset = lx_int(b, 0);
  int64_t inner = 1;
  for (int d = p->batch.rank - 1; d >= 0; d--) {
    if (strides[d] != 0 && p->batch.dim[d] > 1) {
      kiln_lexpr *idx = lx_bin(b, LB_DIV, lx_var(b, t), lx_int(b, inner));
      if (d > 0) idx = lx_bin(b, LB_MOD, idx, lx_int(b, p->batch.dim[d]));
      offset = lx_add(b, offset, lx_mul(b, idx, lx_int(b, strides[d])));
    }
    inner *= p->batch.dim[d];
  }
  return offset;
}

typedef struct qmm_vars {
  int r, t, i, a_row, b_base, a_zp, acc;
} qmm_vars;

// t, i, the row of a and the matrix of b, and a's zero point for this row.
static void row_locals(const kiln_lower_ctx *c, const kiln_qmatmul_inputs *q,
                       const kiln_qmatmul_plan *p, qmm_vars *v) {
  kiln_lb *b = c->b;
  v->t = kiln_lb_decl(b, "t", KILN_I64, lx_bin(b, LB_DIV, lx_var(b, v->r), lx_int(b, p->M)));
  v->i = kiln_lb_decl(b, "i", KILN_I64, lx_bin(b, LB_MOD, lx_var(b, v->r), lx_int(b, p->M)));
  kiln_lexpr *a_row =
      lx_add(b, batch_offset(b, p, p->a_stride, v->t), lx_mul(b, lx_var(b, v->i), lx_int(b, p->K)));
  v->a_row = kiln_lb_decl(b, "a_row", KILN_I64, a_row);
  v->b_base = kiln_lb_decl(b, "b_base", KILN_I64, batch_offset(b, p, p->b_stride, v->t));
  v->a_zp =
      kiln_lb_decl(b, "azp", KILN_I32, kiln_quant_param_lx(c, q->a_zp, lx_var(b, v->i), KILN_I32));
}

// for k: av = a[a_row + k] - azp; for j: acc[j] += av * (b[b_base + k * N + j] - bzp[j])
static void accumulate(const kiln_lower_ctx *c, const kiln_qmatmul_inputs *q,
                       const kiln_qmatmul_plan *p, const qmm_vars *v) {
  kiln_lb *b = c->b;
  int k = kiln_lb_for_n(b, "k", p->K);
  kiln_lexpr *a = lx_load(b, kiln_in_buf(c, q->a), lx_add(b, lx_var(b, v->a_row), lx_var(b, k)));
  int av = kiln_lb_decl(b, "av", KILN_I32,
                        lx_bin(b, LB_SUB, lx_cast(b, KILN_I32, a), lx_var(b, v->a_zp)));
  int j = kiln_lb_for_n(b, "j", p->N);
  kiln_lexpr *b_index = lx_add(
      b, lx_add(b, lx_var(b, v->b_base), lx_mul(b, lx_var(b, k), lx_int(b, p->N))), lx_var(b, j));
  kiln_lexpr *bv =
      lx_bin(b, LB_SUB, lx_cast(b, KILN_I32, lx_load(b, kiln_in_buf(c, q->b), b_index)),
             kiln_quant_param_lx(c, q->b_zp, lx_var(b, j), KILN_I32));
  kiln_lexpr *sum =
      lx_bin(b, LB_ADD, lx_local(b, v->acc, lx_var(b, j)), lx_bin(b, LB_MUL, lx_var(b, av), bv));
  kiln_lb_store_local(b, v->acc, lx_var(b, j), sum);
  kiln_lb_end_for(b);  // j
  kiln_lb_end_for(b);  // k
}

void kiln_qmatmul_lower(const kiln_lower_ctx *c, const kiln_qmatmul_inputs *q,
                        kiln_qmatmul_store_fn finish) {
  kiln_lb *b = c->b;
  const kiln_tensor *a = kiln_lower_in(c, q->a), *bt = kiln_lower_in(c, q->b);
  kiln_lb_comment(b, "%s %s: %s @ %s -> %s", kiln_op_get(c->node->op)->name, c->node->name,
                  kiln_describe(a).text, kiln_describe(bt).text,
                  kiln_describe(kiln_lower_out(c, 0)).text);
  kiln_qmatmul_plan p;
  plan(&a->shape, &bt->shape, &p);
  qmm_vars v;
  v.r = kiln_lb_for_n(b, "r", p.batches * p.M);
  row_locals(c, q, &p, &v);
  v.acc = kiln_lb_decl_array(b, "acc", KILN_I32, p.N);
  int j = kiln_lb_for_n(b, "j", p.N);
  kiln_lb_store_local(b, v.acc, lx_var(b, j), lx_cast(b, KILN_I32, lx_int(b, 0)));
  kiln_lb_end_for(b);
  accumulate(c, q, &p, &v);
  j = kiln_lb_for_n(b, "j", p.N);
  kiln_lexpr *y = finish(c, lx_local(b, v.acc, lx_var(b, j)), v.i, j);
  kiln_lb_store(b, kiln_out_buf(c, 0),
                lx_add(b, lx_mul(b, lx_var(b, v.r), lx_int(b, p.N)), lx_var(b, j)), y);
  kiln_lb_end_for(b);  // j
  kiln_lb_end_for(b);  // r
}

// A multiply and an add per (i, j, k) of every batch.
int64_t kiln_qmatmul_flops(const kiln_graph *g, const kiln_node *n) {
  const kiln_tensor *a = kiln_in(g, n, 0);
  return 2 * kiln_shape_numel(&kiln_out(g, n, 0)->shape) * a->shape.dim[a->shape.rank - 1];
}

// ---- The integer GEMM of the fast lowerings (quant.h) ----
// w is packed at compile time as [cols / L][kp / 4][L][4] (L lanes: 16 for AVX-512, 8 for AVX2,
// 4 otherwise; columns past cols are zero), so that 4 bytes of a row of a, broadcast, meet 4
// bytes of each of L columns in one loop IR dot4 (vpdpbusd): the sums accumulate in the lanes
// and no horizontal sum is needed. Blocks of the larger operand outermost (the parallel loop): 48
// rows, or vb * L columns when there are more columns than rows, so that the smaller operand is
// the one read again for every block, from cache. In a block:
//   for column tiles jv0 (vb vectors of L columns), row tiles r0 (rb rows; tails smaller):
//     s[i][v][0..L) = 0                                        (rb * vb lane accumulators)
//     for k4 < kp / 4: s[i][v] += dot4(a[r0 + i][4 k4..], w'[jv0 + v][k4])
//     for l: acc[block's (r0 + i, (jv0 + v) * L + l)] = s[i][v][l]   (columns < cols)
//   for j, r of the block (vectorized over r): y[index(r, j)] =
//       requantize(acc[block's (r, j)] - x_zp * sum_w[j] (+ bias[j]), mult[j], y_zp)
// The block's sums are laid out column by column in its own part of acc (qgemm_rows), so the
// lanes' stores stay in cache and the requantize loop reads them in order; stored at y's indices
// (16 lanes 16 image planes apart), those stores had cost 4 times the products of ResNet's stem.
// Without a multiplier the tiles store s - x_zp * sum_w[j] (+ bias[j]) to y directly.

enum { QGEMM_ROW_BLOCK = 48 };  // 12 tiles of 4 rows; 48 rows x 64 columns of sums: 12 KB

typedef struct qgemm_shape {
  int64_t lanes;  // L: columns per lane accumulator
  int64_t rb;     // rows per tile
  int64_t vb;     // lane accumulators (column vectors) per tile
} qgemm_shape;

// Tiles of rb * vb accumulators plus vb vectors of w fit the registers: 32 zmm, 16 ymm.
static qgemm_shape qgemm_shape_of(int64_t lanes) {
  if (lanes == 16) return (qgemm_shape){16, 4, 4};
  if (lanes == 8) return (qgemm_shape){8, 3, 2};
  return (qgemm_shape){lanes, 2, 2};
}

int64_t kiln_qgemm_kp(const kiln_lower_ctx *c, int64_t k) {
  int64_t unit = c->amx ? 64 : 4;  // AMX: whole 64-byte rows of A tiles
  return (k + unit - 1) / unit * unit;
}

static int64_t qgemm_lanes(const kiln_lower_ctx *c) {
  if (c->amx) return 16;  // B tiles: 16 columns of 4 bytes per row
  return c->f32_lanes == 8 || c->f32_lanes == 4 ? c->f32_lanes : 16;
}

void kiln_qgemm_pack(const kiln_lower_ctx *c, kiln_qgemm *q, const int8_t *packed) {
  int64_t L = q->lanes = qgemm_lanes(c), kq = q->kp / 4, vecs = (q->cols + L - 1) / L;
  int32_t *sums = kiln_xcalloc((size_t)q->cols, sizeof(int32_t));
  int8_t *lanes = kiln_xcalloc((size_t)(vecs * L * q->kp), 1);
  for (int64_t j = 0; j < q->cols; j++)
    for (int64_t k = 0; k < q->kp; k++) {
      sums[j] += packed[j * q->kp + k];
      lanes[(((j / L) * kq + k / 4) * L + j % L) * 4 + k % 4] = packed[j * q->kp + k];
    }
  q->w = kiln_lower_derived(c, "wpacked", KILN_I8, lanes, vecs * L * q->kp);
  q->out.sum_w = kiln_lower_derived(c, "wsum", KILN_I32, sums, q->cols);
  free(lanes);
  free(sums);
}

// s - x_zp * sum_w[col] (+ bias[col]): the exact integer sum of the op (col is cloned for each
// use).
static kiln_lexpr *qgemm_sum(const kiln_lower_ctx *c, const kiln_qgemm_out *o, kiln_lexpr *s,
                             kiln_lexpr *col) {
  kiln_lb *b = c->b;
  kiln_lexpr *zero_fix =
      lx_bin(b, LB_MUL, lx_var(b, o->x_zp), lx_load(b, o->sum_w, kiln_lx_clone(b, col)));
  kiln_lexpr *v = lx_bin(b, LB_SUB, s, zero_fix);
  if (o->bias >= 0 && kiln_has_input(c->node, o->bias))
    v = lx_bin(b, LB_ADD, v, lx_load(b, kiln_in_buf(c, o->bias), kiln_lx_clone(b, col)));
  return v;
}

// first + i (first cloned)
static kiln_lexpr *qgemm_at(kiln_lb *b, kiln_lexpr *first, kiln_lexpr *i) {
  return lx_add(b, kiln_lx_clone(b, first), i);
}

// Where row r0 + i's bytes (of run `run`, with implicit patches) start in a: an i64 local.
static int qgemm_row_start(const kiln_lower_ctx *c, const kiln_qgemm *q, kiln_lexpr *r0, int64_t i,
                           int run) {
  kiln_lb *b = c->b;
  kiln_lexpr *row = qgemm_at(b, r0, lx_int(b, i));
  kiln_lexpr *at = q->run_at ? q->run_at(c, q->user, row, run)
                             : lx_add(b, lx_int(b, q->a_offset), lx_mul(b, row, lx_int(b, q->kp)));
  return kiln_lb_decl(b, "a_at", KILN_I64, at);
}

// The k loop of a tile: s[i * vb + v] += dot4(a row r0 + i, w' vector jv0 + v) for k4 < kp / 4
// (with implicit patches: for each run, k4 over the run).
static void qgemm_tile_k(const kiln_lower_ctx *c, const kiln_qgemm *q, const int *s, kiln_lexpr *r0,
                         int64_t rb, kiln_lexpr *jv0, int64_t vb) {
  kiln_lb *b = c->b;
  int64_t L = q->lanes, kq = q->kp / 4, run_k4 = q->run_at ? q->run_k / 4 : kq;
  int run = q->run_at ? kiln_lb_for_n(b, "run", q->runs) : -1;
  int start[16];
  for (int64_t i = 0; i < rb; i++) start[i] = qgemm_row_start(c, q, r0, i, run);
  int k = kiln_lb_for_n(b, "k4", run_k4);
  for (int64_t i = 0; i < rb; i++)
    for (int64_t v = 0; v < vb; v++) {
      kiln_lexpr *a_at = lx_madd(b, lx_var(b, k), 4, lx_var(b, start[i]));
      kiln_lexpr *k4 = run >= 0 ? lx_madd(b, lx_var(b, run), run_k4, lx_var(b, k)) : lx_var(b, k);
      kiln_lexpr *vec = qgemm_at(b, jv0, lx_int(b, v));
      kiln_lexpr *w_at = lx_mul(b, lx_madd(b, vec, kq, k4), lx_int(b, 4 * L));
      kiln_lb_dot4(b, s[i * vb + v], q->a, a_at, q->w, w_at);
    }
  kiln_lb_end_for(b);  // k4
  if (run >= 0) kiln_lb_end_for(b);
}

// A block's rows: [r0, r0 + rows). Its sums are kept in acc from r0 * cols on, column by column:
// acc[r0 * cols + j * rows + (r - r0)] (in cache when the block's requantize loop reads them).
// With AMX the sums are row by row: acc[r * cols + j] (row_major).
typedef struct qgemm_rows {
  kiln_lexpr *r0;
  int64_t rows;
  bool row_major;
} qgemm_rows;

static kiln_lexpr *qgemm_acc_at(kiln_lb *b, const kiln_qgemm *q, const qgemm_rows *blk,
                                kiln_lexpr *local_row, kiln_lexpr *col) {
  if (blk->row_major) return lx_madd(b, qgemm_at(b, blk->r0, local_row), q->cols, col);
  return lx_madd(b, kiln_lx_clone(b, blk->r0), q->cols, lx_madd(b, col, blk->rows, local_row));
}

// One tile: rb rows from the block's row lr0 by vb vectors of columns from vector jv0, the last
// vector's first last_lanes columns real.
static void qgemm_tile(const kiln_lower_ctx *c, const kiln_qgemm *q, const qgemm_rows *blk,
                       kiln_lexpr *lr0, int64_t rb, kiln_lexpr *jv0, int64_t vb,
                       int64_t last_lanes) {
  kiln_lb *b = c->b;
  int64_t L = q->lanes;
  int s[16];
  for (int64_t e = 0; e < rb * vb; e++) s[e] = kiln_lb_decl_lanes(b, "s", (int)L);
  kiln_lexpr *r0 = qgemm_at(b, blk->r0, kiln_lx_clone(b, lr0));
  qgemm_tile_k(c, q, s, r0, rb, jv0, vb);
  bool later = q->out.mult >= 0;  // the requantize loop completes the sums
  for (int64_t i = 0; i < rb; i++)
    for (int64_t v = 0; v < vb; v++) {
      int l = kiln_lb_for_n(b, "l", v == vb - 1 ? last_lanes : L);
      kiln_lb_unroll(b, (int)L);
      kiln_lexpr *col = lx_madd(b, qgemm_at(b, jv0, lx_int(b, v)), L, lx_var(b, l));
      kiln_lexpr *sum = lx_local(b, s[i * vb + v], lx_var(b, l));
      if (later) {
        kiln_lb_store(b, q->acc, qgemm_acc_at(b, q, blk, qgemm_at(b, lr0, lx_int(b, i)), col), sum);
      } else {
        kiln_lexpr *at = q->index(c, q->user, qgemm_at(b, r0, lx_int(b, i)), kiln_lx_clone(b, col));
        kiln_lb_store(b, kiln_out_buf(c, 0), at, qgemm_sum(c, &q->out, sum, col));
      }
      kiln_lb_end_for(b);  // l
    }
}

// The row tiles of the block's rows for the given column vectors.
static void qgemm_row_tiles(const kiln_lower_ctx *c, const kiln_qgemm *q, const qgemm_shape *sh,
                            const qgemm_rows *blk, kiln_lexpr *jv0, int64_t vb,
                            int64_t last_lanes) {
  kiln_lb *b = c->b;
  int64_t whole = blk->rows / sh->rb, rest = blk->rows % sh->rb;
  if (whole) {
    int rt = kiln_lb_for_n(b, "rt", whole);
    qgemm_tile(c, q, blk, lx_mul(b, lx_var(b, rt), lx_int(b, sh->rb)), sh->rb, jv0, vb, last_lanes);
    kiln_lb_end_for(b);
  }
  if (rest) qgemm_tile(c, q, blk, lx_int(b, whole * sh->rb), rest, jv0, vb, last_lanes);
}

// y[index(r0 + r, j0 + j)] = requantize(the block's sum (r, j0 + j), mult[j0 + j], y_zp),
// vectorized over r.
static void qgemm_requantize(const kiln_lower_ctx *c, const kiln_qgemm *q, const qgemm_rows *blk,
                             kiln_lexpr *j0, int64_t cols) {
  kiln_lb *b = c->b;
  int j, r;  // the sums' rows innermost (vectorized), or with AMX their columns
  if (blk->row_major) {
    r = kiln_lb_for_n(b, "r", blk->rows), j = kiln_lb_for_n(b, "j", cols);
  } else {
    j = kiln_lb_for_n(b, "j", cols), r = kiln_lb_for_n(b, "r", blk->rows);
  }
  kiln_lexpr *col = qgemm_at(b, j0, lx_var(b, j));
  kiln_lexpr *row = qgemm_at(b, blk->r0, lx_var(b, r));
  kiln_lexpr *at = q->index(c, q->user, row, kiln_lx_clone(b, col));
  kiln_lexpr *from = qgemm_acc_at(b, q, blk, lx_var(b, r), kiln_lx_clone(b, col));
  kiln_lexpr *acc = qgemm_sum(c, &q->out, lx_load(b, q->acc, from), col);
  if (q->out.mult < 0) {  // the i32 sums themselves (AMX)
    kiln_lb_store(b, kiln_out_buf(c, 0), at, acc);
  } else {
    kiln_lexpr *zp = kiln_quant_param_lx(c, q->out.y_zp, lx_int(b, 0), KILN_I32);
    kiln_lexpr *m = lx_load(b, q->out.mult, kiln_lx_clone(b, col));
    kiln_dtype t = kiln_lower_out(c, 0)->dtype;
    kiln_lexpr *y =
        q->out.small
            ? kiln_quant_saturate_small_lx(
                  b, lx_bin(b, LB_MUL, lx_cast(b, KILN_F64, acc), lx_cast(b, KILN_F64, m)), zp, t)
            : kiln_quant_requantize_lx(b, acc, m, zp, t);
    kiln_lb_store(b, kiln_out_buf(c, 0), at, y);
  }
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
}

// One block: the block's rows by columns [jv0 * L, jv0 * L + cols).
static void qgemm_block(const kiln_lower_ctx *c, const kiln_qgemm *q, const qgemm_shape *sh,
                        const qgemm_rows *blk, kiln_lexpr *jv0, int64_t cols) {
  kiln_lb *b = c->b;
  int64_t L = q->lanes, tile = sh->vb * L, whole = cols / tile, rest = cols % tile;
  if (whole) {
    int jt = kiln_lb_for_n(b, "jt", whole);
    kiln_lexpr *first = qgemm_at(b, jv0, lx_mul(b, lx_var(b, jt), lx_int(b, sh->vb)));
    qgemm_row_tiles(c, q, sh, blk, first, sh->vb, L);
    kiln_lb_end_for(b);
  }
  if (rest) {
    int64_t vecs = (rest + L - 1) / L;
    kiln_lexpr *first = qgemm_at(b, jv0, lx_int(b, whole * sh->vb));
    qgemm_row_tiles(c, q, sh, blk, first, vecs, rest - (vecs - 1) * L);
  }
  if (q->out.mult >= 0) qgemm_requantize(c, q, blk, lx_mul(b, jv0, lx_int(b, L)), cols);
}

// ---- The AMX path (kiln_lower_ctx.amx): LS_TILEDOT ----
// Blocks of rows (AMX_ROW_BLOCK, or one output row of a convolution with implicit patches: a
// tile's rows must be equally spaced in a), or of AMX_TILE columns when there are more columns
// than rows; in a block:
//   for column tiles (32 columns), row tiles (up to 32 rows, equal sizes where they can be):
//     acc[r][j] = tiledot(a rows, w' columns)
//   (the block's sums column by column as in the dot4 path when y's rows are contiguous
//   (out_by_cols: a convolution's NCHW planes), else row by row: acc[r * cols + j])
//   for j, r of the block: y[index(r, j)] = requantize(acc[r][j] - x_zp * sum_w[j] (+ bias[j]))
enum { AMX_TILE = 32, AMX_ROW_BLOCK = 64 };

// One tiledot: the block's rows [lrow, lrow + rows) by columns [col, col + cols), col a multiple
// of 16; the sums go to the block's part of acc (qgemm_acc_at).
static void amx_tile(const kiln_lower_ctx *c, const kiln_qgemm *q, const qgemm_rows *blk,
                     kiln_lexpr *lrow, int64_t rows, kiln_lexpr *col, int64_t cols) {
  kiln_lb *b = c->b;
  kiln_lexpr *row = qgemm_at(b, blk->r0, kiln_lx_clone(b, lrow));
  kiln_lexpr *a_at;
  if (q->run_at) {
    int run0 = kiln_lb_decl(b, "run0", KILN_I64, lx_int(b, 0));
    a_at = q->run_at(c, q->user, kiln_lx_clone(b, row), run0);
  } else {
    a_at = lx_madd(b, kiln_lx_clone(b, row), q->kp, lx_int(b, q->a_offset));
  }
  bool runs = q->run_at != NULL;
  kiln_ltile t = {.rows = rows,
                  .cols = cols,
                  .k = q->kp,
                  .a_ld = runs ? q->row_ld : q->kp,
                  .run_k = runs ? q->run_k : q->kp,
                  .run_ld = runs ? q->run_ld : 0,
                  .w_ld = q->kp * 16,
                  .c_row = blk->row_major ? q->cols : 1,
                  .c_col = blk->row_major ? 1 : blk->rows};
  kiln_lexpr *c_at = qgemm_acc_at(b, q, blk, lrow, kiln_lx_clone(b, col));
  kiln_lb_tiledot(b, q->acc, c_at, q->a, a_at, q->w, lx_mul(b, col, lx_int(b, q->kp)), &t);
}

// A span of n rows or columns from `first` (rows: from the block's first), cut into tiles of `tile`
// (whole ones in a loop, then the rest).
typedef struct amx_span {
  kiln_lexpr *first;
  int64_t n, tile;
} amx_span;

// first + var * tile + offset (var < 0: none), a fresh expression.
static kiln_lexpr *amx_span_at(kiln_lb *b, const amx_span *s, int64_t offset, int var) {
  kiln_lexpr *at =
      var >= 0 ? lx_madd(b, lx_var(b, var), s->tile, lx_int(b, offset)) : lx_int(b, offset);
  return qgemm_at(b, s->first, at);
}

// Tiles of at most 32 rows, as equal as whole tiles allow (56 rows: 2 of 28, not 32 and 24):
// a thread loads a new tile configuration (slow) only when the tiles' sizes change.
static int64_t amx_row_tile(int64_t n) {
  int64_t tiles = (n + AMX_TILE - 1) / AMX_TILE;
  return (n + tiles - 1) / tiles;
}

// The block's tiles: its rows (rs) by the columns of `cs`.
static void amx_block_tiles(const kiln_lower_ctx *c, const kiln_qgemm *q, const qgemm_rows *blk,
                            const amx_span *rs, const amx_span *cs) {
  kiln_lb *b = c->b;
  int64_t cw = cs->n / cs->tile, rw = rs->n / rs->tile;
  for (int cp = 0; cp < 2; cp++) {  // whole column tiles, then the rest
    int64_t cols = cp == 0 ? cs->tile : cs->n % cs->tile;
    if ((cp == 0 && !cw) || !cols) continue;
    int jt = cp == 0 ? kiln_lb_for_n(b, "jt", cw) : -1;
    for (int rp = 0; rp < 2; rp++) {
      int64_t rows = rp == 0 ? rs->tile : rs->n % rs->tile;
      if ((rp == 0 && !rw) || !rows) continue;
      int rt = rp == 0 ? kiln_lb_for_n(b, "rt", rw) : -1;
      kiln_lexpr *row = amx_span_at(b, rs, rp == 0 ? 0 : rw * rs->tile, rt);
      kiln_lexpr *col = amx_span_at(b, cs, cp == 0 ? 0 : cw * cs->tile, jt);
      amx_tile(c, q, blk, row, rows, col, cols);
      if (rt >= 0) kiln_lb_end_for(b);
    }
    if (jt >= 0) kiln_lb_end_for(b);
  }
}

static void qgemm_lower_amx(const kiln_lower_ctx *c, const kiln_qgemm *q) {
  kiln_lb *b = c->b;
  bool cols_outer = !q->run_at && q->cols > q->rows;
  int64_t block = cols_outer ? AMX_TILE : q->run_at ? q->row_seg : AMX_ROW_BLOCK;
  int64_t n = cols_outer ? q->cols : q->rows, whole = n / block, rest = n % block;
  kiln_lb_comment(b, "integer GEMM: %lld x %lld, k %lld; AMX tiles in blocks of %lld %s",
                  (long long)q->rows, (long long)q->cols, (long long)q->kp, (long long)block,
                  cols_outer ? "columns" : "rows");
  for (int part = 0; part < 2; part++) {  // the whole blocks, then the rest
    int64_t size = part == 0 ? block : rest;
    if ((part == 0 && !whole) || size == 0) continue;
    int ot = part == 0 ? kiln_lb_for_n(b, cols_outer ? "jb" : "rb", whole) : -1;
    kiln_lexpr *first = lx_mul(b, part == 0 ? lx_var(b, ot) : lx_int(b, whole), lx_int(b, block));
    int64_t rows = cols_outer ? q->rows : size;
    qgemm_rows blk = {cols_outer ? lx_int(b, 0) : first, rows, !q->out_by_cols};
    amx_span rs = {lx_int(b, 0), rows, amx_row_tile(rows)};
    amx_span cs = {cols_outer ? first : lx_int(b, 0), cols_outer ? size : q->cols, AMX_TILE};
    amx_block_tiles(c, q, &blk, &rs, &cs);
    qgemm_requantize(c, q, &blk, cs.first, cs.n);
    if (part == 0) kiln_lb_end_for(b);
  }
}

void kiln_qgemm_lower(const kiln_lower_ctx *c, const kiln_qgemm *q) {
  kiln_lb *b = c->b;
  if (c->amx) {
    qgemm_lower_amx(c, q);
    return;
  }
  qgemm_shape sh = qgemm_shape_of(q->lanes);
  bool cols_outer = q->cols > q->rows;
  int64_t block = cols_outer ? sh.vb * sh.lanes : QGEMM_ROW_BLOCK;
  int64_t n = cols_outer ? q->cols : q->rows, whole = n / block, rest = n % block;
  kiln_lb_comment(b,
                  "integer GEMM: %lld x %lld, k %lld; dot4 tiles of %lld rows x %lld x %lld "
                  "columns in blocks of %lld %s",
                  (long long)q->rows, (long long)q->cols, (long long)q->kp, (long long)sh.rb,
                  (long long)sh.vb, (long long)sh.lanes, (long long)block,
                  cols_outer ? "columns" : "rows");
  for (int part = 0; part < 2; part++) {  // the whole blocks, then the rest
    int64_t size = part == 0 ? block : rest;
    if ((part == 0 && !whole) || size == 0) continue;
    int ot = part == 0 ? kiln_lb_for_n(b, cols_outer ? "jb" : "rb", whole) : -1;
    kiln_lexpr *first = part == 0 ? lx_var(b, ot) : lx_int(b, whole);
    if (cols_outer) {
      qgemm_rows all = {lx_int(b, 0), q->rows, false};
      qgemm_block(c, q, &sh, &all, lx_mul(b, first, lx_int(b, sh.vb)), size);
    } else {
      qgemm_rows blk = {lx_mul(b, first, lx_int(b, block)), size, false};
      qgemm_block(c, q, &sh, &blk, lx_int(b, 0), q->cols);
    }
    if (part == 0) kiln_lb_end_for(b);
  }
}

// ---- The fast lowering of QLinearMatMul / MatMulInteger (quant.h) ----
//   a' = a as (rows, kp) u8 (a itself when it is u8 and K == kp; else +128 for i8, zeros past K)
//   b packed at compile time as (N, kp) i8: b' [j][k] = b[k][j]
//   y[r][j] = kiln_qgemm over a' and b'

static bool qmatmul_fast_applies(const kiln_lower_ctx *c, const kiln_qmatmul_inputs *q) {
  const kiln_graph *g = c->g;
  const kiln_node *n = c->node;
  const kiln_tensor *a = kiln_lower_in(c, q->a), *bt = kiln_lower_in(c, q->b);
  int64_t K = a->shape.dim[a->shape.rank - 1], N = bt->shape.dim[bt->shape.rank - 1];
  if (bt->dtype != KILN_I8 || !kiln_quant_is_const(g, n, q->b)) return false;
  if (kiln_shape_numel(&bt->shape) != K * N) return false;  // one b for every batch
  if (kiln_shape_numel(&kiln_lower_out(c, 0)->shape) / N != kiln_shape_numel(&a->shape) / K)
    return false;  // b's batch dims would repeat a
  if (!kiln_quant_zero_or_absent(g, n, q->b_zp) || kiln_quant_per_channel(g, n, q->a_zp))
    return false;
  return q->y_zp < 0 || kiln_quant_scales_const(g, n, q->a_scale, q->b_scale, q->y_scale);
}

// a' (rows, kp): a's values made unsigned, zeros past K.
static void qmatmul_copy_a(const kiln_lower_ctx *c, const kiln_qmatmul_inputs *q, kiln_qgemm *g,
                           int64_t K) {
  kiln_lb *b = c->b;
  const kiln_tensor *a = kiln_lower_in(c, q->a);
  int r = kiln_lb_for_n(b, "r", g->rows), k = kiln_lb_for_n(b, "k", K);
  kiln_lexpr *x = lx_load(b, kiln_in_buf(c, q->a), lx_madd(b, lx_var(b, r), K, lx_var(b, k)));
  kiln_lb_store(b, g->a, lx_madd(b, lx_var(b, r), g->kp, lx_var(b, k)),
                kiln_quant_unsigned_lx(b, x, a->dtype));
  kiln_lb_end_for(b);  // k
  if (g->kp > K) {
    k = kiln_lb_for(b, "k", lx_int(b, K), lx_int(b, g->kp));
    kiln_lb_store(b, g->a, lx_madd(b, lx_var(b, r), g->kp, lx_var(b, k)),
                  lx_cast(b, KILN_U8, lx_int(b, 0)));
    kiln_lb_end_for(b);
  }
  kiln_lb_end_for(b);  // r
}

static kiln_lexpr *qmatmul_index(const kiln_lower_ctx *c, const void *user, kiln_lexpr *row,
                                 kiln_lexpr *col) {
  return lx_add(c->b, lx_mul(c->b, row, lx_int(c->b, *(const int64_t *)user)), col);
}

bool kiln_qmatmul_lower_fast(const kiln_lower_ctx *c, const kiln_qmatmul_inputs *q) {
  if (!qmatmul_fast_applies(c, q)) return false;
  kiln_lb *b = c->b;
  const kiln_tensor *a = kiln_lower_in(c, q->a), *bt = kiln_lower_in(c, q->b);
  int64_t K = a->shape.dim[a->shape.rank - 1], N = bt->shape.dim[bt->shape.rank - 1];
  kiln_lb_comment(b, "%s %s (VNNI-friendly): %s @ %s -> %s", kiln_op_get(c->node->op)->name,
                  c->node->name, kiln_describe(a).text, kiln_describe(bt).text,
                  kiln_describe(kiln_lower_out(c, 0)).text);
  kiln_qgemm g = {.a = kiln_in_buf(c, q->a),
                  .rows = kiln_shape_numel(&a->shape) / K,
                  .cols = N,
                  .kp = kiln_qgemm_kp(c, K),
                  .out = {.bias = -1, .mult = -1, .y_zp = q->y_zp},
                  .index = qmatmul_index,
                  .user = &N};
  int8_t *packed = kiln_xcalloc((size_t)(N * g.kp), 1);
  for (int64_t j = 0; j < N; j++)
    for (int64_t k = 0; k < K; k++) packed[j * g.kp + k] = (int8_t)kiln_tensor_get(bt, k * N + j);
  kiln_qgemm_pack(c, &g, packed);
  free(packed);
  if (q->y_zp >= 0)
    g.out.mult = kiln_quant_multipliers(c, q->a_scale, q->b_scale, q->y_scale, N, &g.out.small);
  g.out.x_zp = kiln_quant_unsigned_zp(c, q->a_zp, a->dtype);
  bool copy = a->dtype != KILN_U8 || g.kp != K;
  int bytes;
  bool acc = g.out.mult >= 0 || c->amx;  // AMX stores every tile's sums there
  kiln_quant_scratch(c, acc ? g.rows * N : 0, copy ? g.rows * g.kp : 0, &g.acc, &bytes);
  if (copy) {
    g.a = bytes;
    qmatmul_copy_a(c, q, &g, K);
  }
  kiln_qgemm_lower(c, &g);
  return true;
}
