// LLVM backend, kernels: each loop-IR kernel becomes one internal LLVM function taking a pointer
// per buffer it uses (noalias where the C backend would write `restrict`). Variables live in
// allocas that mem2reg promotes; loops are header/body/latch blocks whose latch branch carries
// !llvm.loop metadata (llvm.loop.vectorize.enable for loops marked vectorize, which is also what
// lets LLVM reorder their floating-point reductions, as `omp simd reduction` does in C). Local
// arrays (register-blocked accumulators) are in an alias scope no buffer access touches, so LLVM
// keeps them in registers; docs/llvm.md says why each hint is there.
//
// A loop marked parallel is outlined: its body goes into a function over an iteration range,
// called through the runtime's kiln_parallel_for (OpenMP) with a context struct holding the
// buffer pointers and the outer variables the body reads.
//
// Semantics follow the C backend exactly: narrow integers (i8, u8, bool) behave as C's promoted
// arithmetic cast back, comparisons give 0/1, && || and ?: evaluate lazily (their operands may
// load out of range when not taken), min/max on floats are fmin/fmax, round is nearbyint.
#include <inttypes.h>
#include <llvm-c/Core.h>
#include <llvm-c/DebugInfo.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "../tanh_f32.h"
#include "internal.h"

// ---------------------------------------------------------------------------------------------
// Small helpers shared by the backend's files.

void ll_fail(lgen *g, const char *fmt, ...) {
  if (g->failed) return;
  g->failed = true;
  char msg[512], where[192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (g->kernel >= 0 && g->kernel < g->p->n_kernels)
    snprintf(where, sizeof(where), "LLVM backend: kernel %d (%s)", g->kernel,
             g->p->kernels[g->kernel].name ? g->p->kernels[g->kernel].name : "?");
  else
    snprintf(where, sizeof(where), "LLVM backend");
  kiln_diag_error(g->d, where, "%s", msg);
}

LLVMTypeRef ll_type(lgen *g, kiln_dtype t) {
  switch (t) {
    case KILN_F32: return g->f32;
    case KILN_F64: return g->f64;
    case KILN_I32: return g->i32;
    case KILN_I64: return g->i64;
    default: return g->i8;  // i8, u8, bool
  }
}

LLVMValueRef ll_i32(lgen *g, int64_t v) { return LLVMConstInt(g->i32, (unsigned long long)v, 1); }
LLVMValueRef ll_i64(lgen *g, int64_t v) { return LLVMConstInt(g->i64, (unsigned long long)v, 1); }

void ll_add_fn_attr(lgen *g, LLVMValueRef fn, const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(g->ctx, kind, 0));
}

LLVMValueRef ll_declare(lgen *g, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, int n) {
  LLVMValueRef fn = LLVMGetNamedFunction(g->mod, name);
  if (fn) return fn;
  fn = LLVMAddFunction(g->mod, name, LLVMFunctionType(ret, params, (unsigned)n, 0));
  ll_add_fn_attr(g, fn, "nounwind");
  return fn;
}

LLVMValueRef ll_call(lgen *g, LLVMValueRef fn, LLVMValueRef *args, int n) {
  return LLVMBuildCall2(g->b, LLVMGlobalGetValueType(fn), fn, args, (unsigned)n, "");
}

LLVMBasicBlockRef ll_block(lgen *g, const char *name) {
  return LLVMAppendBasicBlockInContext(g->ctx, g->fn, name);
}

// An alloca at the top of the current function's entry block.
static LLVMValueRef entry_alloca(lgen *g, LLVMTypeRef t, const char *name) {
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(g->fn);
  LLVMBuilderRef b = LLVMCreateBuilderInContext(g->ctx);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first)
    LLVMPositionBuilderBefore(b, first);
  else
    LLVMPositionBuilderAtEnd(b, entry);
  LLVMValueRef a = LLVMBuildAlloca(b, t, name);
  LLVMDisposeBuilder(b);
  return a;
}

static bool is_signed(kiln_dtype t) { return t == KILN_I8 || t == KILN_I32 || t == KILN_I64; }
static bool is_float(kiln_dtype t) { return kiln_dtype_is_float(t); }
static bool is_narrow(kiln_dtype t) { return t == KILN_I8 || t == KILN_U8 || t == KILN_BOOL; }
static unsigned bits_of(kiln_dtype t) { return (unsigned)kiln_dtype_size(t) * 8; }

// ---------------------------------------------------------------------------------------------
// Analysis: checks a kernel so generation never reads out of bounds, and records buffer use.

typedef struct walk {
  lgen *g;
  const kiln_lkernel *k;
  unsigned char *use;
} walk;

static void walk_expr(walk *w, const kiln_lexpr *e) {
  lgen *g = w->g;
  if (g->failed) return;
  if (!e) return ll_fail(g, "missing expression");
  if ((unsigned)e->dtype >= KILN_DTYPE_COUNT)
    return ll_fail(g, "expression with invalid dtype %d", (int)e->dtype);
  switch (e->kind) {
    case LE_INT:
    case LE_FLOAT: return;
    case LE_VAR:
      if (e->var < 0 || e->var >= w->k->n_vars) ll_fail(g, "variable %d out of range", e->var);
      return;
    case LE_LOAD:
      if (e->buf < 0 || e->buf >= g->p->n_bufs) return ll_fail(g, "buffer %d out of range", e->buf);
      w->use[e->buf] |= LL_USE_READ;
      walk_expr(w, e->a);
      return;
    case LE_BIN:
      if (e->op < 0 || e->op >= LB_COUNT) return ll_fail(g, "invalid binary operator %d", e->op);
      walk_expr(w, e->a);
      walk_expr(w, e->b);
      if (!g->failed && e->a->dtype != e->b->dtype)
        ll_fail(g, "operands of %s have types %s and %s", kiln_lbin_name((kiln_lbin)e->op),
                kiln_dtype_name(e->a->dtype), kiln_dtype_name(e->b->dtype));
      return;
    case LE_UNARY:
      if (e->op < 0 || e->op >= LU_COUNT) return ll_fail(g, "invalid unary operator %d", e->op);
      walk_expr(w, e->a);
      return;
    case LE_SELECT:
      walk_expr(w, e->a);
      walk_expr(w, e->b);
      walk_expr(w, e->c);
      return;
    case LE_CAST: walk_expr(w, e->a); return;
    case LE_LOCAL:
      if (e->var < 0 || e->var >= w->k->n_vars || w->k->vars[e->var].len <= 0)
        return ll_fail(g, "local array %d out of range", e->var);
      walk_expr(w, e->a);
      return;
    case LE_MULADD:
      if (!is_float(e->dtype)) return ll_fail(g, "muladd on %s", kiln_dtype_name(e->dtype));
      walk_expr(w, e->a);
      walk_expr(w, e->b);
      walk_expr(w, e->c);
      return;
  }
  ll_fail(g, "invalid expression kind %d", (int)e->kind);
}

static void check_var(walk *w, int var, const char *what) {
  if (var < 0 || var >= w->k->n_vars) ll_fail(w->g, "%s variable %d out of range", what, var);
}

static void walk_dot4(walk *w, const kiln_lstmt *s) {
  lgen *g = w->g;
  if (s->var < 0 || s->var >= w->k->n_vars || !w->k->vars[s->var].lanes ||
      w->k->vars[s->var].len != s->lanes || w->k->vars[s->var].dtype != KILN_I32)
    return ll_fail(g, "dot4 accumulator %d is not a lane accumulator", s->var);
  if (s->buf < 0 || s->buf >= g->p->n_bufs || s->w_buf < 0 || s->w_buf >= g->p->n_bufs)
    return ll_fail(g, "dot4 buffer out of range");
  w->use[s->buf] |= LL_USE_READ;
  w->use[s->w_buf] |= LL_USE_READ;
  walk_expr(w, s->index);
  walk_expr(w, s->w_index);
}

static void walk_tiledot(walk *w, const kiln_lstmt *s) {
  lgen *g = w->g;
  int bufs[3] = {s->buf, s->w_buf, s->c_buf};
  for (int i = 0; i < 3; i++)
    if (bufs[i] < 0 || bufs[i] >= g->p->n_bufs) return ll_fail(g, "tiledot buffer out of range");
  w->use[s->buf] |= LL_USE_READ;
  w->use[s->w_buf] |= LL_USE_READ;
  w->use[s->c_buf] |= LL_USE_WRITE;
  walk_expr(w, s->index);
  walk_expr(w, s->w_index);
  walk_expr(w, s->c_index);
}

