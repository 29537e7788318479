// Scheduling: sets loop annotations without changing what is computed.
//  - parallel: a top-level loop of a kernel whose iterations provably write disjoint elements
//    (every store's index uses the loop variable, every assignment is to a variable declared
//    inside the loop) and do enough work to pay for a thread team.
//  - vectorize: an innermost loop of more than a few iterations whose body is straight-line code
//    of the same kind (loops inside it that the backends unroll completely count as straight-line
//    code); if it accumulates into outer variables (`acc = acc + e`, or * / max / min; up to
//    KILN_MAX_REDUCE of them, each updated once and read nowhere else: several outputs' sums
//    in one loop over k), it is marked as a reduction over all of them.
// Neither applies to a loop the lowering marked serial (KILN_LOOP_SERIAL).
// The tiling pass of a later issue refines this; the C and LLVM backends render the annotations.
#include <stdint.h>
#include <stdlib.h>

#include "pipeline.h"

// Statements executed (roughly) for a thread team to pay. From MIN_PARALLEL_WORK on, a loop
// runs in parallel when its buffers exceed SMALL_FOOTPRINT bytes (a second core brings its own
// cache and bandwidth: the MLP at batch 1 on 2 threads took 0.011 ms with its 512 KB fc2 in
// parallel, 0.012-0.013 with it serial); over less data it needs SMALL_KERNEL_WORK — LeNet-5's
// convolutions and fc1 (2-5 us, in L1/L2) were slower on 2 threads than on 1: the fork/join cost
// what the second thread saved (docs/performance.md, session 10).
enum { MIN_PARALLEL_WORK = 1 << 14, SMALL_KERNEL_WORK = 1 << 20, SMALL_FOOTPRINT = 1 << 18 };

static bool expr_uses_var(const kiln_lexpr *e, int var) {
  if (!e) return false;
  if (e->kind == LE_VAR) return e->var == var;
  return expr_uses_var(e->a, var) || expr_uses_var(e->b, var) || expr_uses_var(e->c, var);
}

typedef struct body_facts {
  bool has_loop;
  bool stores_ok;     // every store index uses the loop variable
  int outer_assigns;  // assignments to variables declared outside the loop
  int reduce_vars[KILN_MAX_REDUCE], reduce_ops[KILN_MAX_REDUCE];
  bool reduce_ok;  // every outer assignment has the form v = v OP e, one per v (see reductions_ok)
} body_facts;

static bool declared_inside(const kiln_lstmt *s, int var) {
  if (!s) return false;
  if (s->kind == LS_DECL) return s->var == var;
  if (s->kind == LS_FOR) return s->var == var || declared_inside(s->body, var);
  if (s->kind == LS_IF) return declared_inside(s->then_, var) || declared_inside(s->else_, var);
  if (s->kind == LS_BLOCK)
    for (int i = 0; i < s->n; i++)
      if (declared_inside(s->stmts[i], var)) return true;
  return false;
}

static void classify_assign(const kiln_lstmt *s, body_facts *f) {
  const kiln_lexpr *v = s->value;
  int i = f->outer_assigns++;
  if (i >= KILN_MAX_REDUCE) {
    f->reduce_ok = false;
    return;
  }
  for (int j = 0; j < i; j++)
    if (f->reduce_vars[j] == s->var) f->reduce_ok = false;  // updated twice per iteration
  f->reduce_vars[i] = s->var;
  f->reduce_ops[i] = v->op;
  f->reduce_ok &= v->kind == LE_BIN &&
                  (v->op == LB_ADD || v->op == LB_MUL || v->op == LB_MAX || v->op == LB_MIN) &&
                  v->a->kind == LE_VAR && v->a->var == s->var;
}

// Reads of var in e.
static int reads_of(const kiln_lexpr *e, int var) {
  if (!e) return 0;
  return (e->kind == LE_VAR && e->var == var) + reads_of(e->a, var) + reads_of(e->b, var) +
         reads_of(e->c, var);
}

// Reads of var in the expressions of s (its own update's `v OP e` counts one).
static int reads_in(const kiln_lstmt *s, int var) {
  if (!s) return 0;
  int n = reads_of(s->lo, var) + reads_of(s->hi, var) + reads_of(s->index, var) +
          reads_of(s->value, var) + reads_of(s->cond, var) + reads_of(s->w_index, var) +
          reads_of(s->c_index, var) + reads_in(s->body, var) + reads_in(s->then_, var) +
          reads_in(s->else_, var);
  for (int i = 0; s->kind == LS_BLOCK && i < s->n; i++) n += reads_in(s->stmts[i], var);
  return n;
}

// The accumulators are independent chains: each is read only by its own update (not by the
// other updates, stores or conditions), so the iterations can be split across vector lanes.
static bool reductions_ok(const kiln_lstmt *loop, const body_facts *f) {
  if (!f->reduce_ok) return false;
  for (int i = 0; i < f->outer_assigns; i++)
    if (reads_in(loop->body, f->reduce_vars[i]) != 1) return false;
  return true;
}

