// MatMul (ONNX = numpy matmul): Y = A @ B over the last two dims, batch dims broadcast.
//   A: (..., M, K)   B: (..., K, N)   Y: (broadcast(...), M, N)
// A 1-D A is read as (1, K) and a 1-D B as (K, 1); the added dimension is dropped from Y.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{0}};

// Both operands promoted to rank >= 2 and the output before dropping promoted dims.
typedef struct matmul_plan {
  kiln_shape a, b;   // promoted operand shapes
  kiln_shape batch;  // broadcast batch dims
  int64_t M, N, K;
  int64_t a_stride[KILN_MAX_RANK], b_stride[KILN_MAX_RANK];  // per batch dim; 0 if broadcast
} matmul_plan;

static kiln_shape promote(const kiln_shape *s, bool is_a) {
  if (s->rank != 1) return *s;
  kiln_shape p = {.rank = 2};
  p.dim[0] = is_a ? 1 : s->dim[0];
  p.dim[1] = is_a ? s->dim[0] : 1;
  return p;
}

static kiln_shape batch_of(const kiln_shape *s) {
  kiln_shape b = {.rank = s->rank - 2};
  for (int i = 0; i < b.rank; i++) b.dim[i] = s->dim[i];
  return b;
}

// Element strides of operand s's batch dims aligned to `batch` (stride 0 where broadcast).
static void batch_strides(const kiln_shape *s, const kiln_shape *batch, int64_t *strides) {
  kiln_shape sb = batch_of(s);
  kiln_broadcast_strides(&sb, batch, strides);
  int64_t matrix = s->dim[s->rank - 2] * s->dim[s->rank - 1];
  for (int i = 0; i < batch->rank; i++) strides[i] *= matrix;
}

typedef enum { PLAN_OK, PLAN_INNER_DIMS, PLAN_BATCH_DIMS } plan_result;

static plan_result plan(const kiln_shape *a, const kiln_shape *b, matmul_plan *p) {
  p->a = promote(a, true);
  p->b = promote(b, false);
  p->M = p->a.dim[p->a.rank - 2];
  p->K = p->a.dim[p->a.rank - 1];
  p->N = p->b.dim[p->b.rank - 1];
  kiln_shape ba = batch_of(&p->a), bb = batch_of(&p->b);
  if (p->b.dim[p->b.rank - 2] != p->K) return PLAN_INNER_DIMS;
  if (!kiln_broadcast_shapes(&ba, &bb, &p->batch)) return PLAN_BATCH_DIMS;
  batch_strides(&p->a, &p->batch, p->a_stride);
  batch_strides(&p->b, &p->batch, p->b_stride);
  return PLAN_OK;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!kiln_op_check_float_inputs(g, n, 2, d)) return false;
  const kiln_tensor *a = kiln_in(g, n, 0), *b = kiln_in(g, n, 1);
  if (a->shape.rank < 1 || b->shape.rank < 1) {
    kiln_op_error(d, n, "inputs: expected tensors of rank >= 1, got %s and %s",
                  kiln_describe(a).text, kiln_describe(b).text);
    return false;
  }
  matmul_plan p;
  plan_result r = plan(&a->shape, &b->shape, &p);
  if (r == PLAN_INNER_DIMS) {
    kiln_op_error(d, n, "inputs: %s @ %s: inner dimensions disagree (K = %lld vs %lld)",
                  kiln_describe(a).text, kiln_describe(b).text, (long long)p.K,
                  (long long)p.b.dim[p.b.rank - 2]);
    return false;
  }
  if (r == PLAN_BATCH_DIMS) {
    kiln_op_error(d, n, "inputs: %s @ %s: batch dimensions do not broadcast (numpy rules)",
                  kiln_describe(a).text, kiln_describe(b).text);
    return false;
  }
  // out: batch + (M if A is not 1-D) + (N if B is not 1-D)
  kiln_shape out = p.batch;
  if (a->shape.rank > 1) out.dim[out.rank++] = p.M;
  if (b->shape.rank > 1) out.dim[out.rank++] = p.N;
  kiln_op_set_output(g, n, 0, a->dtype, &out);
  return true;
}