static void walk_stmt(walk *w, const kiln_lstmt *s) {
  lgen *g = w->g;
  if (!s || g->failed) return;
  switch (s->kind) {
    case LS_BLOCK:
      for (int i = 0; i < s->n; i++) walk_stmt(w, s->stmts[i]);
      return;
    case LS_FOR:
      check_var(w, s->var, "loop");
      for (int i = 0; (s->flags & KILN_LOOP_REDUCE) && i < s->n_reduce; i++)
        check_var(w, s->reduce_vars[i], "reduction");
      walk_expr(w, s->lo);
      walk_expr(w, s->hi);
      walk_stmt(w, s->body);
      return;
    case LS_DECL:
    case LS_ASSIGN:
      check_var(w, s->var, "assigned");
      if (s->value || s->kind == LS_ASSIGN) walk_expr(w, s->value);
      return;
    case LS_STORE:
      if (s->buf < 0 || s->buf >= g->p->n_bufs) return ll_fail(g, "buffer %d out of range", s->buf);
      if (g->p->bufs[s->buf].kind == KILN_BUF_INPUT || g->p->bufs[s->buf].kind == KILN_BUF_WEIGHT)
        return ll_fail(g, "writes to read-only buffer %d (%s)", s->buf,
                       g->p->bufs[s->buf].name ? g->p->bufs[s->buf].name : "?");
      w->use[s->buf] |= LL_USE_WRITE;
      walk_expr(w, s->index);
      walk_expr(w, s->value);
      return;
    case LS_IF:
      walk_expr(w, s->cond);
      walk_stmt(w, s->then_);
      walk_stmt(w, s->else_);
      return;
    case LS_COMMENT: return;
    case LS_LSTORE:
      if (s->var < 0 || s->var >= w->k->n_vars || w->k->vars[s->var].len <= 0)
        return ll_fail(g, "local array %d out of range", s->var);
      walk_expr(w, s->index);
      walk_expr(w, s->value);
      return;
    case LS_DOT4: walk_dot4(w, s); return;
    case LS_TILEDOT: walk_tiledot(w, s); return;
  }
  ll_fail(g, "invalid statement kind %d", (int)s->kind);
}

bool ll_analyze_kernel(lgen *g, int k) {
  g->kernel = k;
  const kiln_lkernel *kr = &g->p->kernels[k];
  for (int v = 0; v < kr->n_vars; v++)
    if ((unsigned)kr->vars[v].dtype >= KILN_DTYPE_COUNT)
      ll_fail(g, "variable %d has an invalid dtype", v);
  walk w = {.g = g, .k = kr, .use = g->kernel_use[k]};
  if (!kr->body) ll_fail(g, "kernel has no body");
  walk_stmt(&w, kr->body);
  g->kernel = -1;
  return !g->failed;
}

// Whether buffers a and b may share memory (the same region and overlapping byte ranges).
static int region(kiln_buf_kind k) { return k == KILN_BUF_STATE ? KILN_BUF_WEIGHT : (int)k; }

static bool may_alias(const kiln_lbuf *a, const kiln_lbuf *b) {
  if (region(a->kind) != region(b->kind)) return false;  // state lives in the weights payload
  if (a->kind == KILN_BUF_INPUT || a->kind == KILN_BUF_OUTPUT) return a->index == b->index;
  int64_t a0 = a->offset, a1 = a0 + a->numel * (int64_t)kiln_dtype_size(a->dtype);
  int64_t b0 = b->offset, b1 = b0 + b->numel * (int64_t)kiln_dtype_size(b->dtype);
  return a0 < b1 && b0 < a1;
}

bool ll_param_noalias(const lgen *g, const unsigned char *use, int a) {
  if (use[a] == (LL_USE_READ | LL_USE_WRITE)) return false;
  for (int b = 0; b < g->p->n_bufs; b++) {
    if (b == a || !use[b]) continue;
    bool writes = (use[a] | use[b]) & LL_USE_WRITE;
    if (writes && may_alias(&g->p->bufs[a], &g->p->bufs[b])) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Conversions, as C converts between the dtypes' C types.

static LLVMValueRef convert(lgen *g, LLVMValueRef v, kiln_dtype from, kiln_dtype to) {
  if (from == to) return v;
  LLVMTypeRef T = ll_type(g, to);
  if (is_float(to)) {
    if (is_float(from))
      return to == KILN_F64 ? LLVMBuildFPExt(g->b, v, T, "") : LLVMBuildFPTrunc(g->b, v, T, "");
    return is_signed(from) ? LLVMBuildSIToFP(g->b, v, T, "") : LLVMBuildUIToFP(g->b, v, T, "");
  }
  if (is_float(from)) {
    // Narrow targets convert through int, as the C compiler does.
    if (is_narrow(to)) return LLVMBuildTrunc(g->b, LLVMBuildFPToSI(g->b, v, g->i32, ""), T, "");
    return LLVMBuildFPToSI(g->b, v, T, "");
  }
  unsigned fb = bits_of(from), tb = bits_of(to);
  if (fb == tb) return v;
  if (fb > tb) return LLVMBuildTrunc(g->b, v, T, "");
  return is_signed(from) ? LLVMBuildSExt(g->b, v, T, "") : LLVMBuildZExt(g->b, v, T, "");
}

// i1 -> a value of dtype t (0 or 1).
static LLVMValueRef from_bit(lgen *g, LLVMValueRef bit, kiln_dtype t) {
  return convert(g, LLVMBuildZExt(g->b, bit, g->i8, ""), KILN_BOOL, t);
}

// ---------------------------------------------------------------------------------------------
// Expressions. expr() returns a value of LLVM type ll_type(e->dtype); cond() an i1.

static LLVMValueRef expr(lgen *g, const kiln_lexpr *e);
static LLVMValueRef cond(lgen *g, const kiln_lexpr *e);

static LLVMValueRef intrinsic(lgen *g, const char *name, LLVMTypeRef t, LLVMValueRef *args, int n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  if (!id) {
    ll_fail(g, "LLVM has no intrinsic %s", name);
    return LLVMGetUndef(t);
  }
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(g->mod, id, &t, 1);
  return LLVMBuildCall2(g->b, LLVMIntrinsicGetType(g->ctx, id, &t, 1), fn, args, (unsigned)n, "");
}

// A libm function with no side effects the optimizer must keep (as with -fno-math-errno).
static LLVMValueRef libm(lgen *g, const char *name, kiln_dtype t, LLVMValueRef x) {
  char full[32];
  snprintf(full, sizeof(full), "%s%s", name, t == KILN_F64 ? "" : "f");
  LLVMTypeRef T = ll_type(g, t);
  bool fresh = !LLVMGetNamedFunction(g->mod, full);
  LLVMValueRef fn = ll_declare(g, full, T, &T, 1);
  if (fresh) {
    ll_add_fn_attr(g, fn, "willreturn");
    unsigned mem = LLVMGetEnumAttributeKindForName("memory", 6);
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                            LLVMCreateEnumAttribute(g->ctx, mem, 0));  // memory(none)
  }
  return ll_call(g, fn, &x, 1);
}

static LLVMValueRef int_minmax(lgen *g, bool is_min, kiln_dtype t, LLVMValueRef a, LLVMValueRef b) {
  LLVMIntPredicate p =
      is_signed(t) ? (is_min ? LLVMIntSLT : LLVMIntSGT) : (is_min ? LLVMIntULT : LLVMIntUGT);
  return LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, p, a, b, ""), a, b, "");
}

// Integer / and %, as C computes them after promotion (i8 through i32: -128 / -1 is 128 -> -128).
static LLVMValueRef int_divmod(lgen *g, bool is_div, kiln_dtype t, LLVMValueRef a, LLVMValueRef b) {
  if (t == KILN_I8) {
    LLVMValueRef r =
        int_divmod(g, is_div, KILN_I32, convert(g, a, t, KILN_I32), convert(g, b, t, KILN_I32));
    return convert(g, r, KILN_I32, t);
  }
  if (is_signed(t)) return is_div ? LLVMBuildSDiv(g->b, a, b, "") : LLVMBuildSRem(g->b, a, b, "");
  return is_div ? LLVMBuildUDiv(g->b, a, b, "") : LLVMBuildURem(g->b, a, b, "");
}

static LLVMValueRef float_bin(lgen *g, int op, kiln_dtype t, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef args[2] = {a, b};
  LLVMTypeRef T = ll_type(g, t);
  switch (op) {
    case LB_ADD: return LLVMBuildFAdd(g->b, a, b, "");
    case LB_SUB: return LLVMBuildFSub(g->b, a, b, "");
    case LB_MUL: return LLVMBuildFMul(g->b, a, b, "");
    case LB_DIV: return LLVMBuildFDiv(g->b, a, b, "");
    case LB_MOD: return LLVMBuildFRem(g->b, a, b, "");            // fmod
    case LB_MIN: return intrinsic(g, "llvm.minnum", T, args, 2);  // fmin
    case LB_MAX: return intrinsic(g, "llvm.maxnum", T, args, 2);
    case LB_POW: return intrinsic(g, "llvm.pow", T, args, 2);
    default: break;
  }
  ll_fail(g, "binary operator %s on %s is not supported by the LLVM backend",
          kiln_lbin_name((kiln_lbin)op), kiln_dtype_name(t));
  return LLVMGetUndef(T);
}

