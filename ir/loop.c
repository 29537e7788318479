// Loop IR: program construction and the builder op lowerings use.
#include "loop.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

kiln_lprog *kiln_lprog_new(const char *name) {
  kiln_lprog *p = kiln_xcalloc(1, sizeof(*p));
  p->name = kiln_pool_strdup(&p->pool, name);
  return p;
}

void kiln_lprog_free(kiln_lprog *p) {
  if (!p) return;
  for (int k = 0; k < p->n_kernels; k++) free(p->kernels[k].vars);
  free(p->kernels);
  free(p->bufs);
  free(p->derived);
  kiln_pool_free(&p->pool);
  free(p);
}

int kiln_lprog_add_buf(kiln_lprog *p, const kiln_lbuf *b) {
  kiln_lbuf copy = *b;
  copy.name = kiln_pool_strdup(&p->pool, b->name);
  KILN_VEC_PUSH(p->bufs, p->n_bufs, p->cap_bufs, copy);
  return p->n_bufs - 1;
}

static kiln_lstmt *new_stmt(kiln_lprog *p, kiln_lstmt_kind kind) {
  kiln_lstmt *s = kiln_pool_alloc(&p->pool, sizeof(*s));
  s->kind = kind;
  s->var = s->buf = -1;
  return s;
}

