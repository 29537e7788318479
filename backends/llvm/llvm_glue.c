// LLVM backend, the model's API in IR: the functions the C backend's header declares
// (NAME_run_arena, NAME_run, NAME_init_file, NAME_init_blob, NAME_init_embedded, NAME_release),
// the NAME_desc table for the runtime's standalone driver, the embedded weights blob and `main`.
// They do what the C backend's versions do, through the same runtime calls, so an object from
// this backend links with the C backend's header and the runtime library alone.
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/kiln_runtime.h"
#include "../c/internal.h"
#include "internal.h"

// The IR below spells out kiln_runtime.h's structs for LP64 targets; check the spelling.
_Static_assert(sizeof(void *) == 8 && sizeof(size_t) == 8, "the LLVM backend assumes LP64");
_Static_assert(offsetof(kiln_io_desc, shape) == 16 && sizeof(kiln_io_desc) == 80,
               "kiln_io_desc layout");
_Static_assert(offsetof(kiln_model_desc, inputs) == 16 &&
                   offsetof(kiln_model_desc, arena_bytes) == 32 &&
                   offsetof(kiln_model_desc, init_file) == 64 && sizeof(kiln_model_desc) == 96,
               "kiln_model_desc layout");

enum { CTX_WEIGHTS, CTX_ARENA, CTX_OWNED_WEIGHTS, CTX_OWNED_ARENA, CTX_FIELDS };

typedef struct glue {
  lgen *g;
  LLVMTypeRef ctx_t;  // NAME_ctx: four pointers
  LLVMValueRef run_arena, run, init_file, init_blob, init_embedded, release, blob;
  int64_t blob_bytes;
} glue;

// Defines an exported function and positions the builder in its entry block.
static LLVMValueRef define(lgen *g, const char *suffix, LLVMTypeRef ret, LLVMTypeRef *params,
                           int n) {
  char name[128];
  snprintf(name, sizeof(name), "%s_%s", g->model, suffix);
  LLVMValueRef fn = LLVMAddFunction(g->mod, name, LLVMFunctionType(ret, params, (unsigned)n, 0));
  g->fn = fn;
  ll_add_fn_attr(g, fn, "nounwind");
  LLVMPositionBuilderAtEnd(g->b, ll_block(g, "entry"));
  return fn;
}

// if (bad) return status; continues in a new block.
static void return_if(lgen *g, LLVMValueRef bad, LLVMValueRef status) {
  LLVMBasicBlockRef out = ll_block(g, "fail"), next = ll_block(g, "ok");
  LLVMBuildCondBr(g->b, bad, out, next);
  LLVMPositionBuilderAtEnd(g->b, out);
  LLVMBuildRet(g->b, status);
  LLVMPositionBuilderAtEnd(g->b, next);
}

static LLVMValueRef is_null(lgen *g, LLVMValueRef p) { return LLVMBuildIsNull(g->b, p, ""); }

static LLVMValueRef ctx_field(glue *gl, LLVMValueRef ctx, int field) {
  return LLVMBuildStructGEP2(gl->g->b, gl->ctx_t, ctx, (unsigned)field, "");
}

static LLVMValueRef load_ctx(glue *gl, LLVMValueRef ctx, int field) {
  return LLVMBuildLoad2(gl->g->b, gl->g->ptr, ctx_field(gl, ctx, field), "");
}

static void store_ctx(glue *gl, LLVMValueRef ctx, int field, LLVMValueRef v) {
  LLVMBuildStore(gl->g->b, v, ctx_field(gl, ctx, field));
}

static void clear_ctx(glue *gl, LLVMValueRef ctx) {
  for (int f = 0; f < CTX_FIELDS; f++) store_ctx(gl, ctx, f, LLVMConstNull(gl->g->ptr));
}

static LLVMValueRef misaligned(lgen *g, LLVMValueRef p) {
  LLVMValueRef bits = LLVMBuildAnd(g->b, LLVMBuildPtrToInt(g->b, p, g->i64, ""), ll_i64(g, 63), "");
  return LLVMBuildICmp(g->b, LLVMIntNE, bits, ll_i64(g, 0), "");
}

