// C backend: renders a loop program as NAME.h (the documented API) and NAME.c (one static function
// per kernel, NAME_run_arena calling them in order, init/release, the kiln_model_desc table and,
// optionally, the weights blob and `main`).
//
// Names: every identifier in the generated code comes from one naming step (struct cnames) that
// makes IR names valid C, unique in their scope and distinct from keywords, library functions and
// the file-scope names the generated code defines, so no local shadows anything (-Wshadow).
//
// Types: expressions are printed so the code compiles warning-free with -Wall -Wextra -Wconversion:
// arithmetic on narrow integers (i8, u8, bool) is cast back to its IR type, float constants carry
// the right suffix, and integer min/max/abs go through small typed inline helpers.
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../runtime/kiln_runtime.h"
#include "../tanh_f32.h"
#include "internal.h"

// ---------------------------------------------------------------------------------------------
// Name sets: open addressing over borrowed strings.

typedef struct nameset {
  const char **slots;
  size_t cap, count;
} nameset;

static uint64_t str_hash(const char *s) { return kiln_fnv1a64(s, strlen(s)); }

static bool ns_has(const nameset *ns, const char *s) {
  if (!ns->cap) return false;
  for (size_t i = str_hash(s) & (ns->cap - 1);; i = (i + 1) & (ns->cap - 1)) {
    if (!ns->slots[i]) return false;
    if (strcmp(ns->slots[i], s) == 0) return true;
  }
}

static void ns_add(nameset *ns, const char *s) {
  if ((ns->count + 1) * 2 > ns->cap) {
    size_t cap = ns->cap ? ns->cap * 2 : 64;
    const char **slots = kiln_xcalloc(cap, sizeof(*slots));
    for (size_t j = 0; j < ns->cap; j++) {
      if (!ns->slots[j]) continue;
      size_t i = str_hash(ns->slots[j]) & (cap - 1);
      while (slots[i]) i = (i + 1) & (cap - 1);
      slots[i] = ns->slots[j];
    }
    free(ns->slots);
    ns->slots = slots;
    ns->cap = cap;
  }
  size_t i = str_hash(s) & (ns->cap - 1);
  while (ns->slots[i]) {
    if (strcmp(ns->slots[i], s) == 0) return;
    i = (i + 1) & (ns->cap - 1);
  }
  ns->slots[i] = s;
  ns->count++;
}

static void ns_free(nameset *ns) {
  free(ns->slots);
  memset(ns, 0, sizeof(*ns));
}

// C keywords and the library names generated code uses or includes.
static const char *const c_reserved[] = {
    "auto",      "break",    "case",      "char",      "const",
    "continue",  "default",  "do",        "double",    "else",
    "enum",      "extern",   "float",     "for",       "goto",
    "if",        "inline",   "int",       "long",      "register",
    "restrict",  "return",   "short",     "signed",    "sizeof",
    "static",    "struct",   "switch",    "typedef",   "union",
    "unsigned",  "void",     "volatile",  "while",     "asm",
    "typeof",    "bool",     "true",      "false",     "main",
    "argc",      "argv",     "ctx",       "arena",     "errno",
    "NULL",      "INFINITY", "NAN",       "HUGE_VAL",  "HUGE_VALF",
    "INT64_C",   "UINT64_C", "INT64_MIN", "INT64_MAX", "size_t",
    "uintptr_t", "int8_t",   "uint8_t",   "int16_t",   "uint16_t",
    "int32_t",   "uint32_t", "int64_t",   "uint64_t",  "memset",
    "memcpy",    "exp",      "expf",      "log",       "logf",
    "sqrt",      "sqrtf",    "tanh",      "tanhf",     "fabs",
    "fabsf",     "erf",      "erff",      "floor",     "floorf",
    "ceil",      "ceilf",    "fmin",      "fminf",     "fmax",
    "fmaxf",     "fmod",     "fmodf",     "abs",       "llabs",
    "min",       "max",      "isnan",     "isinf",     "math_errhandling",
    "omp",       "simd",     "unix",      "linux",     "i386",
    "x86_64",
};

static bool name_reserved(const nameset *globals, const char *s) {
  if (s[0] == '_') return true;  // _X and __x are the implementation's
  if (strncmp(s, "kiln_", 5) == 0 || strncmp(s, "KILN_", 5) == 0) return true;
  for (size_t i = 0; i < sizeof(c_reserved) / sizeof(c_reserved[0]); i++)
    if (strcmp(s, c_reserved[i]) == 0) return true;
  return globals && ns_has(globals, s);
}

// Copies raw into out as a C identifier: other characters become '_', runs of '_' collapse, and
// leading/trailing '_' go. May return "" (the caller prefixes).
static void sanitize(const char *raw, char *out, size_t size) {
  size_t n = 0;
  for (const char *s = raw ? raw : ""; *s && n + 1 < size; s++) {
    char c = *s;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!ok) c = '_';
    if (c == '_' && (n == 0 || out[n - 1] == '_')) continue;
    out[n++] = c;
  }
  while (n > 0 && out[n - 1] == '_') n--;
  out[n] = 0;
}

// A name for raw that is a valid identifier, not reserved, and not yet in ns; adds it to ns.
static const char *unique_name(kiln_pool *pool, nameset *ns, const nameset *globals,
                               const char *raw, const char *prefix) {
  char raw_id[64], base[96], cand[128];
  sanitize(raw, raw_id, 48);
  bool bad = !raw_id[0] || (raw_id[0] >= '0' && raw_id[0] <= '9') || name_reserved(globals, raw_id);
  snprintf(base, sizeof(base), "%.16s%s", bad ? prefix : "", raw_id);
  snprintf(cand, sizeof(cand), "%s", base);
  for (int i = 2; ns_has(ns, cand) || name_reserved(globals, cand); i++)
    snprintf(cand, sizeof(cand), "%s_%d", base, i);
  char *r = kiln_pool_strdup(pool, cand);
  ns_add(ns, r);
  return r;
}

const char *kiln_c_model_ident(const kiln_lprog *p, char *buf, int size) {
  char tmp[64];
  sanitize(p->name, tmp, sizeof(tmp));
  if (!tmp[0] || (tmp[0] >= '0' && tmp[0] <= '9') || name_reserved(NULL, tmp))
    snprintf(buf, (size_t)size, "model_%s", tmp);
  else
    snprintf(buf, (size_t)size, "%s", tmp);
  size_t n = strlen(buf);
  while (n > 0 && buf[n - 1] == '_') buf[--n] = 0;
  return buf;
}

// Every name the generated files use, computed the same way for the header and the source.
typedef struct cnames {
  kiln_pool pool;
  nameset globals;  // file-scope identifiers and macros defined by the generated code
  nameset run;      // NAME_run_arena's scope: io parameters and buffer pointers
  const char *model;
  const char **in, **out;  // io parameter names
  const char **buf;        // per buffer: pointer name (io parameter or local)
  const char **kernel;     // per kernel: function name
} cnames;