// Y has the layout of (batch, M, N) whether or not the promoted dims were dropped.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)n;
  matmul_plan p;
  plan(in[0].shape, in[1].shape, &p);
  int64_t idx[KILN_MAX_RANK], batches = kiln_shape_numel(&p.batch);
  for (int64_t t = 0; t < batches; t++) {
    kiln_unravel(t, &p.batch, idx);
    const double *a = in[0].data + kiln_dot_index(p.batch.rank, idx, p.a_stride);
    const double *b = in[1].data + kiln_dot_index(p.batch.rank, idx, p.b_stride);
    double *y = out->data + t * p.M * p.N;
    for (int64_t m = 0; m < p.M; m++)
      for (int64_t j = 0; j < p.N; j++) {
        double sum = 0;
        for (int64_t k = 0; k < p.K; k++) sum += a[m * p.K + k] * b[k * p.N + j];
        y[m * p.N + j] = sum;
      }
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

// Where one batch's matrices start: element strides per batch dim, the batch loop variables.
typedef struct batch_base {
  int rank;
  const int *vars;
  const int64_t *a_stride, *b_stride, *y_stride;
} batch_base;

// base + row * cols + (nt * tile + n): element (row, tile column) of one batch's matrix.
static kiln_lexpr *element(kiln_lb *b, const batch_base *base, const int64_t *stride, int row,
                           int64_t cols, kiln_lexpr *col) {
  kiln_lexpr *start = kiln_lower_index(b, base->rank, base->vars, stride);
  return lx_add(b, start, lx_madd(b, lx_var(b, row), cols, col));
}

static kiln_lexpr *column(kiln_lb *b, int nt, int64_t tile, int j) {
  return lx_madd(b, lx_var(b, nt), tile, lx_var(b, j));
}

// B's rows are contiguous in n, so whole output rows accumulate (i-k-j order), a tile of
// row_tile(N) columns at a time (it stays in cache across k; with M = 1 the tile loop is the one
// the schedule pass runs in parallel):
//   for m, tile: y[m][tile] = 0;  for k: a = A[m][k];  y[m][tile] += a * B[k][tile]
static void lower_rows(const kiln_lower_ctx *c, const matmul_plan *p, const batch_base *base) {
  kiln_lb *b = c->b;
  kiln_dtype t = kiln_lower_out(c, 0)->dtype;
  int64_t tile = row_tile(p->N);
  int ybuf = kiln_out_buf(c, 0);
  int m = kiln_lb_for_n(b, "m", p->M);
  int nt = kiln_lb_for_n(b, "nt", p->N / tile);
  int j = kiln_lb_for_n(b, "n", tile);
  kiln_lb_store(b, ybuf, element(b, base, base->y_stride, m, p->N, column(b, nt, tile, j)),
                lx_float(b, t, 0));
  kiln_lb_end_for(b);
  int k = kiln_lb_for_n(b, "k", p->K);
  kiln_lexpr *av =
      lx_load(b, kiln_in_buf(c, 0), element(b, base, base->a_stride, m, p->K, lx_var(b, k)));
  int a = kiln_lb_decl(b, "a", t, av);
  j = kiln_lb_for_n(b, "n", tile);
  kiln_lexpr *bv = lx_load(b, kiln_in_buf(c, 1),
                           element(b, base, base->b_stride, k, p->N, column(b, nt, tile, j)));
  kiln_lexpr *prod = lx_bin(b, LB_MUL, lx_var(b, a), bv);
  kiln_lexpr *yv =
      lx_load(b, ybuf, element(b, base, base->y_stride, m, p->N, column(b, nt, tile, j)));
  kiln_lb_store(b, ybuf, element(b, base, base->y_stride, m, p->N, column(b, nt, tile, j)),
                lx_bin(b, LB_ADD, yv, prod));
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
}

static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *ta = kiln_lower_in(c, 0), *tb = kiln_lower_in(c, 1),
                    *ty = kiln_lower_out(c, 0);
  matmul_plan p;
  plan(&ta->shape, &tb->shape, &p);
  kiln_lb_comment(b, "MatMul %s: %s @ %s -> %s", c->node->name, kiln_describe(ta).text,
                  kiln_describe(tb).text, kiln_describe(ty).text);
  int64_t y_stride[KILN_MAX_RANK];
  kiln_contiguous_strides(&p.batch, y_stride);
  for (int i = 0; i < p.batch.rank; i++) y_stride[i] *= p.M * p.N;
  int batch[KILN_MAX_RANK];
  kiln_lower_begin_nest(b, &p.batch, batch);
  // a[batch] (M, K) @ b[batch] (K, N) -> y[batch] (M, N)
  batch_base base = {p.batch.rank, batch, p.a_stride, p.b_stride, y_stride};
  lower_rows(c, &p, &base);
  kiln_lower_end_nest(b, &p.batch);
}