static LLVMValueRef int_bin(lgen *g, int op, kiln_dtype t, LLVMValueRef a, LLVMValueRef b) {
  switch (op) {
    case LB_ADD: return LLVMBuildAdd(g->b, a, b, "");
    case LB_SUB: return LLVMBuildSub(g->b, a, b, "");
    case LB_MUL: return LLVMBuildMul(g->b, a, b, "");
    case LB_DIV: return int_divmod(g, true, t, a, b);
    case LB_MOD: return int_divmod(g, false, t, a, b);
    case LB_MIN: return int_minmax(g, true, t, a, b);
    case LB_MAX: return int_minmax(g, false, t, a, b);
    case LB_XOR:
      if (t == KILN_I64) return LLVMBuildXor(g->b, a, b, "");
      break;
    case LB_SHR:  // logical: on the 64-bit pattern
      if (t == KILN_I64) return LLVMBuildLShr(g->b, a, b, "");
      break;
    default: break;
  }
  ll_fail(g, "binary operator %s on %s is not supported by the LLVM backend",
          kiln_lbin_name((kiln_lbin)op), kiln_dtype_name(t));
  return LLVMGetUndef(ll_type(g, t));
}

static bool is_cmp(int op) {
  return op == LB_LT || op == LB_LE || op == LB_EQ || op == LB_NE || op == LB_AND || op == LB_OR;
}

static LLVMValueRef bin_expr(lgen *g, const kiln_lexpr *e) {
  if (is_cmp(e->op)) return from_bit(g, cond(g, e), e->dtype);
  kiln_dtype t = e->a->dtype;
  LLVMValueRef a = expr(g, e->a), b = expr(g, e->b);
  LLVMValueRef r = is_float(t) ? float_bin(g, e->op, t, a, b) : int_bin(g, e->op, t, a, b);
  return convert(g, r, t, e->dtype);
}

// SplitMix64's finalizer on the 64-bit pattern.
static LLVMValueRef mix64(lgen *g, LLVMValueRef z) {
  static const struct {
    int shift;
    uint64_t mul;
  } steps[] = {{30, 0xbf58476d1ce4e5b9ull}, {27, 0x94d049bb133111ebull}, {31, 0}};
  for (int i = 0; i < 3; i++) {
    z = LLVMBuildXor(g->b, z, LLVMBuildLShr(g->b, z, ll_i64(g, steps[i].shift), ""), "");
    if (steps[i].mul) z = LLVMBuildMul(g->b, z, LLVMConstInt(g->i64, steps[i].mul, 0), "");
  }
  return z;
}

// f32 tanh as the C backend computes it (emit_c.c's kiln_gen_tanhf; the accuracy argument is
// there): in double, branch-free, so the loop vectorizer can widen it where libm's tanhf would
// stay a scalar call. |x| clamped to 10, m = exp(2|x|) - 1 = 2^n (q(r) + 1) - 1 (q: tanh_f32.h's
// polynomial, 2^n built in the exponent bits), m / (m + 2), x's sign; NaN propagates. The Horner
// steps and the sum for m are llvm.fmuladd, fused where the target has FMA (as the C backend's
// kiln_gen_muladd_f64).
static LLVMValueRef fmuladd_f64(lgen *g, LLVMValueRef x, LLVMValueRef y, LLVMValueRef z) {
  LLVMValueRef args[3] = {x, y, z};
  return intrinsic(g, "llvm.fmuladd", ll_type(g, KILN_F64), args, 3);
}

static LLVMValueRef tanh_f32(lgen *g, LLVMValueRef xf) {
  LLVMTypeRef D = ll_type(g, KILN_F64);
  LLVMBuilderRef b = g->b;
#define K(v) LLVMConstReal(D, (v))
  LLVMValueRef x = LLVMBuildFPExt(b, xf, D, ""), a = intrinsic(g, "llvm.fabs", D, &x, 1);
  a = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, a, K(10.0), ""), K(10.0), a, "");
  LLVMValueRef y = LLVMBuildFMul(b, K(2.0), a, "");
  LLVMValueRef n = LLVMBuildFMul(b, y, K(1.4426950408889634), "");
  n = intrinsic(g, "llvm.nearbyint", D, &n, 1);
  LLVMValueRef minus_n = LLVMBuildFNeg(b, n, "");
  LLVMValueRef r = fmuladd_f64(g, minus_n, K(0.6931471803691238), y);
  r = fmuladd_f64(g, minus_n, K(1.9082149292705877e-10), r);
  LLVMValueRef q = K(tanh_expm1_poly[0]);
  for (size_t i = 1; i < sizeof tanh_expm1_poly / sizeof *tanh_expm1_poly; i++)
    q = fmuladd_f64(g, q, r, K(tanh_expm1_poly[i]));
  q = LLVMBuildFMul(b, q, r, "");
  LLVMValueRef bits =
      LLVMBuildBitCast(b, LLVMBuildFAdd(b, n, K(6755399441055744.0), ""), g->i64, "");
  bits = LLVMBuildShl(b, LLVMBuildAdd(b, bits, ll_i64(g, 1023), ""), ll_i64(g, 52), "");
  LLVMValueRef scale = LLVMBuildBitCast(b, bits, D, "");
  LLVMValueRef m = fmuladd_f64(g, scale, q, LLVMBuildFSub(b, scale, K(1.0), ""));
  LLVMValueRef t = LLVMBuildFDiv(b, m, LLVMBuildFAdd(b, m, K(2.0), ""), "");
  LLVMValueRef args[2] = {t, x};
#undef K
  return LLVMBuildFPTrunc(b, intrinsic(g, "llvm.copysign", D, args, 2), ll_type(g, KILN_F32), "");
}

static LLVMValueRef float_unary(lgen *g, int op, kiln_dtype t, LLVMValueRef x) {
  LLVMTypeRef T = ll_type(g, t);
  LLVMValueRef one = LLVMConstReal(T, 1.0);
  switch (op) {
    case LU_NEG: return LLVMBuildFNeg(g->b, x, "");
    case LU_ABS: return intrinsic(g, "llvm.fabs", T, &x, 1);
    case LU_EXP: return intrinsic(g, "llvm.exp", T, &x, 1);
    case LU_LOG: return intrinsic(g, "llvm.log", T, &x, 1);
    case LU_SQRT: return intrinsic(g, "llvm.sqrt", T, &x, 1);
    case LU_FLOOR: return intrinsic(g, "llvm.floor", T, &x, 1);
    case LU_CEIL: return intrinsic(g, "llvm.ceil", T, &x, 1);
    case LU_SIN: return intrinsic(g, "llvm.sin", T, &x, 1);
    case LU_COS: return intrinsic(g, "llvm.cos", T, &x, 1);
    case LU_ROUND: return intrinsic(g, "llvm.nearbyint", T, &x, 1);  // half to even
    case LU_TANH: return t == KILN_F32 ? tanh_f32(g, x) : libm(g, "tanh", t, x);
    case LU_ERF: return libm(g, "erf", t, x);
    case LU_RECIP: return LLVMBuildFDiv(g->b, one, x, "");
    case LU_SIGMOID: {
      LLVMValueRef ex = LLVMBuildFNeg(g->b, x, "");
      ex = intrinsic(g, "llvm.exp", T, &ex, 1);
      return LLVMBuildFDiv(g->b, one, LLVMBuildFAdd(g->b, one, ex, ""), "");
    }
    default: break;
  }
  ll_fail(g, "unary operator %s on %s is not supported by the LLVM backend",
          kiln_lunary_name((kiln_lunary)op), kiln_dtype_name(t));
  return LLVMGetUndef(T);
}

static LLVMValueRef int_unary(lgen *g, int op, kiln_dtype t, LLVMValueRef x) {
  switch (op) {
    case LU_NEG: return LLVMBuildNeg(g->b, x, "");
    case LU_ABS: {  // wraps like the C helper's cast: abs(-128) is -128 in i8
      LLVMValueRef args[2] = {x, LLVMConstInt(g->i1, 0, 0)};
      return intrinsic(g, "llvm.abs", ll_type(g, t), args, 2);
    }
    case LU_MIX64:
      if (t == KILN_I64) return mix64(g, x);
      break;
    default: break;
  }
  ll_fail(g, "unary operator %s on %s is not supported by the LLVM backend",
          kiln_lunary_name((kiln_lunary)op), kiln_dtype_name(t));
  return LLVMGetUndef(ll_type(g, t));
}