kiln_lkernel *kiln_lprog_add_kernel(kiln_lprog *p, const char *op, const char *node) {
  kiln_lkernel k = {0};
  k.op = kiln_pool_strdup(&p->pool, op);
  k.node = kiln_pool_strdup(&p->pool, node);
  // k<index>_<node name as an identifier>
  char *name = kiln_pool_printf(&p->pool, "k%d_%s", p->n_kernels, node);
  for (char *c = name; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
      *c = '_';
  k.name = name;
  k.body = new_stmt(p, LS_BLOCK);
  KILN_VEC_PUSH(p->kernels, p->n_kernels, p->cap_kernels, k);
  return &p->kernels[p->n_kernels - 1];
}

// ---- Builder ----

static void push_stmt(kiln_lb *b, kiln_lstmt *s) {
  kiln_lstmt *blk = b->stack[b->depth - 1];
  blk->stmts = kiln_grow(blk->stmts, &blk->cap, blk->n + 1, sizeof(*blk->stmts));
  blk->stmts[blk->n++] = s;
}

// Statement arrays grow with realloc; move them into the pool when a block closes so that the
// whole program is freed with its pool.
static void seal_block(kiln_lb *b, kiln_lstmt *blk) {
  kiln_lstmt **stmts =
      kiln_pool_alloc(&b->prog->pool, sizeof(*stmts) * (size_t)(blk->n ? blk->n : 1));
  if (blk->n) memcpy(stmts, blk->stmts, sizeof(*stmts) * (size_t)blk->n);
  free(blk->stmts);
  blk->stmts = stmts;
  blk->cap = blk->n;
}

static void open_block(kiln_lb *b, kiln_lstmt *blk) {
  if (b->depth >= (int)(sizeof(b->stack) / sizeof(b->stack[0]))) abort();  // lowering bug
  b->stack[b->depth++] = blk;
}

static kiln_lstmt *close_block(kiln_lb *b) {
  kiln_lstmt *blk = b->stack[--b->depth];
  seal_block(b, blk);
  return blk;
}

void kiln_lb_begin(kiln_lb *b, kiln_lprog *p, kiln_lkernel *k) {
  b->prog = p;
  b->k = k;
  b->depth = 0;
  open_block(b, k->body);
}

void kiln_lb_end(kiln_lb *b) {
  if (b->depth != 1) abort();  // a lowering left a loop or if open
  close_block(b);
}

static kiln_lexpr *new_expr(kiln_lb *b, kiln_lexpr_kind kind, kiln_dtype t) {
  kiln_lexpr *e = kiln_pool_alloc(&b->prog->pool, sizeof(*e));
  e->kind = kind;
  e->dtype = t;
  e->var = e->buf = -1;
  return e;
}

kiln_lexpr *lx_int(kiln_lb *b, int64_t v) {
  kiln_lexpr *e = new_expr(b, LE_INT, KILN_I64);
  e->i = v;
  return e;
}

kiln_lexpr *lx_float(kiln_lb *b, kiln_dtype t, double v) {
  kiln_lexpr *e = new_expr(b, LE_FLOAT, t);
  e->f = v;
  return e;
}

kiln_lexpr *lx_var(kiln_lb *b, int var) {
  kiln_lexpr *e = new_expr(b, LE_VAR, b->k->vars[var].dtype);
  e->var = var;
  return e;
}

kiln_lexpr *lx_load(kiln_lb *b, int buf, kiln_lexpr *index) {
  kiln_lexpr *e = new_expr(b, LE_LOAD, b->prog->bufs[buf].dtype);
  e->buf = buf;
  e->a = index;
  return e;
}

static bool is_compare(kiln_lbin op) {
  return op == LB_LT || op == LB_LE || op == LB_EQ || op == LB_NE || op == LB_AND || op == LB_OR;
}

kiln_lexpr *lx_bin(kiln_lb *b, kiln_lbin op, kiln_lexpr *x, kiln_lexpr *y) {
  kiln_lexpr *e = new_expr(b, LE_BIN, is_compare(op) ? KILN_BOOL : x->dtype);
  e->op = op;
  e->a = x;
  e->b = y;
  return e;
}

kiln_lexpr *lx_unary(kiln_lb *b, kiln_lunary op, kiln_lexpr *x) {
  kiln_lexpr *e = new_expr(b, LE_UNARY, x->dtype);
  e->op = op;
  e->a = x;
  return e;
}

kiln_lexpr *lx_select(kiln_lb *b, kiln_lexpr *cond, kiln_lexpr *x, kiln_lexpr *y) {
  kiln_lexpr *e = new_expr(b, LE_SELECT, x->dtype);
  e->a = cond;
  e->b = x;
  e->c = y;
  return e;
}

kiln_lexpr *lx_cast(kiln_lb *b, kiln_dtype t, kiln_lexpr *x) {
  if (x->dtype == t) return x;
  kiln_lexpr *e = new_expr(b, LE_CAST, t);
  e->a = x;
  return e;
}

kiln_lexpr *lx_local(kiln_lb *b, int array, kiln_lexpr *index) {
  kiln_lexpr *e = new_expr(b, LE_LOCAL, b->k->vars[array].dtype);
  e->var = array;
  e->a = index;
  return e;
}

kiln_lexpr *lx_muladd(kiln_lb *b, kiln_lexpr *x, kiln_lexpr *y, kiln_lexpr *z) {
  kiln_lexpr *e = new_expr(b, LE_MULADD, z->dtype);
  e->a = x;
  e->b = y;
  e->c = z;
  return e;
}

static bool is_int_const(const kiln_lexpr *e, int64_t v) { return e->kind == LE_INT && e->i == v; }

kiln_lexpr *lx_add(kiln_lb *b, kiln_lexpr *x, kiln_lexpr *y) {
  if (is_int_const(x, 0)) return y;
  if (is_int_const(y, 0)) return x;
  if (x->kind == LE_INT && y->kind == LE_INT) return lx_int(b, x->i + y->i);
  return lx_bin(b, LB_ADD, x, y);
}

kiln_lexpr *lx_mul(kiln_lb *b, kiln_lexpr *x, kiln_lexpr *y) {
  if (is_int_const(x, 0) || is_int_const(y, 0)) return lx_int(b, 0);
  if (is_int_const(x, 1)) return y;
  if (is_int_const(y, 1)) return x;
  if (x->kind == LE_INT && y->kind == LE_INT) return lx_int(b, x->i * y->i);
  return lx_bin(b, LB_MUL, x, y);
}

kiln_lexpr *lx_madd(kiln_lb *b, kiln_lexpr *x, int64_t k, kiln_lexpr *y) {
  return lx_add(b, lx_mul(b, x, lx_int(b, k)), y);
}

static bool has_var(const kiln_lkernel *k, const char *name) {
  for (int i = 0; i < k->n_vars; i++)
    if (strcmp(k->vars[i].name, name) == 0) return true;
  return false;
}

int kiln_lb_var(kiln_lb *b, const char *name, kiln_dtype t) {
  kiln_lkernel *k = b->k;
  // Unique names: the first `acc` stays `acc`, later ones become acc_1, acc_2, ...
  const char *unique = name;
  for (int i = 1; has_var(k, unique); i++)
    unique = kiln_pool_printf(&b->prog->pool, "%s_%d", name, i);
  kiln_lvar v = {.name = kiln_pool_strdup(&b->prog->pool, unique), .dtype = t};
  KILN_VEC_PUSH(k->vars, k->n_vars, k->cap_vars, v);
  return k->n_vars - 1;
}

int kiln_lb_for(kiln_lb *b, const char *name, kiln_lexpr *lo, kiln_lexpr *hi) {
  kiln_lstmt *s = new_stmt(b->prog, LS_FOR);
  s->var = kiln_lb_var(b, name, KILN_I64);
  s->lo = lo;
  s->hi = hi;
  s->body = new_stmt(b->prog, LS_BLOCK);
  push_stmt(b, s);
  open_block(b, s);  // marks the loop itself on the stack, then its body
  open_block(b, s->body);
  return s->var;
}

int kiln_lb_for_n(kiln_lb *b, const char *name, int64_t n) {
  return kiln_lb_for(b, name, lx_int(b, 0), lx_int(b, n));
}

kiln_lstmt *kiln_lb_end_for(kiln_lb *b) {
  close_block(b);  // the body
  kiln_lstmt *loop = b->stack[--b->depth];
  if (loop->kind != LS_FOR) abort();  // unbalanced builder calls
  return loop;
}

static kiln_lstmt *innermost_open_loop(kiln_lb *b) {
  for (int i = b->depth - 1; i >= 0; i--)
    if (b->stack[i]->kind == LS_FOR) return b->stack[i];
  abort();  // no loop is open
}

void kiln_lb_unroll(kiln_lb *b, int factor) {
  kiln_lstmt *loop = innermost_open_loop(b);
  loop->flags |= KILN_LOOP_UNROLL;
  loop->unroll = factor;
}

void kiln_lb_serial(kiln_lb *b) { innermost_open_loop(b)->flags |= KILN_LOOP_SERIAL; }

int kiln_lb_decl(kiln_lb *b, const char *name, kiln_dtype t, kiln_lexpr *init) {
  kiln_lstmt *s = new_stmt(b->prog, LS_DECL);
  s->var = kiln_lb_var(b, name, t);
  s->value = init;
  push_stmt(b, s);
  return s->var;
}

void kiln_lb_assign(kiln_lb *b, int var, kiln_lexpr *value) {
  kiln_lstmt *s = new_stmt(b->prog, LS_ASSIGN);
  s->var = var;
  s->value = value;
  push_stmt(b, s);
}

int kiln_lb_decl_array(kiln_lb *b, const char *name, kiln_dtype t, int64_t len) {
  kiln_lstmt *s = new_stmt(b->prog, LS_DECL);
  s->var = kiln_lb_var(b, name, t);
  b->k->vars[s->var].len = len;
  push_stmt(b, s);
  return s->var;
}

void kiln_lb_store_local(kiln_lb *b, int array, kiln_lexpr *index, kiln_lexpr *value) {
  kiln_lstmt *s = new_stmt(b->prog, LS_LSTORE);
  s->var = array;
  s->index = index;
  s->value = value;
  push_stmt(b, s);
}

int kiln_lb_decl_lanes(kiln_lb *b, const char *name, int lanes) {
  int v = kiln_lb_decl_array(b, name, KILN_I32, lanes);
  b->k->vars[v].lanes = true;
  return v;
}

void kiln_lb_dot4(kiln_lb *b, int acc, int a_buf, kiln_lexpr *a_index, int w_buf,
                  kiln_lexpr *w_index) {
  kiln_lstmt *s = new_stmt(b->prog, LS_DOT4);
  s->var = acc;
  s->lanes = (int)b->k->vars[acc].len;
  s->buf = a_buf;
  s->index = a_index;
  s->w_buf = w_buf;
  s->w_index = w_index;
  push_stmt(b, s);
}

void kiln_lb_tiledot(kiln_lb *b, int c_buf, kiln_lexpr *c_index, int a_buf, kiln_lexpr *a_index,
                     int w_buf, kiln_lexpr *w_index, const kiln_ltile *tile) {
  kiln_lstmt *s = new_stmt(b->prog, LS_TILEDOT);
  s->c_buf = c_buf;
  s->c_index = c_index;
  s->buf = a_buf;
  s->index = a_index;
  s->w_buf = w_buf;
  s->w_index = w_index;
  s->tile = *tile;
  push_stmt(b, s);
}

static bool stmt_uses_tiles(const kiln_lstmt *s) {
  if (!s) return false;
  if (s->kind == LS_TILEDOT) return true;
  for (int i = 0; s->kind == LS_BLOCK && i < s->n; i++)
    if (stmt_uses_tiles(s->stmts[i])) return true;
  return stmt_uses_tiles(s->body) || stmt_uses_tiles(s->then_) || stmt_uses_tiles(s->else_);
}

bool kiln_lprog_uses_tiles(const kiln_lprog *p) {
  for (int i = 0; i < p->n_kernels; i++)
    if (stmt_uses_tiles(p->kernels[i].body)) return true;
  return false;
}

void kiln_lb_store(kiln_lb *b, int buf, kiln_lexpr *index, kiln_lexpr *value) {
  kiln_lstmt *s = new_stmt(b->prog, LS_STORE);
  s->buf = buf;
  s->index = index;
  s->value = value;
  push_stmt(b, s);
}

void kiln_lb_if(kiln_lb *b, kiln_lexpr *cond) {
  kiln_lstmt *s = new_stmt(b->prog, LS_IF);
  s->cond = cond;
  s->then_ = new_stmt(b->prog, LS_BLOCK);
  push_stmt(b, s);
  open_block(b, s);
  open_block(b, s->then_);
}

void kiln_lb_else(kiln_lb *b) {
  close_block(b);  // then
  kiln_lstmt *s = b->stack[b->depth - 1];
  if (s->kind != LS_IF || s->else_) abort();
  s->else_ = new_stmt(b->prog, LS_BLOCK);
  open_block(b, s->else_);
}

void kiln_lb_end_if(kiln_lb *b) {
  close_block(b);
  kiln_lstmt *s = b->stack[--b->depth];
  if (s->kind != LS_IF) abort();
}

void kiln_lb_comment(kiln_lb *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char buf[512];
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  kiln_lstmt *s = new_stmt(b->prog, LS_COMMENT);
  s->text = kiln_pool_strdup(&b->prog->pool, buf);
  push_stmt(b, s);
}

const char *kiln_lbin_name(kiln_lbin op) {
  static const char *names[] = {
#define X(name, sym) sym,
      KILN_LBIN_LIST(X)
#undef X
  };
  return op < LB_COUNT ? names[op] : "?";
}

const char *kiln_lunary_name(kiln_lunary op) {
  static const char *names[] = {
#define X(name, str) str,
      KILN_LUNARY_LIST(X)
#undef X
  };
  return op < LU_COUNT ? names[op] : "?";
}