static int64_t trip_count(const kiln_lstmt *loop);

// A register-block loop the backends unroll completely (constant bounds, at most `unroll` and 64
// iterations), containing only such loops: straight-line code once unrolled, so the loop around it
// can still be the vectorized one (a depthwise conv's taps inside its column loop).
static bool fully_unrolled(const kiln_lstmt *loop);

// Whether s holds a loop (at any depth) that is not fully unrolled.
static bool has_rolled_loop(const kiln_lstmt *s) {
  if (!s) return false;
  if (s->kind == LS_FOR) return !fully_unrolled(s);
  if (s->kind == LS_IF) return has_rolled_loop(s->then_) || has_rolled_loop(s->else_);
  if (s->kind == LS_BLOCK)
    for (int i = 0; i < s->n; i++)
      if (has_rolled_loop(s->stmts[i])) return true;
  return false;
}

static bool fully_unrolled(const kiln_lstmt *loop) {
  int64_t n = trip_count(loop);
  if (!(loop->flags & KILN_LOOP_UNROLL) || n < 0 || n > loop->unroll || n > 64) return false;
  return !has_rolled_loop(loop->body);
}

static void gather(const kiln_lstmt *loop, const kiln_lstmt *s, body_facts *f) {
  switch (s->kind) {
    case LS_BLOCK:
      for (int i = 0; i < s->n; i++) gather(loop, s->stmts[i], f);
      break;
    case LS_FOR:
      if (!fully_unrolled(s)) f->has_loop = true;
      gather(loop, s->body, f);
      break;
    case LS_IF:
      gather(loop, s->then_, f);
      if (s->else_) gather(loop, s->else_, f);
      break;
    case LS_STORE:
      if (!expr_uses_var(s->index, loop->var)) f->stores_ok = false;
      break;
    case LS_ASSIGN:
      if (!declared_inside(loop->body, s->var)) classify_assign(s, f);
      break;
    case LS_LSTORE:  // like a buffer, unless the array is private to each iteration
      if (!declared_inside(loop->body, s->var) && !expr_uses_var(s->index, loop->var))
        f->stores_ok = false;
      break;
    case LS_DOT4:  // accumulates into every lane of its array
      if (!declared_inside(loop->body, s->var)) f->stores_ok = false;
      break;
    case LS_TILEDOT:  // stores a block
      if (!expr_uses_var(s->c_index, loop->var)) f->stores_ok = false;
      f->has_loop = true;
      break;
    case LS_DECL:
    case LS_COMMENT: break;
  }
}

static body_facts facts_of(const kiln_lstmt *loop) {
  body_facts f = {.stores_ok = true, .reduce_ok = true};
  gather(loop, loop->body, &f);
  return f;
}

static int64_t trip_count(const kiln_lstmt *loop) {
  if (loop->lo->kind != LE_INT || loop->hi->kind != LE_INT) return -1;
  return loop->hi->i - loop->lo->i;
}

// Statements executed by one run of s, counting loop trips (unknown trips count as 16).
static int64_t work(const kiln_lstmt *s) {
  if (s->kind == LS_BLOCK) {
    int64_t w = 0;
    for (int i = 0; i < s->n; i++) w += work(s->stmts[i]);
    return w;
  }
  if (s->kind == LS_FOR) {
    int64_t n = trip_count(s);
    return (n < 0 ? 16 : n) * work(s->body);
  }
  if (s->kind == LS_IF) return work(s->then_) + (s->else_ ? work(s->else_) : 0);
  if (s->kind == LS_TILEDOT)  // like the dot4 statements of its products
    return s->tile.rows * ((s->tile.cols + 15) / 16) * (s->tile.k / 4);
  return 1;
}

// A loop that runs at most a few iterations (a 3-wide pooling window) loses more to a SIMD
// prologue and reduction than it gains: its constant upper bound, minus a constant lower bound
// (a variable one, a clamped window start, is >= 0), is below the threshold.
enum { MIN_VECTOR_TRIP = 5 };
static bool too_short_to_vectorize(const kiln_lstmt *loop) {
  if (loop->hi->kind != LE_INT) return false;
  int64_t lo = loop->lo->kind == LE_INT ? loop->lo->i : 0;
  return loop->hi->i - lo < MIN_VECTOR_TRIP;
}

