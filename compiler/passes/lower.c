// Lowering: graph IR -> loop IR. Every tensor becomes a buffer (a caller input or output, a slice
// of the weights payload, or a slice of the arena, as plan-memory decided) and every node becomes
// one kernel, filled in by its op's `lower` function.
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/kiln_runtime.h"
#include "../ops/op_internal.h"
#include "pipeline.h"

static const char *const c_reserved[] = {
    "auto",     "break",  "case",   "char",     "const",    "continue", "default",  "do",
    "double",   "else",   "enum",   "extern",   "float",    "for",      "goto",     "if",
    "inline",   "int",    "long",   "register", "restrict", "return",   "short",    "signed",
    "sizeof",   "static", "struct", "switch",   "typedef",  "union",    "unsigned", "void",
    "volatile", "while",  "ctx",    "arena",    "main",     NULL};

static bool is_reserved(const char *s) {
  for (int i = 0; c_reserved[i]; i++)
    if (strcmp(s, c_reserved[i]) == 0) return true;
  return false;
}

// A C identifier for an input or output parameter, unique among those already chosen.
static const char *io_name(kiln_lprog *p, const char *tensor, const kiln_lio *taken, int n_taken) {
  char *s =
      kiln_pool_printf(&p->pool, "%s%s", isdigit((unsigned char)tensor[0]) ? "t" : "", tensor);
  for (char *q = s; *q; q++)
    if (!isalnum((unsigned char)*q) && *q != '_') *q = '_';
  if (is_reserved(s)) s = kiln_pool_printf(&p->pool, "%s_", s);
  for (int i = 0; i < n_taken; i++)
    if (strcmp(taken[i].name, s) == 0)
      return io_name(p, kiln_pool_printf(&p->pool, "%s_", s), taken, n_taken);
  return s;
}

static kiln_lio *make_ios(kiln_lprog *p, const kiln_graph *g, const int *tensors, int n,
                          const int *tensor_buf, const kiln_lio *taken, int n_taken) {
  kiln_lio *ios = kiln_pool_alloc(&p->pool, sizeof(kiln_lio) * (size_t)(n + n_taken + 1));
  if (n_taken) memcpy(ios, taken, sizeof(kiln_lio) * (size_t)n_taken);  // unique across both lists
  for (int i = 0; i < n; i++) {
    const kiln_tensor *t = &g->tensors[tensors[i]];
    kiln_lio *io = &ios[n_taken + i];
    io->tensor = t->name;
    io->name = io_name(p, t->name, ios, n_taken + i);
    io->dtype = t->dtype;
    io->rank = t->shape.rank;
    memcpy(io->shape, t->shape.dim, sizeof(int64_t) * (size_t)t->shape.rank);
    io->buf = tensor_buf[tensors[i]];
  }
  return ios + n_taken;
}

static kiln_lbuf buffer_for(const kiln_graph *g, int t) {
  const kiln_tensor *x = &g->tensors[t];
  kiln_lbuf b = {.name = x->name,
                 .dtype = x->dtype,
                 .numel = kiln_shape_numel(&x->shape),
                 .offset = x->offset,
                 .index = -1};
  b.kind = x->kind == KILN_TENSOR_PARAM   ? KILN_BUF_WEIGHT
           : x->kind == KILN_TENSOR_STATE ? KILN_BUF_STATE
                                          : KILN_BUF_ARENA;
  for (int i = 0; i < g->n_inputs; i++)
    if (g->inputs[i] == t) b.kind = KILN_BUF_INPUT, b.index = i;
  for (int i = 0; i < g->n_outputs; i++)
    if (g->outputs[i] == t) b.kind = KILN_BUF_OUTPUT, b.index = i;
  return b;
}

// Kernel scratch (op_internal.h): past every tensor plan-memory placed, shared by all kernels;
// a kernel's second scratch buffer follows its first.
int kiln_lower_scratch(const kiln_lower_ctx *c, kiln_dtype t, int64_t numel) {
  kiln_lprog *p = c->b->prog;
  int64_t base = 0, bytes = numel * (int64_t)kiln_dtype_size(t);
  for (int i = 0; i < c->g->n_tensors; i++) {
    const kiln_lbuf *tb = &p->bufs[c->tensor_buf[i]];
    int64_t end = tb->offset + tb->numel * (int64_t)kiln_dtype_size(tb->dtype);
    if (tb->kind == KILN_BUF_ARENA && (end + 63) / 64 * 64 > base) base = (end + 63) / 64 * 64;
  }
  if (c->scratch_used) {
    base += *c->scratch_used;
    *c->scratch_used += (bytes + 63) / 64 * 64;
  }
  kiln_lbuf b = {.name = kiln_pool_printf(&p->pool, "%s_scratch", c->node->name),
                 .kind = KILN_BUF_ARENA,
                 .dtype = t,
                 .numel = numel,
                 .index = -1,
                 .offset = base};
  if (base + bytes > p->arena_bytes) p->arena_bytes = (base + bytes + 63) / 64 * 64;
  return kiln_lprog_add_buf(p, &b);
}

