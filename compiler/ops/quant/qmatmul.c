// The integer matmul behind QLinearMatMul and MatMulInteger (quant.h):
//   acc[t][i][j] = sum over k of (a[t][i][k] - a_zero_point[i]) * (b[t][k][j] - b_zero_point[j])
//   a: (..., M, K) i8/u8   b: (..., K, N) i8/u8   acc: (broadcast(...), M, N) i32
// Zero points are one value or one per row of a (M) / per column of b (N). Products are at most
// 2^16 in magnitude, so sums over K < 2^15 are exact in i32.
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
