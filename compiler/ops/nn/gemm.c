// Gemm (ONNX): Y = alpha * A' B' + beta * C, with A' = transA ? A^T : A and B' likewise.
//   A': (M, K)   B': (K, N)   C: optional, unidirectionally broadcastable to (M, N)   Y: (M, N)
// Lowering: transB = 0 accumulates contiguous output rows (i-k-j); transB = 1 takes dot products
// over contiguous k (i-j-k), 4 outputs per loop over k. The schedule pass vectorizes the innermost
// loop of either. A matrix-vector product with a constant B that is at least 3/4 zeros (a pruned
// model's) reads only the non-zero weights, compressed by output column at compile time.
// FusedGemm (made by fuse-epilogue): Y = activation(Gemm(A, B, C)), the activation applied to
// each finished part of an output row while it is in cache.
#include <stdlib.h>
#include <string.h>

#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {
    {"alpha", KILN_ATTR_FLOAT, false},
    {"beta", KILN_ATTR_FLOAT, false},
    {"transA", KILN_ATTR_INT, false},
    {"transB", KILN_ATTR_INT, false},
    {0},
};

typedef struct gemm_dims {
  int64_t M, N, K;
  bool trans_a, trans_b;
} gemm_dims;

static gemm_dims dims_of(const kiln_node *n, const kiln_shape *a, const kiln_shape *b) {
  gemm_dims g = {.trans_a = kiln_attr_int(n, "transA", 0) != 0,
                 .trans_b = kiln_attr_int(n, "transB", 0) != 0};
  g.M = a->dim[g.trans_a ? 1 : 0];
  g.K = a->dim[g.trans_a ? 0 : 1];
  g.N = b->dim[g.trans_b ? 0 : 1];
  return g;
}

// Flat index of A'[m][k] and B'[k][n] in the untransposed storage.
static int64_t a_index(const gemm_dims *g, int64_t m, int64_t k) {
  return g->trans_a ? k * g->M + m : m * g->K + k;
}
static int64_t b_index(const gemm_dims *g, int64_t k, int64_t n) {
  return g->trans_b ? n * g->K + k : k * g->N + n;
}

static bool check_rank2(const kiln_node *n, kiln_diag *d, int i, const kiln_tensor *t) {
  if (t->shape.rank == 2) return true;
  kiln_op_error(d, n, "inputs[%d] (%s): expected a 2-D matrix, got %s", i, t->name,
                kiln_shape_text(&t->shape).text);
  return false;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *a = kiln_in(g, n, 0), *b = kiln_in(g, n, 1), *c = kiln_in(g, n, 2);
  if (!kiln_op_check_float_inputs(g, n, c ? 3 : 2, d)) return false;
  int64_t trans;
  if (!kiln_op_read_int(n, d, "transA", 0, 0, 1, &trans) ||
      !kiln_op_read_int(n, d, "transB", 0, 0, 1, &trans))
    return false;
  if (!check_rank2(n, d, 0, a) || !check_rank2(n, d, 1, b)) return false;
  gemm_dims gd = dims_of(n, &a->shape, &b->shape);
  int64_t kb = b->shape.dim[gd.trans_b ? 1 : 0];
  if (kb != gd.K) {
    kiln_op_error(d, n,
                  "inputs: inner dimensions disagree: %s%s has K = %lld but %s%s has K = %lld",
                  kiln_describe(a).text, gd.trans_a ? " (transposed)" : "", (long long)gd.K,
                  kiln_describe(b).text, gd.trans_b ? " (transposed)" : "", (long long)kb);
    return false;
  }
  // out: (M, N)
  kiln_shape out = {.rank = 2, .dim = {gd.M, gd.N}}, bc;
  if (c && (c->shape.rank > 2 || !kiln_broadcast_shapes(&c->shape, &out, &bc) ||
            !kiln_shape_equal(&bc, &out))) {
    char want[64];
    kiln_op_error(d, n, "inputs[2] (%s): expected a shape that broadcasts to %s, got %s", c->name,
                  kiln_shape_str(&out, want, sizeof want), kiln_shape_text(&c->shape).text);
    return false;
  }
  kiln_op_set_output(g, n, 0, a->dtype, &out);
  return true;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  gemm_dims g = dims_of(n, in[0].shape, in[1].shape);
  double alpha = kiln_attr_float(n, "alpha", 1), beta = kiln_attr_float(n, "beta", 1);
  const double *a = in[0].data, *b = in[1].data;
  const kiln_eval_tensor *c = kiln_has_input(n, 2) ? &in[2] : NULL;
  int64_t cs[2];
  if (c) kiln_broadcast_strides(c->shape, out->shape, cs);
  for (int64_t m = 0; m < g.M; m++)
    for (int64_t j = 0; j < g.N; j++) {
      double sum = 0;
      for (int64_t k = 0; k < g.K; k++) sum += a[a_index(&g, m, k)] * b[b_index(&g, k, j)];
      double v = alpha * sum;
      if (c) v += beta * c->data[m * cs[0] + j * cs[1]];
      out->data[m * g.N + j] = v;
    }
}

