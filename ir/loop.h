// Loop IR: what every backend renders. A program is a list of buffers (views of caller inputs and
// outputs, of the weights blob, or of the arena) and a list of kernels, run in order. A kernel is a
// tree of statements: loop nests with schedule annotations, scalar locals, loads, stores and
// arithmetic. The algorithm (what is stored where) is fixed by lowering; passes only change the
// annotations and the shape of loops, never the values computed.
#ifndef KILN_IR_LOOP_H
#define KILN_IR_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "dtype.h"
#include "pool.h"

typedef enum {
  KILN_BUF_INPUT,   // index = position among the model inputs
  KILN_BUF_OUTPUT,  // index = position among the model outputs
  KILN_BUF_WEIGHT,  // offset = byte offset in the weights blob
  KILN_BUF_ARENA,   // offset = byte offset in the arena
  KILN_BUF_STATE,   // offset = byte offset in the weights payload; kernels may write it (training)
} kiln_buf_kind;

typedef struct kiln_lbuf {
  const char *name;  // the graph tensor's name (for comments)
  kiln_buf_kind kind;
  kiln_dtype dtype;
  int64_t numel;
  int index;
  int64_t offset;
} kiln_lbuf;

typedef enum {
  LE_INT,     // i64 constant
  LE_FLOAT,   // floating constant of `dtype`
  LE_VAR,     // a loop variable or local
  LE_LOAD,    // buf[a]
  LE_BIN,     // a OP b
  LE_UNARY,   // FN(a)
  LE_SELECT,  // a ? b : c
  LE_CAST,    // (dtype)a
  LE_LOCAL,   // var[a]: an element of a local array (var declared with kiln_lb_decl_array)
  LE_MULADD,  // a * b + c on floats; the backend may round once (fma) or twice
} kiln_lexpr_kind;

// clang-format off
#define KILN_LBIN_LIST(X)                                                                         \
  X(ADD, "+") X(SUB, "-") X(MUL, "*") X(DIV, "/") X(MOD, "%") X(MIN, "min") X(MAX, "max")        \
  X(LT, "<") X(LE, "<=") X(EQ, "==") X(NE, "!=") X(AND, "&&") X(OR, "||")                        \
  X(POW, "pow") X(XOR, "^") X(SHR, ">>>")
// clang-format on
// Binary operators. POW is floats only (x^y). XOR and SHR (logical shift right of the 64-bit
// pattern) are i64 only, for counter-based random numbers.
typedef enum {
#define X(name, sym) LB_##name,
  KILN_LBIN_LIST(X)
#undef X
      LB_COUNT
} kiln_lbin;

// clang-format off
#define KILN_LUNARY_LIST(X)                                                                       \
  X(NEG, "neg") X(EXP, "exp") X(LOG, "log") X(SQRT, "sqrt") X(TANH, "tanh") X(ABS, "abs")        \
  X(ERF, "erf") X(FLOOR, "floor") X(CEIL, "ceil") X(SIGMOID, "sigmoid") X(RECIP, "recip")        \
  X(SIN, "sin") X(COS, "cos") X(ROUND, "round") X(MIX64, "mix64")
// clang-format on
// Unary functions. ROUND rounds half to even. MIX64 (i64 only) is the SplitMix64 finalizer of the
// 64-bit pattern: z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb;
// z ^= z >> 31 (wrapping), the hash behind seeded random ops.
typedef enum {
#define X(name, str) LU_##name,
  KILN_LUNARY_LIST(X)
#undef X
      LU_COUNT
} kiln_lunary;

typedef struct kiln_lexpr kiln_lexpr;
struct kiln_lexpr {
  kiln_lexpr_kind kind;
  kiln_dtype dtype;  // result type; comparisons and logic give KILN_BOOL, index math KILN_I64
  int op;            // kiln_lbin / kiln_lunary
  int64_t i;         // INT value
  double f;          // FLOAT value
  int var;           // VAR, LOCAL: index into the kernel's vars
  int buf;           // LOAD: index into the program's bufs
  kiln_lexpr *a, *b, *c;
};

