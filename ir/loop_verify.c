// Loop IR verifier: run after every loop pass. Checks that buffers and variables exist, that
// variables are declared before use and in scope, that types agree, that inputs and weights are
// never written, and that parallel loops do not nest.
#include <stdarg.h>
#include <stdlib.h>

#include "loop.h"

typedef struct verify_ctx {
  const kiln_lprog *p;
  const kiln_lkernel *k;
  bool *in_scope;  // per variable
  bool *loop_var;  // per variable: a loop index (never assigned)
  int parallel_depth;
  FILE *err;
  bool ok;
} verify_ctx;

static bool fail(verify_ctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(verify_ctx *v, const char *fmt, ...) {
  if (!v->ok) return false;  // report the first problem only
  v->ok = false;
  fprintf(v->err, "loop IR verifier: kernel %s: ", v->k ? v->k->name : "?");
  va_list ap;
  va_start(ap, fmt);
  vfprintf(v->err, fmt, ap);
  va_end(ap);
  fputc('\n', v->err);
  return false;
}

static bool is_index_type(kiln_dtype t) { return t == KILN_I64 || t == KILN_I32; }

static bool check_expr(verify_ctx *v, const kiln_lexpr *e);

// array[index]: a local array in scope, an integer index, in range when constant.
static bool check_local(verify_ctx *v, int array, const kiln_lexpr *index) {
  if (array < 0 || array >= v->k->n_vars) return fail(v, "unknown variable %d", array);
  const kiln_lvar *a = &v->k->vars[array];
  if (a->len <= 0) return fail(v, "%s is indexed but is not an array", a->name);
  if (!v->in_scope[array]) return fail(v, "array %s used out of scope", a->name);
  if (!check_expr(v, index)) return false;
  if (!is_index_type(index->dtype)) return fail(v, "index into %s is not an integer", a->name);
  if (index->kind == LE_INT && (index->i < 0 || index->i >= a->len))
    return fail(v, "constant index %lld out of range for %s", (long long)index->i, a->name);
  return true;
}

// An integer index into buffer `buf` of dtype t.
static bool check_buf_index(verify_ctx *v, int buf, const kiln_lexpr *index, kiln_dtype t) {
  if (buf < 0 || buf >= v->p->n_bufs) return fail(v, "dot product on unknown buffer %d", buf);
  const kiln_lbuf *b = &v->p->bufs[buf];
  if (b->dtype != t)
    return fail(v, "dot product reads %s buffer %s (expected %s)", kiln_dtype_name(b->dtype),
                b->name, kiln_dtype_name(t));
  if (!check_expr(v, index)) return false;
  if (!is_index_type(index->dtype)) return fail(v, "index into %s is not an integer", b->name);
  return true;
}

// LS_DOT4: a lane accumulator of `lanes` i32 in scope, a u8 and an i8 buffer.
static bool check_dot4(verify_ctx *v, const kiln_lstmt *s) {
  if (s->var < 0 || s->var >= v->k->n_vars) return fail(v, "unknown variable %d", s->var);
  const kiln_lvar *a = &v->k->vars[s->var];
  if (!a->lanes || a->dtype != KILN_I32 || a->len != s->lanes || s->lanes <= 0)
    return fail(v, "dot4 into %s, which is not a lane accumulator of %d i32", a->name, s->lanes);
  if (!v->in_scope[s->var]) return fail(v, "array %s used out of scope", a->name);
  return check_buf_index(v, s->buf, s->index, KILN_U8) &&
         check_buf_index(v, s->w_buf, s->w_index, KILN_I8);
}

// LS_TILEDOT: u8 and i8 operands, a writable i32 buffer, sizes in the operator's range.
static bool check_tiledot(verify_ctx *v, const kiln_lstmt *s) {
  const kiln_ltile *t = &s->tile;
  if (t->rows < 1 || t->rows > 32 || t->cols < 1 || t->cols > 32 || t->k < 4 || t->run_k < 4 ||
      t->run_k % 4 || t->k % t->run_k || t->a_ld < 0 || t->run_ld < 0 || t->w_ld < 0 ||
      !((t->c_col == 1 && t->c_row >= t->cols) || (t->c_row == 1 && t->c_col >= t->rows)))
    return fail(v, "tiledot of %lld x %lld, k %lld (runs of %lld): sizes out of range",
                (long long)t->rows, (long long)t->cols, (long long)t->k, (long long)t->run_k);
  if (s->c_buf < 0 || s->c_buf >= v->p->n_bufs)
    return fail(v, "tiledot into unknown buffer %d", s->c_buf);
  const kiln_lbuf *c = &v->p->bufs[s->c_buf];
  if (c->kind == KILN_BUF_INPUT || c->kind == KILN_BUF_WEIGHT)
    return fail(v, "tiledot into read-only buffer %s", c->name);
  return check_buf_index(v, s->c_buf, s->c_index, KILN_I32) &&
         check_buf_index(v, s->buf, s->index, KILN_U8) &&
         check_buf_index(v, s->w_buf, s->w_index, KILN_I8);
}

static bool check_expr(verify_ctx *v, const kiln_lexpr *e) {
  if (!e) return fail(v, "missing expression");
  switch (e->kind) {
    case LE_INT:
    case LE_FLOAT: return true;
    case LE_VAR:
      if (e->var < 0 || e->var >= v->k->n_vars) return fail(v, "unknown variable %d", e->var);
      if (!v->in_scope[e->var])
        return fail(v, "variable %s used out of scope", v->k->vars[e->var].name);
      if (v->k->vars[e->var].len > 0)
        return fail(v, "array %s used as a scalar", v->k->vars[e->var].name);
      return true;
    case LE_LOAD:
      if (e->buf < 0 || e->buf >= v->p->n_bufs)
        return fail(v, "load from unknown buffer %d", e->buf);
      if (!check_expr(v, e->a)) return false;
      if (!is_index_type(e->a->dtype))
        return fail(v, "index into %s is not an integer", v->p->bufs[e->buf].name);
      if (e->a->kind == LE_INT && (e->a->i < 0 || e->a->i >= v->p->bufs[e->buf].numel))
        return fail(v, "constant index %lld out of range for %s", (long long)e->a->i,
                    v->p->bufs[e->buf].name);
      return true;
    case LE_BIN:
      if (!check_expr(v, e->a) || !check_expr(v, e->b)) return false;
      if (e->a->dtype != e->b->dtype)
        return fail(v, "operands of %s have types %s and %s", kiln_lbin_name(e->op),
                    kiln_dtype_name(e->a->dtype), kiln_dtype_name(e->b->dtype));
      if (e->op == LB_MOD && kiln_dtype_is_float(e->a->dtype)) return fail(v, "%% on floats");
      if (e->op == LB_POW && !kiln_dtype_is_float(e->a->dtype)) return fail(v, "pow on integers");
      if ((e->op == LB_XOR || e->op == LB_SHR) && e->a->dtype != KILN_I64)
        return fail(v, "%s on %s (i64 only)", kiln_lbin_name(e->op), kiln_dtype_name(e->a->dtype));
      return true;
    case LE_UNARY:
      if (!check_expr(v, e->a)) return false;
      if (e->op == LU_MIX64) {
        if (e->a->dtype != KILN_I64)
          return fail(v, "mix64 on %s (i64 only)", kiln_dtype_name(e->a->dtype));
      } else if (e->op != LU_NEG && e->op != LU_ABS && !kiln_dtype_is_float(e->a->dtype))
        return fail(v, "%s on %s", kiln_lunary_name(e->op), kiln_dtype_name(e->a->dtype));
      return true;
    case LE_SELECT:
      if (!check_expr(v, e->a) || !check_expr(v, e->b) || !check_expr(v, e->c)) return false;
      if (e->b->dtype != e->c->dtype) return fail(v, "select arms have different types");
      return true;
    case LE_CAST: return check_expr(v, e->a);
    case LE_LOCAL: return check_local(v, e->var, e->a);
    case LE_MULADD:
      if (!check_expr(v, e->a) || !check_expr(v, e->b) || !check_expr(v, e->c)) return false;
      if (!kiln_dtype_is_float(e->dtype) || e->a->dtype != e->dtype || e->b->dtype != e->dtype ||
          e->c->dtype != e->dtype)
        return fail(v, "muladd operands are not all %s floats", kiln_dtype_name(e->dtype));
      return true;
  }
  return fail(v, "unknown expression kind %d", (int)e->kind);
}

static bool check_stmt(verify_ctx *v, const kiln_lstmt *s);

static bool check_block(verify_ctx *v, const kiln_lstmt *s) {
  if (!s || s->kind != LS_BLOCK) return fail(v, "expected a block");
  // Variables declared in a block go out of scope at its end.
  bool *saved = malloc(sizeof(bool) * (size_t)(v->k->n_vars ? v->k->n_vars : 1));
  if (!saved) return fail(v, "out of memory");
  for (int i = 0; i < v->k->n_vars; i++) saved[i] = v->in_scope[i];
  bool ok = true;
  for (int i = 0; i < s->n && ok; i++) ok = check_stmt(v, s->stmts[i]);
  for (int i = 0; i < v->k->n_vars; i++) v->in_scope[i] = saved[i];
  free(saved);
  return ok;
}

static bool check_var_index(verify_ctx *v, int var) {
  if (var < 0 || var >= v->k->n_vars) return fail(v, "unknown variable %d", var);
  return true;
}

static bool check_for(verify_ctx *v, const kiln_lstmt *s) {
  if (!check_var_index(v, s->var)) return false;
  if (v->in_scope[s->var])
    return fail(v, "loop variable %s is already in scope", v->k->vars[s->var].name);
  if (!check_expr(v, s->lo) || !check_expr(v, s->hi)) return false;
  if (!is_index_type(s->lo->dtype) || !is_index_type(s->hi->dtype))
    return fail(v, "loop bounds are not integers");
  bool parallel = s->flags & KILN_LOOP_PARALLEL;
  if (parallel && v->parallel_depth) return fail(v, "nested parallel loops");
  if ((s->flags & KILN_LOOP_REDUCE) && (s->n_reduce < 1 || s->n_reduce > KILN_MAX_REDUCE))
    return fail(v, "reduction loop with %d accumulators", s->n_reduce);
  for (int i = 0; (s->flags & KILN_LOOP_REDUCE) && i < s->n_reduce; i++)
    if (!check_var_index(v, s->reduce_vars[i])) return false;
  v->parallel_depth += parallel;
  v->in_scope[s->var] = v->loop_var[s->var] = true;
  bool ok = check_block(v, s->body);
  v->in_scope[s->var] = false;
  v->parallel_depth -= parallel;
  return ok;
}

static bool check_stmt(verify_ctx *v, const kiln_lstmt *s) {
  switch (s->kind) {
    case LS_BLOCK: return check_block(v, s);
    case LS_FOR: return check_for(v, s);
    case LS_DECL:
      if (!check_var_index(v, s->var)) return false;
      if (v->k->vars[s->var].len > 0) {  // a local array: no initial value
        if (s->value) return fail(v, "array %s declared with a value", v->k->vars[s->var].name);
        if (v->in_scope[s->var]) return fail(v, "%s declared twice", v->k->vars[s->var].name);
        v->in_scope[s->var] = true;
        return true;
      }
      if (!check_expr(v, s->value)) return false;
      if (v->in_scope[s->var]) return fail(v, "%s declared twice", v->k->vars[s->var].name);
      if (s->value->dtype != v->k->vars[s->var].dtype)
        return fail(v, "%s initialized with a %s", v->k->vars[s->var].name,
                    kiln_dtype_name(s->value->dtype));
      v->in_scope[s->var] = true;
      return true;
    case LS_ASSIGN:
      if (!check_var_index(v, s->var) || !check_expr(v, s->value)) return false;
      if (!v->in_scope[s->var]) return fail(v, "%s assigned out of scope", v->k->vars[s->var].name);
      if (v->loop_var[s->var]) return fail(v, "loop variable %s assigned", v->k->vars[s->var].name);
      if (v->k->vars[s->var].len > 0)
        return fail(v, "array %s assigned as a scalar", v->k->vars[s->var].name);
      if (s->value->dtype != v->k->vars[s->var].dtype)
        return fail(v, "%s assigned a %s", v->k->vars[s->var].name,
                    kiln_dtype_name(s->value->dtype));
      return true;
    case LS_STORE: {
      if (s->buf < 0 || s->buf >= v->p->n_bufs)
        return fail(v, "store to unknown buffer %d", s->buf);
      const kiln_lbuf *b = &v->p->bufs[s->buf];
      if (b->kind == KILN_BUF_INPUT || b->kind == KILN_BUF_WEIGHT)
        return fail(v, "store to read-only buffer %s", b->name);
      if (!check_expr(v, s->index) || !check_expr(v, s->value)) return false;
      if (!is_index_type(s->index->dtype))
        return fail(v, "index into %s is not an integer", b->name);
      if (s->value->dtype != b->dtype)
        return fail(v, "store of a %s into %s buffer %s", kiln_dtype_name(s->value->dtype),
                    kiln_dtype_name(b->dtype), b->name);
      return true;
    }
    case LS_IF:
      if (!check_expr(v, s->cond) || !check_block(v, s->then_)) return false;
      return !s->else_ || check_block(v, s->else_);
    case LS_COMMENT: return true;
    case LS_LSTORE:
      if (!check_local(v, s->var, s->index) || !check_expr(v, s->value)) return false;
      if (s->value->dtype != v->k->vars[s->var].dtype)
        return fail(v, "store of a %s into %s array %s", kiln_dtype_name(s->value->dtype),
                    kiln_dtype_name(v->k->vars[s->var].dtype), v->k->vars[s->var].name);
      return true;
    case LS_DOT4: return check_dot4(v, s);
    case LS_TILEDOT: return check_tiledot(v, s);
  }
  return fail(v, "unknown statement kind %d", (int)s->kind);
}

bool kiln_lprog_verify(const kiln_lprog *p, FILE *err) {
  verify_ctx v = {.p = p, .err = err, .ok = true};
  for (int i = 0; i < p->n_bufs && v.ok; i++) {
    const kiln_lbuf *b = &p->bufs[i];
    if ((b->kind == KILN_BUF_ARENA &&
         b->offset + b->numel * (int64_t)kiln_dtype_size(b->dtype) > p->arena_bytes) ||
        ((b->kind == KILN_BUF_WEIGHT || b->kind == KILN_BUF_STATE) &&
         b->offset + b->numel * (int64_t)kiln_dtype_size(b->dtype) > p->weights_bytes))
      fail(&v, "buffer %s lies outside its region", b->name);
  }
  for (int i = 0; i < p->n_kernels && v.ok; i++) {
    v.k = &p->kernels[i];
    size_t n = (size_t)(v.k->n_vars ? v.k->n_vars : 1);
    v.in_scope = calloc(n, sizeof(bool));
    v.loop_var = calloc(n, sizeof(bool));
    if (v.in_scope && v.loop_var)
      check_block(&v, v.k->body);
    else
      fail(&v, "out of memory");
    free(v.in_scope);
    free(v.loop_var);
  }
  return v.ok;
}