// Output columns per tile of the row-accumulating nest: the largest divisor of n in
// [MIN_TILE, MAX_TILE], or n itself when it is small or has no such divisor.
enum { MIN_TILE = 32, MAX_TILE = 256 };
static int64_t row_tile(int64_t n) {
  if (n <= MAX_TILE) return n;
  for (int64_t t = MAX_TILE; t >= MIN_TILE; t--)
    if (n % t == 0) return t;
  return n;
}

// Index of A'[m][k] (or B'[k][n]) as an expression: row * row_stride + col * col_stride.
static kiln_lexpr *matrix_index(kiln_lb *b, bool trans, int row, int col, int64_t rows,
                                int64_t cols) {
  // Untransposed (rows, cols) storage; transposed storage is (cols, rows).
  if (trans) return lx_madd(b, lx_var(b, col), rows, lx_var(b, row));
  return lx_madd(b, lx_var(b, row), cols, lx_var(b, col));
}

// y = beta * C[broadcast m, col], or 0 without C; col is the output column's expression.
static kiln_lexpr *bias_term(const kiln_lower_ctx *c, int m, kiln_lexpr *col, double beta) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_out(c, 0)->dtype;
  if (!kiln_has_input(c->node, 2)) return lx_float(b, t, 0);
  const kiln_tensor *tc = kiln_lower_in(c, 2);
  int64_t cs[2];
  kiln_broadcast_strides(&tc->shape, &kiln_lower_out(c, 0)->shape, cs);
  kiln_lexpr *index =
      lx_add(b, lx_mul(b, lx_var(b, m), lx_int(b, cs[0])), lx_mul(b, col, lx_int(b, cs[1])));
  kiln_lexpr *cv = lx_load(b, kiln_in_buf(c, 2), index);
  return beta != 1 ? lx_bin(b, LB_MUL, lx_float(b, t, beta), cv) : cv;
}

// FusedGemm's activation op (an elementwise op without attributes), or -1 for none (Gemm).
static int activation_op(const kiln_node *n) {
  const char *name = kiln_attr_string(n, "activation", NULL);
  return name ? kiln_op_lookup(name) : -1;
}

// The activation's expression of one sum v (v itself without one).
static kiln_lexpr *activation(const kiln_lower_ctx *c, kiln_lexpr *v) {
  int op = activation_op(c->node);
  if (op < 0) return v;
  kiln_node act = {.op = op, .name = c->node->name, .where = c->node->where};
  return kiln_op_get(op)->elementwise(c->b, &act, kiln_lower_out(c, 0)->dtype, &v, 1);
}

// y[m][nt * tile + n] = act(y[...]) for n < tile, a vectorized pass over the part of row m just
// written (still in cache; an activation per dot product would be a scalar call). nt: the
// column tile's loop variable, or ignored when tiles == 1.
static void activate_row(const kiln_lower_ctx *c, int m, int64_t N, int64_t tiles, int nt) {
  if (activation_op(c->node) < 0) return;
  kiln_lb *b = c->b;
  int64_t tile = N / tiles;
  int ybuf = kiln_out_buf(c, 0), j = kiln_lb_for_n(b, "n", tile);
  kiln_lexpr *col = tiles > 1 ? lx_madd(b, lx_var(b, nt), tile, lx_var(b, j)) : lx_var(b, j);
  kiln_lexpr *at = lx_madd(b, lx_var(b, m), N, col);
  kiln_lb_store(b, ybuf, at, activation(c, lx_load(b, ybuf, kiln_lx_clone(b, at))));
  kiln_lb_end_for(b);
}

// Column nt * tile + n of the output (each call builds a fresh expression tree).
static kiln_lexpr *column(kiln_lb *b, int nt, int64_t tile, int j) {
  return lx_madd(b, lx_var(b, nt), tile, lx_var(b, j));
}

