// compact-weights: drops from the weights payload the bytes no kernel reads. Lowerings that pack
// weights at compile time (the blocked convolution, the integer GEMM, the sparse matrix-vector
// product: kiln_lower_derived) append the packed copy to the payload; the original constant stays
// where plan-memory put it, read by nobody, and doubled ResNet-18's weights file. This pass walks
// every kernel's loop IR, keeps the byte ranges of the weight buffers that are loaded (ranges
// that overlap are kept as one), and packs them, each range keeping its offset modulo 64 so that
// every buffer's alignment is what the lowering assumed. Training programs (state buffers: the
// trainer writes params back by their plan-memory offsets) are left alone.
#include <stdlib.h>
#include <string.h>

#include "../../ir/pool.h"
#include "../../runtime/kiln_runtime.h"
#include "pipeline.h"

static void mark_expr(const kiln_lexpr *e, bool *used) {
  if (!e) return;
  if (e->kind == LE_LOAD) used[e->buf] = true;
  mark_expr(e->a, used);
  mark_expr(e->b, used);
  mark_expr(e->c, used);
}

static void mark_stmt(const kiln_lstmt *s, bool *used) {
  if (!s) return;
  switch (s->kind) {
    case LS_BLOCK:
      for (int i = 0; i < s->n; i++) mark_stmt(s->stmts[i], used);
      return;
    case LS_FOR:
      mark_expr(s->lo, used);
      mark_expr(s->hi, used);
      mark_stmt(s->body, used);
      return;
    case LS_IF:
      mark_expr(s->cond, used);
      mark_stmt(s->then_, used);
      mark_stmt(s->else_, used);
      return;
    case LS_DOT4:
      used[s->buf] = used[s->w_buf] = true;
      mark_expr(s->index, used);
      mark_expr(s->w_index, used);
      return;
    case LS_TILEDOT:
      used[s->buf] = used[s->w_buf] = used[s->c_buf] = true;
      mark_expr(s->c_index, used);
      mark_expr(s->w_index, used);
      break;
    case LS_STORE: used[s->buf] = true; break;
    case LS_DECL:
    case LS_ASSIGN:
    case LS_LSTORE:
    case LS_COMMENT: break;
  }
  mark_expr(s->index, used);
  mark_expr(s->value, used);
}

typedef struct byte_range {
  int64_t start, end;  // [start, end) in the old payload
  int64_t to;          // its start in the new payload
} byte_range;

static int64_t buf_bytes(const kiln_lbuf *b) {
  return b->numel * (int64_t)kiln_dtype_size(b->dtype);
}

static int by_start(const void *a, const void *b) {
  const byte_range *x = a, *y = b;
  return x->start < y->start ? -1 : x->start > y->start;
}

// The used weight buffers' byte ranges, sorted and merged where they overlap; returns the count.
static int used_ranges(const kiln_lprog *p, const bool *used, byte_range *r) {
  int n = 0;
  for (int i = 0; i < p->n_bufs; i++) {
    const kiln_lbuf *b = &p->bufs[i];
    if (b->kind == KILN_BUF_WEIGHT && used[i] && buf_bytes(b) > 0)
      r[n++] = (byte_range){b->offset, b->offset + buf_bytes(b), 0};
  }
  qsort(r, (size_t)n, sizeof *r, by_start);
  int merged = 0;
  for (int i = 0; i < n; i++) {
    if (merged && r[i].start < r[merged - 1].end) {
      if (r[i].end > r[merged - 1].end) r[merged - 1].end = r[i].end;
    } else {
      r[merged++] = r[i];
    }
  }
  return merged;
}

// New places: in order, each range's start keeping its offset modulo 64. Returns the new size.
static int64_t place_ranges(byte_range *r, int n) {
  int64_t at = 0;
  for (int i = 0; i < n; i++) {
    r[i].to = (at + 63) / 64 * 64 + r[i].start % 64;
    at = r[i].to + (r[i].end - r[i].start);
  }
  return at;
}

static const byte_range *range_of(const byte_range *r, int n, int64_t offset) {
  for (int i = 0; i < n; i++)
    if (offset >= r[i].start && offset < r[i].end) return &r[i];
  return NULL;
}

static bool has_state(const kiln_lprog *p) {
  for (int i = 0; i < p->n_bufs; i++)
    if (p->bufs[i].kind == KILN_BUF_STATE) return true;
  return false;
}

// Moves the kept ranges into a new payload and points every weight buffer at its new place
// (unread ones become empty buffers at offset 0).
static void repack(kiln_compilation *c, const bool *used, const byte_range *r, int n,
                   int64_t size) {
  kiln_lprog *p = c->prog;
  unsigned char *w = kiln_aligned_alloc((size_t)(size ? size : 1));
  if (!w) abort();  // out of memory while compiling
  memset(w, 0, (size_t)(size ? size : 1));
  for (int i = 0; i < n; i++)
    memcpy(w + r[i].to, (const unsigned char *)c->weights + r[i].start,
           (size_t)(r[i].end - r[i].start));
  for (int i = 0; i < p->n_bufs; i++) {
    kiln_lbuf *b = &p->bufs[i];
    if (b->kind != KILN_BUF_WEIGHT) continue;
    const byte_range *in = used[i] && buf_bytes(b) > 0 ? range_of(r, n, b->offset) : NULL;
    if (in) {
      b->offset = in->to + (b->offset - in->start);
    } else {
      b->offset = 0;
      b->numel = 0;
    }
  }
  kiln_aligned_free(c->weights);
  c->weights = w;
  p->weights = w;
  c->weights_bytes = p->weights_bytes = size;
}

bool kiln_pass_compact_weights(kiln_compilation *c, kiln_diag *d, bool *changed) {
  (void)d;
  kiln_lprog *p = c->prog;
  *changed = false;
  if (!p || !p->n_bufs || has_state(p)) return true;
  bool *used = kiln_xcalloc((size_t)p->n_bufs, sizeof(bool));
  byte_range *r = kiln_xmalloc(sizeof(byte_range) * (size_t)p->n_bufs);
  for (int k = 0; k < p->n_kernels; k++) mark_stmt(p->kernels[k].body, used);
  int n = used_ranges(p, used, r);
  int64_t size = place_ranges(r, n);
  if (size < p->weights_bytes) {
    repack(c, used, r, n, size);
    *changed = true;
  }
  free(used);
  free(r);
  return true;
}