static LLVMValueRef status(lgen *g, int st) { return ll_i32(g, st); }

static LLVMValueRef runtime_fn(lgen *g, const char *name, LLVMTypeRef ret, LLVMTypeRef a,
                               LLVMTypeRef b, LLVMTypeRef c, LLVMTypeRef d, LLVMTypeRef e,
                               LLVMTypeRef f) {
  LLVMTypeRef params[6] = {a, b, c, d, e, f};
  int n = 0;
  while (n < 6 && params[n]) n++;
  return ll_declare(g, name, ret, params, n);
}

// AMX tiles (LS_TILEDOT) need the operating system's permission, asked once:
// if (kiln_tiles_init() != KILN_OK) return KILN_ERR_CPU.
static void tiles_init(lgen *g) {
  if (!kiln_lprog_uses_tiles(g->p)) return;
  LLVMValueRef st = ll_call(g, ll_declare(g, "kiln_tiles_init", g->i32, NULL, 0), NULL, 0);
  return_if(g, LLVMBuildICmp(g->b, LLVMIntNE, st, status(g, KILN_OK), ""), status(g, KILN_ERR_CPU));
}

static uint64_t checksum(const kiln_lprog *p) {
  return kiln_weights_checksum(p->weights, p->weights_bytes > 0 ? (size_t)p->weights_bytes : 0);
}

// ---------------------------------------------------------------------------------------------
// NAME_run_arena and NAME_run.

// The pointer of buffer b in NAME_run_arena (or NAME_eval_arena: fn).
static LLVMValueRef buffer_pointer(glue *gl, LLVMValueRef fn, int b, LLVMValueRef weights) {
  lgen *g = gl->g;
  const kiln_lbuf *lb = &g->p->bufs[b];
  switch (lb->kind) {
    case KILN_BUF_INPUT:
    case KILN_BUF_OUTPUT: {  // io views start at the argument
      bool in = lb->kind == KILN_BUF_INPUT;
      int n = in ? g->p->n_inputs : g->p->n_outputs;
      if (lb->index < 0 || lb->index >= n) break;
      return LLVMGetParam(fn, (unsigned)(2 + (in ? 0 : g->p->n_inputs) + lb->index));
    }
    case KILN_BUF_WEIGHT:
    case KILN_BUF_STATE: {  // state: writable tensors inside the weights payload
      LLVMValueRef off = ll_i64(g, lb->offset);
      return LLVMBuildInBoundsGEP2(g->b, g->i8, weights, &off, 1, "");
    }
    case KILN_BUF_ARENA: {
      LLVMValueRef off = ll_i64(g, lb->offset);
      return LLVMBuildInBoundsGEP2(g->b, g->i8, LLVMGetParam(fn, 1), &off, 1, "");
    }
  }
  ll_fail(g, "buffer %d has an invalid kind or io index", b);
  return LLVMConstNull(g->ptr);
}