// Outputs of the dot-product lowering summed by one loop over k: one vector accumulator's chain
// of dependent multiply-adds per output, so several outputs keep the FMA units busy (a
// matrix-vector product's outputs were one chain after another: latency-bound). Each output's
// sum is the same as alone, so the results are too.
enum { SUMS_PER_LOOP = 4 };

// Outputs per loop over k: the largest of SUMS_PER_LOOP, 2, 1 that divides N.
static int64_t sums_per_loop(int64_t N) {
  int64_t r = SUMS_PER_LOOP;
  while (N % r) r /= 2;
  return r;
}

// Output columns per block of the per-output lowerings: the largest divisor of N up to 32 that is
// a multiple of r (r divides N). A block is computed, then activated while it is in cache; with
// M = 1 the block loop runs in parallel.
static int64_t column_block(int64_t N, int64_t r) {
  for (int64_t nb = N < 32 ? N : 32;; nb--)
    if (N % nb == 0 && nb % r == 0) return nb;
}

// The outputs a sum_fn accumulates: columns jb * nb + jj * r + i of row m, for i < r, into
// acc[i]; jb, jj and m are loop variables.
typedef struct gemm_outputs {
  int m, jb, jj;
  int64_t nb, r;
  int acc[SUMS_PER_LOOP];
} gemm_outputs;

// Column jb * nb + jj * r + i (a fresh expression tree).
static kiln_lexpr *out_column(kiln_lb *b, const gemm_outputs *o, int64_t i) {
  kiln_lexpr *group = lx_madd(b, lx_var(b, o->jj), o->r, lx_int(b, i));
  return lx_madd(b, lx_var(b, o->jb), o->nb, group);
}

// How the outputs' sums are accumulated into o->acc[0..r).
typedef void (*gemm_sum_fn)(const kiln_lower_ctx *c, const gemm_dims *g, const gemm_outputs *o,
                            const void *arg);

// Each output is one sum (sum_fn, r outputs at a time), then scaled, biased, stored; the
// activation per column block.
//   for m, jb, jj: acc[i] = sum(m, n_i = jb * nb + jj * r + i);  y[m][n_i] = alpha acc[i] + beta C
static void lower_each_output(const kiln_lower_ctx *c, const gemm_dims *g, double alpha,
                              double beta, int64_t r, gemm_sum_fn sum, const void *arg) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_out(c, 0)->dtype;
  gemm_outputs o = {.nb = column_block(g->N, r), .r = r};
  o.m = kiln_lb_for_n(b, "m", g->M);
  o.jb = kiln_lb_for_n(b, "nb", g->N / o.nb);
  o.jj = kiln_lb_for_n(b, "n", o.nb / r);
  for (int64_t i = 0; i < r; i++) o.acc[i] = kiln_lb_decl(b, "acc", t, lx_float(b, t, 0));
  sum(c, g, &o, arg);
  for (int64_t i = 0; i < r; i++) {
    kiln_lexpr *v = lx_var(b, o.acc[i]);
    if (alpha != 1) v = lx_bin(b, LB_MUL, lx_float(b, t, alpha), v);
    if (kiln_has_input(c->node, 2))
      v = lx_bin(b, LB_ADD, v, bias_term(c, o.m, out_column(b, &o, i), beta));
    kiln_lb_store(b, kiln_out_buf(c, 0), lx_madd(b, lx_var(b, o.m), g->N, out_column(b, &o, i)), v);
  }
  kiln_lb_end_for(b);
  activate_row(c, o.m, g->N, g->N / o.nb, o.jb);
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
}

// transB = 1: B's rows are B'^T's columns, so each output is a dot product over contiguous k,
// r of them per loop:
//   for k: a = A'[m][k];  acc[i] += a * B[n_i][k]  (i < r)
static void dot_sum(const kiln_lower_ctx *c, const gemm_dims *g, const gemm_outputs *o,
                    const void *arg) {
  (void)arg;
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_out(c, 0)->dtype;
  int k = kiln_lb_for_n(b, "k", g->K);
  int a = kiln_lb_decl(
      b, "a", t, lx_load(b, kiln_in_buf(c, 0), matrix_index(b, g->trans_a, o->m, k, g->M, g->K)));
  for (int64_t i = 0; i < o->r; i++) {
    kiln_lexpr *bv =
        lx_load(b, kiln_in_buf(c, 1), lx_madd(b, out_column(b, o, i), g->K, lx_var(b, k)));
    kiln_lexpr *prod = lx_bin(b, LB_MUL, lx_var(b, a), bv);
    kiln_lb_assign(b, o->acc[i], lx_bin(b, LB_ADD, lx_var(b, o->acc[i]), prod));
  }
  kiln_lb_end_for(b);
}