typedef enum {
  LS_BLOCK,    // stmts[0..n)
  LS_FOR,      // for (var = lo; var < hi; var++) body
  LS_DECL,     // dtype var = value
  LS_ASSIGN,   // var = value
  LS_STORE,    // buf[index] = value
  LS_IF,       // if (cond) then_ else else_
  LS_COMMENT,  // text
  LS_LSTORE,   // var[index] = value: an element of a local array
  LS_DOT4,     // var[0..lanes) += 4-byte dot products (see below)
  LS_TILEDOT,  // a block of u8 x i8 sums stored to an i32 buffer (see below)
} kiln_lstmt_kind;

// LS_DOT4, the integer dot-product operator (the form of x86's vpdpbusd with one operand
// broadcast). `var` is a lane accumulator (kiln_lb_decl_lanes: an i32 local array of exactly
// `lanes` elements), `buf` a u8 buffer read at `index`, `w_buf` an i8 buffer read at `w_index`:
//   for l < lanes: var[l] += sum over j < 4 of
//       (int32)buf[index + j] * (int32)w_buf[w_index + 4 * l + j]
// The same 4 bytes of buf meet each lane's own 4 bytes of w_buf. Every sum is computed exactly
// and added in i32 with wraparound (each statement adds at most 4 * 255 * 128 in magnitude per
// lane; lowerings keep totals in range). Backends render it with vpdpbusd (AVX-512 VNNI), with
// pmaddwd on widened halves (AVX2, AVX-512BW) or as the plain loop above.

// LS_TILEDOT, the integer matrix-product operator (the form of AMX's tdpbusd, a block of up to
// 32 x 32 sums). `buf` is a u8 buffer read from `index`, `w_buf` an i8 buffer read from
// `w_index` (columns in vectors of 16, each as [k / 4][16][4], w_ld bytes apart), `c_buf` an i32
// buffer written from `c_index`; the sizes are in `tile`:
//   for i < rows, j < cols: c_buf[c_index + i * c_row + j * c_col] = sum over kk < k of
//       (int32)buf[index + i * a_ld + (kk / run_k) * run_ld + kk % run_k]
//     * (int32)w_buf[w_index + (j / 16) * w_ld + (kk / 4) * 64 + (j % 16) * 4 + kk % 4]
// (a row's k bytes are k / run_k runs of run_k bytes, run_ld apart). Exact sums, added in i32
// with wraparound. 1 <= rows, cols <= 32; run_k a multiple of 4 dividing k; c_col or c_row is 1
// (sums stored row by row, or column by column). Lowerings emit it
// only for targets with AMX (kiln_lower_ctx.amx); backends render it as a call to the runtime's
// kiln_tile_dot (runtime/tiles.c), and a program using it calls kiln_tiles_init from its init.
typedef struct kiln_ltile {
  int64_t rows, cols, k;
  int64_t a_ld, run_k, run_ld;  // a: bytes between rows, per run, between runs
  int64_t w_ld;                 // bytes between w's 16-column vectors
  int64_t c_row, c_col;         // elements between c's rows, columns
} kiln_ltile;

// Schedule annotations on a loop, set by passes.
enum { KILN_MAX_REDUCE = 8 };  // accumulators of one reduction loop
enum {
  KILN_LOOP_PARALLEL = 1 << 0,   // iterations are independent; run across threads
  KILN_LOOP_VECTORIZE = 1 << 1,  // innermost data-parallel loop; ask for SIMD
  KILN_LOOP_UNROLL = 1 << 2,     // unroll by `unroll`
  KILN_LOOP_REDUCE = 1 << 3,     // iterations accumulate into reduce_vars[i] with reduce_ops[i]
  // Set by the lowering: an iteration may read what an earlier one wrote through an index the
  // schedule cannot see (a scatter-add to data-dependent positions): never SIMD, never threads.
  KILN_LOOP_SERIAL = 1 << 4,
};