// NAME_<fn>_arena: kernels [0, n_kernels) in order (fn "run": all of them).
static LLVMValueRef emit_run_arena(glue *gl, const char *fn_name, int n_kernels) {
  lgen *g = gl->g;
  const kiln_lprog *p = g->p;
  int nio = p->n_inputs + p->n_outputs;
  LLVMTypeRef *params = kiln_xcalloc((size_t)nio + 2, sizeof(LLVMTypeRef));
  for (int i = 0; i < nio + 2; i++) params[i] = g->ptr;
  char suffix[32];
  snprintf(suffix, sizeof suffix, "%s_arena", fn_name);
  LLVMValueRef fn = define(g, suffix, g->i32, params, nio + 2);
  free(params);
  LLVMValueRef ctx = LLVMGetParam(fn, 0), arena = LLVMGetParam(fn, 1);
  LLVMValueRef bad = is_null(g, ctx);
  for (int i = 0; i < nio; i++)
    bad = LLVMBuildOr(g->b, bad, is_null(g, LLVMGetParam(fn, (unsigned)(2 + i))), "");
  return_if(g, bad, status(g, KILN_ERR_ARG));
  LLVMValueRef weights = load_ctx(gl, ctx, CTX_WEIGHTS);
  if (p->weights_bytes > 0) return_if(g, is_null(g, weights), status(g, KILN_ERR_ARG));
  if (p->arena_bytes > 0)
    return_if(g, LLVMBuildOr(g->b, is_null(g, arena), misaligned(g, arena), ""),
              status(g, KILN_ERR_ARG));

  unsigned char *used = kiln_xcalloc((size_t)p->n_bufs + 1, 1);
  for (int k = 0; k < n_kernels; k++)
    for (int b = 0; b < p->n_bufs; b++) used[b] |= g->kernel_use[k][b];
  LLVMValueRef *ptrs = kiln_xcalloc((size_t)p->n_bufs + 1, sizeof(LLVMValueRef));
  for (int b = 0; b < p->n_bufs; b++)
    if (used[b]) ptrs[b] = buffer_pointer(gl, fn, b, weights);
  LLVMValueRef *args = kiln_xcalloc((size_t)p->n_bufs + 1, sizeof(LLVMValueRef));
  for (int k = 0; k < n_kernels; k++) {
    int n = 0;
    for (int b = 0; b < p->n_bufs; b++)
      if (g->kernel_use[k][b]) args[n++] = ptrs[b];
    ll_call(g, g->kernel_fn[k], args, n);
  }
  LLVMBuildRet(g->b, status(g, KILN_OK));
  free(args);
  free(ptrs);
  free(used);
  return fn;
}

// NAME_<fn>(ctx, io...): NAME_<fn>_arena with the context's arena.
static LLVMValueRef emit_run(glue *gl, const char *fn_name, LLVMValueRef arena_fn) {
  lgen *g = gl->g;
  int nio = g->p->n_inputs + g->p->n_outputs;
  LLVMTypeRef *params = kiln_xcalloc((size_t)nio + 1, sizeof(LLVMTypeRef));
  for (int i = 0; i < nio + 1; i++) params[i] = g->ptr;
  LLVMValueRef fn = define(g, fn_name, g->i32, params, nio + 1);
  free(params);
  LLVMValueRef ctx = LLVMGetParam(fn, 0);
  return_if(g, is_null(g, ctx), status(g, KILN_ERR_ARG));
  LLVMValueRef *args = kiln_xcalloc((size_t)nio + 2, sizeof(LLVMValueRef));
  args[0] = ctx;
  args[1] = load_ctx(gl, ctx, CTX_ARENA);
  for (int i = 0; i < nio; i++) args[2 + i] = LLVMGetParam(fn, (unsigned)(1 + i));
  LLVMBuildRet(g->b, ll_call(g, arena_fn, args, nio + 2));
  free(args);
  return fn;
}