// Derived weights (op_internal.h): staged in p->derived, 64-byte aligned, each at its final
// offset past the payload plan-memory built; merged into the payload when lowering ends.
int kiln_lower_derived(const kiln_lower_ctx *c, const char *suffix, kiln_dtype t, const void *data,
                       int64_t numel) {
  kiln_lprog *p = c->b->prog;
  int64_t at = (p->derived_bytes + 63) / 64 * 64, bytes = numel * (int64_t)kiln_dtype_size(t);
  if (at + bytes > p->derived_cap) {
    int64_t cap = p->derived_cap ? p->derived_cap : 1 << 16;
    while (cap < at + bytes) cap *= 2;
    p->derived = realloc(p->derived, (size_t)cap);
    if (!p->derived) abort();  // out of memory while compiling
    p->derived_cap = cap;
  }
  memset(p->derived + p->derived_bytes, 0, (size_t)(at - p->derived_bytes));
  memcpy(p->derived + at, data, (size_t)bytes);
  p->derived_bytes = at + bytes;
  kiln_lbuf b = {.name = kiln_pool_printf(&p->pool, "%s_%s", c->node->name, suffix),
                 .kind = KILN_BUF_WEIGHT,
                 .dtype = t,
                 .numel = numel,
                 .index = -1,
                 .offset = (p->weights_bytes + 63) / 64 * 64 + at};
  return kiln_lprog_add_buf(p, &b);
}

int kiln_lower_derived_weight(const kiln_lower_ctx *c, const char *suffix, const float *data,
                              int64_t numel) {
  return kiln_lower_derived(c, suffix, KILN_F32, data, numel);
}

// Appends the derived weights to the payload: c->weights grows and p->weights follows it.
static bool merge_derived(kiln_compilation *c, kiln_lprog *p, kiln_diag *d) {
  if (!p->derived_bytes) return true;
  int64_t base = (c->weights_bytes + 63) / 64 * 64, size = base + p->derived_bytes;
  unsigned char *w = kiln_aligned_alloc((size_t)size);
  if (!w) {
    kiln_diag_error(d, NULL, "cannot allocate %lld bytes of weights", (long long)size);
    return false;
  }
  memset(w, 0, (size_t)base);
  if (c->weights_bytes) memcpy(w, c->weights, (size_t)c->weights_bytes);
  memcpy(w + base, p->derived, (size_t)p->derived_bytes);
  kiln_aligned_free(c->weights);
  c->weights = w;
  c->weights_bytes = p->weights_bytes = size;
  p->weights = w;
  free(p->derived);
  p->derived = NULL;
  p->derived_bytes = p->derived_cap = 0;
  return true;
}

bool kiln_pass_lower(kiln_compilation *c, kiln_diag *d, bool *changed) {
  const kiln_graph *g = c->g;
  kiln_lprog *p = kiln_lprog_new(g->name);
  int *tensor_buf = kiln_xmalloc(sizeof(int) * (size_t)(g->n_tensors ? g->n_tensors : 1));
  for (int t = 0; t < g->n_tensors; t++) {
    kiln_lbuf b = buffer_for(g, t);
    if (b.kind == KILN_BUF_ARENA && b.offset < 0) {
      kiln_diag_error(d, g->tensors[t].where,
                      "internal: tensor '%s' has no memory (run plan-memory first)",
                      g->tensors[t].name);
      free(tensor_buf);
      kiln_lprog_free(p);
      return false;
    }
    tensor_buf[t] = kiln_lprog_add_buf(p, &b);
  }
  p->inputs = make_ios(p, g, g->inputs, g->n_inputs, tensor_buf, NULL, 0);
  p->n_inputs = g->n_inputs;
  p->outputs = make_ios(p, g, g->outputs, g->n_outputs, tensor_buf, p->inputs, p->n_inputs);
  p->n_outputs = g->n_outputs;
  p->weights = c->weights;
  p->weights_bytes = c->weights_bytes;
  p->arena_bytes = c->arena_bytes;
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    const kiln_op_def *def = kiln_op_get(n->op);
    kiln_lkernel *k = kiln_lprog_add_kernel(p, def->name, n->name);
    kiln_lb b;
    kiln_lb_begin(&b, p, k);
    int64_t scratch_used = 0;
    kiln_lower_ctx ctx = {.g = g,
                          .node = n,
                          .b = &b,
                          .tensor_buf = tensor_buf,
                          .f32_lanes = c->f32_lanes,
                          .amx = c->amx,
                          .tuning = c->tuning,
                          .scratch_used = &scratch_used};
    def->lower(&ctx);
    kiln_lb_end(&b);
    k->flops = def->flops ? def->flops(g, n) : 0;
  }
  free(tensor_buf);
  if (!merge_derived(c, p, d)) {
    kiln_lprog_free(p);
    return false;
  }
  c->arena_bytes = p->arena_bytes;  // kernel scratch (kiln_lower_scratch) may have grown it
  kiln_lprog_free(c->prog);
  c->prog = p;
  *changed = true;
  return true;
}