typedef struct kiln_lstmt kiln_lstmt;
struct kiln_lstmt {
  kiln_lstmt_kind kind;
  // BLOCK
  kiln_lstmt **stmts;
  int n, cap;
  // FOR
  int var;
  kiln_lexpr *lo, *hi;
  kiln_lstmt *body;
  unsigned flags;
  int unroll;
  // KILN_LOOP_REDUCE: the accumulators (var indices, distinct) and their kiln_lbin; each is
  // updated once per iteration (v = v OP e) and read nowhere else in the body, so the updates
  // of different accumulators are independent chains (several outputs per loop over k).
  int n_reduce;
  int reduce_vars[KILN_MAX_REDUCE], reduce_ops[KILN_MAX_REDUCE];
  // DECL / ASSIGN use var + value (a DECL of a local array has no value: its elements start
  // undefined, a lane accumulator's at 0); STORE uses buf + index + value; LSTORE var + index +
  // value
  int buf;
  kiln_lexpr *index, *value;
  // IF
  kiln_lexpr *cond;
  kiln_lstmt *then_, *else_;
  // COMMENT
  const char *text;
  // DOT4 uses var, buf + index (the u8 bytes) and these
  int lanes;
  int w_buf;
  kiln_lexpr *w_index;
  // TILEDOT uses buf + index, w_buf + w_index and these
  int c_buf;
  kiln_lexpr *c_index;
  kiln_ltile tile;
};

typedef struct kiln_lvar {
  const char *name;
  kiln_dtype dtype;
  int64_t len;  // 0: a scalar; > 0: a local array of len elements (register-blocked accumulators)
  bool lanes;   // a lane accumulator of LS_DOT4 (i32, len lanes, declared as zeros): backends may
                // keep it in a vector
} kiln_lvar;

typedef struct kiln_lkernel {
  const char *name;  // C identifier, unique in the program
  const char *op;    // op name, for comments and timing
  const char *node;  // graph node name
  kiln_lstmt *body;  // a BLOCK
  kiln_lvar *vars;
  int n_vars, cap_vars;
  int64_t flops;
} kiln_lkernel;

// A model input or output as the generated API sees it.
typedef struct kiln_lio {
  const char *name;    // C identifier derived from the tensor name
  const char *tensor;  // the graph tensor's name
  kiln_dtype dtype;
  int rank;
  int64_t shape[8];
  int buf;
} kiln_lio;

typedef struct kiln_lprog {
  kiln_pool pool;
  const char *name;  // model name (C identifier)
  kiln_lio *inputs, *outputs;
  int n_inputs, n_outputs;
  const void *weights;  // the weights payload (weights_bytes), laid out by plan-memory; not owned
  kiln_lbuf *bufs;
  int n_bufs, cap_bufs;
  kiln_lkernel *kernels;
  int n_kernels, cap_kernels;
  int64_t arena_bytes;
  int64_t weights_bytes;
  // Weights lowering derived at compile time (pre-packed layouts), to be appended to the payload
  // past weights_bytes by the lower pass (compiler/passes/lower.c); owned.
  unsigned char *derived;
  int64_t derived_bytes, derived_cap;
} kiln_lprog;

kiln_lprog *kiln_lprog_new(const char *name);
void kiln_lprog_free(kiln_lprog *p);
int kiln_lprog_add_buf(kiln_lprog *p, const kiln_lbuf *b);  // returns its index
kiln_lkernel *kiln_lprog_add_kernel(kiln_lprog *p, const char *op, const char *node);

// ---- Builder: what op lowerings use. It keeps a stack of open blocks. ----
typedef struct kiln_lb {
  kiln_lprog *prog;
  kiln_lkernel *k;
  kiln_lstmt *stack[64];
  int depth;
} kiln_lb;

void kiln_lb_begin(kiln_lb *b, kiln_lprog *p, kiln_lkernel *k);
void kiln_lb_end(kiln_lb *b);  // checks every block was closed