// a ? b : c, evaluating only the arm taken.
static LLVMValueRef select_expr(lgen *g, const kiln_lexpr *e) {
  LLVMValueRef c = cond(g, e->a);
  LLVMBasicBlockRef yes = ll_block(g, "sel.then"), no = ll_block(g, "sel.else");
  LLVMBasicBlockRef done = ll_block(g, "sel.end");
  LLVMBuildCondBr(g->b, c, yes, no);
  LLVMPositionBuilderAtEnd(g->b, yes);
  LLVMValueRef vy = convert(g, expr(g, e->b), e->b->dtype, e->dtype);
  LLVMBasicBlockRef yes_end = LLVMGetInsertBlock(g->b);
  LLVMBuildBr(g->b, done);
  LLVMPositionBuilderAtEnd(g->b, no);
  LLVMValueRef vn = convert(g, expr(g, e->c), e->c->dtype, e->dtype);
  LLVMBasicBlockRef no_end = LLVMGetInsertBlock(g->b);
  LLVMBuildBr(g->b, done);
  LLVMPositionBuilderAtEnd(g->b, done);
  LLVMValueRef phi = LLVMBuildPhi(g->b, ll_type(g, e->dtype), "");
  LLVMValueRef vals[2] = {vy, vn};
  LLVMBasicBlockRef blocks[2] = {yes_end, no_end};
  LLVMAddIncoming(phi, vals, blocks, 2);
  return phi;
}

// A distinct, self-referential metadata node !{self, ops[0..n)} (n <= 4): a loop ID, an alias
// domain or scope.
static LLVMMetadataRef distinct_node(lgen *g, LLVMMetadataRef *ops, int n) {
  LLVMMetadataRef all[5] = {LLVMTemporaryMDNode(g->ctx, NULL, 0)};
  for (int i = 0; i < n && i < 4; i++) all[i + 1] = ops[i];
  LLVMMetadataRef node = LLVMMDNodeInContext2(g->ctx, all, (size_t)(n < 4 ? n : 4) + 1);
  LLVMMetadataReplaceAllUsesWith(all[0], node);  // also frees the temporary node
  return node;
}

// The list !{locals scope} (made once per module): local-array accesses are in that scope,
// buffer accesses are noalias with it.
static LLVMValueRef locals_scope(lgen *g) {
  if (g->locals_scope) return g->locals_scope;
  LLVMMetadataRef name = LLVMMDStringInContext2(g->ctx, "kiln.locals", 11);
  LLVMMetadataRef domain = distinct_node(g, &name, 1);
  LLVMMetadataRef scope_ops[2] = {domain, LLVMMDStringInContext2(g->ctx, "kiln.local.arrays", 17)};
  LLVMMetadataRef scope = distinct_node(g, scope_ops, 2);
  g->locals_scope = LLVMMetadataAsValue(g->ctx, LLVMMDNodeInContext2(g->ctx, &scope, 1));
  return g->locals_scope;
}

static void set_scope(lgen *g, LLVMValueRef access, bool local) {
  const char *kind = local ? "alias.scope" : "noalias";
  LLVMSetMetadata(access, LLVMGetMDKindIDInContext(g->ctx, kind, (unsigned)strlen(kind)),
                  locals_scope(g));
}

// buf[base + v] as two steps, &buf[base] then [v], when the index ends in "+ v", v the vectorized
// loop's variable:
// LLVM would otherwise fold base + v into base | v where base's low bits are known zero, and the
// loop vectorizer then sees a gather instead of consecutive lanes (a blocked 1x1 conv ran 2.7x
// slower than the C backend's). Not inbounds: &buf[base] alone may lie outside buf (a padded
// window's base before its first column).
static LLVMValueRef buffer_addr(lgen *g, LLVMTypeRef T, LLVMValueRef buf, const kiln_lexpr *index) {
  if (index->kind == LE_BIN && index->op == LB_ADD && index->b->kind == LE_VAR &&
      index->b->var == g->vector_var && index->dtype == KILN_I64 && index->a->dtype == KILN_I64 &&
      index->b->dtype == KILN_I64) {
    LLVMValueRef base = expr(g, index->a), lane = expr(g, index->b);
    LLVMValueRef row = LLVMBuildGEP2(g->b, T, buf, &base, 1, "");  // may lie outside buf
    return LLVMBuildGEP2(g->b, T, row, &lane, 1, "");
  }
  LLVMValueRef idx = convert(g, expr(g, index), index->dtype, KILN_I64);
  return LLVMBuildInBoundsGEP2(g->b, T, buf, &idx, 1, "");
}

static LLVMValueRef load_expr(lgen *g, const kiln_lexpr *e) {
  const kiln_lbuf *lb = &g->p->bufs[e->buf];
  if (!g->buf_ptr[e->buf]) {
    ll_fail(g, "buffer %d is not a parameter of this kernel", e->buf);
    return LLVMGetUndef(ll_type(g, e->dtype));
  }
  LLVMTypeRef T = ll_type(g, lb->dtype);
  LLVMValueRef at = buffer_addr(g, T, g->buf_ptr[e->buf], e->a);
  LLVMValueRef v = LLVMBuildLoad2(g->b, T, at, "");
  LLVMSetAlignment(v, (unsigned)kiln_dtype_size(lb->dtype));
  set_scope(g, v, false);
  return convert(g, v, lb->dtype, e->dtype);
}

// The address of array[index] (a local array: an alloca of len elements).
static LLVMValueRef local_addr(lgen *g, int array, const kiln_lexpr *index) {
  const kiln_lvar *a = &g->p->kernels[g->kernel].vars[array];
  LLVMValueRef idx = convert(g, expr(g, index), index->dtype, KILN_I64);
  return LLVMBuildInBoundsGEP2(g->b, ll_type(g, a->dtype), g->var_slot[array], &idx, 1, "");
}

// x * y + z as llvm.fmuladd: fused where the target has FMA, as the C backend's fmaf.
static LLVMValueRef muladd_expr(lgen *g, const kiln_lexpr *e) {
  LLVMValueRef args[3] = {convert(g, expr(g, e->a), e->a->dtype, e->dtype),
                          convert(g, expr(g, e->b), e->b->dtype, e->dtype),
                          convert(g, expr(g, e->c), e->c->dtype, e->dtype)};
  return intrinsic(g, "llvm.fmuladd", ll_type(g, e->dtype), args, 3);
}

static LLVMValueRef const_expr(lgen *g, const kiln_lexpr *e) {
  LLVMTypeRef T = ll_type(g, e->dtype);
  if (e->kind == LE_INT)
    return is_float(e->dtype) ? LLVMConstReal(T, (double)e->i)
                              : LLVMConstInt(T, (unsigned long long)e->i, 1);
  if (is_float(e->dtype))
    return LLVMConstReal(T, e->dtype == KILN_F32 ? (double)(float)e->f : e->f);
  double f = e->f;  // a float constant of integer type: truncated (in range) as C casts it
  int64_t i = isfinite(f) && fabs(f) < 9.2e18 ? (int64_t)f : 0;
  return LLVMConstInt(T, (unsigned long long)i, 1);
}

static LLVMValueRef expr(lgen *g, const kiln_lexpr *e) {
  if (g->failed) return LLVMGetUndef(ll_type(g, e ? e->dtype : KILN_I64));
  switch (e->kind) {
    case LE_INT:
    case LE_FLOAT: return const_expr(g, e);
    case LE_VAR: {
      kiln_dtype vt = g->p->kernels[g->kernel].vars[e->var].dtype;
      LLVMValueRef v = LLVMBuildLoad2(g->b, ll_type(g, vt), g->var_slot[e->var], "");
      return convert(g, v, vt, e->dtype);
    }
    case LE_LOAD: return load_expr(g, e);
    case LE_BIN: return bin_expr(g, e);
    case LE_UNARY: {
      kiln_dtype t = e->a->dtype;
      LLVMValueRef x = expr(g, e->a);
      LLVMValueRef r = is_float(t) ? float_unary(g, e->op, t, x) : int_unary(g, e->op, t, x);
      return convert(g, r, t, e->dtype);
    }
    case LE_SELECT: return select_expr(g, e);
    case LE_CAST:
      if (e->dtype == KILN_BOOL) return from_bit(g, cond(g, e->a), KILN_BOOL);  // x != 0
      return convert(g, expr(g, e->a), e->a->dtype, e->dtype);
    case LE_LOCAL: {
      kiln_dtype vt = g->p->kernels[g->kernel].vars[e->var].dtype;
      LLVMValueRef v = LLVMBuildLoad2(g->b, ll_type(g, vt), local_addr(g, e->var, e->a), "");
      set_scope(g, v, true);
      return convert(g, v, vt, e->dtype);
    }
    case LE_MULADD: return muladd_expr(g, e);
  }
  ll_fail(g, "invalid expression kind %d", (int)e->kind);
  return LLVMGetUndef(ll_type(g, e->dtype));
}