// transB = 0: rows of B are contiguous in n, so accumulate whole output rows (i-k-j order).
// The n range is cut into tiles of row_tile(N) columns: a tile of the output row stays in
// cache across k, and with M = 1 the tile loop is the one the schedule pass runs in parallel.
//   for m, tile: y[m][tile] = beta * C;  for k: a = alpha * A'[m][k];  y[m][tile] += a * B[k][tile]
static void lower_rows(const kiln_lower_ctx *c, const gemm_dims *g, double alpha, double beta) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_out(c, 0)->dtype;
  int64_t tile = row_tile(g->N);
  int ybuf = kiln_out_buf(c, 0);
  int m = kiln_lb_for_n(b, "m", g->M);
  int nt = kiln_lb_for_n(b, "nt", g->N / tile);
  int j = kiln_lb_for_n(b, "n", tile);  // column nt * tile + n
  kiln_lb_store(b, ybuf, lx_madd(b, lx_var(b, m), g->N, column(b, nt, tile, j)),
                bias_term(c, m, column(b, nt, tile, j), beta));
  kiln_lb_end_for(b);
  int k = kiln_lb_for_n(b, "k", g->K);
  kiln_lexpr *av = lx_load(b, kiln_in_buf(c, 0), matrix_index(b, g->trans_a, m, k, g->M, g->K));
  if (alpha != 1) av = lx_bin(b, LB_MUL, lx_float(b, t, alpha), av);
  int a = kiln_lb_decl(b, "a", t, av);
  j = kiln_lb_for_n(b, "n", tile);
  kiln_lexpr *bv =
      lx_load(b, kiln_in_buf(c, 1), lx_madd(b, lx_var(b, k), g->N, column(b, nt, tile, j)));
  kiln_lexpr *prod = lx_bin(b, LB_MUL, lx_var(b, a), bv);
  kiln_lexpr *yv = lx_load(b, ybuf, lx_madd(b, lx_var(b, m), g->N, column(b, nt, tile, j)));
  kiln_lb_store(b, ybuf, lx_madd(b, lx_var(b, m), g->N, column(b, nt, tile, j)),
                lx_bin(b, LB_ADD, yv, prod));
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
  activate_row(c, m, g->N, g->N / tile, nt);
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
}

// ---- Sparse weights (a pruned model's): compressed columns of B' ----
// A matrix-vector product (M <= SPARSE_MAX_ROWS) is bound by reading B; when at least 3/4 of a
// constant B is zero, reading only the non-zero weights and their row indices (8 bytes each
// instead of 4 bytes for every weight) reads less than half as much. Larger M keeps the dense
// kernels, which reuse each weight across rows.
enum { SPARSE_MAX_ROWS = 4 };

static bool sparse_worthwhile(const kiln_lower_ctx *c, const gemm_dims *g) {
  const kiln_tensor *tb = kiln_lower_in(c, 1);
  int64_t numel = g->K * g->N, zeros = 0;
  if (!tb->data || tb->dtype != KILN_F32 || g->M > SPARSE_MAX_ROWS || numel >= INT32_MAX)
    return false;
  const float *w = tb->data;
  for (int64_t i = 0; i < numel; i++) zeros += w[i] == 0;
  return zeros * 4 >= numel * 3;
}

// Column j of B' compressed: its non-zero weights in increasing k, as k indices and values;
// column j's run is [start[j], start[j + 1]).
typedef struct sparse_columns {
  int32_t *start, *k;
  float *w;
  int64_t nnz;
} sparse_columns;

static sparse_columns compress_columns(const gemm_dims *g, const float *b) {
  sparse_columns s = {.start = kiln_xcalloc((size_t)g->N + 1, sizeof(int32_t)),
                      .k = kiln_xcalloc((size_t)(g->K * g->N) + 1, sizeof(int32_t)),
                      .w = kiln_xcalloc((size_t)(g->K * g->N) + 1, sizeof(float))};
  for (int64_t j = 0; j < g->N; j++) {
    s.start[j] = (int32_t)s.nnz;
    for (int64_t k = 0; k < g->K; k++) {
      float v = b[b_index(g, k, j)];
      if (v == 0) continue;
      s.k[s.nnz] = (int32_t)k, s.w[s.nnz] = v;
      s.nnz++;
    }
  }
  s.start[g->N] = (int32_t)s.nnz;
  return s;
}