kiln_lexpr *lx_int(kiln_lb *b, int64_t v);
kiln_lexpr *lx_float(kiln_lb *b, kiln_dtype t, double v);
kiln_lexpr *lx_var(kiln_lb *b, int var);
kiln_lexpr *lx_load(kiln_lb *b, int buf, kiln_lexpr *index);
kiln_lexpr *lx_bin(kiln_lb *b, kiln_lbin op, kiln_lexpr *x, kiln_lexpr *y);
kiln_lexpr *lx_unary(kiln_lb *b, kiln_lunary op, kiln_lexpr *x);
kiln_lexpr *lx_select(kiln_lb *b, kiln_lexpr *cond, kiln_lexpr *x, kiln_lexpr *y);
kiln_lexpr *lx_cast(kiln_lb *b, kiln_dtype t, kiln_lexpr *x);
kiln_lexpr *lx_local(kiln_lb *b, int array, kiln_lexpr *index);                  // array[index]
kiln_lexpr *lx_muladd(kiln_lb *b, kiln_lexpr *x, kiln_lexpr *y, kiln_lexpr *z);  // x * y + z
// Shorthands for index arithmetic; they fold constants (x*1, x+0, 2*3) as they build.
kiln_lexpr *lx_add(kiln_lb *b, kiln_lexpr *x, kiln_lexpr *y);
kiln_lexpr *lx_mul(kiln_lb *b, kiln_lexpr *x, kiln_lexpr *y);
kiln_lexpr *lx_madd(kiln_lb *b, kiln_lexpr *x, int64_t k, kiln_lexpr *y);  // x*k + y

int kiln_lb_var(kiln_lb *b, const char *name, kiln_dtype t);  // a new, uniquely named variable
// for (v = lo; v < hi; v++) { ... kiln_lb_end_for }. Returns the loop variable.
int kiln_lb_for(kiln_lb *b, const char *name, kiln_lexpr *lo, kiln_lexpr *hi);
int kiln_lb_for_n(kiln_lb *b, const char *name, int64_t n);  // 0..n
kiln_lstmt *kiln_lb_end_for(kiln_lb *b);                     // returns the loop statement
void kiln_lb_unroll(kiln_lb *b, int factor);  // marks the innermost open loop KILN_LOOP_UNROLL
void kiln_lb_serial(kiln_lb *b);              // marks the innermost open loop KILN_LOOP_SERIAL
int kiln_lb_decl(kiln_lb *b, const char *name, kiln_dtype t, kiln_lexpr *init);
void kiln_lb_assign(kiln_lb *b, int var, kiln_lexpr *value);
// A local array of len elements of type t, for values a loop nest keeps in registers (a
// register-blocked microkernel's accumulators): declare it inside the loop whose iterations use
// it, index it with expressions that are constant once the small loops around are unrolled.
int kiln_lb_decl_array(kiln_lb *b, const char *name, kiln_dtype t, int64_t len);
void kiln_lb_store_local(kiln_lb *b, int array, kiln_lexpr *index, kiln_lexpr *value);
void kiln_lb_store(kiln_lb *b, int buf, kiln_lexpr *index, kiln_lexpr *value);
// A lane accumulator for kiln_lb_dot4: an i32 local array of `lanes` elements, all 0 where it
// is declared (4, 8 or 16 render as one vector; elements read and written like any local
// array's).
int kiln_lb_decl_lanes(kiln_lb *b, const char *name, int lanes);
// LS_DOT4: acc[l] += sum over j < 4 of u8 a_buf[a_index + j] * i8 w_buf[w_index + 4*l + j].
void kiln_lb_dot4(kiln_lb *b, int acc, int a_buf, kiln_lexpr *a_index, int w_buf,
                  kiln_lexpr *w_index);
// LS_TILEDOT: c_buf[c_index..] = the tile's sums of u8 a_buf[a_index..] by i8 w_buf[w_index..].
void kiln_lb_tiledot(kiln_lb *b, int c_buf, kiln_lexpr *c_index, int a_buf, kiln_lexpr *a_index,
                     int w_buf, kiln_lexpr *w_index, const kiln_ltile *tile);
// Whether the program has a LS_TILEDOT (its init must call kiln_tiles_init).
bool kiln_lprog_uses_tiles(const kiln_lprog *p);
void kiln_lb_if(kiln_lb *b, kiln_lexpr *cond);
void kiln_lb_else(kiln_lb *b);
void kiln_lb_end_if(kiln_lb *b);
void kiln_lb_comment(kiln_lb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// ---- Inspection ----
const char *kiln_lbin_name(kiln_lbin op);
const char *kiln_lunary_name(kiln_lunary op);
void kiln_lprog_print(const kiln_lprog *p, FILE *out);
// Checks buffers, variables and types are used consistently. Writes problems to `err` and
// returns false on the first one.
bool kiln_lprog_verify(const kiln_lprog *p, FILE *err);

#endif