// 2 * batch * M * N * K
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  matmul_plan p;
  if (plan(&kiln_in(g, n, 0)->shape, &kiln_in(g, n, 1)->shape, &p) != PLAN_OK) return 0;
  return 2 * kiln_shape_numel(&p.batch) * p.M * p.N * p.K;
}

// Gradient (docs/training.md), on the operands promoted to rank >= 2:
//   dA = dY B^T summed to A's shape,  dB = A^T dY summed to B's shape
// (the transposes swap the last two dims; summing undoes the batch broadcast).
static int swap_last(kiln_grad_ctx *c, int x) {
  int rank = c->g->tensors[x].shape.rank;
  int64_t perm[KILN_MAX_RANK];
  for (int i = 0; i < rank; i++) perm[i] = i;
  perm[rank - 2] = rank - 1, perm[rank - 1] = rank - 2;
  kiln_gb_attr attrs[] = {KILN_GB_INTS("perm", perm, rank), KILN_GB_END};
  return kiln_gb_op(c, "Transpose", &x, 1, attrs, 1);
}

// product summed to `promoted`, then reshaped to `shape`.
static int fit(kiln_grad_ctx *c, int product, const kiln_shape *promoted, const kiln_shape *shape) {
  int s = product < 0 ? -1 : kiln_gb_sum_to(c, product, promoted);
  return s < 0 ? -1 : kiln_gb_reshape(c, s, shape);
}

static bool grad(kiln_grad_ctx *c) {
  // Copies: adding nodes moves g->tensors.
  kiln_shape a_shape = c->g->tensors[c->node.inputs[0]].shape, *as = &a_shape;
  kiln_shape b_shape = c->g->tensors[c->node.inputs[1]].shape, *bs = &b_shape;
  matmul_plan p;
  if (c->dy[0] < 0 || plan(as, bs, &p) != PLAN_OK) return c->dy[0] < 0;
  kiln_shape ys = p.batch;
  ys.dim[ys.rank++] = p.M;
  ys.dim[ys.rank++] = p.N;
  int a = kiln_gb_reshape(c, c->node.inputs[0], &p.a),
      b = kiln_gb_reshape(c, c->node.inputs[1], &p.b);
  int dy = kiln_gb_reshape(c, c->dy[0], &ys);
  if (a < 0 || b < 0 || dy < 0) return false;
  if (c->need[0]) {
    int bt = swap_last(c, b);
    if (bt < 0 || (c->dx[0] = fit(c, kiln_gb_binary(c, "MatMul", dy, bt), &p.a, as)) < 0)
      return false;
  }
  if (c->need[1]) {
    int at = swap_last(c, a);
    if (at < 0 || (c->dx[1] = fit(c, kiln_gb_binary(c, "MatMul", at, dy), &p.b, bs)) < 0)
      return false;
  }
  return true;
}

const kiln_op_def kiln_op_MatMul = {
    .name = "MatMul",
    .min_inputs = 2,
    .max_inputs = 2,
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