// Training builds: kernels [0, n) compute the forward pass and the loss (the last of them writes
// output 0, the loss); the rest compute gradients and updates (docs/training.md).
static int eval_kernel_count(const lgen *g) {
  const kiln_lprog *p = g->p;
  int n = 0;
  for (int k = 0; k < p->n_kernels; k++)
    for (int b = 0; b < p->n_bufs; b++)
      if ((g->kernel_use[k][b] & LL_USE_WRITE) && p->bufs[b].kind == KILN_BUF_OUTPUT &&
          p->bufs[b].index == 0)
        n = k + 1;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Init and release.

static void emit_release(glue *gl) {
  lgen *g = gl->g;
  LLVMValueRef fn = define(g, "release", g->void_t, &g->ptr, 1), ctx = LLVMGetParam(fn, 0);
  LLVMBasicBlockRef done = ll_block(g, "done"), work = ll_block(g, "work");
  LLVMBuildCondBr(g->b, is_null(g, ctx), done, work);
  LLVMPositionBuilderAtEnd(g->b, work);
  LLVMValueRef free_fn = ll_declare(g, "kiln_aligned_free", g->void_t, &g->ptr, 1);
  int owned[2] = {CTX_OWNED_WEIGHTS, CTX_OWNED_ARENA};
  for (int i = 0; i < 2; i++) {
    LLVMValueRef q = load_ctx(gl, ctx, owned[i]);
    ll_call(g, free_fn, &q, 1);  // kiln_aligned_free(NULL) does nothing
  }
  clear_ctx(gl, ctx);
  LLVMBuildBr(g->b, done);
  LLVMPositionBuilderAtEnd(g->b, done);
  LLVMBuildRetVoid(g->b);
  gl->release = fn;
}

// Allocates the arena into ctx (arena and owned_arena); on failure releases ctx, returns NOMEM.
static void alloc_arena(glue *gl, LLVMValueRef ctx) {
  lgen *g = gl->g;
  LLVMValueRef alloc = ll_declare(g, "kiln_aligned_alloc", g->ptr, &g->i64, 1);
  LLVMValueRef bytes = ll_i64(g, g->p->arena_bytes);
  LLVMValueRef a = ll_call(g, alloc, &bytes, 1);
  store_ctx(gl, ctx, CTX_ARENA, a);
  store_ctx(gl, ctx, CTX_OWNED_ARENA, a);
  LLVMBasicBlockRef out = ll_block(g, "nomem"), next = ll_block(g, "ok");
  LLVMBuildCondBr(g->b, is_null(g, a), out, next);
  LLVMPositionBuilderAtEnd(g->b, out);
  ll_call(g, gl->release, &ctx, 1);
  LLVMBuildRet(g->b, status(g, KILN_ERR_NOMEM));
  LLVMPositionBuilderAtEnd(g->b, next);
}

static void emit_init_file(glue *gl) {
  lgen *g = gl->g;
  LLVMTypeRef params[2] = {g->ptr, g->ptr};
  LLVMValueRef fn = define(g, "init_file", g->i32, params, 2);
  LLVMValueRef ctx = LLVMGetParam(fn, 0), path = LLVMGetParam(fn, 1);
  return_if(g, LLVMBuildOr(g->b, is_null(g, ctx), is_null(g, path), ""), status(g, KILN_ERR_ARG));
  clear_ctx(gl, ctx);
  tiles_init(g);
  LLVMValueRef slot = LLVMBuildAlloca(g->b, g->ptr, "weights");
  LLVMValueRef err = LLVMBuildArrayAlloca(g->b, g->i8, ll_i64(g, 256), "err");
  LLVMBuildStore(g->b, LLVMConstNull(g->ptr), slot);
  LLVMValueRef read =
      runtime_fn(g, "kiln_weights_read", g->i32, g->ptr, g->i64, g->i64, g->ptr, g->ptr, g->i64);
  LLVMValueRef args[6] = {path,
                          ll_i64(g, g->p->weights_bytes),
                          LLVMConstInt(g->i64, checksum(g->p), 0),
                          slot,
                          err,
                          ll_i64(g, 256)};
  LLVMValueRef st = ll_call(g, read, args, 6);
  return_if(g, LLVMBuildICmp(g->b, LLVMIntNE, st, status(g, KILN_OK), ""), st);
  LLVMValueRef w = LLVMBuildLoad2(g->b, g->ptr, slot, "");
  store_ctx(gl, ctx, CTX_WEIGHTS, w);
  store_ctx(gl, ctx, CTX_OWNED_WEIGHTS, w);
  if (g->p->arena_bytes > 0) alloc_arena(gl, ctx);
  LLVMBuildRet(g->b, status(g, KILN_OK));
  gl->init_file = fn;
}

// Training writes the weights: a private, owned copy of the blob's payload (this allocates).
static void copy_weights(glue *gl, LLVMValueRef ctx, LLVMValueRef weights) {
  lgen *g = gl->g;
  int64_t bytes = g->p->weights_bytes > 0 ? g->p->weights_bytes : 64;
  LLVMValueRef n = ll_i64(g, bytes);
  LLVMValueRef copy = ll_call(g, ll_declare(g, "kiln_aligned_alloc", g->ptr, &g->i64, 1), &n, 1);
  return_if(g, is_null(g, copy), status(g, KILN_ERR_NOMEM));
  if (g->p->weights_bytes > 0) LLVMBuildMemCpy(g->b, copy, 64, weights, 1, n);
  store_ctx(gl, ctx, CTX_WEIGHTS, copy);
  store_ctx(gl, ctx, CTX_OWNED_WEIGHTS, copy);
}

static void emit_init_blob(glue *gl) {
  lgen *g = gl->g;
  LLVMTypeRef params[5] = {g->ptr, g->ptr, g->i64, g->ptr, g->i64};
  LLVMValueRef fn = define(g, "init_blob", g->i32, params, 5);
  LLVMValueRef ctx = LLVMGetParam(fn, 0), blob = LLVMGetParam(fn, 1);
  LLVMValueRef arena = LLVMGetParam(fn, 3), arena_bytes = LLVMGetParam(fn, 4);
  return_if(g, LLVMBuildOr(g->b, is_null(g, ctx), is_null(g, blob), ""), status(g, KILN_ERR_ARG));
  clear_ctx(gl, ctx);
  tiles_init(g);
  if (g->p->arena_bytes > 0) {
    LLVMValueRef small =
        LLVMBuildICmp(g->b, LLVMIntULT, arena_bytes, ll_i64(g, g->p->arena_bytes), "");
    LLVMValueRef bad = LLVMBuildOr(g->b, is_null(g, arena), small, "");
    return_if(g, LLVMBuildOr(g->b, bad, misaligned(g, arena), ""), status(g, KILN_ERR_ARG));
  }
  LLVMValueRef slot = LLVMBuildAlloca(g->b, g->ptr, "weights");
  LLVMBuildStore(g->b, LLVMConstNull(g->ptr), slot);
  LLVMValueRef check =
      runtime_fn(g, "kiln_weights_check", g->i32, g->ptr, g->i64, g->i64, g->i64, g->ptr, NULL);
  LLVMValueRef args[5] = {blob, LLVMGetParam(fn, 2), ll_i64(g, g->p->weights_bytes),
                          LLVMConstInt(g->i64, checksum(g->p), 0), slot};
  LLVMValueRef st = ll_call(g, check, args, 5);
  return_if(g, LLVMBuildICmp(g->b, LLVMIntNE, st, status(g, KILN_OK), ""), st);
  LLVMValueRef weights = LLVMBuildLoad2(g->b, g->ptr, slot, "");
  store_ctx(gl, ctx, CTX_WEIGHTS, weights);
  store_ctx(gl, ctx, CTX_ARENA, arena);
  if (g->o->train) copy_weights(gl, ctx, weights);
  LLVMBuildRet(g->b, status(g, KILN_OK));
  gl->init_blob = fn;
}

// The weights blob (header + payload, as kiln_weights_write writes it) as a private constant.
static void emit_blob(glue *gl) {
  lgen *g = gl->g;
  size_t n = (size_t)g->p->weights_bytes, total = n + KILN_WEIGHTS_HEADER_BYTES;
  unsigned char *bytes = kiln_xcalloc(total, 1);
  const char magic[8] = KILN_WEIGHTS_MAGIC;
  memcpy(bytes, magic, sizeof magic);
  uint64_t sum = checksum(g->p);
  for (int i = 0; i < 8; i++) {
    bytes[8 + i] = (unsigned char)((uint64_t)n >> (8 * i));
    bytes[16 + i] = (unsigned char)(sum >> (8 * i));
  }
  if (n) memcpy(bytes + KILN_WEIGHTS_HEADER_BYTES, g->p->weights, n);
  LLVMValueRef init = LLVMConstStringInContext2(g->ctx, (const char *)bytes, total, 1);
  free(bytes);
  char name[96];
  snprintf(name, sizeof(name), "%s.blob", g->model);
  gl->blob = LLVMAddGlobal(g->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(gl->blob, init);
  LLVMSetGlobalConstant(gl->blob, 1);
  LLVMSetLinkage(gl->blob, LLVMPrivateLinkage);
  LLVMSetAlignment(gl->blob, 64);
  gl->blob_bytes = (int64_t)total;
}

static void emit_init_embedded(glue *gl) {
  lgen *g = gl->g;
  emit_blob(gl);
  LLVMValueRef fn = define(g, "init_embedded", g->i32, &g->ptr, 1), ctx = LLVMGetParam(fn, 0);
  return_if(g, is_null(g, ctx), status(g, KILN_ERR_ARG));
  LLVMValueRef args[5] = {ctx, gl->blob, ll_i64(g, gl->blob_bytes), LLVMConstNull(g->ptr),
                          ll_i64(g, 0)};
  if (g->p->arena_bytes == 0) {
    LLVMBuildRet(g->b, ll_call(g, gl->init_blob, args, 5));
    gl->init_embedded = fn;
    return;
  }
  LLVMValueRef bytes = ll_i64(g, g->p->arena_bytes);
  LLVMValueRef arena =
      ll_call(g, ll_declare(g, "kiln_aligned_alloc", g->ptr, &g->i64, 1), &bytes, 1);
  return_if(g, is_null(g, arena), status(g, KILN_ERR_NOMEM));
  args[3] = arena;
  args[4] = bytes;
  LLVMValueRef st = ll_call(g, gl->init_blob, args, 5);
  LLVMBasicBlockRef out = ll_block(g, "fail"), next = ll_block(g, "ok");
  LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntNE, st, status(g, KILN_OK), ""), out, next);
  LLVMPositionBuilderAtEnd(g->b, out);
  ll_call(g, ll_declare(g, "kiln_aligned_free", g->void_t, &g->ptr, 1), &arena, 1);
  LLVMBuildRet(g->b, st);
  LLVMPositionBuilderAtEnd(g->b, next);
  store_ctx(gl, ctx, CTX_OWNED_ARENA, arena);
  LLVMBuildRet(g->b, status(g, KILN_OK));
  gl->init_embedded = fn;
}