// i64 value of element `at` of an i32 buffer.
static kiln_lexpr *load_index(kiln_lb *b, int buf, kiln_lexpr *at) {
  return lx_cast(b, KILN_I64, lx_load(b, buf, at));
}

// The derived buffers of the compressed columns.
typedef struct sparse_bufs {
  int start, k, w;
} sparse_bufs;

//   acc = sum over p in column n's run of A'[m][k[p]] * w[p]  (one output per loop: r = 1)
static void sparse_sum(const kiln_lower_ctx *c, const gemm_dims *g, const gemm_outputs *o,
                       const void *arg) {
  const sparse_bufs *s = arg;
  kiln_lb *b = c->b;
  int m = o->m, acc = o->acc[0];
  kiln_lexpr *next = lx_add(b, out_column(b, o, 0), lx_int(b, 1));
  int p = kiln_lb_for(b, "p", load_index(b, s->start, out_column(b, o, 0)),
                      load_index(b, s->start, next));
  kiln_lexpr *k = load_index(b, s->k, lx_var(b, p));
  kiln_lexpr *av = lx_load(b, kiln_in_buf(c, 0),
                           g->trans_a ? lx_add(b, lx_mul(b, k, lx_int(b, g->M)), lx_var(b, m))
                                      : lx_madd(b, lx_var(b, m), g->K, k));
  kiln_lexpr *wv = lx_load(b, s->w, lx_var(b, p));
  kiln_lb_assign(b, acc, lx_bin(b, LB_ADD, lx_var(b, acc), lx_bin(b, LB_MUL, av, wv)));
  kiln_lb_end_for(b);
}

static void lower_sparse(const kiln_lower_ctx *c, const gemm_dims *g, double alpha, double beta) {
  sparse_columns s = compress_columns(g, kiln_lower_in(c, 1)->data);
  sparse_bufs bufs = {
      .start = kiln_lower_derived(c, "start", KILN_I32, s.start, g->N + 1),
      .k = kiln_lower_derived(c, "nz_k", KILN_I32, s.k, s.nnz ? s.nnz : 1),
      .w = kiln_lower_derived(c, "nz_w", KILN_F32, s.w, s.nnz ? s.nnz : 1),
  };
  kiln_lb_comment(c->b, "B' is %.0f%% zeros: its %lld non-zero weights compressed by column",
                  100.0 * (double)(g->K * g->N - s.nnz) / (double)(g->K * g->N), (long long)s.nnz);
  free(s.start), free(s.k), free(s.w);
  lower_each_output(c, g, alpha, beta, 1, sparse_sum, &bufs);
}

static void lower(const kiln_lower_ctx *c) {
  const kiln_node *node = c->node;
  const kiln_tensor *ta = kiln_lower_in(c, 0), *tb = kiln_lower_in(c, 1),
                    *ty = kiln_lower_out(c, 0);
  gemm_dims g = dims_of(node, &ta->shape, &tb->shape);
  double alpha = kiln_attr_float(node, "alpha", 1), beta = kiln_attr_float(node, "beta", 1);
  kiln_lb_comment(c->b, "%s %s: %s%s * %s%s%s%s%s -> %s", kiln_op_get(node->op)->name, node->name,
                  kiln_describe(ta).text, g.trans_a ? "^T" : "", kiln_describe(tb).text,
                  g.trans_b ? "^T" : "", kiln_has_input(node, 2) ? " + C" : "",
                  activation_op(node) >= 0 ? ", then " : "",
                  kiln_attr_string(node, "activation", ""), kiln_describe(ty).text);
  if (sparse_worthwhile(c, &g))
    lower_sparse(c, &g, alpha, beta);
  else if (g.trans_b)
    lower_each_output(c, &g, alpha, beta, sums_per_loop(g.N), dot_sum, NULL);
  else
    lower_rows(c, &g, alpha, beta);
}

// 2 * M * N * K
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  gemm_dims gd = dims_of(n, &kiln_in(g, n, 0)->shape, &kiln_in(g, n, 1)->shape);
  return 2 * gd.M * gd.N * gd.K;
}

// Gradient (docs/training.md), with A' = transA ? A^T : A and B' likewise:
//   dA' = alpha dY B'^T,  dB' = alpha A'^T dY,  dC = beta dY summed to C's shape
// each written as one Gemm with the transpositions folded into transA / transB.
static int gemm(kiln_grad_ctx *c, int a, int b, int64_t ta, int64_t tb, double alpha) {
  int in[2] = {a, b};
  kiln_gb_attr attrs[] = {KILN_GB_FLOAT("alpha", alpha), KILN_GB_INT("transA", ta),
                          KILN_GB_INT("transB", tb), KILN_GB_END};
  return kiln_gb_op(c, "Gemm", in, 2, attrs, 1);
}