// a && b / a || b: b is evaluated only when it decides.
static LLVMValueRef logic(lgen *g, const kiln_lexpr *e) {
  bool is_and = e->op == LB_AND;
  LLVMValueRef l = cond(g, e->a);
  LLVMBasicBlockRef l_end = LLVMGetInsertBlock(g->b);
  LLVMBasicBlockRef rhs = ll_block(g, is_and ? "and.rhs" : "or.rhs");
  LLVMBasicBlockRef done = ll_block(g, is_and ? "and.end" : "or.end");
  if (is_and)
    LLVMBuildCondBr(g->b, l, rhs, done);
  else
    LLVMBuildCondBr(g->b, l, done, rhs);
  LLVMPositionBuilderAtEnd(g->b, rhs);
  LLVMValueRef r = cond(g, e->b);
  LLVMBasicBlockRef r_end = LLVMGetInsertBlock(g->b);
  LLVMBuildBr(g->b, done);
  LLVMPositionBuilderAtEnd(g->b, done);
  LLVMValueRef phi = LLVMBuildPhi(g->b, g->i1, "");
  LLVMValueRef vals[2] = {LLVMConstInt(g->i1, is_and ? 0 : 1, 0), r};
  LLVMBasicBlockRef blocks[2] = {l_end, r_end};
  LLVMAddIncoming(phi, vals, blocks, 2);
  return phi;
}

static LLVMValueRef compare(lgen *g, const kiln_lexpr *e) {
  kiln_dtype t = e->a->dtype;
  LLVMValueRef a = expr(g, e->a), b = expr(g, e->b);
  if (is_float(t)) {
    static const LLVMRealPredicate fp[LB_COUNT] = {
        [LB_LT] = LLVMRealOLT, [LB_LE] = LLVMRealOLE, [LB_EQ] = LLVMRealOEQ, [LB_NE] = LLVMRealUNE};
    return LLVMBuildFCmp(g->b, fp[e->op], a, b, "");
  }
  bool s = is_signed(t);
  LLVMIntPredicate p = e->op == LB_LT   ? (s ? LLVMIntSLT : LLVMIntULT)
                       : e->op == LB_LE ? (s ? LLVMIntSLE : LLVMIntULE)
                       : e->op == LB_EQ ? LLVMIntEQ
                                        : LLVMIntNE;
  return LLVMBuildICmp(g->b, p, a, b, "");
}

static LLVMValueRef cond(lgen *g, const kiln_lexpr *e) {
  if (g->failed) return LLVMConstInt(g->i1, 0, 0);
  if (e->kind == LE_BIN && (e->op == LB_AND || e->op == LB_OR)) return logic(g, e);
  if (e->kind == LE_BIN && is_cmp(e->op)) return compare(g, e);
  LLVMValueRef v = expr(g, e);
  if (is_float(e->dtype))
    return LLVMBuildFCmp(g->b, LLVMRealUNE, v, LLVMConstReal(ll_type(g, e->dtype), 0.0), "");
  return LLVMBuildICmp(g->b, LLVMIntNE, v, LLVMConstInt(ll_type(g, e->dtype), 0, 0), "");
}

// ---------------------------------------------------------------------------------------------
// Statements.

static void stmt(lgen *g, const kiln_lstmt *s);

// ---------------------------------------------------------------------------------------------
// LS_DOT4 (ir/loop.h): acc[l] += sum over j < 4 of u8 a[j] * i8 w[4 * l + j]. One vpdpbusd where
// the target has AVX-512 VNNI and there are 16 lanes; elsewhere the same exact sums as vector IR
// (bytes widened to i32, multiplied, each lane's 4 products added), which LLVM lowers per target.

static bool target_has_vnni512(lgen *g) {
  const char *t = g->o ? g->o->target : NULL;
  if (t && strncmp(t, "native", 6) != 0) return false;  // avx512 is skylake-avx512: no VNNI
  char *features = LLVMGetHostCPUFeatures();
  bool has = features && strstr(features, "+avx512vnni") != NULL;
  LLVMDisposeMessage(features);
  return has;
}

// A load of type t from &buf[index] (byte buffers; alignment 1).
static LLVMValueRef dot4_load(lgen *g, int buf, const kiln_lexpr *index, LLVMTypeRef t) {
  LLVMValueRef idx = convert(g, expr(g, index), index->dtype, KILN_I64);
  if (!g->buf_ptr[buf]) {
    ll_fail(g, "buffer %d is not a parameter of this kernel", buf);
    return LLVMGetUndef(t);
  }
  LLVMValueRef at = LLVMBuildInBoundsGEP2(g->b, g->i8, g->buf_ptr[buf], &idx, 1, "");
  LLVMValueRef v = LLVMBuildLoad2(g->b, t, at, "");
  LLVMSetAlignment(v, 1);
  set_scope(g, v, false);
  return v;
}

// shufflevector(v, poison, <first + step * i for i < n>)
static LLVMValueRef dot4_shuffle(lgen *g, LLVMValueRef v, int n, int first, int step, int mod) {
  LLVMValueRef *mask = kiln_xcalloc((size_t)n, sizeof(LLVMValueRef));
  for (int i = 0; i < n; i++) mask[i] = ll_i32(g, (first + step * i) % mod);
  LLVMValueRef r = LLVMBuildShuffleVector(g->b, v, LLVMGetPoison(LLVMTypeOf(v)),
                                          LLVMConstVector(mask, (unsigned)n), "");
  free(mask);
  return r;
}

// sum over j < 4 of a[j] * w[4l + j] for each lane l, as a <lanes x i32>.
static LLVMValueRef dot4_sums(lgen *g, LLVMValueRef a4, LLVMValueRef w, int lanes) {
  LLVMTypeRef wide = LLVMVectorType(g->i32, (unsigned)(4 * lanes));
  LLVMValueRef a_bytes = LLVMBuildBitCast(g->b, a4, LLVMVectorType(g->i8, 4), "");
  LLVMValueRef a = LLVMBuildZExt(g->b, dot4_shuffle(g, a_bytes, 4 * lanes, 0, 1, 4), wide, "");
  LLVMValueRef prod = LLVMBuildMul(g->b, a, LLVMBuildSExt(g->b, w, wide, ""), "");
  LLVMValueRef sum = dot4_shuffle(g, prod, lanes, 0, 4, 4 * lanes);
  for (int j = 1; j < 4; j++)
    sum = LLVMBuildAdd(g->b, sum, dot4_shuffle(g, prod, lanes, j, 4, 4 * lanes), "");
  return sum;
}

static LLVMValueRef dot4_vnni512(lgen *g, LLVMValueRef acc, LLVMValueRef a4, LLVMValueRef w) {
  const char *name = "llvm.x86.avx512.vpdpbusd.512";
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  if (!id) return NULL;
  LLVMTypeRef v16 = LLVMVectorType(g->i32, 16);
  LLVMValueRef one = LLVMBuildInsertElement(g->b, LLVMGetPoison(v16), a4, ll_i32(g, 0), "");
  LLVMValueRef args[3] = {acc, dot4_shuffle(g, one, 16, 0, 0, 16),
                          LLVMBuildBitCast(g->b, w, v16, "")};
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(g->mod, id, NULL, 0);
  return LLVMBuildCall2(g->b, LLVMIntrinsicGetType(g->ctx, id, NULL, 0), fn, args, 3, "");
}

static void dot4_stmt(lgen *g, const kiln_lstmt *s) {
  int lanes = s->lanes;
  LLVMTypeRef acc_t = LLVMVectorType(g->i32, (unsigned)lanes);
  LLVMValueRef acc = LLVMBuildLoad2(g->b, acc_t, g->var_slot[s->var], "");
  LLVMSetAlignment(acc, 4);
  set_scope(g, acc, true);
  LLVMValueRef a4 = dot4_load(g, s->buf, s->index, g->i32);
  LLVMValueRef w = dot4_load(g, s->w_buf, s->w_index, LLVMVectorType(g->i8, (unsigned)(4 * lanes)));
  LLVMValueRef r = lanes == 16 && target_has_vnni512(g) ? dot4_vnni512(g, acc, a4, w) : NULL;
  if (!r) r = LLVMBuildAdd(g->b, acc, dot4_sums(g, a4, w, lanes), "");
  set_scope(g, LLVMBuildStore(g->b, r, g->var_slot[s->var]), true);
}