static bool mark_vector_loops(kiln_lstmt *s) {
  bool changed = false;
  if (s->kind == LS_BLOCK)
    for (int i = 0; i < s->n; i++) changed |= mark_vector_loops(s->stmts[i]);
  if (s->kind == LS_IF) {
    changed |= mark_vector_loops(s->then_);
    if (s->else_) changed |= mark_vector_loops(s->else_);
  }
  if (s->kind != LS_FOR) return changed;
  body_facts f = facts_of(s);
  if (f.has_loop || (s->flags & KILN_LOOP_SERIAL)) return mark_vector_loops(s->body) || changed;
  if (!f.stores_ok || (f.outer_assigns > 0 && !reductions_ok(s, &f))) return changed;
  if (too_short_to_vectorize(s)) return changed;
  s->flags |= KILN_LOOP_VECTORIZE;
  if (f.outer_assigns > 0) {
    s->flags |= KILN_LOOP_REDUCE;
    s->n_reduce = f.outer_assigns;
    for (int i = 0; i < f.outer_assigns; i++) {
      s->reduce_vars[i] = f.reduce_vars[i];
      s->reduce_ops[i] = f.reduce_ops[i];
    }
  }
  return true;
}

// The loop's body if it is exactly one loop (comments aside), else NULL.
static kiln_lstmt *only_inner_loop(const kiln_lstmt *loop) {
  kiln_lstmt *inner = NULL;
  for (int i = 0; i < loop->body->n; i++) {
    kiln_lstmt *s = loop->body->stmts[i];
    if (s->kind == LS_COMMENT) continue;
    if (s->kind != LS_FOR || inner) return NULL;
    inner = s;
  }
  return inner;
}

// Marks in used[] the buffers e and s read or write.
static void mark_expr_bufs(const kiln_lexpr *e, bool *used) {
  if (!e) return;
  if (e->kind == LE_LOAD) used[e->buf] = true;
  mark_expr_bufs(e->a, used), mark_expr_bufs(e->b, used), mark_expr_bufs(e->c, used);
}

static void mark_stmt_bufs(const kiln_lstmt *s, bool *used) {
  if (!s) return;
  if (s->kind == LS_STORE || s->kind == LS_DOT4 || s->kind == LS_TILEDOT) used[s->buf] = true;
  if (s->kind == LS_DOT4 || s->kind == LS_TILEDOT) used[s->w_buf] = true;
  if (s->kind == LS_TILEDOT) used[s->c_buf] = true;
  const kiln_lexpr *exprs[] = {s->lo, s->hi, s->index, s->value, s->cond, s->w_index, s->c_index};
  for (size_t i = 0; i < sizeof exprs / sizeof *exprs; i++) mark_expr_bufs(exprs[i], used);
  mark_stmt_bufs(s->body, used), mark_stmt_bufs(s->then_, used), mark_stmt_bufs(s->else_, used);
  for (int i = 0; s->kind == LS_BLOCK && i < s->n; i++) mark_stmt_bufs(s->stmts[i], used);
}

// Bytes of the buffers the loop touches (whole buffers: an upper bound of what it reads).
static int64_t footprint(const kiln_lprog *p, const kiln_lstmt *loop) {
  bool *used = calloc((size_t)p->n_bufs + 1, sizeof(bool));
  if (!used) return INT64_MAX;  // unknown: as if large
  mark_stmt_bufs(loop, used);
  int64_t bytes = 0;
  for (int i = 0; i < p->n_bufs; i++)
    if (used[i]) bytes += p->bufs[i].numel * (int64_t)kiln_dtype_size(p->bufs[i].dtype);
  free(used);
  return bytes;
}

static bool pays_for_threads(const kiln_lprog *p, const kiln_lstmt *loop) {
  int64_t w = work(loop);
  if (w < MIN_PARALLEL_WORK) return false;
  return w >= SMALL_KERNEL_WORK || footprint(p, loop) > SMALL_FOOTPRINT;
}

static bool mark_parallel(const kiln_lprog *p, kiln_lstmt *loop) {
  // A batch loop of one iteration hides the real work: look through perfectly nested loops.
  for (kiln_lstmt *inner; trip_count(loop) < 2 && (inner = only_inner_loop(loop));) loop = inner;
  if (loop->flags & KILN_LOOP_SERIAL) return false;
  body_facts f = facts_of(loop);
  if (!f.stores_ok || f.outer_assigns || trip_count(loop) < 2 || !pays_for_threads(p, loop))
    return false;
  // A loop that is also the innermost one keeps its simd annotation: `parallel for simd`.
  loop->flags |= KILN_LOOP_PARALLEL;
  return true;
}

bool kiln_pass_schedule(kiln_compilation *c, kiln_diag *d, bool *changed) {
  (void)d;
  *changed = false;
  for (int k = 0; k < c->prog->n_kernels; k++) {
    kiln_lstmt *body = c->prog->kernels[k].body;
    *changed |= mark_vector_loops(body);
    for (int i = 0; i < body->n; i++)
      if (body->stmts[i]->kind == LS_FOR) *changed |= mark_parallel(c->prog, body->stmts[i]);
  }
  return true;
}
