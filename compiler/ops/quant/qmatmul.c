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
// Blocks of the larger operand outermost (the parallel loop): 64 rows, or 4 columns when there are
// more columns than rows, so that the smaller operand is the one read again for every block, from
// cache. In a block:
//   for column tiles j0, row tiles r0 (rb rows by cb columns; tails narrower):
//     s[i][j] = 0                                       (rb * cb i32 locals)
//     for k < kp: s[i][j] += a[r0 + i][k] * w[j0 + j][k]
//     acc[index(r0 + i, j0 + j)] = s[i][j]
//   for j, r of the block (vectorized over r): y[index(r, j)] =
//       requantize(acc[index(r, j)] - x_zp * sum_w[j] (+ bias[j]), mult[j], y_zp)
// Without a multiplier the tiles store s[i][j] - x_zp * sum_w[j] (+ bias[j]) to y directly.

enum { QGEMM_MAX_ROWS = 4, QGEMM_COLS = 4, QGEMM_ROW_BLOCK = 64 };

int64_t kiln_qgemm_kp(const kiln_lower_ctx *c, int64_t k) {
  int64_t vec = 4 * (c->f32_lanes > 0 ? c->f32_lanes : 16);
  return (k + vec - 1) / vec * vec;
}

void kiln_qgemm_pack(const kiln_lower_ctx *c, kiln_qgemm *q, const int8_t *packed) {
  int32_t *sums = kiln_xcalloc((size_t)q->cols, sizeof(int32_t));
  for (int64_t j = 0; j < q->cols; j++)
    for (int64_t k = 0; k < q->kp; k++) sums[j] += packed[j * q->kp + k];
  q->w = kiln_quant_derived(c, "wpacked", KILN_I8, packed, q->cols * q->kp);
  q->out.sum_w = kiln_quant_derived(c, "wsum", KILN_I32, sums, q->cols);
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

// (int32)buf[offset + (first + i) * kp + k]
static kiln_lexpr *qgemm_operand(kiln_lb *b, int buf, int64_t offset, kiln_lexpr *first, int64_t i,
                                 int64_t kp, int k) {
  kiln_lexpr *row = qgemm_at(b, first, lx_int(b, i));
  kiln_lexpr *at = lx_add(b, lx_int(b, offset), lx_madd(b, row, kp, lx_var(b, k)));
  return lx_cast(b, KILN_I32, lx_load(b, buf, at));
}

// One tile: rb rows from r0 by cb columns from j0.
static void qgemm_tile(const kiln_lower_ctx *c, const kiln_qgemm *q, kiln_lexpr *r0, int64_t rb,
                       kiln_lexpr *j0, int64_t cb) {
  kiln_lb *b = c->b;
  int s[QGEMM_MAX_ROWS * QGEMM_COLS];
  for (int64_t e = 0; e < rb * cb; e++)
    s[e] = kiln_lb_decl(b, "s", KILN_I32, lx_cast(b, KILN_I32, lx_int(b, 0)));
  int k = kiln_lb_for_n(b, "k", q->kp);
  for (int64_t i = 0; i < rb; i++)
    for (int64_t j = 0; j < cb; j++) {
      kiln_lexpr *av = qgemm_operand(b, q->a, q->a_offset, r0, i, q->kp, k);
      kiln_lexpr *wv = qgemm_operand(b, q->w, 0, j0, j, q->kp, k);
      int v = s[i * cb + j];
      kiln_lb_assign(b, v, lx_bin(b, LB_ADD, lx_var(b, v), lx_bin(b, LB_MUL, av, wv)));
    }
  kiln_lb_end_for(b);             // k
  bool later = q->out.mult >= 0;  // the requantize loop completes the sums
  for (int64_t i = 0; i < rb; i++)
    for (int64_t j = 0; j < cb; j++) {
      kiln_lexpr *col = qgemm_at(b, j0, lx_int(b, j));
      kiln_lexpr *v = lx_var(b, s[i * cb + j]);
      if (!later) v = qgemm_sum(c, &q->out, v, col);
      kiln_lexpr *at = q->index(c, q->user, qgemm_at(b, r0, lx_int(b, i)), col);
      kiln_lb_store(b, later ? q->acc : kiln_out_buf(c, 0), at, v);
    }
}

// The row tiles of rows [r0, r0 + rows) for the cb columns from j0.
static void qgemm_row_tiles(const kiln_lower_ctx *c, const kiln_qgemm *q, kiln_lexpr *r0,
                            int64_t rows, kiln_lexpr *j0, int64_t cb, int64_t rb) {
  kiln_lb *b = c->b;
  int64_t whole = rows / rb, rest = rows % rb;
  if (whole) {
    int rt = kiln_lb_for_n(b, "rt", whole);
    qgemm_tile(c, q, qgemm_at(b, r0, lx_mul(b, lx_var(b, rt), lx_int(b, rb))), rb, j0, cb);
    kiln_lb_end_for(b);
  }
  if (rest) qgemm_tile(c, q, qgemm_at(b, r0, lx_int(b, whole * rb)), rest, j0, cb);
}

// y[index(r0 + r, j0 + j)] = requantize(acc[same], mult[j0 + j], y_zp), vectorized over r.
static void qgemm_requantize(const kiln_lower_ctx *c, const kiln_qgemm *q, kiln_lexpr *r0,
                             int64_t rows, kiln_lexpr *j0, int64_t cols) {
  kiln_lb *b = c->b;
  int j = kiln_lb_for_n(b, "j", cols), r = kiln_lb_for_n(b, "r", rows);
  kiln_lexpr *col = qgemm_at(b, j0, lx_var(b, j));
  kiln_lexpr *at = q->index(c, q->user, qgemm_at(b, r0, lx_var(b, r)), kiln_lx_clone(b, col));
  kiln_lexpr *acc = qgemm_sum(c, &q->out, lx_load(b, q->acc, kiln_lx_clone(b, at)), col);
  kiln_lexpr *zp = kiln_quant_param_lx(c, q->out.y_zp, lx_int(b, 0), KILN_I32);
  kiln_lexpr *m = lx_load(b, q->out.mult, kiln_lx_clone(b, col));
  kiln_lexpr *y = kiln_quant_requantize_lx(b, acc, m, zp, kiln_lower_out(c, 0)->dtype);
  kiln_lb_store(b, kiln_out_buf(c, 0), at, y);
  kiln_lb_end_for(b);  // r
  kiln_lb_end_for(b);  // j
}

// One block: rows [r0, r0 + rows) by columns [j0, j0 + cols).
static void qgemm_block(const kiln_lower_ctx *c, const kiln_qgemm *q, kiln_lexpr *r0, int64_t rows,
                        kiln_lexpr *j0, int64_t cols, int64_t rb) {
  kiln_lb *b = c->b;
  int64_t whole = cols / QGEMM_COLS, rest = cols % QGEMM_COLS;
  if (whole) {
    int jt = kiln_lb_for_n(b, "jt", whole);
    kiln_lexpr *first = qgemm_at(b, j0, lx_mul(b, lx_var(b, jt), lx_int(b, QGEMM_COLS)));
    qgemm_row_tiles(c, q, r0, rows, first, QGEMM_COLS, rb);
    kiln_lb_end_for(b);
  }
  if (rest)
    qgemm_row_tiles(c, q, r0, rows, qgemm_at(b, j0, lx_int(b, whole * QGEMM_COLS)), rest, rb);
  if (q->out.mult >= 0) qgemm_requantize(c, q, r0, rows, j0, cols);
}

void kiln_qgemm_lower(const kiln_lower_ctx *c, const kiln_qgemm *q) {
  kiln_lb *b = c->b;
  bool cols_outer = q->cols > q->rows;
  int64_t rb = c->f32_lanes == 8 || c->f32_lanes == 4 ? 2 : QGEMM_MAX_ROWS;  // 16 registers
  int64_t block = cols_outer ? QGEMM_COLS : QGEMM_ROW_BLOCK;
  int64_t n = cols_outer ? q->cols : q->rows, whole = n / block, rest = n % block;
  kiln_lb_comment(b,
                  "integer GEMM: %lld x %lld, k %lld; tiles of %lld rows x %d columns in blocks "
                  "of %lld %s",
                  (long long)q->rows, (long long)q->cols, (long long)q->kp, (long long)rb,
                  QGEMM_COLS, (long long)block, cols_outer ? "columns" : "rows");
  for (int part = 0; part < 2; part++) {  // the whole blocks, then the rest
    int64_t size = part == 0 ? block : rest;
    if ((part == 0 && !whole) || size == 0) continue;
    int ot = part == 0 ? kiln_lb_for_n(b, cols_outer ? "jb" : "rb", whole) : -1;
    kiln_lexpr *first =
        part == 0 ? lx_mul(b, lx_var(b, ot), lx_int(b, block)) : lx_int(b, whole * block);
    if (cols_outer)
      qgemm_block(c, q, lx_int(b, 0), q->rows, first, size, rb);
    else
      qgemm_block(c, q, first, size, lx_int(b, 0), q->cols, rb);
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
  if (q->y_zp >= 0) g.out.mult = kiln_quant_multipliers(c, q->a_scale, q->b_scale, q->y_scale, N);
  g.out.x_zp = kiln_quant_unsigned_zp(c, q->a_zp, a->dtype);
  bool copy = a->dtype != KILN_U8 || g.kp != K;
  int bytes;
  kiln_quant_scratch(c, g.out.mult >= 0 ? g.rows * N : 0, copy ? g.rows * g.kp : 0, &g.acc, &bytes);
  if (copy) {
    g.a = bytes;
    qmatmul_copy_a(c, q, &g, K);
  }
  kiln_qgemm_lower(c, &g);
  return true;
}