static const char *gname(cnames *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *gname(cnames *n, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  char *r = kiln_pool_strdup(&n->pool, tmp);
  ns_add(&n->globals, r);
  return r;
}

static void cnames_init(cnames *n, const kiln_lprog *p) {
  memset(n, 0, sizeof(*n));
  char ident[64];
  n->model = kiln_pool_strdup(&n->pool, kiln_c_model_ident(p, ident, sizeof(ident)));
  const char *m = n->model;
  static const char *const api[] = {
      "ctx",           "init_file",        "init_blob",      "init_embedded",
      "run",           "run_arena",        "release",        "desc",
      "desc_inputs",   "desc_outputs",     "desc_init_file", "desc_init_embedded",
      "desc_run",      "desc_release",     "blob",           "ARENA_BYTES",
      "WEIGHTS_BYTES", "WEIGHTS_CHECKSUM", "N_INPUTS",       "N_OUTPUTS",
      "H_INCLUDED",
  };
  for (size_t i = 0; i < sizeof(api) / sizeof(api[0]); i++) gname(n, "%s_%s", m, api[i]);
  ns_add(&n->run, "ctx");
  ns_add(&n->run, "arena");
  n->in = kiln_pool_alloc(&n->pool, sizeof(char *) * (size_t)(p->n_inputs + 1));
  n->out = kiln_pool_alloc(&n->pool, sizeof(char *) * (size_t)(p->n_outputs + 1));
  for (int i = 0; i < p->n_inputs; i++) {
    n->in[i] = unique_name(&n->pool, &n->run, &n->globals, p->inputs[i].name, "in_");
    gname(n, "%s_IN_%s_NUMEL", m, n->in[i]);
    gname(n, "%s_IN_%s_RANK", m, n->in[i]);
    gname(n, "%s_IN_%s_SHAPE", m, n->in[i]);
  }
  for (int i = 0; i < p->n_outputs; i++) {
    n->out[i] = unique_name(&n->pool, &n->run, &n->globals, p->outputs[i].name, "out_");
    gname(n, "%s_OUT_%s_NUMEL", m, n->out[i]);
    gname(n, "%s_OUT_%s_RANK", m, n->out[i]);
    gname(n, "%s_OUT_%s_SHAPE", m, n->out[i]);
  }
  nameset kernels = {0};
  n->kernel = kiln_pool_alloc(&n->pool, sizeof(char *) * (size_t)(p->n_kernels + 1));
  for (int k = 0; k < p->n_kernels; k++) {
    n->kernel[k] = unique_name(&n->pool, &kernels, &n->globals, p->kernels[k].name, "kernel_");
  }
  for (int k = 0; k < p->n_kernels; k++) ns_add(&n->globals, n->kernel[k]);
  ns_free(&kernels);
  n->buf = kiln_pool_alloc(&n->pool, sizeof(char *) * (size_t)(p->n_bufs + 1));
  // A model input's or output's own buffer is named after the argument (see emit_run).
  for (int i = 0; i < p->n_inputs + p->n_outputs; i++) {
    bool in = i < p->n_inputs;
    const kiln_lio *io = in ? &p->inputs[i] : &p->outputs[i - p->n_inputs];
    int b = io->buf;
    if (b < 0 || b >= p->n_bufs || n->buf[b]) continue;
    const kiln_lbuf *lb = &p->bufs[b];
    if (lb->kind == (in ? KILN_BUF_INPUT : KILN_BUF_OUTPUT) &&
        lb->index == (in ? i : i - p->n_inputs) && lb->dtype == io->dtype)
      n->buf[b] = in ? n->in[i] : n->out[i - p->n_inputs];
  }
  for (int b = 0; b < p->n_bufs; b++) {
    if (!n->buf[b]) n->buf[b] = unique_name(&n->pool, &n->run, &n->globals, p->bufs[b].name, "t_");
  }
}

static void cnames_free(cnames *n) {
  ns_free(&n->globals);
  ns_free(&n->run);
  kiln_pool_free(&n->pool);
}

// ---------------------------------------------------------------------------------------------
// The emitter: output file, indentation, first error.

typedef struct em {
  FILE *f;
  int indent;
  kiln_diag *d;
  bool failed;
  const kiln_lprog *p;
  const kiln_c_options *o;
  cnames names;
  // the kernel being rendered
  int kernel;
  const char **var;    // per var: C name
  int *var_reads;      // per var: how often it is read (LE_VAR, reduction)
  unsigned char *use;  // per buffer: USE_READ | USE_WRITE
  bool in_parallel, in_simd;
  // integer helpers used anywhere: bit (kind * KILN_DTYPE_COUNT + dtype)
  uint64_t helpers;
  bool uses_mix64;
  bool uses_tanhf;        // kiln_gen_tanhf (f32 tanh)
  bool uses_muladd;       // kiln_gen_muladd_f32 / _f64 (loop IR muladd)
  unsigned dot4_lanes;    // loop IR dot4 helpers used: bit (lanes) for lanes 4, 8, 16; bit 0 others
  unsigned fminmax_used;  // float min/max helpers used: bit FMINMAX_BIT(is_f64, is_max)
  // Data-parallel builds (docs/distributed.md), while emitting one half of the split step:
  // per kernel, whether this half leaves it out (NULL: none); per gradient output, the last
  // kernel writing it, after which the half calls kiln_dist_grad_ready (NULL: no such calls).
  const bool *skip_kernel;
  const int *grad_done_by;
} em;

enum { USE_READ = 1, USE_WRITE = 2 };
enum { HELP_MIN, HELP_MAX, HELP_ABS, HELP_COUNT };
#define FMINMAX_BIT(is_f64, is_max) (1u << (2 * (is_f64) + (is_max)))

static void em_fail(em *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void em_fail(em *m, const char *fmt, ...) {
  if (m->failed) return;
  m->failed = true;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  char where[160] = "";
  if (m->kernel >= 0 && m->kernel < m->p->n_kernels)
    snprintf(where, sizeof(where), "C backend: kernel %d (%s)", m->kernel,
             m->p->kernels[m->kernel].name ? m->p->kernels[m->kernel].name : "?");
  else
    snprintf(where, sizeof(where), "C backend");
  kiln_diag_error(m->d, where, "%s", msg);
}

static void em_indent(em *m) {
  for (int i = 0; i < m->indent; i++) fputs("  ", m->f);
}

// One indented line.
static void line(em *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line(em *m, const char *fmt, ...) {
  em_indent(m);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(m->f, fmt, ap);
  va_end(ap);
  fputc('\n', m->f);
}

static void out(em *m, const char *s) { fputs(s, m->f); }

static const char *ctype(kiln_dtype t) { return kiln_dtype_ctype(t); }

static const char *rt_dtype(kiln_dtype t) {
  static const char *const names[KILN_DTYPE_COUNT] = {
      [KILN_F32] = "KILN_RT_F32",   [KILN_F64] = "KILN_RT_F64", [KILN_I8] = "KILN_RT_I8",
      [KILN_U8] = "KILN_RT_U8",     [KILN_I32] = "KILN_RT_I32", [KILN_I64] = "KILN_RT_I64",
      [KILN_BOOL] = "KILN_RT_BOOL",
  };
  return (unsigned)t < KILN_DTYPE_COUNT ? names[t] : "-1";
}

// Text safe inside /* */: no "*/", "/*", trigraphs or control characters.
static void put_comment_text(FILE *f, const char *s) {
  char prev = 0;
  for (; s && *s; s++) {
    char c = *s;
    if ((unsigned char)c < 0x20 || c == 0x7f) c = ' ';
    if ((prev == '*' && c == '/') || (prev == '/' && c == '*') || (prev == '?' && c == '?'))
      fputc(' ', f);
    fputc(c, f);
    prev = c;
  }
}

// A C string literal.
static void put_string(FILE *f, const char *s) {
  fputc('"', f);
  char prev = 0;
  for (; s && *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c == '?' && prev == '?')
      fputs("\\?", f);
    else if (c < 0x20 || c >= 0x7f)
      fprintf(f, "\\%03o", c);
    else
      fputc(c, f);
    prev = (char)c;
  }
  fputc('"', f);
}

static void shape_text(char *buf, size_t size, const kiln_lio *io) {
  size_t n = (size_t)snprintf(buf, size, "%s[", kiln_dtype_name(io->dtype));
  for (int d = 0; d < io->rank && n < size; d++)
    n += (size_t)snprintf(buf + n, size - n, "%s%" PRId64, d ? ", " : "", io->shape[d]);
  if (n < size) snprintf(buf + n, size - n, "]");
}

static int64_t io_numel(const kiln_lio *io) {
  int64_t n = 1;
  for (int d = 0; d < io->rank; d++) n *= io->shape[d];
  return n;
}

// ---------------------------------------------------------------------------------------------
// Walking a kernel: which buffers it reads and writes, which variables are read, which helpers
// are needed. Also checks indices so rendering never reads out of bounds.

static bool is_narrow(kiln_dtype t) { return t == KILN_I8 || t == KILN_U8 || t == KILN_BOOL; }
static bool is_cmp(int op) {
  return op == LB_LT || op == LB_LE || op == LB_EQ || op == LB_NE || op == LB_AND || op == LB_OR;
}

static void walk_expr(em *m, const kiln_lexpr *e) {
  if (!e) {
    em_fail(m, "missing expression");
    return;
  }
  if ((unsigned)e->dtype >= KILN_DTYPE_COUNT) {
    em_fail(m, "expression with invalid dtype %d", (int)e->dtype);
    return;
  }
  const kiln_lkernel *k = &m->p->kernels[m->kernel];
  switch (e->kind) {
    case LE_INT:
    case LE_FLOAT: break;
    case LE_VAR:
      if (e->var < 0 || e->var >= k->n_vars)
        em_fail(m, "variable %d out of range", e->var);
      else
        m->var_reads[e->var]++;
      break;
    case LE_LOAD:
      if (e->buf < 0 || e->buf >= m->p->n_bufs)
        em_fail(m, "buffer %d out of range", e->buf);
      else
        m->use[e->buf] |= USE_READ;
      walk_expr(m, e->a);
      break;
    case LE_BIN:
      if (e->op < 0 || e->op >= LB_COUNT) {
        em_fail(m, "invalid binary op %d", e->op);
        return;
      }
      if ((e->op == LB_MIN || e->op == LB_MAX) && kiln_dtype_is_float(e->dtype))
        m->fminmax_used |= FMINMAX_BIT(e->dtype == KILN_F64, e->op == LB_MAX);
      if ((e->op == LB_MIN || e->op == LB_MAX) && !kiln_dtype_is_float(e->dtype))
        m->helpers |=
            1ull << ((e->op == LB_MIN ? HELP_MIN : HELP_MAX) * KILN_DTYPE_COUNT + e->dtype);
      walk_expr(m, e->a);
      walk_expr(m, e->b);
      break;
    case LE_UNARY:
      if (e->op < 0 || e->op >= LU_COUNT) {
        em_fail(m, "invalid unary op %d", e->op);
        return;
      }
      if (e->op == LU_MIX64) {
        if (e->dtype != KILN_I64) em_fail(m, "mix64 on %s", kiln_dtype_name(e->dtype));
        m->uses_mix64 = true;
      } else if (!kiln_dtype_is_float(e->dtype) && e->op != LU_NEG && e->op != LU_ABS)
        em_fail(m, "%s on integer type %s", kiln_lunary_name((kiln_lunary)e->op),
                kiln_dtype_name(e->dtype));
      if (e->op == LU_ABS && !kiln_dtype_is_float(e->dtype))
        m->helpers |= 1ull << (HELP_ABS * KILN_DTYPE_COUNT + e->dtype);
      if (e->op == LU_TANH && e->dtype == KILN_F32) m->uses_tanhf = m->uses_muladd = true;
      walk_expr(m, e->a);
      break;
    case LE_SELECT:
      walk_expr(m, e->a);
      walk_expr(m, e->b);
      walk_expr(m, e->c);
      break;
    case LE_CAST: walk_expr(m, e->a); break;
    case LE_LOCAL:
      if (e->var < 0 || e->var >= k->n_vars || k->vars[e->var].len <= 0)
        em_fail(m, "local array %d out of range", e->var);
      else
        m->var_reads[e->var]++;
      walk_expr(m, e->a);
      break;
    case LE_MULADD:
      if (!kiln_dtype_is_float(e->dtype)) em_fail(m, "muladd on %s", kiln_dtype_name(e->dtype));
      m->uses_muladd = true;
      walk_expr(m, e->a);
      walk_expr(m, e->b);
      walk_expr(m, e->c);
      break;
    default: em_fail(m, "invalid expression kind %d", (int)e->kind);
  }
}

// A lane accumulator rendered as one vector (kiln_gen_i32xL): 4, 8 or 16 lanes.
static bool vector_lanes(const kiln_lvar *v) {
  return v->lanes && (v->len == 4 || v->len == 8 || v->len == 16);
}

static void walk_dot4(em *m, const kiln_lkernel *k, const kiln_lstmt *s) {
  if (s->var < 0 || s->var >= k->n_vars || !k->vars[s->var].lanes ||
      k->vars[s->var].len != s->lanes)
    return em_fail(m, "dot4 accumulator %d is not a lane accumulator", s->var);
  if (s->buf < 0 || s->buf >= m->p->n_bufs || s->w_buf < 0 || s->w_buf >= m->p->n_bufs)
    return em_fail(m, "dot4 buffer out of range");
  m->use[s->buf] |= USE_READ;
  m->use[s->w_buf] |= USE_READ;
  m->dot4_lanes |= vector_lanes(&k->vars[s->var]) ? 1u << s->lanes : 1u;
  walk_expr(m, s->index);
  walk_expr(m, s->w_index);
}

static void walk_tiledot(em *m, const kiln_lstmt *s) {
  int bufs[3] = {s->buf, s->w_buf, s->c_buf};
  for (int i = 0; i < 3; i++)
    if (bufs[i] < 0 || bufs[i] >= m->p->n_bufs) return em_fail(m, "tiledot buffer out of range");
  m->use[s->buf] |= USE_READ;
  m->use[s->w_buf] |= USE_READ;
  m->use[s->c_buf] |= USE_WRITE;
  walk_expr(m, s->index);
  walk_expr(m, s->w_index);
  walk_expr(m, s->c_index);
}

static void walk_stmt(em *m, const kiln_lstmt *s) {
  if (!s || m->failed) return;
  const kiln_lkernel *k = &m->p->kernels[m->kernel];
  switch (s->kind) {
    case LS_BLOCK:
      for (int i = 0; i < s->n; i++) walk_stmt(m, s->stmts[i]);
      break;
    case LS_FOR:
      if (s->var < 0 || s->var >= k->n_vars) em_fail(m, "loop variable %d out of range", s->var);
      for (int i = 0; (s->flags & KILN_LOOP_REDUCE) && i < s->n_reduce; i++)
        if (s->reduce_vars[i] < 0 || s->reduce_vars[i] >= k->n_vars)
          em_fail(m, "reduction variable %d out of range", s->reduce_vars[i]);
      walk_expr(m, s->lo);
      walk_expr(m, s->hi);
      walk_stmt(m, s->body);
      break;
    case LS_DECL:
    case LS_ASSIGN:
      if (s->var < 0 || s->var >= k->n_vars) em_fail(m, "variable %d out of range", s->var);
      if (s->value || s->kind == LS_ASSIGN) walk_expr(m, s->value);
      break;
    case LS_STORE:
      if (s->buf < 0 || s->buf >= m->p->n_bufs)
        em_fail(m, "buffer %d out of range", s->buf);
      else
        m->use[s->buf] |= USE_WRITE;
      walk_expr(m, s->index);
      walk_expr(m, s->value);
      break;
    case LS_IF:
      walk_expr(m, s->cond);
      walk_stmt(m, s->then_);
      walk_stmt(m, s->else_);
      break;
    case LS_COMMENT: break;
    case LS_LSTORE:
      if (s->var < 0 || s->var >= k->n_vars || k->vars[s->var].len <= 0)
        em_fail(m, "local array %d out of range", s->var);
      walk_expr(m, s->index);
      walk_expr(m, s->value);
      break;
    case LS_DOT4: walk_dot4(m, k, s); break;
    case LS_TILEDOT: walk_tiledot(m, s); break;
    default: em_fail(m, "invalid statement kind %d", (int)s->kind);
  }
}

// Walks kernel k into m->use / m->var_reads (both reset first).
static void analyze_kernel(em *m, int k) {
  m->kernel = k;
  const kiln_lkernel *kr = &m->p->kernels[k];
  memset(m->use, 0, (size_t)m->p->n_bufs + 1);
  free(m->var_reads);
  m->var_reads = kiln_xcalloc((size_t)kr->n_vars + 1, sizeof(int));
  walk_stmt(m, kr->body);
}

// ---------------------------------------------------------------------------------------------
// Expressions. Every binary operation is parenthesized; negative constants too.

static void put_int(em *m, int64_t v) {
  if (v == INT64_MIN)
    out(m, "INT64_MIN");
  else if (v < 0 && v >= -INT32_MAX)
    fprintf(m->f, "(%" PRId64 ")", v);
  else if (v < 0)
    fprintf(m->f, "(-INT64_C(%" PRId64 "))", -v);
  else if (v <= INT32_MAX)
    fprintf(m->f, "%" PRId64, v);
  else
    fprintf(m->f, "INT64_C(%" PRId64 ")", v);
}

static void put_float(em *m, kiln_dtype t, double v) {
  bool f32 = t != KILN_F64;
  if (f32) v = (double)(float)v;
  if (isnan(v)) {
    out(m, f32 ? "NAN" : "((double)NAN)");
    return;
  }
  if (isinf(v)) {
    if (f32)
      out(m, v > 0 ? "INFINITY" : "(-INFINITY)");
    else
      out(m, v > 0 ? "HUGE_VAL" : "(-HUGE_VAL)");
    return;
  }
  // The shortest decimal form that reads back as the same value.
  char buf[48];
  for (int prec = f32 ? 6 : 15; prec <= (f32 ? 9 : 17); prec++) {
    snprintf(buf, sizeof(buf), "%.*g", prec, v);
    if (f32 ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) break;
  }
  if (!strpbrk(buf, ".e")) strcat(buf, ".0");
  if (f32) strcat(buf, "f");
  fprintf(m->f, buf[0] == '-' ? "(%s)" : "%s", buf);
}

static const char *helper_suffix(kiln_dtype t) {
  switch (t) {
    case KILN_I8: return "i8";
    case KILN_U8:
    case KILN_BOOL: return "u8";
    case KILN_I32: return "i32";
    default: return "i64";
  }
}

static void expr(em *m, const kiln_lexpr *e);

// An expression used as a truth value: comparisons are not cast to uint8_t.
static void cond_expr(em *m, const kiln_lexpr *e) {
  if (e->kind == LE_BIN && is_cmp(e->op)) {
    static const char *const sym[LB_COUNT] = {[LB_LT] = "<",  [LB_LE] = "<=",  [LB_EQ] = "==",
                                              [LB_NE] = "!=", [LB_AND] = "&&", [LB_OR] = "||"};
    out(m, "(");
    bool logic = e->op == LB_AND || e->op == LB_OR;
    if (logic)
      cond_expr(m, e->a);
    else
      expr(m, e->a);
    fprintf(m->f, " %s ", sym[e->op]);
    if (logic)
      cond_expr(m, e->b);
    else
      expr(m, e->b);
    out(m, ")");
  } else {
    expr(m, e);
  }
}

// `if (cond) {`: a comparison is printed in its own parentheses only (clang's
// -Wparentheses-equality rejects `if ((a == b))` under -Werror).
static void if_head(em *m, const kiln_lexpr *cond) {
  bool parenthesized = cond->kind == LE_BIN && is_cmp(cond->op);
  out(m, parenthesized ? "if " : "if (");
  cond_expr(m, cond);
  out(m, parenthesized ? " {\n" : ") {\n");
}

static void bin_expr(em *m, const kiln_lexpr *e) {
  bool fl = kiln_dtype_is_float(e->dtype);
  const char *fs = e->dtype == KILN_F64 ? "" : "f";
  switch (e->op) {
    case LB_MIN:
    case LB_MAX: {
      const char *which = e->op == LB_MIN ? "min" : "max";
      if (fl)
        fprintf(m->f, "kiln_gen_f%s%s(", which, fs);
      else
        fprintf(m->f, "kiln_gen_%s_%s(", which, helper_suffix(e->dtype));
      expr(m, e->a);
      out(m, ", ");
      expr(m, e->b);
      out(m, ")");
      return;
    }
    case LB_POW:
      fprintf(m->f, "pow%s(", fs);
      expr(m, e->a);
      out(m, ", ");
      expr(m, e->b);
      out(m, ")");
      return;
    case LB_XOR:
    case LB_SHR:  // on the 64-bit pattern: unsigned, so neither overflows nor sign-extends
      out(m, "((int64_t)((uint64_t)");
      expr(m, e->a);
      out(m, e->op == LB_XOR ? " ^ (uint64_t)" : " >> ");
      expr(m, e->b);
      out(m, "))");
      return;
    case LB_MOD:
      if (fl) {
        fprintf(m->f, "fmod%s(", fs);
        expr(m, e->a);
        out(m, ", ");
        expr(m, e->b);
        out(m, ")");
        return;
      }
      break;
    default: break;
  }
  if (is_cmp(e->op)) {
    cond_expr(m, e);
    return;
  }
  static const char *const sym[LB_COUNT] = {
      [LB_ADD] = "+", [LB_SUB] = "-", [LB_MUL] = "*", [LB_DIV] = "/", [LB_MOD] = "%"};
  out(m, "(");
  expr(m, e->a);
  fprintf(m->f, " %s ", sym[e->op]);
  expr(m, e->b);
  out(m, ")");
}

static void unary_expr(em *m, const kiln_lexpr *e) {
  const char *fs = e->dtype == KILN_F64 ? "" : "f";
  const char *one = e->dtype == KILN_F64 ? "1.0" : "1.0f";
  switch (e->op) {
    case LU_NEG:
      out(m, "(-");
      expr(m, e->a);
      out(m, ")");
      return;
    case LU_ABS:
      if (!kiln_dtype_is_float(e->dtype))
        fprintf(m->f, "kiln_gen_abs_%s(", helper_suffix(e->dtype));
      else
        fprintf(m->f, "fabs%s(", fs);
      expr(m, e->a);
      out(m, ")");
      return;
    case LU_SIGMOID:
      fprintf(m->f, "(%s / (%s + exp%s(-", one, one, fs);
      expr(m, e->a);
      out(m, ")))");
      return;
    case LU_MIX64:
      out(m, "kiln_gen_mix64(");
      expr(m, e->a);
      out(m, ")");
      return;
    case LU_TANH:
      if (e->dtype != KILN_F32) break;
      out(m, "kiln_gen_tanhf(");
      expr(m, e->a);
      out(m, ")");
      return;
    case LU_RECIP:
      fprintf(m->f, "(%s / ", one);
      expr(m, e->a);
      out(m, ")");
      return;
    default: break;
  }
  static const char *const fn[LU_COUNT] = {
      [LU_EXP] = "exp", [LU_LOG] = "log",         [LU_SQRT] = "sqrt", [LU_TANH] = "tanh",
      [LU_ERF] = "erf", [LU_FLOOR] = "floor",     [LU_CEIL] = "ceil", [LU_SIN] = "sin",
      [LU_COS] = "cos", [LU_ROUND] = "nearbyint",
  };
  fprintf(m->f, "%s%s(", fn[e->op] ? fn[e->op] : "?", fs);
  expr(m, e->a);
  out(m, ")");
}

static void expr(em *m, const kiln_lexpr *e) {
  switch (e->kind) {
    case LE_INT:
      if (kiln_dtype_is_float(e->dtype))
        put_float(m, e->dtype, (double)e->i);
      else
        put_int(m, e->i);
      return;
    case LE_FLOAT:
      if (kiln_dtype_is_float(e->dtype))
        put_float(m, e->dtype, e->f);
      else
        put_int(m, (int64_t)e->f);
      return;
    case LE_VAR: out(m, m->var[e->var]); return;
    case LE_LOCAL:
      fprintf(m->f, "%s[", m->var[e->var]);
      expr(m, e->a);
      out(m, "]");
      return;
    case LE_MULADD:
      fprintf(m->f, "kiln_gen_muladd_%s(", e->dtype == KILN_F64 ? "f64" : "f32");
      expr(m, e->a);
      out(m, ", ");
      expr(m, e->b);
      out(m, ", ");
      expr(m, e->c);
      out(m, ")");
      return;
    case LE_LOAD:
      fprintf(m->f, "%s[", m->names.buf[e->buf]);
      expr(m, e->a);
      out(m, "]");
      return;
    case LE_CAST:
      if (e->dtype == KILN_BOOL) {
        out(m, "((uint8_t)(");
        expr(m, e->a);
        out(m, " != 0))");
      } else {
        fprintf(m->f, "((%s)", ctype(e->dtype));
        expr(m, e->a);
        out(m, ")");
      }
      return;
    default: break;
  }
  // Operations on i8/u8/bool compute in int; cast the result back to the IR type (-Wconversion).
  bool helper = e->kind == LE_BIN && (e->op == LB_MIN || e->op == LB_MAX);
  helper = helper || (e->kind == LE_UNARY && e->op == LU_ABS);
  bool narrow = is_narrow(e->dtype) && !helper;
  if (narrow) fprintf(m->f, "((%s)", ctype(e->dtype));
  if (e->kind == LE_BIN) {
    bin_expr(m, e);
  } else if (e->kind == LE_UNARY) {
    unary_expr(m, e);
  } else {  // LE_SELECT
    out(m, "(");
    cond_expr(m, e->a);
    out(m, " ? ");
    expr(m, e->b);
    out(m, " : ");
    expr(m, e->c);
    out(m, ")");
  }
  if (narrow) out(m, ")");
}

// ---------------------------------------------------------------------------------------------
// Statements.

static void stmt(em *m, const kiln_lstmt *s);

static void contents(em *m, const kiln_lstmt *s) {
  if (!s) return;
  if (s->kind == LS_BLOCK)
    for (int i = 0; i < s->n; i++) stmt(m, s->stmts[i]);
  else
    stmt(m, s);
}

static bool block_empty(const kiln_lstmt *s) { return !s || (s->kind == LS_BLOCK && s->n == 0); }

static const char *omp_reduction_op(int op) {
  switch (op) {
    case LB_ADD: return "+";
    case LB_MUL: return "*";
    case LB_MAX: return "max";
    case LB_MIN: return "min";
    case LB_AND: return "&&";
    case LB_OR: return "||";
    default: return NULL;
  }
}

static void for_stmt(em *m, const kiln_lstmt *s) {
  bool par = (s->flags & KILN_LOOP_PARALLEL) && !m->in_parallel && !m->in_simd;
  bool simd = (s->flags & KILN_LOOP_VECTORIZE) && !m->in_simd;
  char red[KILN_MAX_REDUCE * 160] = "";
  int at = 0;
  for (int i = 0; (s->flags & KILN_LOOP_REDUCE) && i < s->n_reduce; i++) {
    const char *op = omp_reduction_op(s->reduce_ops[i]);
    if (!op) {
      par = simd = false;  // no OpenMP reduction for it: keep the loop serial
      break;
    }
    at += snprintf(red + at, sizeof(red) - (size_t)at, " reduction(%s:%s)", op,
                   m->var[s->reduce_vars[i]]);
    if (at >= (int)sizeof(red)) {
      em_fail(m, "reduction clause too long");
      return;
    }
  }
  if (par || simd) {
    line(m, "#pragma omp %s%s",
         par && simd ? "parallel for simd"
         : par       ? "parallel for"
                     : "simd",
         red);
  } else if ((s->flags & KILN_LOOP_UNROLL) && s->unroll >= 1) {
    // `#pragma GCC unroll` cannot share a loop with an omp pragma; it is only used alone.
    line(m, "#pragma GCC unroll %d", s->unroll > 65534 ? 65534 : s->unroll);
  }
  const char *v = m->var[s->var];
  em_indent(m);
  fprintf(m->f, "for (%s %s = ", ctype(m->p->kernels[m->kernel].vars[s->var].dtype), v);
  expr(m, s->lo);
  fprintf(m->f, "; %s < ", v);
  expr(m, s->hi);
  fprintf(m->f, "; ++%s) {\n", v);
  bool was_par = m->in_parallel, was_simd = m->in_simd;
  m->in_parallel |= par;
  m->in_simd |= simd;
  m->indent++;
  contents(m, s->body);
  m->indent--;
  m->in_parallel = was_par;
  m->in_simd = was_simd;
  line(m, "}");
}

// LS_TILEDOT (ir/loop.h): the runtime's AMX kernel (runtime/tiles.c).
static void tiledot_stmt(em *m, const kiln_lstmt *s) {
  const kiln_ltile *t = &s->tile;
  em_indent(m);
  fprintf(m->f, "kiln_tile_dot(&%s[", m->names.buf[s->c_buf]);
  expr(m, s->c_index);
  fprintf(m->f, "], %lld, %lld, &%s[", (long long)t->c_row, (long long)t->c_col,
          m->names.buf[s->buf]);
  expr(m, s->index);
  fprintf(m->f, "], %lld, %lld, %lld, %lld, &%s[", (long long)t->a_ld, (long long)t->run_ld,
          (long long)t->run_k, (long long)t->k, m->names.buf[s->w_buf]);
  expr(m, s->w_index);
  fprintf(m->f, "], %lld, %lld, %lld);\n", (long long)t->w_ld, (long long)t->rows,
          (long long)t->cols);
}

static void stmt(em *m, const kiln_lstmt *s) {
  if (!s) return;
  const kiln_lkernel *k = &m->p->kernels[m->kernel];
  switch (s->kind) {
    case LS_BLOCK:
      if (s->n == 0) return;
      line(m, "{");
      m->indent++;
      contents(m, s);
      m->indent--;
      line(m, "}");
      return;
    case LS_FOR: for_stmt(m, s); return;
    case LS_DECL:
      em_indent(m);
      if (k->vars[s->var].lanes) {  // a lane accumulator, zeros: one vector if it can be
        if (vector_lanes(&k->vars[s->var]))
          fprintf(m->f, "kiln_gen_i32x%" PRId64 " %s = {0};\n", k->vars[s->var].len,
                  m->var[s->var]);
        else
          fprintf(m->f, "int32_t %s[%" PRId64 "] = {0};\n", m->var[s->var], k->vars[s->var].len);
        return;
      }
      if (k->vars[s->var].len > 0) {  // a local array, elements set before they are read
        fprintf(m->f, "%s %s[%" PRId64 "];\n", ctype(k->vars[s->var].dtype), m->var[s->var],
                k->vars[s->var].len);
        return;
      }
      fprintf(m->f, "%s %s = ", ctype(k->vars[s->var].dtype), m->var[s->var]);
      if (s->value)
        expr(m, s->value);
      else
        out(m, "0");
      out(m, ";\n");
      if (m->var_reads[s->var] == 0) line(m, "(void)%s;", m->var[s->var]);
      return;
    case LS_ASSIGN:
      em_indent(m);
      fprintf(m->f, "%s = ", m->var[s->var]);
      expr(m, s->value);
      out(m, ";\n");
      return;
    case LS_STORE:
      em_indent(m);
      fprintf(m->f, "%s[", m->names.buf[s->buf]);
      expr(m, s->index);
      out(m, "] = ");
      expr(m, s->value);
      out(m, ";\n");
      return;
    case LS_LSTORE:
      em_indent(m);
      fprintf(m->f, "%s[", m->var[s->var]);
      expr(m, s->index);
      out(m, "] = ");
      expr(m, s->value);
      out(m, ";\n");
      return;
    case LS_DOT4:
      em_indent(m);
      if (vector_lanes(&k->vars[s->var]))
        fprintf(m->f, "kiln_gen_dot4_%d(&%s, &%s[", s->lanes, m->var[s->var], m->names.buf[s->buf]);
      else
        fprintf(m->f, "kiln_gen_dot4_n(%s, %d, &%s[", m->var[s->var], s->lanes,
                m->names.buf[s->buf]);
      expr(m, s->index);
      fprintf(m->f, "], &%s[", m->names.buf[s->w_buf]);
      expr(m, s->w_index);
      out(m, "]);\n");
      return;
    case LS_TILEDOT: tiledot_stmt(m, s); return;
    case LS_IF:
      em_indent(m);
      if_head(m, s->cond);
      m->indent++;
      contents(m, s->then_);
      m->indent--;
      if (!block_empty(s->else_)) {
        line(m, "} else {");
        m->indent++;
        contents(m, s->else_);
        m->indent--;
      }
      line(m, "}");
      return;
    case LS_COMMENT:
      em_indent(m);
      out(m, "/* ");
      put_comment_text(m->f, s->text);
      out(m, " */\n");
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// Kernels.

static const char *buf_place(const kiln_lbuf *b, char *buf, size_t size) {
  switch (b->kind) {
    case KILN_BUF_INPUT: snprintf(buf, size, "input %d", b->index); break;
    case KILN_BUF_OUTPUT: snprintf(buf, size, "output %d", b->index); break;
    case KILN_BUF_WEIGHT: snprintf(buf, size, "weights+%" PRId64, b->offset); break;
    case KILN_BUF_ARENA: snprintf(buf, size, "arena+%" PRId64, b->offset); break;
    default: snprintf(buf, size, "?");
  }
  return buf;
}

// Whether buffers a and b may share memory: the same region (arena, weights, or the same io
// argument) and overlapping byte ranges.
static bool may_alias(const kiln_lbuf *a, const kiln_lbuf *b) {
  if (a->kind != b->kind) return false;
  // Views of one io argument (their offsets are not used): assume they overlap.
  if (a->kind == KILN_BUF_INPUT || a->kind == KILN_BUF_OUTPUT) return a->index == b->index;
  int64_t a0 = a->offset, a1 = a0 + a->numel * (int64_t)kiln_dtype_size(a->dtype);
  int64_t b0 = b->offset, b1 = b0 + b->numel * (int64_t)kiln_dtype_size(b->dtype);
  return a0 < b1 && b0 < a1;
}

typedef struct kparam {
  int buf;
  bool write, restrict_;
} kparam;

// The kernel's parameters (written buffers first, then read-only ones, each in buffer order) and
// whether each can be restrict-qualified. Uses m->use from analyze_kernel.
static int kernel_params(em *m, kparam *ps) {
  const kiln_lprog *p = m->p;
  int n = 0;
  for (int pass = 0; pass < 2; pass++) {
    for (int b = 0; b < p->n_bufs; b++) {
      if (!m->use[b]) continue;
      bool w = (m->use[b] & USE_WRITE) != 0;
      if (w != (pass == 0)) continue;
      ps[n++] = (kparam){.buf = b, .write = w, .restrict_ = true};
    }
  }
  for (int i = 0; i < n; i++) {
    // Lowering never reads and writes one buffer in a kernel; if it does, stay conservative.
    if (m->use[ps[i].buf] == (USE_READ | USE_WRITE)) ps[i].restrict_ = false;
    for (int j = i + 1; j < n; j++) {
      if ((ps[i].write || ps[j].write) && may_alias(&p->bufs[ps[i].buf], &p->bufs[ps[j].buf]))
        ps[i].restrict_ = ps[j].restrict_ = false;
    }
  }
  return n;
}

static void emit_kernel(em *m, int k, kparam *ps) {
  const kiln_lprog *p = m->p;
  const kiln_lkernel *kr = &p->kernels[k];
  analyze_kernel(m, k);
  if (m->failed) return;
  for (int b = 0; b < p->n_bufs; b++) {
    if ((m->use[b] & USE_WRITE) &&
        (p->bufs[b].kind == KILN_BUF_INPUT || p->bufs[b].kind == KILN_BUF_WEIGHT)) {
      em_fail(m, "writes to read-only buffer %d (%s)", b, p->bufs[b].name ? p->bufs[b].name : "?");
      return;
    }
  }
  int np = kernel_params(m, ps);

  // Variable names: unique within the kernel, distinct from its parameters and globals.
  kiln_pool vpool = {0};
  nameset vns = {0};
  for (int i = 0; i < np; i++) ns_add(&vns, m->names.buf[ps[i].buf]);
  m->var = kiln_pool_alloc(&vpool, sizeof(char *) * (size_t)(kr->n_vars + 1));
  for (int v = 0; v < kr->n_vars; v++)
    m->var[v] = unique_name(&vpool, &vns, &m->names.globals, kr->vars[v].name, "v_");

  out(m, "\n/* ");
  fprintf(m->f, "Kernel %d: ", k);
  put_comment_text(m->f, kr->op ? kr->op : "?");
  if (kr->node) {
    out(m, " (node ");
    put_comment_text(m->f, kr->node);
    out(m, ")");
  }
  if (kr->flops) fprintf(m->f, ", %" PRId64 " flops", kr->flops);
  out(m, ".\n");
  for (int i = 0; i < np; i++) {
    const kiln_lbuf *b = &p->bufs[ps[i].buf];
    char place[64];
    fprintf(m->f, " *   %s: %s[%" PRId64 "] at %s, ", m->names.buf[ps[i].buf],
            kiln_dtype_name(b->dtype), b->numel, buf_place(b, place, sizeof(place)));
    put_comment_text(m->f, b->name ? b->name : "?");
    out(m, "\n");
  }
  out(m, " */\n");

  // Signature on one line if short, else one parameter per line.
  char sig[4096];
  size_t len = 0;
  for (int i = 0; i < np && len < sizeof(sig); i++) {
    len += (size_t)snprintf(sig + len, sizeof(sig) - len, "%s%s%s *%s%s", i ? ", " : "",
                            ps[i].write ? "" : "const ", ctype(p->bufs[ps[i].buf].dtype),
                            ps[i].restrict_ ? "restrict " : "", m->names.buf[ps[i].buf]);
  }
  if (np == 0) {
    fprintf(m->f, "static void %s(void) {\n", m->names.kernel[k]);
  } else if (strlen(m->names.kernel[k]) + len < 85) {
    fprintf(m->f, "static void %s(%s) {\n", m->names.kernel[k], sig);
  } else {
    fprintf(m->f, "static void %s(\n", m->names.kernel[k]);
    for (int i = 0; i < np; i++) {
      fprintf(m->f, "    %s%s *%s%s%s\n", ps[i].write ? "" : "const ",
              ctype(p->bufs[ps[i].buf].dtype), ps[i].restrict_ ? "restrict " : "",
              m->names.buf[ps[i].buf], i + 1 < np ? "," : ") {");
    }
  }
  m->indent = 1;
  m->in_parallel = m->in_simd = false;
  contents(m, kr->body);
  m->indent = 0;
  out(m, "}\n");
  ns_free(&vns);
  kiln_pool_free(&vpool);
  m->var = NULL;
}

// ---------------------------------------------------------------------------------------------
// Header.

static void run_params(em *m, bool with_ctx_arena, bool for_run_arena) {
  const kiln_lprog *p = m->p;
  const char *M = m->names.model;
  if (with_ctx_arena)
    fprintf(m->f, for_run_arena ? "const %s_ctx *ctx, void *arena" : "%s_ctx *ctx", M);
  for (int i = 0; i < p->n_inputs; i++)
    fprintf(m->f, ", const %s *%s", ctype(p->inputs[i].dtype), m->names.in[i]);
  for (int i = 0; i < p->n_outputs; i++)
    fprintf(m->f, ", %s *%s", ctype(p->outputs[i].dtype), m->names.out[i]);
}

static void io_comment_lines(em *m, const char *what, const kiln_lio *ios, int n,
                             const char **names) {
  fprintf(m->f, "// %s:\n", what);
  if (n == 0) out(m, "//   (none)\n");
  for (int i = 0; i < n; i++) {
    char shape[256];
    shape_text(shape, sizeof(shape), &ios[i]);
    fprintf(m->f, "//   %-12s %-20s %" PRId64 " elements", names[i], shape, io_numel(&ios[i]));
    if (ios[i].tensor && strcmp(ios[i].tensor, names[i]) != 0) {
      out(m, " (tensor ");
      put_comment_text(m->f, ios[i].tensor);
      out(m, ")");
    }
    out(m, "\n");
  }
}

static void io_macros(em *m, const char *kind, const kiln_lio *ios, int n, const char **names) {
  const char *M = m->names.model;
  for (int i = 0; i < n; i++) {
    fprintf(m->f, "#define %s_%s_%s_NUMEL %" PRId64 "\n", M, kind, names[i], io_numel(&ios[i]));
    fprintf(m->f, "#define %s_%s_%s_RANK %d\n", M, kind, names[i], ios[i].rank);
    if (ios[i].rank == 0) continue;  // a scalar: no shape to list
    fprintf(m->f, "#define %s_%s_%s_SHAPE {", M, kind, names[i]);
    for (int d = 0; d < ios[i].rank; d++)
      fprintf(m->f, "%s%" PRId64, d ? ", " : "", ios[i].shape[d]);
    out(m, "}\n");
  }
}

static bool check_program(em *m) {
  const kiln_lprog *p = m->p;
  if (p->n_inputs < 0 || p->n_outputs < 0 || p->n_bufs < 0 || p->n_kernels < 0)
    em_fail(m, "negative counts in the loop program");
  for (int i = 0; i < p->n_inputs + p->n_outputs && !m->failed; i++) {
    const kiln_lio *io = i < p->n_inputs ? &p->inputs[i] : &p->outputs[i - p->n_inputs];
    if (io->rank < 0 || io->rank > 8) em_fail(m, "io %s has rank %d", io->name, io->rank);
    if ((unsigned)io->dtype >= KILN_DTYPE_COUNT) em_fail(m, "io %s has an invalid dtype", io->name);
  }
  for (int b = 0; b < p->n_bufs && !m->failed; b++) {
    if ((unsigned)p->bufs[b].dtype >= KILN_DTYPE_COUNT)
      em_fail(m, "buffer %d has an invalid dtype", b);
  }
  for (int k = 0; k < p->n_kernels && !m->failed; k++) {
    const kiln_lkernel *kr = &p->kernels[k];
    for (int v = 0; v < kr->n_vars; v++) {
      if ((unsigned)kr->vars[v].dtype >= KILN_DTYPE_COUNT) {
        m->kernel = k;
        em_fail(m, "variable %d has an invalid dtype", v);
        break;
      }
    }
  }
  if (p->weights_bytes > 0 && !p->weights) em_fail(m, "weights payload missing");
  if (p->weights_bytes < 0 || p->arena_bytes < 0) em_fail(m, "negative arena or weights size");
  m->kernel = -1;
  return !m->failed;
}

static void em_init(em *m, const kiln_lprog *p, const kiln_c_options *o, FILE *f, kiln_diag *d) {
  memset(m, 0, sizeof(*m));
  m->f = f;
  m->d = d;
  m->p = p;
  m->o = o;
  m->kernel = -1;
  cnames_init(&m->names, p);
  m->use = kiln_xcalloc((size_t)p->n_bufs + 1, 1);
}

static void em_free(em *m) {
  cnames_free(&m->names);
  free(m->use);
  free(m->var_reads);
}

static uint64_t weights_checksum(const kiln_lprog *p) {
  return kiln_weights_checksum(p->weights, p->weights_bytes > 0 ? (size_t)p->weights_bytes : 0);
}

// The training API in the header (docs/training.md §4).
static void emit_train_decls(em *m) {
  const char *M = m->names.model;
  FILE *f = m->f;
  fprintf(
      f,
      "// Training build: %s_run is one training step (forward, loss, backward, optimizer\n"
      "// update of the weights in the context: the init functions give every context a private\n"
      "// copy, and %s_run_arena must not share a context between threads). Output 0 is the\n"
      "// loss. %s_train_step is %s_run; %s_eval runs the forward pass and the loss only.\n",
      M, M, M, M, M);
  fprintf(f, "#define %s_TRAIN_ARENA_BYTES %s_ARENA_BYTES\n", M, M);
  fprintf(f, "int %s_train_step(", M);
  run_params(m, true, false);
  out(m, ");\n");
  fprintf(f, "int %s_eval(", M);
  run_params(m, true, false);
  out(m, ");\n");
  fprintf(f, "int %s_eval_arena(", M);
  run_params(m, true, true);
  out(m, ");\n");
  if (m->o->train->distributed) {
    fprintf(
        f,
        "// Data-parallel build: the step in two halves. %s_train_grads writes the gradients to\n"
        "// outputs %d..%d; %s_apply_update clips them, updates and advances the step counter.\n",
        M, m->o->train->first_grad_output,
        m->o->train->first_grad_output + m->o->train->n_grads - 1, M);
    const char *fns[] = {"train_grads", "apply_update"};
    for (int i = 0; i < 2; i++) {
      fprintf(f, "int %s_%s(", M, fns[i]);
      run_params(m, true, false);
      out(m, ");\n");
    }
  }
  fprintf(
      f,
      "// Checkpoints: every STATE tensor (weights, optimizer state, the step counter "
      "`kiln.step`)\n"
      "// as .safetensors, written atomically. %s_load_state reads one back (strict: all of them,\n"
      "// for --resume; otherwise what the file has, e.g. trained weights).\n"
      "int %s_save(const %s_ctx *ctx, const char *path);\n"
      "int %s_load_state(%s_ctx *ctx, const char *path, int strict);\n"
      "// The generated trainer's description (kiln_train_main).\n"
      "extern const kiln_train_desc %s_train_desc;\n\n",
      M, M, M, M, M, M);
}

static bool emit_header(em *m) {
  const kiln_lprog *p = m->p;
  const kiln_c_options *o = m->o;
  const char *M = m->names.model;
  if (!check_program(m)) return false;
  FILE *f = m->f;
  fprintf(f, "// %s.h: inference for the model ", M);
  put_comment_text(f, p->name);
  out(m, ", generated by Kiln. Do not edit.\n//\n");
  io_comment_lines(m, "Inputs", p->inputs, p->n_inputs, m->names.in);
  io_comment_lines(m, "Outputs", p->outputs, p->n_outputs, m->names.out);
  fprintf(f,
          "//\n"
          "// Usage:\n"
          "//   %s_ctx ctx;\n",
          M);
  if (o->embed_weights)
    fprintf(f, "//   int st = %s_init_embedded(&ctx);  // weights are compiled in\n", M);
  else
    fprintf(f, "//   int st = %s_init_file(&ctx, \"%s.weights\");\n", M, M);
  fprintf(f, "//   if (st != KILN_OK) { fprintf(stderr, \"%%s\\n\", kiln_status_str(st)); ... }\n");
  fprintf(f, "//   st = %s_run(&ctx", M);
  for (int i = 0; i < p->n_inputs; i++) fprintf(f, ", %s", m->names.in[i]);
  for (int i = 0; i < p->n_outputs; i++) fprintf(f, ", %s", m->names.out[i]);
  fprintf(f, ");  // as often as needed\n//   %s_release(&ctx);\n", M);
  fprintf(
      f,
      "//\n"
      "// Memory: all allocation happens in the init functions (%s_init_blob allocates nothing);\n"
      "// running never allocates, prints or exits. Each input or output pointer must hold the\n"
      "// number of elements given by its NUMEL macro below, in C (row-major) order; outputs must\n"
      "// not overlap inputs or each other.\n"
      "//\n"
      "// Threads: the kernels use OpenMP when this code is built with -fopenmp. A context is not\n"
      "// safe to run from two threads at once (%s_run uses the context's arena); to share one\n"
      "// context's weights between threads, give each thread its own arena of %s_ARENA_BYTES\n"
      "// bytes, 64-byte aligned, and call %s_run_arena.\n"
      "//\n"
      "// Build: cc -std=c17 -O3 -fopenmp -c %s.c -I<kiln include dir>; link with -lkiln-runtime\n"
      "// -fopenmp -lm. Every function returns a kiln_status (KILN_OK on success).\n",
      M, M, M, M, M);
  fprintf(f, "#ifndef %s_H_INCLUDED\n#define %s_H_INCLUDED\n\n", M, M);
  out(m,
      "#include <stddef.h>\n#include <stdint.h>\n\n#include \"kiln_runtime.h\"\n\n"
      "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
  fprintf(f, "// Scratch memory for intermediate tensors, in bytes (0: none needed).\n");
  fprintf(f, "#define %s_ARENA_BYTES %" PRId64 "u\n", M, p->arena_bytes);
  fprintf(f,
          "// Size of the weights payload (the blob is %d header bytes more) and its FNV-1a-64.\n",
          KILN_WEIGHTS_HEADER_BYTES);
  fprintf(f, "#define %s_WEIGHTS_BYTES %" PRId64 "u\n", M, p->weights_bytes);
  fprintf(f, "#define %s_WEIGHTS_CHECKSUM 0x%016" PRIx64 "ULL\n\n", M, weights_checksum(p));
  fprintf(f, "#define %s_N_INPUTS %d\n#define %s_N_OUTPUTS %d\n", M, p->n_inputs, M, p->n_outputs);
  io_macros(m, "IN", p->inputs, p->n_inputs, m->names.in);
  io_macros(m, "OUT", p->outputs, p->n_outputs, m->names.out);
  fprintf(f,
          "\n// A loaded model. The fields are private: set them only through the init functions.\n"
          "typedef struct %s_ctx {\n"
          "  const void *weights;  // the weights payload\n"
          "  void *arena;          // scratch memory used by %s_run\n"
          "  void *owned_weights;  // allocations %s_release frees\n"
          "  void *owned_arena;\n"
          "} %s_ctx;\n\n",
          M, M, M, M);
  fprintf(f,
          "// Loads the weights file written by `kiln compile` (checking its size and checksum:\n"
          "// KILN_ERR_WEIGHTS if it belongs to another model) and allocates the arena.\n"
          "int %s_init_file(%s_ctx *ctx, const char *weights_path);\n\n",
          M, M);
  fprintf(
      f,
      "// Allocates nothing: uses an in-memory weights blob (the whole file, header included; it\n"
      "// must stay alive and unchanged until %s_release) and a caller-supplied arena of at\n"
      "// least %s_ARENA_BYTES bytes, 64-byte aligned (KILN_ERR_ARG otherwise). The arena may be\n"
      "// NULL only when %s_ARENA_BYTES is 0.\n"
      "int %s_init_blob(%s_ctx *ctx, const void *blob, size_t blob_bytes, void *arena,\n"
      "    size_t arena_bytes);\n\n",
      M, M, M, M, M);
  if (o->embed_weights)
    fprintf(f,
            "// Uses the weights compiled into %s.c and allocates the arena.\n"
            "int %s_init_embedded(%s_ctx *ctx);\n\n",
            M, M, M);
  fprintf(f, "// Runs the model once. KILN_ERR_ARG if ctx or a pointer is NULL.\n");
  for (int i = 0; i < p->n_inputs; i++) {
    char shape[256];
    shape_text(shape, sizeof(shape), &p->inputs[i]);
    fprintf(f, "//   %s: input, %s\n", m->names.in[i], shape);
  }
  for (int i = 0; i < p->n_outputs; i++) {
    char shape[256];
    shape_text(shape, sizeof(shape), &p->outputs[i]);
    fprintf(f, "//   %s: output, %s\n", m->names.out[i], shape);
  }
  fprintf(f, "int %s_run(", M);
  run_params(m, true, false);
  out(m, ");\n\n");
  fprintf(f,
          "// Like %s_run, with a caller-supplied arena (%s_ARENA_BYTES bytes, 64-byte aligned;\n"
          "// may be NULL if that is 0): threads sharing one context each pass their own arena.\n"
          "int %s_run_arena(",
          M, M, M);
  run_params(m, true, true);
  out(m, ");\n\n");
  if (o->train) emit_train_decls(m);
  fprintf(f, "// Frees what the init function allocated and clears ctx. Accepts NULL.\n");
  fprintf(f, "void %s_release(%s_ctx *ctx);\n\n", M, M);
  fprintf(f, "// The model's description for the runtime's standalone driver (kiln_main).\n");
  fprintf(f, "extern const kiln_model_desc %s_desc;\n\n", M);
  fprintf(f, "#ifdef __cplusplus\n}\n#endif\n#endif  // %s_H_INCLUDED\n", M);
  return !m->failed;
}

// ---------------------------------------------------------------------------------------------
// Source.

// fmin / fmax semantics (a NaN operand loses), but inlined so that they vectorize. Only the
// variants the program uses are written: clang warns about unused static functions.
static void emit_float_minmax_helpers(em *m) {
  if (m->fminmax_used)
    out(m,
        "\n// Float min and max with fmin / fmax semantics: a NaN operand gives the other one.\n");
  for (int f64 = 0; f64 < 2; f64++)
    for (int is_max = 0; is_max < 2; is_max++) {
      if (!(m->fminmax_used & FMINMAX_BIT(f64, is_max))) continue;
      const char *T = f64 ? "double" : "float";
      fprintf(m->f,
              "static inline %s kiln_gen_f%s%s(%s a, %s b) { return a %s b || b != b ? a : b; }\n",
              T, is_max ? "max" : "min", f64 ? "" : "f", T, T, is_max ? ">" : "<");
    }
}

// f32 tanh evaluated in double, branch-free so that `omp simd` loops vectorize it (libm's tanhf
// is a scalar call; so is fmin, hence the clamp by comparison): |x| clamped to 10 (tanh(10) rounds
// to 1.0f), m = exp(2|x|) - 1 = 2^n (q(r) + 1) - 1 with r = 2|x| - n ln2, |r| <= ln2 / 2 (2^n built
// in the exponent bits) and q(r) = exp(r) - 1 a degree-10 polynomial (minimax for the relative
// error on [-ln2/2, ln2/2], tools/tanh_poly.py: < 2e-15), then tanh = m / (m + 2). For n = 0
// (|x| < 0.17) m is q(r) itself, so small arguments lose nothing to cancellation; for n >= 1 the
// sum 2^n q + (2^n - 1) cancels at most a factor of ~3.4. The Horner steps and that sum are fused
// multiply-adds where the target has FMA (kiln_gen_muladd_f64), which more than halves the cost
// against separate roundings (-std=c17 contracts nothing). The double result is within 1e-14 of
// tanh, so the float is the correctly rounded one except within 1e-14 of a rounding tie (an
// exhaustive run over every float agrees; tools/tanh_poly.py --check). NaN stays NaN; the sign
// is x's.
// ---- Loop IR dot4 (ir/loop.h, LS_DOT4): acc[l] += sum over j < 4 of u8 a[j] * i8 w[4 * l + j].
// One helper per lane count. A lane accumulator of 4, 8 or 16 lanes is a GCC/clang vector
// (kiln_gen_i32xL), which the compiler keeps in a register; the helpers pick vpdpbusd where the
// target has AVX-512 VNNI (or AVX-VNNI), else pmaddwd on the even and odd bytes widened to 16 bits
// (exact: each product fits 16 bits signed and a pair's sum 32), else the plain loop.

// The plain loop over `lanes` lanes, the i32 additions wrapping (as vpdpbusd's).
static const char dot4_plain[] =
    "\n// Loop IR dot4 (ir/loop.h): acc[l] += sum over j < 4 of a[j] * w[4 * l + j], u8 x i8.\n"
    "__attribute__((unused)) static inline void kiln_gen_dot4_n(int32_t *acc, int lanes,\n"
    "    const uint8_t *a, const int8_t *w) {\n"
    "  for (int l = 0; l < lanes; l++) {\n"
    "    int32_t s = 0;\n"
    "    for (int j = 0; j < 4; j++) s += (int32_t)a[j] * (int32_t)w[4 * l + j];\n"
    "    acc[l] = (int32_t)((uint32_t)acc[l] + (uint32_t)s);\n"
    "  }\n"
    "}\n";

// pmaddwd over the even and odd bytes: PRE is _mm512 / _mm256, SI si512 / si256.
#define DOT4_MADD(PRE, SI, LOADU)                                          \
  "  __m" #SI "i av = " PRE "_set1_epi32(a4), wv = " LOADU                 \
  ";\n"                                                                    \
  "  __m" #SI "i even = " PRE "_madd_epi16(" PRE "_and_si" #SI "(av, " PRE \
  "_set1_epi16(0xff)),\n"                                                  \
  "                                  " PRE "_srai_epi16(" PRE              \
  "_slli_epi16(wv, 8), 8));\n"                                             \
  "  __m" #SI "i odd = " PRE "_madd_epi16(" PRE "_srli_epi16(av, 8), " PRE \
  "_srai_epi16(wv, 8));\n"

static const char dot4_16[] =
    "\nstatic inline void kiln_gen_dot4_16(kiln_gen_i32x16 *acc, const uint8_t *a, const int8_t "
    "*w) {\n"
    "#if defined(__AVX512VNNI__) || defined(__AVX512BW__)\n"
    "  int32_t a4;\n"
    "  memcpy(&a4, a, 4);\n"
    "#endif\n"
    "#if defined(__AVX512VNNI__)\n"
    "  *acc = (kiln_gen_i32x16)_mm512_dpbusd_epi32((__m512i)*acc, _mm512_set1_epi32(a4),\n"
    "                                              _mm512_loadu_si512(w));\n"
    "#elif defined(__AVX512BW__)\n" DOT4_MADD("_mm512", 512, "_mm512_loadu_si512(w)")
    "  *acc = (kiln_gen_i32x16)_mm512_add_epi32((__m512i)*acc, _mm512_add_epi32(even, odd));\n"
    "#else\n"
    "  int32_t v[16];\n"
    "  memcpy(v, acc, sizeof v);\n"
    "  kiln_gen_dot4_n(v, 16, a, w);\n"
    "  memcpy(acc, v, sizeof v);\n"
    "#endif\n"
    "}\n";

static const char dot4_8[] =
    "\nstatic inline void kiln_gen_dot4_8(kiln_gen_i32x8 *acc, const uint8_t *a, const int8_t "
    "*w) {\n"
    "#if defined(__AVX2__)\n"
    "  int32_t a4;\n"
    "  memcpy(&a4, a, 4);\n"
    "#endif\n"
    "#if defined(__AVX512VNNI__) && defined(__AVX512VL__)\n"
    "  *acc = (kiln_gen_i32x8)_mm256_dpbusd_epi32((__m256i)*acc, _mm256_set1_epi32(a4),\n"
    "                                             _mm256_loadu_si256((const __m256i *)w));\n"
    "#elif defined(__AVXVNNI__)\n"
    "  *acc = (kiln_gen_i32x8)_mm256_dpbusd_avx_epi32((__m256i)*acc, _mm256_set1_epi32(a4),\n"
    "                                                 _mm256_loadu_si256((const __m256i *)w));\n"
    "#elif defined(__AVX2__)\n" DOT4_MADD("_mm256", 256, "_mm256_loadu_si256((const __m256i *)w)")
    "  *acc = (kiln_gen_i32x8)_mm256_add_epi32((__m256i)*acc, _mm256_add_epi32(even, odd));\n"
    "#else\n"
    "  int32_t v[8];\n"
    "  memcpy(v, acc, sizeof v);\n"
    "  kiln_gen_dot4_n(v, 8, a, w);\n"
    "  memcpy(acc, v, sizeof v);\n"
    "#endif\n"
    "}\n";

static const char dot4_4[] =
    "\nstatic inline void kiln_gen_dot4_4(kiln_gen_i32x4 *acc, const uint8_t *a, const int8_t "
    "*w) {\n"
    "  int32_t v[4];\n"
    "  memcpy(v, acc, sizeof v);\n"
    "  kiln_gen_dot4_n(v, 4, a, w);\n"
    "  memcpy(acc, v, sizeof v);\n"
    "}\n";

static void emit_dot4_helpers(em *m) {
  out(m,
      "\n#if defined(__x86_64__) || defined(__i386__)\n#include <immintrin.h>\n#endif\n"
      "typedef int32_t kiln_gen_i32x4 __attribute__((vector_size(16)));\n"
      "typedef int32_t kiln_gen_i32x8 __attribute__((vector_size(32)));\n"
      "typedef int32_t kiln_gen_i32x16 __attribute__((vector_size(64)));\n");
  out(m, dot4_plain);
  if (m->dot4_lanes & (1u << 16)) out(m, dot4_16);
  if (m->dot4_lanes & (1u << 8)) out(m, dot4_8);
  if (m->dot4_lanes & (1u << 4)) out(m, dot4_4);
}

static void emit_tanhf(em *m) {
  out(m,
      "\n// f32 tanh in double, branch-free (vectorizes; libm's tanhf is a scalar call).\n"
      "static inline float kiln_gen_tanhf(float xf) {\n"
      "  double x = (double)xf, a = __builtin_fabs(x);\n"
      "  a = a > 10.0 ? 10.0 : a;\n"
      "  double y = 2.0 * a, n = __builtin_nearbyint(y * 1.4426950408889634);\n"
      "  double r = kiln_gen_muladd_f64(-n, 0.6931471803691238, y);\n"
      "  r = kiln_gen_muladd_f64(-n, 1.9082149292705877e-10, r);\n");
  fprintf(m->f, "  double q = %.17g;\n", tanh_expm1_poly[0]);
  for (size_t i = 1; i < sizeof tanh_expm1_poly / sizeof *tanh_expm1_poly; i++)
    fprintf(m->f, "  q = kiln_gen_muladd_f64(q, r, %.17g);\n", tanh_expm1_poly[i]);
  out(m,
      "  q = q * r;\n"
      "  double k = n + 6755399441055744.0;\n"
      "  uint64_t bits;\n"
      "  memcpy(&bits, &k, sizeof bits);\n"
      "  bits = (bits + 1023) << 52;\n"
      "  double scale;\n"
      "  memcpy(&scale, &bits, sizeof scale);\n"
      "  double e = kiln_gen_muladd_f64(scale, q, scale - 1.0);\n"
      "  return (float)__builtin_copysign(e / (e + 2.0), x);\n"
      "}\n");
}

static void emit_helpers(em *m) {
  emit_float_minmax_helpers(m);
  if (m->dot4_lanes) emit_dot4_helpers(m);
  if (m->uses_muladd)
    out(m,
        "\n// Loop IR muladd: x * y + z, one rounding where the target has FMA instructions.\n"
        "#if defined(__FMA__) || defined(__AVX512F__)\n"
        "#define kiln_gen_muladd_f32(x, y, z) fmaf((x), (y), (z))\n"
        "#define kiln_gen_muladd_f64(x, y, z) fma((x), (y), (z))\n"
        "#else\n"
        "#define kiln_gen_muladd_f32(x, y, z) ((x) * (y) + (z))\n"
        "#define kiln_gen_muladd_f64(x, y, z) ((x) * (y) + (z))\n"
        "#endif\n");
  if (m->uses_tanhf) emit_tanhf(m);
  if (m->uses_mix64)
    out(m,
        "\n// SplitMix64's finalizer on the 64-bit pattern (loop IR mix64).\n"
        "static inline int64_t kiln_gen_mix64(int64_t x) {\n"
        "  uint64_t z = (uint64_t)x;\n"
        "  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);\n"
        "  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);\n"
        "  return (int64_t)(z ^ (z >> 31));\n"
        "}\n");
  static const kiln_dtype ints[] = {KILN_I8, KILN_U8, KILN_I32, KILN_I64};
  bool any = false;
  for (int h = 0; h < HELP_COUNT; h++) {
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
      kiln_dtype t = ints[i];
      uint64_t bits = 1ull << (h * KILN_DTYPE_COUNT + t);
      if (t == KILN_U8) bits |= 1ull << (h * KILN_DTYPE_COUNT + KILN_BOOL);
      if (!(m->helpers & bits)) continue;
      if (!any) out(m, "\n// Integer min, max and abs.\n");
      any = true;
      const char *T = ctype(t), *s = helper_suffix(t);
      if (h == HELP_ABS)
        fprintf(m->f, "static inline %s kiln_gen_abs_%s(%s a) { return (%s)(a < 0 ? -a : a); }\n",
                T, s, T, T);
      else
        fprintf(m->f, "static inline %s kiln_gen_%s_%s(%s a, %s b) { return a %s b ? a : b; }\n", T,
                h == HELP_MIN ? "min" : "max", s, T, T, h == HELP_MIN ? "<" : ">");
    }
  }
}

// Writes the embedded weights blob: the 64-byte header kiln_weights_write writes, then the payload.
static void emit_blob(em *m) {
  const kiln_lprog *p = m->p;
  size_t n = (size_t)p->weights_bytes;
  unsigned char header[KILN_WEIGHTS_HEADER_BYTES] = {0};
  const char magic[8] = KILN_WEIGHTS_MAGIC;
  memcpy(header, magic, sizeof magic);
  uint64_t sum = weights_checksum(p);
  for (int i = 0; i < 8; i++) {
    header[8 + i] = (unsigned char)((uint64_t)n >> (8 * i));
    header[16 + i] = (unsigned char)(sum >> (8 * i));
  }
  fprintf(m->f,
          "\n// The weights blob (%d-byte header, then %zu payload bytes), as kiln_weights_write\n"
          "// writes it.\n"
          "static const _Alignas(64) unsigned char %s_blob[%zu] = {\n",
          KILN_WEIGHTS_HEADER_BYTES, n, m->names.model, n + KILN_WEIGHTS_HEADER_BYTES);
  static const char hex[] = "0123456789abcdef";
  char lbuf[24 * 6 + 8];
  size_t total = n + KILN_WEIGHTS_HEADER_BYTES;
  const unsigned char *w = p->weights;
  for (size_t i = 0; i < total; i += 24) {
    size_t len = 0;
    lbuf[len++] = ' ';
    lbuf[len++] = ' ';
    for (size_t j = i; j < total && j < i + 24; j++) {
      unsigned char c =
          j < KILN_WEIGHTS_HEADER_BYTES ? header[j] : w[j - KILN_WEIGHTS_HEADER_BYTES];
      lbuf[len++] = '0';
      lbuf[len++] = 'x';
      lbuf[len++] = hex[c >> 4];
      lbuf[len++] = hex[c & 15];
      lbuf[len++] = ',';
    }
    lbuf[len - 1] = '\n';
    if (i + 24 < total) {
      lbuf[len - 1] = ',';
      lbuf[len++] = '\n';
    }
    fwrite(lbuf, 1, len, m->f);
  }
  out(m, "};\n");
}

// Training builds: kernels [0, n) compute the forward pass and the loss (the last one writing
// output 0, the loss); the rest compute gradients and updates (docs/training.md).
static int eval_kernel_count(em *m) {
  const kiln_lprog *p = m->p;
  int n = 0;
  for (int k = 0; k < p->n_kernels && p->n_outputs > 0; k++) {
    analyze_kernel(m, k);
    for (int b = 0; b < p->n_bufs; b++)
      if ((m->use[b] & USE_WRITE) && p->bufs[b].kind == KILN_BUF_OUTPUT && p->bufs[b].index == 0)
        n = k + 1;
  }
  m->kernel = -1;
  return n;
}

static bool kernel_is(const em *m, int k, const char *op) {
  return m->p->kernels[k].op && strcmp(m->p->kernels[k].op, op) == 0;
}

// Data-parallel builds: the runtime callbacks after kernel k (analyzed): a RankMean (RankSum)
// kernel's output is averaged (summed) over the ranks (--sync-bn), a half of the split step
// reports each gradient output that kernel k finished (the all-reduce of its bucket may start),
// and a running-statistic update names the model buffer it wrote (made rank 0's after the step).
static void emit_dist_hooks(em *m, int k) {
  const kiln_lprog *p = m->p;
  if (!m->o->train || !m->o->train->distributed) return;
  const char *reduce = kernel_is(m, k, "RankMean")  ? "mean"
                       : kernel_is(m, k, "RankSum") ? "sum"
                                                    : NULL;
  for (int b = 0; b < p->n_bufs && reduce; b++) {
    if (!(m->use[b] & USE_WRITE)) continue;
    if (p->bufs[b].dtype != KILN_F32) em_fail(m, "RankMean/RankSum (--sync-bn): f32 only");
    line(m, "kiln_dist_rank_%s_f32(%s, %" PRId64 ");", reduce, m->names.buf[b], p->bufs[b].numel);
  }
  for (int g = 0; m->grad_done_by && g < m->o->train->n_grads; g++)
    if (m->grad_done_by[g] == k) line(m, "kiln_dist_grad_ready(%d);", g);
  for (int b = 0; b < p->n_bufs && kernel_is(m, k, "RunningStatUpdate"); b++)
    if ((m->use[b] & USE_WRITE) && p->bufs[b].kind == KILN_BUF_STATE)
      line(m, "kiln_dist_buffer_updated(%s, %" PRId64 ");", m->names.buf[b],
           p->bufs[b].numel * (int64_t)kiln_dtype_size(p->bufs[b].dtype));
}

// NAME_<fn>_arena and NAME_<fn>: kernels [first, n_kernels) in order (fn "run": all of them),
// but those m->skip_kernel leaves out.
static void emit_run_fn(em *m, kparam *ps, const char *fn, int first, int n_kernels) {
  const kiln_lprog *p = m->p;
  const char *M = m->names.model;
  FILE *f = m->f;
  // Which buffers any kernel uses.
  unsigned char *used = kiln_xcalloc((size_t)p->n_bufs + 1, 1);
  for (int k = first; k < n_kernels && !m->failed; k++) {
    if (m->skip_kernel && m->skip_kernel[k]) continue;
    analyze_kernel(m, k);
    for (int b = 0; b < p->n_bufs; b++) used[b] |= m->use[b];
  }
  m->kernel = -1;

  fprintf(f, "\nint %s_%s_arena(", M, fn);
  run_params(m, true, true);
  out(m, ") {\n");
  m->indent = 1;
  em_indent(m);
  out(m, "if (!ctx");
  for (int i = 0; i < p->n_inputs; i++) fprintf(f, " || !%s", m->names.in[i]);
  for (int i = 0; i < p->n_outputs; i++) fprintf(f, " || !%s", m->names.out[i]);
  out(m, ") return KILN_ERR_ARG;\n");
  if (p->weights_bytes > 0) line(m, "if (!ctx->weights) return KILN_ERR_ARG;");
  if (p->arena_bytes > 0)
    line(m, "if (!arena || ((uintptr_t)arena & 63u) != 0) return KILN_ERR_ARG;");

  // Buffer pointers.
  bool uses_arena = false;
  bool *io_used = kiln_xcalloc((size_t)(p->n_inputs + p->n_outputs) + 1, sizeof(bool));
  for (int b = 0; b < p->n_bufs; b++) {
    if (!used[b]) continue;
    const kiln_lbuf *lb = &p->bufs[b];
    const char *T = ctype(lb->dtype), *name = m->names.buf[b];
    bool ro = !(used[b] & USE_WRITE);
    switch (lb->kind) {
      case KILN_BUF_INPUT:
      case KILN_BUF_OUTPUT: {
        bool in = lb->kind == KILN_BUF_INPUT;
        int n = in ? p->n_inputs : p->n_outputs;
        if (lb->index < 0 || lb->index >= n) {
          em_fail(m, "buffer %d refers to %s %d of %d", b, in ? "input" : "output", lb->index, n);
          break;
        }
        const kiln_lio *io = in ? &p->inputs[lb->index] : &p->outputs[lb->index];
        const char *arg = in ? m->names.in[lb->index] : m->names.out[lb->index];
        io_used[in ? lb->index : p->n_inputs + lb->index] = true;
        if (name == arg && lb->dtype == io->dtype) break;  // the argument itself
        // Another view of the argument (io buffers have no offset: they start at the argument).
        const char *c = in || ro ? "const " : "";
        line(m, "%s%s *%s = (%s%s *)%s;", c, T, name, c, T, arg);
        break;
      }
      case KILN_BUF_WEIGHT:
        if (lb->offset == 0)
          line(m, "const %s *%s = (const %s *)ctx->weights;", T, name, T);
        else
          line(m, "const %s *%s = (const %s *)((const char *)ctx->weights + %" PRId64 ");", T, name,
               T, lb->offset);
        break;
      case KILN_BUF_STATE:  // training: the context's private copy of the payload is writable
        line(m, "%s *%s = (%s *)(void *)((char *)(uintptr_t)ctx->weights + %" PRId64 ");", T, name,
             T, lb->offset);
        break;
      case KILN_BUF_ARENA:
        uses_arena = true;
        if (lb->offset == 0)
          line(m, "%s *%s = (%s *)arena;", T, name, T);
        else
          line(m, "%s *%s = (%s *)((char *)arena + %" PRId64 ");", T, name, T, lb->offset);
        break;
      default: em_fail(m, "buffer %d has an invalid kind %d", b, (int)lb->kind);
    }
  }
  if (!uses_arena) line(m, "(void)arena;");
  for (int i = 0; i < p->n_inputs; i++)
    if (!io_used[i]) line(m, "(void)%s;", m->names.in[i]);
  for (int i = 0; i < p->n_outputs; i++)
    if (!io_used[p->n_inputs + i]) line(m, "(void)%s;", m->names.out[i]);

  // Kernel calls, in order.
  for (int k = first; k < n_kernels && !m->failed; k++) {
    if (m->skip_kernel && m->skip_kernel[k]) continue;
    analyze_kernel(m, k);
    int np = kernel_params(m, ps);
    em_indent(m);
    fprintf(f, "%s(", m->names.kernel[k]);
    for (int i = 0; i < np; i++) fprintf(f, "%s%s", i ? ", " : "", m->names.buf[ps[i].buf]);
    out(m, ");\n");
    emit_dist_hooks(m, k);
  }
  m->kernel = -1;
  line(m, "return KILN_OK;");
  m->indent = 0;
  out(m, "}\n");
  free(io_used);
  free(used);

  fprintf(f, "\nint %s_%s(", M, fn);
  run_params(m, true, false);
  fprintf(f, ") {\n  if (!ctx) return KILN_ERR_ARG;\n  return %s_%s_arena(ctx, ctx->arena", M, fn);
  for (int i = 0; i < p->n_inputs; i++) fprintf(f, ", %s", m->names.in[i]);
  for (int i = 0; i < p->n_outputs; i++) fprintf(f, ", %s", m->names.out[i]);
  out(m, ");\n}\n");
}

// ---- Data-parallel builds (kiln build --distributed; docs/distributed.md) ----
// The training step in two halves around the gradient all-reduce: kernels [0, g) compute the
// forward pass, the loss and the gradients (the last of them writes the last gradient output);
// kernels [g, n) clip, update and advance the step counter, reading the gradients back from the
// outputs. Only outputs and STATE tensors may carry values across the split, never the arena.

static bool is_grad_output(const kiln_c_train *t, const kiln_lbuf *lb) {
  return lb->kind == KILN_BUF_OUTPUT && lb->index >= t->first_grad_output &&
         lb->index < t->first_grad_output + t->n_grads;
}

// The last kernel writing each gradient output, and the split: one past the last of them.
static int grad_kernel_count(em *m, int *done_by) {
  const kiln_lprog *p = m->p;
  int n = 0;
  for (int k = 0; k < p->n_kernels; k++) {
    analyze_kernel(m, k);
    for (int b = 0; b < p->n_bufs; b++)
      if ((m->use[b] & USE_WRITE) && is_grad_output(m->o->train, &p->bufs[b])) {
        n = k + 1;
        done_by[p->bufs[b].index - m->o->train->first_grad_output] = k;
      }
  }
  m->kernel = -1;
  return n;
}

// BatchNormalization's running-statistic updates come after the backward pass but read batch
// statistics in the arena: they move into the gradient half, at its end (so they run on every
// call, once per micro-batch, like PyTorch's forward passes under gradient accumulation). That
// reads the same values: the planner keeps their inputs alive until them, so no kernel in
// between writes those. Marks the moved kernels.
static void move_stat_updates(em *m, int split, bool *moved) {
  for (int k = split; k < m->p->n_kernels; k++) moved[k] = kernel_is(m, k, "RunningStatUpdate");
}

// Fails if a kernel of the update half reads an arena buffer before that half writes it, or if
// it touches what a moved kernel writes (which would then change earlier than in one step).
static void check_split(em *m, int split, const bool *moved) {
  const kiln_lprog *p = m->p;
  unsigned char *written = kiln_xcalloc((size_t)p->n_bufs + 1, 1);
  unsigned char *moved_writes = kiln_xcalloc((size_t)p->n_bufs + 1, 1);
  for (int k = split; k < p->n_kernels; k++) {
    if (!moved[k]) continue;
    analyze_kernel(m, k);
    for (int b = 0; b < p->n_bufs; b++) moved_writes[b] |= (m->use[b] & USE_WRITE) != 0;
  }
  for (int k = split; k < p->n_kernels && !m->failed; k++) {
    if (moved[k]) continue;
    analyze_kernel(m, k);
    for (int b = 0; b < p->n_bufs; b++) {
      if ((m->use[b] & USE_READ) && !(m->use[b] & USE_WRITE) && !written[b] &&
          p->bufs[b].kind == KILN_BUF_ARENA)
        em_fail(m,
                "the update half of the training step reads arena buffer %d of the backward "
                "half; it cannot be split for data-parallel training",
                b);
      if (m->use[b] && moved_writes[b])
        em_fail(m,
                "the update half of the training step uses buffer %d, which a running-"
                "statistic update moved into the backward half writes",
                b);
      written[b] |= (m->use[b] & USE_WRITE) != 0;
    }
  }
  m->kernel = -1;
  free(written);
  free(moved_writes);
}

static void emit_split_step(em *m, kparam *ps) {
  int n = m->p->n_kernels;
  int *done_by = kiln_xcalloc((size_t)m->o->train->n_grads + 1, sizeof(int));
  bool *moved = kiln_xcalloc((size_t)n + 1, sizeof(bool));
  bool *not_grads = kiln_xcalloc((size_t)n + 1, sizeof(bool));
  bool *not_apply = kiln_xcalloc((size_t)n + 1, sizeof(bool));
  int split = grad_kernel_count(m, done_by);
  move_stat_updates(m, split, moved);
  check_split(m, split, moved);
  for (int k = 0; k < n; k++) {
    not_grads[k] = k >= split && !moved[k];
    not_apply[k] = k < split || moved[k];
  }
  m->skip_kernel = not_grads, m->grad_done_by = done_by;
  if (!m->failed) emit_run_fn(m, ps, "train_grads", 0, n);
  m->skip_kernel = not_apply, m->grad_done_by = NULL;
  if (!m->failed) emit_run_fn(m, ps, "apply_update", split, n);
  m->skip_kernel = NULL;
  free(done_by);
  free(moved);
  free(not_grads);
  free(not_apply);
}

// AMX tiles (LS_TILEDOT) need the operating system's permission, asked once.
#define TILES_INIT "  if (kiln_tiles_init() != KILN_OK) return KILN_ERR_CPU;\n"

static void emit_init(em *m) {
  const kiln_lprog *p = m->p;
  const char *M = m->names.model;
  FILE *f = m->f;
  bool arena = p->arena_bytes > 0;

  fprintf(f,
          "\nint %s_init_file(%s_ctx *ctx, const char *weights_path) {\n"
          "  if (!ctx || !weights_path) return KILN_ERR_ARG;\n"
          "  memset(ctx, 0, sizeof(*ctx));\n",
          M, M);
  if (kiln_lprog_uses_tiles(p)) out(m, TILES_INIT);
  fprintf(f,
          "  void *weights = NULL;\n"
          "  char err[256];\n"
          "  int st = kiln_weights_read(weights_path, %s_WEIGHTS_BYTES, %s_WEIGHTS_CHECKSUM, "
          "&weights, err,\n"
          "                             sizeof(err));\n"
          "  if (st != KILN_OK) return st;\n"
          "  ctx->weights = ctx->owned_weights = weights;\n",
          M, M);
  if (arena)
    fprintf(f,
            "  ctx->arena = ctx->owned_arena = kiln_aligned_alloc(%s_ARENA_BYTES);\n"
            "  if (!ctx->arena) {\n"
            "    %s_release(ctx);\n"
            "    return KILN_ERR_NOMEM;\n"
            "  }\n",
            M, M);
  out(m, "  return KILN_OK;\n}\n");

  fprintf(f,
          "\nint %s_init_blob(%s_ctx *ctx, const void *blob, size_t blob_bytes, void *arena,\n"
          "    size_t arena_bytes) {\n"
          "  if (!ctx || !blob) return KILN_ERR_ARG;\n"
          "  memset(ctx, 0, sizeof(*ctx));\n",
          M, M);
  if (kiln_lprog_uses_tiles(p)) out(m, TILES_INIT);
  if (arena)
    fprintf(f,
            "  if (!arena || arena_bytes < %s_ARENA_BYTES || ((uintptr_t)arena & 63u) != 0) "
            "return KILN_ERR_ARG;\n",
            M);
  else
    out(m, "  (void)arena_bytes;  // no arena needed\n");
  fprintf(f,
          "  const void *weights = NULL;\n"
          "  int st = kiln_weights_check(blob, blob_bytes, %s_WEIGHTS_BYTES, %s_WEIGHTS_CHECKSUM, "
          "&weights);\n"
          "  if (st != KILN_OK) return st;\n"
          "  ctx->weights = weights;\n"
          "  ctx->arena = arena;\n",
          M, M);
  if (m->o->train)  // training writes the weights: a private copy (this allocates)
    fprintf(f,
            "  ctx->owned_weights = kiln_aligned_alloc(%s_WEIGHTS_BYTES ? %s_WEIGHTS_BYTES : 64);\n"
            "  if (!ctx->owned_weights) return KILN_ERR_NOMEM;\n"
            "  memcpy(ctx->owned_weights, weights, %s_WEIGHTS_BYTES);\n"
            "  ctx->weights = ctx->owned_weights;\n",
            M, M, M);
  out(m, "  return KILN_OK;\n}\n");

  if (m->o->embed_weights) {
    fprintf(f, "\nint %s_init_embedded(%s_ctx *ctx) {\n  if (!ctx) return KILN_ERR_ARG;\n", M, M);
    if (arena)
      fprintf(f,
              "  void *arena = kiln_aligned_alloc(%s_ARENA_BYTES);\n"
              "  if (!arena) return KILN_ERR_NOMEM;\n"
              "  int st = %s_init_blob(ctx, %s_blob, sizeof(%s_blob), arena, %s_ARENA_BYTES);\n"
              "  if (st != KILN_OK) {\n"
              "    kiln_aligned_free(arena);\n"
              "    return st;\n"
              "  }\n"
              "  ctx->owned_arena = arena;\n"
              "  return KILN_OK;\n}\n",
              M, M, M, M, M);
    else
      fprintf(f, "  return %s_init_blob(ctx, %s_blob, sizeof(%s_blob), NULL, 0);\n}\n", M, M, M);
  }

  fprintf(f,
          "\nvoid %s_release(%s_ctx *ctx) {\n"
          "  if (!ctx) return;\n"
          "  if (ctx->owned_weights) kiln_aligned_free(ctx->owned_weights);\n"
          "  if (ctx->owned_arena) kiln_aligned_free(ctx->owned_arena);\n"
          "  memset(ctx, 0, sizeof(*ctx));\n}\n",
          M, M);
}

static void emit_io_desc(em *m, const char *arr, const kiln_lio *ios, int n, const char **names) {
  if (n == 0) return;
  fprintf(m->f, "static const kiln_io_desc %s_%s[%d] = {\n", m->names.model, arr, n);
  for (int i = 0; i < n; i++) {
    out(m, "    {.name = ");
    put_string(m->f, names[i]);
    fprintf(m->f, ", .dtype = %s, .rank = %d, .shape = {", rt_dtype(ios[i].dtype), ios[i].rank);
    for (int d = 0; d < ios[i].rank; d++)
      fprintf(m->f, "%s%" PRId64, d ? ", " : "", ios[i].shape[d]);
    if (ios[i].rank == 0) out(m, "0");
    out(m, "}},\n");
  }
  out(m, "};\n");
}

static void emit_desc(em *m) {
  const kiln_lprog *p = m->p;
  const char *M = m->names.model;
  FILE *f = m->f;
  fprintf(f, "\n// The model's description for the standalone driver (kiln_main).\n");
  fprintf(f,
          "static int %s_desc_init_file(void *ctx, const char *weights_path) {\n"
          "  return %s_init_file(ctx, weights_path);\n}\n",
          M, M);
  if (m->o->embed_weights)
    fprintf(f, "static int %s_desc_init_embedded(void *ctx) { return %s_init_embedded(ctx); }\n", M,
            M);
  fprintf(f,
          "static int %s_desc_run(void *ctx, const void *const *inputs, void *const *outputs) {\n",
          M);
  if (p->n_inputs == 0) out(m, "  (void)inputs;\n");
  if (p->n_outputs == 0) out(m, "  (void)outputs;\n");
  fprintf(f, "  return %s_run(ctx", M);
  for (int i = 0; i < p->n_inputs; i++) fprintf(f, ", inputs[%d]", i);
  for (int i = 0; i < p->n_outputs; i++) fprintf(f, ", outputs[%d]", i);
  out(m, ");\n}\n");
  fprintf(f, "static void %s_desc_release(void *ctx) { %s_release(ctx); }\n", M, M);
  emit_io_desc(m, "desc_inputs", p->inputs, p->n_inputs, m->names.in);
  emit_io_desc(m, "desc_outputs", p->outputs, p->n_outputs, m->names.out);
  fprintf(f, "const kiln_model_desc %s_desc = {\n    .name = ", M);
  put_string(f, p->name);
  fprintf(f, ",\n    .n_inputs = %d,\n    .n_outputs = %d,\n", p->n_inputs, p->n_outputs);
  if (p->n_inputs) fprintf(f, "    .inputs = %s_desc_inputs,\n", M);
  if (p->n_outputs) fprintf(f, "    .outputs = %s_desc_outputs,\n", M);
  fprintf(f,
          "    .arena_bytes = %s_ARENA_BYTES,\n"
          "    .weights_bytes = %s_WEIGHTS_BYTES,\n"
          "    .weights_checksum = %s_WEIGHTS_CHECKSUM,\n"
          "    .ctx_bytes = sizeof(%s_ctx),\n"
          "    .init_file = %s_desc_init_file,\n",
          M, M, M, M, M);
  if (m->o->embed_weights) fprintf(f, "    .init_embedded = %s_desc_init_embedded,\n", M);
  fprintf(f, "    .run = %s_desc_run,\n    .release = %s_desc_release,\n};\n", M, M);
}

// Data-parallel builds: adapters giving the two halves the descriptor's signature (emitted
// before it), and the descriptor's fields naming them.
static void emit_split_adapters(em *m) {
  const kiln_lprog *p = m->p;
  const char *M = m->names.model;
  const char *fns[] = {"train_grads", "apply_update"};
  for (int j = 0; j < 2; j++) {
    fprintf(m->f,
            "static int %s_desc_%s(void *ctx, const void *const *inputs, void *const *outputs) {\n"
            "  return %s_%s(ctx",
            M, fns[j], M, fns[j]);
    for (int i = 0; i < p->n_inputs; i++) fprintf(m->f, ", inputs[%d]", i);
    for (int i = 0; i < p->n_outputs; i++) fprintf(m->f, ", outputs[%d]", i);
    out(m, ");\n}\n");
  }
}

static const char *split_desc_fields(em *m) {
  static char buf[512];
  const char *M = m->names.model;
  snprintf(buf, sizeof buf,
           "    .grads = %s_desc_train_grads,\n    .apply = %s_desc_apply_update,\n"
           "    .first_grad_output = %d,\n    .n_grads = %d,\n",
           M, M, m->o->train->first_grad_output, m->o->train->n_grads);
  return buf;
}

// A NULL-terminated list of names as a static array `NAME_SUFFIX`.
static void emit_name_list(em *m, const char *suffix, const char *const *names, int n) {
  fprintf(m->f, "static const char *const %s_%s[%d] = {", m->names.model, suffix, n + 1);
  for (int i = 0; i < n; i++) {
    put_string(m->f, names[i]);
    out(m, ", ");
  }
  out(m, "NULL};\n");
}

// Adversarial builds (docs/training.md §8): this program is the discriminator's step; the
// descriptor names the generator's (a second program linked beside it) and the params to copy.
static void emit_adversarial(em *m) {
  const kiln_c_adversarial *a = m->o->train->adversarial;
  const char *M = m->names.model;
  char g_ident[64];
  const char *G = kiln_c_model_ident(a->g_prog, g_ident, sizeof g_ident);
  fprintf(m->f, "\n// Adversarial training: the generator's step is %s_train_step.\n", G);
  fprintf(m->f, "extern const kiln_train_desc %s_train_desc;\n", G);
  emit_name_list(m, "d_params", a->d_params, a->n_d_params);
  emit_name_list(m, "g_params", a->g_params, a->n_g_params);
  fprintf(m->f,
          "static const kiln_adversarial_desc %s_adversarial = {\n"
          "    .g = &%s_train_desc,\n    .n_critic = %" PRId64
          ",\n"
          "    .d_params = %s_d_params,\n    .n_d_params = %d,\n"
          "    .g_params = %s_g_params,\n    .n_g_params = %d,\n};\n",
          M, G, a->n_critic, M, a->n_d_params, M, a->n_g_params);
}

// Training builds: the STATE tensors' table, the trainer's descriptor, save and load.
static void emit_train(em *m) {
  const kiln_lprog *p = m->p;
  const kiln_c_train *t = m->o->train;
  const char *M = m->names.model;
  FILE *f = m->f;
  int n_state = 0;
  for (int b = 0; b < p->n_bufs; b++) n_state += p->bufs[b].kind == KILN_BUF_STATE;
  fprintf(f, "\n// Training: every STATE tensor (weights, optimizer state, step counter).\n");
  fprintf(f, "static const kiln_state_desc %s_states[%d] = {\n", M, n_state ? n_state : 1);
  for (int b = 0; b < p->n_bufs; b++) {
    const kiln_lbuf *lb = &p->bufs[b];
    if (lb->kind != KILN_BUF_STATE) continue;
    out(m, "    {.name = ");
    put_string(f, lb->name ? lb->name : "?");
    // The graph's shape when the driver gave it, else the flat element count.
    kiln_c_state_shape flat = {.rank = 1, .dim = {lb->numel}}, *shape = &flat;
    for (int i = 0; i < t->n_shapes; i++)
      if (lb->name && strcmp(t->shapes[i].name, lb->name) == 0)
        shape = (kiln_c_state_shape *)&t->shapes[i];
    fprintf(f, ", .dtype = %s, .rank = %d, .shape = {", rt_dtype(lb->dtype), shape->rank);
    for (int d = 0; d < shape->rank; d++) fprintf(f, "%s%" PRId64, d ? ", " : "", shape->dim[d]);
    fprintf(f, "}, .offset = %" PRId64 "},\n", lb->offset);
  }
  if (!n_state) out(m, "    {0},\n");
  out(m, "};\n");
  fprintf(f,
          "static int %s_desc_eval(void *ctx, const void *const *inputs, void *const *outputs) {\n"
          "  return %s_eval(ctx",
          M, M);
  for (int i = 0; i < p->n_inputs; i++) fprintf(f, ", inputs[%d]", i);
  for (int i = 0; i < p->n_outputs; i++) fprintf(f, ", outputs[%d]", i);
  out(m, ");\n}\n");
  if (t->distributed) emit_split_adapters(m);
  if (t->adversarial) emit_adversarial(m);
  fprintf(f,
          "static void *%s_desc_state(void *ctx) {\n"
          "  return (void *)(uintptr_t)((%s_ctx *)ctx)->weights;\n}\n",
          M, M);
  fprintf(f,
          "const kiln_train_desc %s_train_desc = {\n"
          "    .model = &%s_desc,\n    .eval = %s_desc_eval,\n    .state = %s_desc_state,\n"
          "    .n_state = %d,\n    .states = %s_states,\n"
          "    .label_input = %d,\n    .weight_input = %d,\n    .logits_output = %d,\n"
          "    .classification = %d,\n    .seed = UINT64_C(%" PRIu64 "),\n%s",
          M, M, M, M, n_state, M, t->label_input, t->weight_input, t->logits_output,
          t->classification ? 1 : 0, t->seed, t->distributed ? split_desc_fields(m) : "");
  if (t->adversarial) fprintf(f, "    .adversarial = &%s_adversarial,\n", M);
  if (t->augment) {  // the trainer's augmentation spec (runtime/augment.h)
    out(m, "    .augment = ");
    put_string(f, t->augment);
    out(m, ",\n");
  }
  out(m, "};\n");
  fprintf(f, "\nint %s_train_step(", M);
  run_params(m, true, false);
  fprintf(f, ") {\n  return %s_run(ctx", M);
  for (int i = 0; i < p->n_inputs; i++) fprintf(f, ", %s", m->names.in[i]);
  for (int i = 0; i < p->n_outputs; i++) fprintf(f, ", %s", m->names.out[i]);
  out(m, ");\n}\n");
  fprintf(
      f,
      "\nint %s_save(const %s_ctx *ctx, const char *path) {\n"
      "  char err[256];\n"
      "  return kiln_state_save(&%s_train_desc, (void *)(uintptr_t)ctx, path, err, sizeof(err));\n"
      "}\n",
      M, M, M);
  fprintf(f,
          "\nint %s_load_state(%s_ctx *ctx, const char *path, int strict) {\n"
          "  char err[256];\n"
          "  return kiln_state_load(&%s_train_desc, ctx, path, strict, err, sizeof(err));\n"
          "}\n",
          M, M, M);
}

static void emit_main_stub(em *m);

static bool emit_source(em *m, const char *h_name) {
  const kiln_lprog *p = m->p;
  const char *M = m->names.model;
  FILE *f = m->f;
  if (!check_program(m)) return false;
  // Helpers needed, and early errors, before anything is written.
  for (int k = 0; k < p->n_kernels && !m->failed; k++) analyze_kernel(m, k);
  m->kernel = -1;
  if (m->failed) return false;

  fprintf(f, "// %s.c: inference for the model ", M);
  put_comment_text(f, p->name);
  fprintf(f,
          ", generated by Kiln. Do not edit.\n"
          "// %d kernels; arena %" PRId64 " bytes; weights %" PRId64
          " bytes%s. The API is in %s.\n",
          p->n_kernels, p->arena_bytes, p->weights_bytes, m->o->embed_weights ? " (embedded)" : "",
          h_name);
  out(m, "#include ");
  put_string(f, h_name);
  out(m,
      "\n\n#include <math.h>\n#include <stdint.h>\n#include <string.h>\n\n"
      "#if defined(__clang__)\n"
      "// An omp simd loop clang cannot vectorize still runs correctly: no -Werror failure.\n"
      "#pragma clang diagnostic ignored \"-Wpass-failed\"\n"
      "#endif\n"
      "// Built without -fopenmp, the omp pragmas are ignored and every loop runs serially.\n"
      "#if !defined(_OPENMP)\n"
      "#if defined(__clang__)\n"
      "#pragma clang diagnostic ignored \"-Wsource-uses-openmp\"\n"
      "#endif\n"
      "#if defined(__GNUC__)\n"
      "#pragma GCC diagnostic ignored \"-Wunknown-pragmas\"\n"
      "#endif\n"
      "#endif\n");
  if (m->o->train && m->o->train->distributed && !m->o->train_glue_only)
    out(m,
        "\n// Data-parallel build (docs/distributed.md): callbacks into the trainer's runtime\n"
        "// (runtime/train.c), no-ops outside a step of an MPI trainer.\n"
        "void kiln_dist_grad_ready(int grad);  // gradient output `grad` is final\n"
        "void kiln_dist_rank_mean_f32(float *p, int64_t n);  // p = its mean over the ranks\n"
        "void kiln_dist_rank_sum_f32(float *p, int64_t n);   // p = its sum over the ranks\n"
        "void kiln_dist_buffer_updated(void *p, int64_t bytes);  // a BatchNorm running stat\n");
  if (m->o->train && m->o->train_glue_only) {  // the kernels and the API are LLVM's
    emit_train(m);
    emit_main_stub(m);
    return !m->failed;
  }
  emit_helpers(m);
  if (m->o->embed_weights) emit_blob(m);

  kparam *ps = kiln_xcalloc((size_t)p->n_bufs + 1, sizeof(kparam));
  for (int k = 0; k < p->n_kernels && !m->failed; k++) emit_kernel(m, k, ps);
  m->kernel = -1;
  if (!m->failed) emit_run_fn(m, ps, "run", 0, p->n_kernels);
  if (!m->failed && m->o->train) emit_run_fn(m, ps, "eval", 0, eval_kernel_count(m));
  if (!m->failed && m->o->train && m->o->train->distributed) emit_split_step(m, ps);
  free(ps);
  if (m->failed) return false;
  emit_init(m);
  emit_desc(m);
  if (m->o->train) emit_train(m);
  emit_main_stub(m);
  return !m->failed;
}

// `int main` of a standalone binary (kiln build): the model's driver or the trainer.
static void emit_main_stub(em *m) {
  const char *M = m->names.model;
  FILE *f = m->f;
  if (m->o->main_stub && m->o->train && m->o->train->distributed)  // runtime/train_mpi.h
    fprintf(f,
            "\nint kiln_train_mpi_main(const kiln_train_desc *t, int argc, char **argv);\n"
            "int main(int argc, char **argv) { return kiln_train_mpi_main(&%s_train_desc, argc, "
            "argv); }\n",
            M);
  else if (m->o->main_stub && m->o->train)
    fprintf(
        f,
        "\nint main(int argc, char **argv) { return kiln_train_main(&%s_train_desc, argc, argv); "
        "}\n",
        M);
  else if (m->o->main_stub)
    fprintf(f, "\nint main(int argc, char **argv) { return kiln_main(&%s_desc, argc, argv); }\n",
            M);
}

static const kiln_c_options default_options = {0};

bool kiln_emit_c_source(const kiln_lprog *p, const kiln_c_options *o, const char *h_name, FILE *c) {
  kiln_diag d;
  kiln_diag_init(&d, "kiln");
  em m;
  em_init(&m, p, o ? o : &default_options, c, &d);
  bool ok = emit_source(&m, h_name);
  em_free(&m);
  return ok && !ferror(c);
}

bool kiln_emit_c_header(const kiln_lprog *p, const kiln_c_options *o, FILE *h) {
  kiln_diag d;
  kiln_diag_init(&d, "kiln");
  em m;
  em_init(&m, p, o ? o : &default_options, h, &d);
  bool ok = emit_header(&m);
  em_free(&m);
  return ok && !ferror(h);
}

// ---------------------------------------------------------------------------------------------
// Files.

bool kiln_c_file_open(kiln_c_file *cf, const char *path, kiln_diag *d) {
  memset(cf, 0, sizeof(*cf));
  size_t n = strlen(path);
  cf->path = kiln_xmalloc(n + 1);
  memcpy(cf->path, path, n + 1);
  cf->tmp = kiln_xmalloc(n + 16);
  snprintf(cf->tmp, n + 16, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(cf->tmp);
  if (fd < 0) {
    kiln_diag_error(d, path, "cannot create a temporary file beside it: %s", strerror(errno));
    free(cf->tmp);
    cf->tmp = NULL;
    kiln_c_file_abort(cf);
    return false;
  }
  mode_t mask = umask(0);
  umask(mask);
  if (fchmod(fd, 0666 & ~mask) != 0) {
    // not fatal: the file stays private to the user
  }
  cf->f = fdopen(fd, "w");
  if (!cf->f) {
    kiln_diag_error(d, path, "cannot open %s: %s", cf->tmp, strerror(errno));
    close(fd);
    kiln_c_file_abort(cf);
    return false;
  }
  return true;
}

void kiln_c_file_abort(kiln_c_file *cf) {
  if (cf->f) fclose(cf->f);
  if (cf->tmp) unlink(cf->tmp);
  free(cf->tmp);
  free(cf->path);
  memset(cf, 0, sizeof(*cf));
}

bool kiln_c_file_commit(kiln_c_file *cf, kiln_diag *d) {
  bool ok = cf->f && fflush(cf->f) == 0 && !ferror(cf->f);
  int err = errno;
  if (cf->f && fclose(cf->f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  cf->f = NULL;
  if (!ok) {
    kiln_diag_error(d, cf->path, "cannot write: %s", strerror(err ? err : EIO));
  } else if (kiln_rename_into_place(cf->tmp, cf->path) != 0) {
    kiln_diag_error(d, cf->path, "cannot rename %s into place: %s", cf->tmp, strerror(errno));
    ok = false;
  } else {
    free(cf->tmp);
    cf->tmp = NULL;  // renamed: nothing to remove
  }
  kiln_c_file_abort(cf);
  return ok;
}

bool kiln_c_mkdirs(const char *dir, kiln_diag *d) {
  size_t n = strlen(dir);
  char *buf = kiln_xmalloc(n + 1);
  memcpy(buf, dir, n + 1);
  bool ok = true;
  for (size_t i = 1; i <= n && ok; i++) {
    if (buf[i] != '/' && buf[i] != 0) continue;
    char c = buf[i];
    buf[i] = 0;
    struct stat st;
    if (mkdir(buf, 0777) != 0 && (errno != EEXIST || stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))) {
      kiln_diag_error(d, buf, "cannot create directory: %s",
                      errno == EEXIST ? "a file is in the way" : strerror(errno));
      ok = false;
    }
    buf[i] = c;
  }
  free(buf);
  return ok;
}

static char *path_join(const char *dir, const char *base, const char *ext) {
  size_t n = strlen(dir) + strlen(base) + strlen(ext) + 2;
  char *r = kiln_xmalloc(n);
  snprintf(r, n, "%s%s%s%s", dir, dir[0] && dir[strlen(dir) - 1] != '/' ? "/" : "", base, ext);
  return r;
}

bool kiln_c_write_sources(const kiln_lprog *p, const kiln_c_options *o, const char *dir,
                          const char *base, kiln_diag *d) {
  char *c_path = path_join(dir, base, ".c"), *h_path = path_join(dir, base, ".h");
  char *h_name = path_join("", base, ".h");
  // Both files are rendered to temporaries first; neither is renamed unless both rendered.
  kiln_c_file hf = {0}, cf = {0};
  bool ok = kiln_c_file_open(&hf, h_path, d) && kiln_c_file_open(&cf, c_path, d);
  em m;
  if (ok) {
    em_init(&m, p, o, hf.f, d);
    ok = emit_header(&m);
    em_free(&m);
  }
  if (ok) {
    em_init(&m, p, o, cf.f, d);
    ok = emit_source(&m, h_name);
    em_free(&m);
  }
  if (ok) ok = kiln_c_file_commit(&hf, d) && kiln_c_file_commit(&cf, d);
  kiln_c_file_abort(&hf);  // no-ops after a commit
  kiln_c_file_abort(&cf);
  free(c_path);
  free(h_path);
  free(h_name);
  return ok;
}

bool kiln_c_write_weights(const kiln_lprog *p, const char *path, kiln_diag *d) {
  if (p->weights_bytes > 0 && !p->weights) {
    kiln_diag_error(d, path, "the loop program has no weights payload");
    return false;
  }
  kiln_c_file cf;
  if (!kiln_c_file_open(&cf, path, d)) return false;
  fclose(cf.f);  // kiln_weights_write writes the file by name
  cf.f = NULL;
  char err[512] = "";
  static const unsigned char none[1] = {0};
  int st = kiln_weights_write(cf.tmp, p->weights ? p->weights : none, (size_t)p->weights_bytes, err,
                              sizeof(err));
  if (st != KILN_OK) {
    kiln_diag_error(d, path, "%s", err[0] ? err : kiln_status_str(st));
    kiln_c_file_abort(&cf);
    return false;
  }
  if (kiln_rename_into_place(cf.tmp, cf.path) != 0) {
    kiln_diag_error(d, path, "cannot rename %s into place: %s", cf.tmp, strerror(errno));
    kiln_c_file_abort(&cf);
    return false;
  }
  free(cf.tmp);
  cf.tmp = NULL;
  kiln_c_file_abort(&cf);
  return true;
}

bool kiln_emit_c_files(const kiln_lprog *p, const kiln_c_options *o, const char *dir,
                       kiln_diag *d) {
  if (!o) o = &default_options;
  if (!kiln_c_mkdirs(dir, d)) return false;
  char ident[64];
  const char *base = kiln_c_model_ident(p, ident, sizeof(ident));
  if (!kiln_c_write_sources(p, o, dir, base, d)) return false;
  if (o->embed_weights) return true;
  char *w_path = path_join(dir, base, ".weights");
  bool ok = kiln_c_write_weights(p, w_path, d);
  free(w_path);
  return ok;
}