static bool grad(kiln_grad_ctx *c) {
  const kiln_node *n = &c->node;
  int a = n->inputs[0], b = n->inputs[1], dy = c->dy[0];
  int64_t ta = kiln_attr_int(n, "transA", 0), tb = kiln_attr_int(n, "transB", 0);
  double alpha = kiln_attr_float(n, "alpha", 1.0), beta = kiln_attr_float(n, "beta", 1.0);
  if (dy < 0) return true;
  if (c->need[0]) {  // dA = alpha dY B'^T, or its transpose alpha B' dY^T
    c->dx[0] = ta ? gemm(c, b, dy, tb, 1, alpha) : gemm(c, dy, b, 0, !tb, alpha);
    if (c->dx[0] < 0) return false;
  }
  if (c->need[1]) {  // dB = alpha A'^T dY, or its transpose alpha dY^T A'
    c->dx[1] = tb ? gemm(c, dy, a, 1, ta, alpha) : gemm(c, a, dy, !ta, 0, alpha);
    if (c->dx[1] < 0) return false;
  }
  if (n->n_inputs > 2 && n->inputs[2] >= 0 && c->need[2]) {
    int scaled = beta == 1.0 ? dy
                             : kiln_gb_binary(c, "Mul", dy,
                                              kiln_gb_scalar(c, c->g->tensors[dy].dtype, beta));
    c->dx[2] = scaled < 0 ? -1 : kiln_gb_sum_to(c, scaled, &c->g->tensors[n->inputs[2]].shape);
    if (c->dx[2] < 0) return false;
  }
  return true;
}

const kiln_op_def kiln_op_Gemm = {
    .name = "Gemm",
    .min_inputs = 2,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OUT_FUSABLE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    .tol = {1e-5, 1e-5},
    .grad = grad,
};

// ---- FusedGemm (made by the fuse-epilogue pass, compiler/passes/fuse_epilogue.c) ----
// Gemm's inputs and attributes plus `activation`, the name of an elementwise op without
// attributes whose tolerance is within Gemm's (kiln_gemm_activation_ok): Relu, Tanh, Sigmoid, ...

static const kiln_attr_spec fused_attrs[] = {
    {"alpha", KILN_ATTR_FLOAT, false},      {"beta", KILN_ATTR_FLOAT, false},
    {"transA", KILN_ATTR_INT, false},       {"transB", KILN_ATTR_INT, false},
    {"activation", KILN_ATTR_STRING, true}, {0},
};

bool kiln_gemm_activation_ok(int op) {
  const kiln_op_def *def = kiln_op_get(op);
  return def && def->elementwise && def->min_inputs == 1 && def->max_inputs == 1 &&
         def->max_outputs == 1 && (!def->attrs || !def->attrs[0].name) &&
         def->tol.atol <= kiln_op_Gemm.tol.atol && def->tol.rtol <= kiln_op_Gemm.tol.rtol;
}

static bool fused_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const char *act = kiln_attr_string(n, "activation", "");
  int op = kiln_op_lookup(act);
  if (op < 0 || !kiln_gemm_activation_ok(op)) {
    kiln_op_error(d, n,
                  "attrs.activation: expected an elementwise op without attributes (Relu, Tanh, "
                  "Sigmoid, ...), got \"%s\"",
                  act);
    return false;
  }
  return infer(g, n, d);
}

// Gemm's reference, then the activation's on a copy of the sums.
static void fused_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  eval(n, in, out);
  size_t bytes = sizeof(double) * (size_t)kiln_shape_numel(out->shape);
  kiln_eval_tensor sums = {out->shape, out->dtype, kiln_xmalloc(bytes)};
  memcpy(sums.data, out->data, bytes);
  kiln_node act = {.op = activation_op(n), .name = n->name, .where = n->where};
  kiln_op_get(act.op)->eval(&act, &sums, out);
  free(sums.data);
}

const kiln_op_def kiln_op_FusedGemm = {
    .name = "FusedGemm",
    .min_inputs = 2,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = fused_attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = fused_infer,
    .eval = fused_eval,
    .lower = lower,
    .flops = flops,
    .tol = {1e-5, 1e-5},  // Gemm's; only activations within it are fused
};