// LS_TILEDOT (ir/loop.h): a call of the runtime's AMX kernel (runtime/tiles.c).
static LLVMValueRef tile_at(lgen *g, int buf, const kiln_lexpr *index, LLVMTypeRef elem) {
  LLVMValueRef idx = convert(g, expr(g, index), index->dtype, KILN_I64);
  if (!g->buf_ptr[buf]) {
    ll_fail(g, "buffer %d is not a parameter of this kernel", buf);
    return LLVMConstNull(g->ptr);
  }
  return LLVMBuildInBoundsGEP2(g->b, elem, g->buf_ptr[buf], &idx, 1, "");
}

static void tiledot_stmt(lgen *g, const kiln_lstmt *s) {
  const kiln_ltile *t = &s->tile;
  LLVMTypeRef P = g->ptr, I = g->i64;
  LLVMTypeRef params[12] = {P, I, I, P, I, I, I, I, P, I, I, I};
  LLVMValueRef fn = ll_declare(g, "kiln_tile_dot", g->void_t, params, 12);
  LLVMValueRef args[12] = {tile_at(g, s->c_buf, s->c_index, g->i32),
                           ll_i64(g, t->c_row),
                           ll_i64(g, t->c_col),
                           tile_at(g, s->buf, s->index, g->i8),
                           ll_i64(g, t->a_ld),
                           ll_i64(g, t->run_ld),
                           ll_i64(g, t->run_k),
                           ll_i64(g, t->k),
                           tile_at(g, s->w_buf, s->w_index, g->i8),
                           ll_i64(g, t->w_ld),
                           ll_i64(g, t->rows),
                           ll_i64(g, t->cols)};
  ll_call(g, fn, args, 12);
}

static LLVMMetadataRef md_flag(lgen *g, const char *name, LLVMValueRef value) {
  LLVMMetadataRef ops[2] = {LLVMMDStringInContext2(g->ctx, name, strlen(name)), NULL};
  if (value) ops[1] = LLVMValueAsMetadata(value);
  return LLVMMDNodeInContext2(g->ctx, ops, value ? 2 : 1);
}

// The loop's self-referential !llvm.loop node on its latch branch.
// Whether an expression or statement reads or writes a local array.
static bool expr_uses_local(const kiln_lexpr *e) {
  if (!e) return false;
  return e->kind == LE_LOCAL || expr_uses_local(e->a) || expr_uses_local(e->b) ||
         expr_uses_local(e->c);
}

static bool uses_local_array(const kiln_lstmt *s) {
  if (!s) return false;
  if (s->kind == LS_LSTORE || s->kind == LS_DOT4) return true;
  for (int i = 0; s->kind == LS_BLOCK && i < s->n; i++)
    if (uses_local_array(s->stmts[i])) return true;
  return expr_uses_local(s->index) || expr_uses_local(s->value) || expr_uses_local(s->cond) ||
         expr_uses_local(s->lo) || expr_uses_local(s->hi) || uses_local_array(s->body) ||
         uses_local_array(s->then_) || uses_local_array(s->else_);
}

// keep_whole: a vectorize loop over a local array (a register block's lanes).
static void loop_metadata(lgen *g, LLVMValueRef latch_br, bool vector, bool keep_whole,
                          int unroll) {
  LLVMMetadataRef ops[4];
  int n = 0;
  ops[n++] = md_flag(g, "llvm.loop.mustprogress", NULL);
  if (vector) ops[n++] = md_flag(g, "llvm.loop.vectorize.enable", LLVMConstInt(g->i1, 1, 0));
  // A register block's lane loop is left to the loop vectorizer: LLVM's full unroller runs first
  // and would take it apart (16 lanes), leaving SLP to regroup the pieces, 4 lanes at a time in
  // the 1x1 convolutions (10x slower). Other short vectorize loops (the transformer's) are better
  // unrolled and SLP-vectorized: they keep the default.
  if (vector && keep_whole) ops[n++] = md_flag(g, "llvm.loop.unroll.disable", NULL);
  if (unroll > 0) ops[n++] = md_flag(g, "llvm.loop.unroll.count", ll_i32(g, unroll));
  LLVMMetadataRef node = distinct_node(g, ops, n);
  LLVMSetMetadata(latch_br, LLVMGetMDKindIDInContext(g->ctx, "llvm.loop", 9),
                  LLVMMetadataAsValue(g->ctx, node));
}

static bool reduction_vectorizable(int op) {
  return op == LB_ADD || op == LB_MUL || op == LB_MAX || op == LB_MIN || op == LB_AND ||
         op == LB_OR;
}

// A register-block loop (KILN_LOOP_UNROLL with constant bounds and at most `unroll` iterations):
// its body once per iteration with the variable a constant, so that the local arrays it indexes
// become scalars SROA keeps in registers (LLVM's loop unroller leaves loops with inner loops).
static bool unroll_fully(lgen *g, const kiln_lstmt *s) {
  if (!(s->flags & KILN_LOOP_UNROLL) || s->lo->kind != LE_INT || s->hi->kind != LE_INT)
    return false;
  int64_t n = s->hi->i - s->lo->i;
  if (n < 0 || n > s->unroll || n > 64) return false;
  kiln_dtype vt = g->p->kernels[g->kernel].vars[s->var].dtype;
  for (int64_t i = s->lo->i; i < s->hi->i; i++) {
    LLVMBuildStore(g->b, convert(g, LLVMConstInt(g->i64, (unsigned long long)i, 1), KILN_I64, vt),
                   g->var_slot[s->var]);
    stmt(g, s->body);
  }
  return true;
}

// The update of a vectorized loop's floating-point accumulator (acc = acc + x, or min, max, *)
// may be reassociated, and the sign of a zero sum is not kept: what `omp simd reduction` allows
// the C compiler (its private copies start at +0). Without the flags LLVM vectorizes the loop but
// adds the final vector's lanes one by one, in order (16 dependent additions per reduction, where
// gcc adds halves), and a loop it unrolls fully before vectorizing stays a scalar chain.
static void allow_reassoc(LLVMValueRef update) {
  if (LLVMIsAInstruction(update) && LLVMCanValueUseFastMathFlags(update))
    LLVMSetFastMathFlags(update, LLVMGetFastMathFlags(update) | LLVMFastMathAllowReassoc |
                                     LLVMFastMathNoSignedZeros);
}

// Whether var is one of the accumulators of the reduction loop (NULL: outside one).
static bool reduces_into(const kiln_lstmt *loop, int var) {
  for (int i = 0; loop && i < loop->n_reduce; i++)
    if (loop->reduce_vars[i] == var) return true;
  return false;
}

// for (var = start; var < end; var++) body; `end` NULL: s->hi, evaluated at each test as in C.
static void for_loop(lgen *g, const kiln_lstmt *s, LLVMValueRef start, LLVMValueRef end) {
  if (!end && unroll_fully(g, s)) return;
  kiln_dtype vt = g->p->kernels[g->kernel].vars[s->var].dtype;
  LLVMValueRef slot = g->var_slot[s->var];
  LLVMBuildStore(g->b, convert(g, start, KILN_I64, vt), slot);
  LLVMBasicBlockRef head = ll_block(g, "for.head"), body = ll_block(g, "for.body");
  LLVMBasicBlockRef latch = ll_block(g, "for.latch"), exit = ll_block(g, "for.end");
  LLVMBuildBr(g->b, head);
  LLVMPositionBuilderAtEnd(g->b, head);
  LLVMValueRef cur = convert(g, LLVMBuildLoad2(g->b, ll_type(g, vt), slot, ""), vt, KILN_I64);
  LLVMValueRef lim = end ? end : convert(g, expr(g, s->hi), s->hi->dtype, KILN_I64);
  LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, cur, lim, ""), body, exit);

  bool vector = (s->flags & KILN_LOOP_VECTORIZE) && !g->in_vector;
  for (int i = 0; (s->flags & KILN_LOOP_REDUCE) && i < s->n_reduce; i++)
    if (!reduction_vectorizable(s->reduce_ops[i])) vector = false;
  int unroll = !vector && (s->flags & KILN_LOOP_UNROLL) && s->unroll >= 1 ? s->unroll : 0;
  bool was_vector = g->in_vector;
  int was_vector_var = g->vector_var;
  const kiln_lstmt *was_reduction = g->reduction;
  g->in_vector |= vector;
  if (vector) g->vector_var = s->var;
  if (vector && (s->flags & KILN_LOOP_REDUCE)) g->reduction = s;
  LLVMPositionBuilderAtEnd(g->b, body);
  stmt(g, s->body);
  LLVMBuildBr(g->b, latch);
  g->in_vector = was_vector;
  g->vector_var = was_vector_var;
  g->reduction = was_reduction;

  LLVMPositionBuilderAtEnd(g->b, latch);
  LLVMValueRef v = LLVMBuildLoad2(g->b, ll_type(g, vt), slot, "");
  LLVMBuildStore(g->b, LLVMBuildAdd(g->b, v, LLVMConstInt(ll_type(g, vt), 1, 0), ""), slot);
  loop_metadata(g, LLVMBuildBr(g->b, head), vector, vector && uses_local_array(s->body), unroll);
  LLVMPositionBuilderAtEnd(g->b, exit);
}