// ---------------------------------------------------------------------------------------------
// NAME_desc and main.

static LLVMValueRef const_string(lgen *g, const char *s, const char *name) {
  LLVMValueRef init = LLVMConstStringInContext2(g->ctx, s, strlen(s), 0);
  LLVMValueRef gv = LLVMAddGlobal(g->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(gv, init);
  LLVMSetGlobalConstant(gv, 1);
  LLVMSetLinkage(gv, LLVMPrivateLinkage);
  LLVMSetUnnamedAddress(gv, LLVMGlobalUnnamedAddr);
  return gv;
}

// static const kiln_io_desc NAME[n]; NULL when n is 0.
static LLVMValueRef io_table(lgen *g, const kiln_lio *ios, int n, const char *what) {
  if (n == 0) return LLVMConstNull(g->ptr);
  LLVMTypeRef shape_t = LLVMArrayType2(g->i64, KILN_RT_MAX_RANK);
  LLVMTypeRef fields[4] = {g->ptr, g->i32, g->i32, shape_t};
  LLVMTypeRef io_t = LLVMStructTypeInContext(g->ctx, fields, 4, 0);
  LLVMValueRef *rows = kiln_xcalloc((size_t)n, sizeof(LLVMValueRef));
  for (int i = 0; i < n; i++) {
    LLVMValueRef dims[KILN_RT_MAX_RANK];
    for (int d = 0; d < KILN_RT_MAX_RANK; d++)
      dims[d] = ll_i64(g, d < ios[i].rank ? ios[i].shape[d] : 0);
    LLVMValueRef vals[4] = {const_string(g, ios[i].name ? ios[i].name : "", "io.name"),
                            ll_i32(g, ios[i].dtype), ll_i32(g, ios[i].rank),
                            LLVMConstArray2(g->i64, dims, KILN_RT_MAX_RANK)};
    rows[i] = LLVMConstNamedStruct(io_t, vals, 4);
  }
  LLVMValueRef init = LLVMConstArray2(io_t, rows, (uint64_t)n);
  free(rows);
  char name[96];
  snprintf(name, sizeof(name), "%s.desc_%s", g->model, what);
  LLVMValueRef gv = LLVMAddGlobal(g->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(gv, init);
  LLVMSetGlobalConstant(gv, 1);
  LLVMSetLinkage(gv, LLVMPrivateLinkage);
  return gv;
}

// int desc_run(void *ctx, const void *const *inputs, void *const *outputs): unpacks to NAME_run.
static LLVMValueRef emit_desc_run(glue *gl) {
  lgen *g = gl->g;
  const kiln_lprog *p = g->p;
  LLVMTypeRef params[3] = {g->ptr, g->ptr, g->ptr};
  char name[96];
  snprintf(name, sizeof(name), "%s.desc_run", g->model);
  LLVMValueRef fn = LLVMAddFunction(g->mod, name, LLVMFunctionType(g->i32, params, 3, 0));
  LLVMSetLinkage(fn, LLVMPrivateLinkage);
  g->fn = fn;
  ll_add_fn_attr(g, fn, "nounwind");
  LLVMPositionBuilderAtEnd(g->b, ll_block(g, "entry"));
  int nio = p->n_inputs + p->n_outputs;
  LLVMValueRef *args = kiln_xcalloc((size_t)nio + 1, sizeof(LLVMValueRef));
  args[0] = LLVMGetParam(fn, 0);
  for (int i = 0; i < nio; i++) {
    bool in = i < p->n_inputs;
    LLVMValueRef idx = ll_i64(g, in ? i : i - p->n_inputs);
    LLVMValueRef at =
        LLVMBuildInBoundsGEP2(g->b, g->ptr, LLVMGetParam(fn, in ? 1 : 2), &idx, 1, "");
    args[1 + i] = LLVMBuildLoad2(g->b, g->ptr, at, "");
  }
  LLVMBuildRet(g->b, ll_call(g, gl->run, args, nio + 1));
  free(args);
  return fn;
}

static void emit_desc(glue *gl) {
  lgen *g = gl->g;
  const kiln_lprog *p = g->p;
  LLVMValueRef run = emit_desc_run(gl);
  LLVMValueRef vals[13] = {
      const_string(g, p->name ? p->name : g->model, "desc.name"),
      ll_i32(g, p->n_inputs),
      ll_i32(g, p->n_outputs),
      io_table(g, p->inputs, p->n_inputs, "inputs"),
      io_table(g, p->outputs, p->n_outputs, "outputs"),
      ll_i64(g, p->arena_bytes),
      ll_i64(g, p->weights_bytes),
      LLVMConstInt(g->i64, checksum(p), 0),
      ll_i64(g, CTX_FIELDS * 8),  // sizeof(NAME_ctx)
      gl->init_file,
      gl->init_embedded ? gl->init_embedded : LLVMConstNull(g->ptr),
      run,
      gl->release,
  };
  LLVMValueRef init = LLVMConstStructInContext(g->ctx, vals, 13, 0);
  char name[96];
  snprintf(name, sizeof(name), "%s_desc", g->model);
  LLVMValueRef gv = LLVMAddGlobal(g->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(gv, init);
  LLVMSetGlobalConstant(gv, 1);
  LLVMSetAlignment(gv, 8);

  if (!g->o->main_stub) return;
  LLVMTypeRef params[2] = {g->i32, g->ptr};
  LLVMValueRef fn = LLVMAddFunction(g->mod, "main", LLVMFunctionType(g->i32, params, 2, 0));
  g->fn = fn;
  LLVMPositionBuilderAtEnd(g->b, ll_block(g, "entry"));
  LLVMTypeRef kp[3] = {g->ptr, g->i32, g->ptr};
  LLVMValueRef args[3] = {gv, LLVMGetParam(fn, 0), LLVMGetParam(fn, 1)};
  LLVMBuildRet(g->b, ll_call(g, ll_declare(g, "kiln_main", g->i32, kp, 3), args, 3));
}

bool ll_emit_glue(lgen *g) {
  glue gl = {.g = g};
  LLVMTypeRef fields[CTX_FIELDS] = {g->ptr, g->ptr, g->ptr, g->ptr};
  gl.ctx_t = LLVMStructTypeInContext(g->ctx, fields, CTX_FIELDS, 0);
  gl.run_arena = emit_run_arena(&gl, "run", g->p->n_kernels);
  gl.run = emit_run(&gl, "run", gl.run_arena);
  if (g->o->train) emit_run(&gl, "eval", emit_run_arena(&gl, "eval", eval_kernel_count(g)));
  emit_release(&gl);
  emit_init_file(&gl);
  emit_init_blob(&gl);
  if (g->o->embed_weights) emit_init_embedded(&gl);
  emit_desc(&gl);
  return !g->failed;
}

// ---------------------------------------------------------------------------------------------
// The module.

static void lgen_types(lgen *g) {
  g->ptr = LLVMPointerTypeInContext(g->ctx, 0);
  g->i1 = LLVMInt1TypeInContext(g->ctx);
  g->i8 = LLVMInt8TypeInContext(g->ctx);
  g->i32 = LLVMInt32TypeInContext(g->ctx);
  g->i64 = LLVMInt64TypeInContext(g->ctx);
  g->f32 = LLVMFloatTypeInContext(g->ctx);
  g->f64 = LLVMDoubleTypeInContext(g->ctx);
  g->void_t = LLVMVoidTypeInContext(g->ctx);
}

static bool check_program(lgen *g) {
  const kiln_lprog *p = g->p;
  if (p->n_inputs < 0 || p->n_outputs < 0 || p->n_bufs < 0 || p->n_kernels < 0)
    ll_fail(g, "negative counts in the loop program");
  for (int i = 0; i < p->n_inputs + p->n_outputs && !g->failed; i++) {
    const kiln_lio *io = i < p->n_inputs ? &p->inputs[i] : &p->outputs[i - p->n_inputs];
    if (io->rank < 0 || io->rank > KILN_RT_MAX_RANK)
      ll_fail(g, "io %s has rank %d", io->name, io->rank);
  }
  for (int b = 0; b < p->n_bufs && !g->failed; b++)
    if ((unsigned)p->bufs[b].dtype >= KILN_DTYPE_COUNT)
      ll_fail(g, "buffer %d has an invalid dtype", b);
  if (p->weights_bytes > 0 && !p->weights) ll_fail(g, "weights payload missing");
  if (p->weights_bytes < 0 || p->arena_bytes < 0) ll_fail(g, "negative arena or weights size");
  return !g->failed;
}

// LLVM's diagnostics: remarks and warnings (such as "loop not vectorized" for a loop marked
// vectorize that LLVM leaves scalar, which still runs correctly) are dropped; errors are printed
// (the failing call reports them as a Kiln error too).
static void diagnostic(LLVMDiagnosticInfoRef info, void *unused) {
  (void)unused;
  if (LLVMGetDiagInfoSeverity(info) != LLVMDSError) return;
  char *msg = LLVMGetDiagInfoDescription(info);
  fprintf(stderr, "kiln: LLVM: %s\n", msg);
  LLVMDisposeMessage(msg);
}

LLVMModuleRef kiln_llvm_build_module(const kiln_lprog *p, const kiln_llvm_options *o,
                                     LLVMContextRef ctx, kiln_diag *d) {
  lgen g = {.ctx = ctx, .p = p, .o = o, .d = d, .kernel = -1};
  LLVMContextSetDiagnosticHandler(ctx, diagnostic, NULL);
  kiln_c_model_ident(p, g.model, sizeof(g.model));
  lgen_types(&g);
  g.mod = LLVMModuleCreateWithNameInContext(g.model, ctx);
  g.b = LLVMCreateBuilderInContext(ctx);
  g.kernel_fn = kiln_xcalloc((size_t)p->n_kernels + 1, sizeof(LLVMValueRef));
  g.kernel_use = kiln_xcalloc((size_t)p->n_kernels + 1, sizeof(unsigned char *));
  for (int k = 0; k < p->n_kernels; k++) g.kernel_use[k] = kiln_xcalloc((size_t)p->n_bufs + 1, 1);
  if (check_program(&g))
    for (int k = 0; k < p->n_kernels && !g.failed; k++) ll_analyze_kernel(&g, k);
  if (!g.failed) ll_emit_kernels(&g);
  if (!g.failed) ll_emit_glue(&g);
  for (int k = 0; k < p->n_kernels; k++) free(g.kernel_use[k]);
  free(g.kernel_use);
  free(g.kernel_fn);
  LLVMDisposeBuilder(g.b);
  if (g.failed) {
    LLVMDisposeModule(g.mod);
    return NULL;
  }
  return g.mod;
}