// Variables a statement declares (DECL, loop variables) and reads or assigns.
static void var_uses(const kiln_lexpr *e, bool *read) {
  if (!e) return;
  if (e->kind == LE_VAR || e->kind == LE_LOCAL) read[e->var] = true;
  var_uses(e->a, read);
  var_uses(e->b, read);
  var_uses(e->c, read);
}

static void stmt_vars(const kiln_lstmt *s, bool *declared, bool *read, bool *assigned) {
  if (!s) return;
  switch (s->kind) {
    case LS_BLOCK:
      for (int i = 0; i < s->n; i++) stmt_vars(s->stmts[i], declared, read, assigned);
      return;
    case LS_FOR:
      declared[s->var] = true;
      var_uses(s->lo, read);
      var_uses(s->hi, read);
      stmt_vars(s->body, declared, read, assigned);
      return;
    case LS_DECL: declared[s->var] = true; break;
    case LS_ASSIGN:
    case LS_LSTORE: assigned[s->var] = true; break;
    case LS_DOT4:  // reads and writes its accumulator
      assigned[s->var] = read[s->var] = true;
      var_uses(s->w_index, read);
      break;
    case LS_TILEDOT:
      var_uses(s->w_index, read);
      var_uses(s->c_index, read);
      break;
    case LS_IF:
      var_uses(s->cond, read);
      stmt_vars(s->then_, declared, read, assigned);
      stmt_vars(s->else_, declared, read, assigned);
      return;
    default: break;
  }
  var_uses(s->index, read);
  var_uses(s->value, read);
}

// The function state saved while an outlined body is generated.
typedef struct fn_state {
  LLVMValueRef fn, *var_slot, *buf_ptr;
  LLVMBasicBlockRef block;
  bool in_parallel, in_vector;
} fn_state;

static fn_state save_fn(lgen *g) {
  return (fn_state){g->fn,          g->var_slot, g->buf_ptr, LLVMGetInsertBlock(g->b),
                    g->in_parallel, g->in_vector};
}

static void restore_fn(lgen *g, const fn_state *st) {
  free(g->var_slot);
  free(g->buf_ptr);
  g->fn = st->fn;
  g->var_slot = st->var_slot;
  g->buf_ptr = st->buf_ptr;
  g->in_parallel = st->in_parallel;
  g->in_vector = st->in_vector;
  LLVMPositionBuilderAtEnd(g->b, st->block);
}

// Starts a function: entry block and one alloca per kernel variable.
static void begin_fn(lgen *g, LLVMValueRef fn) {
  const kiln_lkernel *k = &g->p->kernels[g->kernel];
  g->fn = fn;
  ll_add_fn_attr(g, fn, "nounwind");
  LLVMPositionBuilderAtEnd(g->b, ll_block(g, "entry"));
  g->var_slot = kiln_xcalloc((size_t)k->n_vars + 1, sizeof(LLVMValueRef));
  g->buf_ptr = kiln_xcalloc((size_t)g->p->n_bufs + 1, sizeof(LLVMValueRef));
  for (int v = 0; v < k->n_vars; v++) {
    LLVMTypeRef t = ll_type(g, k->vars[v].dtype);
    if (k->vars[v].len > 0) t = LLVMArrayType(t, (unsigned)k->vars[v].len);  // a local array
    g->var_slot[v] = entry_alloca(g, t, k->vars[v].name ? k->vars[v].name : "v");
    // A local array is aligned as gcc aligns it: whole vectors, no split cache lines.
    if (k->vars[v].len > 0) LLVMSetAlignment(g->var_slot[v], 64);
  }
}

// Parameters of an outlined loop: the range, the loop's start, buffer pointers, captured vars.
typedef struct outline {
  int *bufs, n_bufs;
  int *vars, n_vars;
  LLVMTypeRef *types;  // 3 + n_bufs + n_vars: begin, end, lo, pointers, variables
  int n_types;
} outline;

static void outline_free(outline *o) {
  free(o->bufs);
  free(o->vars);
  free(o->types);
}

static bool make_outline(lgen *g, const kiln_lstmt *s, outline *o) {
  const kiln_lkernel *k = &g->p->kernels[g->kernel];
  bool *declared = kiln_xcalloc((size_t)k->n_vars + 1, 1),
       *read = kiln_xcalloc((size_t)k->n_vars + 1, 1);
  bool *assigned = kiln_xcalloc((size_t)k->n_vars + 1, 1);
  stmt_vars(s->body, declared, read, assigned);
  declared[s->var] = true;
  bool ok = true;
  memset(o, 0, sizeof(*o));
  o->bufs = kiln_xcalloc((size_t)g->p->n_bufs + 1, sizeof(int));
  o->vars = kiln_xcalloc((size_t)k->n_vars + 1, sizeof(int));
  o->types = kiln_xcalloc((size_t)(3 + g->p->n_bufs + k->n_vars), sizeof(LLVMTypeRef));
  for (int v = 0; v < k->n_vars; v++) {
    if (assigned[v] && !declared[v]) ok = false;  // writes an outer variable: keep it serial
    if (read[v] && !declared[v]) o->vars[o->n_vars++] = v;
  }
  for (int b = 0; b < g->p->n_bufs; b++)
    if (g->buf_ptr[b]) o->bufs[o->n_bufs++] = b;
  for (int i = 0; i < 3; i++) o->types[o->n_types++] = g->i64;
  for (int i = 0; i < o->n_bufs; i++) o->types[o->n_types++] = g->ptr;
  for (int i = 0; i < o->n_vars; i++)
    o->types[o->n_types++] = ll_type(g, k->vars[o->vars[i]].dtype);
  free(declared);
  free(read);
  free(assigned);
  return ok;
}

// void NAME(i64 begin, i64 end, i64 lo, ptr noalias bufs..., vars...): the loop over a range.
static LLVMValueRef outlined_body(lgen *g, const kiln_lstmt *s, const outline *o,
                                  const unsigned char *use, const char *name) {
  LLVMValueRef fn =
      LLVMAddFunction(g->mod, name, LLVMFunctionType(g->void_t, o->types, (unsigned)o->n_types, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  fn_state st = save_fn(g);
  begin_fn(g, fn);
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (int i = 0; i < o->n_bufs; i++) {
    g->buf_ptr[o->bufs[i]] = LLVMGetParam(fn, (unsigned)(3 + i));
    if (ll_param_noalias(g, use, o->bufs[i]))
      LLVMAddAttributeAtIndex(fn, (unsigned)(4 + i), LLVMCreateEnumAttribute(g->ctx, noalias, 0));
  }
  for (int i = 0; i < o->n_vars; i++)
    LLVMBuildStore(g->b, LLVMGetParam(fn, (unsigned)(3 + o->n_bufs + i)), g->var_slot[o->vars[i]]);
  g->in_parallel = true;
  LLVMValueRef lo = LLVMGetParam(fn, 2);
  for_loop(g, s, LLVMBuildAdd(g->b, lo, LLVMGetParam(fn, 0), ""),
           LLVMBuildAdd(g->b, lo, LLVMGetParam(fn, 1), ""));
  LLVMBuildRetVoid(g->b);
  restore_fn(g, &st);
  return fn;
}

// void NAME.range(i64 begin, i64 end, ptr ctx): what kiln_parallel_for calls; unpacks ctx.
static LLVMValueRef outlined_trampoline(lgen *g, const outline *o, LLVMValueRef body,
                                        LLVMTypeRef ctx_t, const char *name) {
  LLVMTypeRef params[3] = {g->i64, g->i64, g->ptr};
  LLVMValueRef fn = LLVMAddFunction(g->mod, name, LLVMFunctionType(g->void_t, params, 3, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  ll_add_fn_attr(g, fn, "nounwind");
  LLVMBasicBlockRef saved = LLVMGetInsertBlock(g->b);
  LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->ctx, fn, "entry"));
  LLVMValueRef *args = kiln_xcalloc((size_t)o->n_types, sizeof(LLVMValueRef));
  args[0] = LLVMGetParam(fn, 0);
  args[1] = LLVMGetParam(fn, 1);
  for (int i = 2; i < o->n_types; i++) {
    LLVMValueRef at = LLVMBuildStructGEP2(g->b, ctx_t, LLVMGetParam(fn, 2), (unsigned)(i - 2), "");
    args[i] = LLVMBuildLoad2(g->b, o->types[i], at, "");
  }
  LLVMBuildCall2(g->b, LLVMGlobalGetValueType(body), body, args, (unsigned)o->n_types, "");
  LLVMBuildRetVoid(g->b);
  free(args);
  LLVMPositionBuilderAtEnd(g->b, saved);
  return fn;
}

// A parallel loop: kiln_parallel_for(hi - lo, trampoline, &ctx). Returns false (nothing emitted)
// when the body assigns an outer variable.
static bool parallel_for(lgen *g, const kiln_lstmt *s) {
  outline o;
  if (!make_outline(g, s, &o)) {
    outline_free(&o);
    return false;
  }
  char name[160];
  snprintf(name, sizeof(name), "%s.par%d", LLVMGetValueName(g->fn), g->n_outlined++);
  LLVMValueRef body = outlined_body(g, s, &o, g->kernel_use[g->kernel], name);
  LLVMTypeRef ctx_t = LLVMStructTypeInContext(g->ctx, o.types + 2, (unsigned)(o.n_types - 2), 0);
  strncat(name, ".range", sizeof(name) - strlen(name) - 1);
  LLVMValueRef tramp = outlined_trampoline(g, &o, body, ctx_t, name);

  const kiln_lkernel *k = &g->p->kernels[g->kernel];
  LLVMValueRef lo = convert(g, expr(g, s->lo), s->lo->dtype, KILN_I64);
  LLVMValueRef hi = convert(g, expr(g, s->hi), s->hi->dtype, KILN_I64);
  LLVMValueRef ctx = entry_alloca(g, ctx_t, "par.ctx");
  LLVMValueRef *fields = kiln_xcalloc((size_t)o.n_types, sizeof(LLVMValueRef));
  fields[0] = lo;
  for (int i = 0; i < o.n_bufs; i++) fields[1 + i] = g->buf_ptr[o.bufs[i]];
  for (int i = 0; i < o.n_vars; i++) {
    kiln_dtype vt = k->vars[o.vars[i]].dtype;
    fields[1 + o.n_bufs + i] = LLVMBuildLoad2(g->b, ll_type(g, vt), g->var_slot[o.vars[i]], "");
  }
  for (int i = 0; i < o.n_types - 2; i++)
    LLVMBuildStore(g->b, fields[i], LLVMBuildStructGEP2(g->b, ctx_t, ctx, (unsigned)i, ""));
  LLVMTypeRef pf_params[3] = {g->i64, g->ptr, g->ptr};
  LLVMValueRef pf = ll_declare(g, "kiln_parallel_for", g->void_t, pf_params, 3);
  LLVMValueRef args[3] = {LLVMBuildSub(g->b, hi, lo, ""), tramp, ctx};
  ll_call(g, pf, args, 3);
  free(fields);
  outline_free(&o);
  return true;
}

static void if_stmt(lgen *g, const kiln_lstmt *s) {
  LLVMValueRef c = cond(g, s->cond);
  LLVMBasicBlockRef yes = ll_block(g, "if.then"), no = ll_block(g, "if.else");
  LLVMBasicBlockRef done = ll_block(g, "if.end");
  LLVMBuildCondBr(g->b, c, yes, no);
  LLVMPositionBuilderAtEnd(g->b, yes);
  stmt(g, s->then_);
  LLVMBuildBr(g->b, done);
  LLVMPositionBuilderAtEnd(g->b, no);
  stmt(g, s->else_);
  LLVMBuildBr(g->b, done);
  LLVMPositionBuilderAtEnd(g->b, done);
}

static void store_stmt(lgen *g, const kiln_lstmt *s) {
  const kiln_lbuf *lb = &g->p->bufs[s->buf];
  if (!g->buf_ptr[s->buf]) return ll_fail(g, "buffer %d is not a parameter of this kernel", s->buf);
  LLVMTypeRef T = ll_type(g, lb->dtype);
  LLVMValueRef at = buffer_addr(g, T, g->buf_ptr[s->buf], s->index);  // as loads address it
  LLVMValueRef v = convert(g, expr(g, s->value), s->value->dtype, lb->dtype);
  LLVMValueRef st = LLVMBuildStore(g->b, v, at);
  LLVMSetAlignment(st, (unsigned)kiln_dtype_size(lb->dtype));
  set_scope(g, st, false);
}

static void stmt(lgen *g, const kiln_lstmt *s) {
  if (!s || g->failed) return;
  const kiln_lkernel *k = &g->p->kernels[g->kernel];
  switch (s->kind) {
    case LS_BLOCK:
      for (int i = 0; i < s->n && !g->failed; i++) stmt(g, s->stmts[i]);
      return;
    case LS_FOR: {
      bool par = (s->flags & KILN_LOOP_PARALLEL) && !(s->flags & KILN_LOOP_REDUCE) &&
                 !g->in_parallel && !g->in_vector;
      if (par && parallel_for(g, s)) return;
      for_loop(g, s, convert(g, expr(g, s->lo), s->lo->dtype, KILN_I64), NULL);
      return;
    }
    case LS_DECL:
      if (k->vars[s->var].lanes) {  // a lane accumulator starts at zero
        LLVMTypeRef t = LLVMVectorType(g->i32, (unsigned)k->vars[s->var].len);
        set_scope(g, LLVMBuildStore(g->b, LLVMConstNull(t), g->var_slot[s->var]), true);
        return;
      }
      if (k->vars[s->var].len > 0) return;  // a local array: its alloca is all it needs
      // fall through
    case LS_ASSIGN: {
      kiln_dtype vt = k->vars[s->var].dtype;
      LLVMValueRef v = s->value ? convert(g, expr(g, s->value), s->value->dtype, vt)
                                : LLVMConstNull(ll_type(g, vt));
      if (s->kind == LS_ASSIGN && reduces_into(g->reduction, s->var)) allow_reassoc(v);
      LLVMBuildStore(g->b, v, g->var_slot[s->var]);
      return;
    }
    case LS_STORE: store_stmt(g, s); return;
    case LS_IF: if_stmt(g, s); return;
    case LS_COMMENT: return;
    case LS_DOT4: dot4_stmt(g, s); return;
    case LS_TILEDOT: tiledot_stmt(g, s); return;
    case LS_LSTORE: {
      kiln_dtype vt = k->vars[s->var].dtype;
      LLVMValueRef v = convert(g, expr(g, s->value), s->value->dtype, vt);
      set_scope(g, LLVMBuildStore(g->b, v, local_addr(g, s->var, s->index)), true);
      return;
    }
  }
  ll_fail(g, "invalid statement kind %d", (int)s->kind);
}

// ---------------------------------------------------------------------------------------------
// Kernels.

static void emit_kernel(lgen *g, int k) {
  const kiln_lkernel *kr = &g->p->kernels[k];
  const unsigned char *use = g->kernel_use[k];
  g->kernel = k;
  LLVMTypeRef *params = kiln_xcalloc((size_t)g->p->n_bufs + 1, sizeof(LLVMTypeRef));
  int np = 0;
  for (int b = 0; b < g->p->n_bufs; b++)
    if (use[b]) params[np++] = g->ptr;
  // "k." keeps kernel names apart from C symbols (the API, libm): no C identifier has a dot.
  char name[160];
  snprintf(name, sizeof(name), "k.%s", kr->name && *kr->name ? kr->name : "kernel");
  LLVMValueRef fn =
      LLVMAddFunction(g->mod, name, LLVMFunctionType(g->void_t, params, (unsigned)np, 0));
  free(params);
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  g->kernel_fn[k] = fn;
  begin_fn(g, fn);
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (int b = 0, i = 0; b < g->p->n_bufs; b++) {
    if (!use[b]) continue;
    g->buf_ptr[b] = LLVMGetParam(fn, (unsigned)i);
    LLVMSetValueName2(g->buf_ptr[b], g->p->bufs[b].name ? g->p->bufs[b].name : "buf",
                      strlen(g->p->bufs[b].name ? g->p->bufs[b].name : "buf"));
    if (ll_param_noalias(g, use, b))
      LLVMAddAttributeAtIndex(fn, (unsigned)(i + 1), LLVMCreateEnumAttribute(g->ctx, noalias, 0));
    i++;
  }
  g->in_parallel = g->in_vector = false;
  g->vector_var = -1;
  stmt(g, kr->body);
  LLVMBuildRetVoid(g->b);
  free(g->var_slot);
  free(g->buf_ptr);
  g->var_slot = g->buf_ptr = NULL;
  g->kernel = -1;
}

bool ll_emit_kernels(lgen *g) {
  for (int k = 0; k < g->p->n_kernels && !g->failed; k++) emit_kernel(g, k);
  return !g->failed;
}
