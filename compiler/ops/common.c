// Helpers shared by op files: diagnostics, dtype checks, broadcasting, strides, loop nests
// (declared in op.h) and attribute reading, index unravelling and copies (op_internal.h).
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "op_internal.h"

// ---- Diagnostics ----

void kiln_op_error(kiln_diag *d, const kiln_node *n, const char *fmt, ...) {
  if (!d) return;  // reference kernels re-run checks that infer already reported
  char where[256], msg[1024];
  const char *w = n->where ? n->where : "node";
  if (n->name)
    snprintf(where, sizeof where, "%s (%s)", w, n->name);
  else
    snprintf(where, sizeof where, "%s", w);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  kiln_diag_error(d, where, "%s", msg);
}

kiln_tensor_desc kiln_describe(const kiln_tensor *t) {
  kiln_tensor_desc desc;
  char shape[128];
  snprintf(desc.text, sizeof desc.text, "%s %s", t->name ? t->name : "?",
           kiln_shape_str(&t->shape, shape, sizeof shape));
  return desc;
}

kiln_tensor_desc kiln_shape_text(const kiln_shape *s) {
  kiln_tensor_desc desc;
  kiln_shape_str(s, desc.text, sizeof desc.text);
  return desc;
}

bool kiln_op_check_float_inputs(const kiln_graph *g, const kiln_node *n, int count, kiln_diag *d) {
  bool ok = true;
  const kiln_tensor *first = NULL;
  for (int i = 0; i < count; i++) {
    const kiln_tensor *t = kiln_in(g, n, i);
    if (!t) {
      kiln_op_error(d, n, "inputs[%d]: missing; %s needs at least %d inputs", i,
                    kiln_op_get(n->op) ? kiln_op_get(n->op)->name : "this op", count);
      ok = false;
    } else if (!kiln_dtype_is_float(t->dtype)) {
      kiln_op_error(d, n, "inputs[%d] (%s): expected dtype f32 or f64, got %s", i, t->name,
                    kiln_dtype_name(t->dtype));
      ok = false;
    } else if (!first) {
      first = t;
    } else if (t->dtype != first->dtype) {
      kiln_op_error(d, n, "inputs[%d] (%s): expected dtype %s like inputs[0] (%s), got %s", i,
                    t->name, kiln_dtype_name(first->dtype), first->name, kiln_dtype_name(t->dtype));
      ok = false;
    }
  }
  return ok;
}

void kiln_op_set_output(kiln_graph *g, const kiln_node *n, int i, kiln_dtype t,
                        const kiln_shape *s) {
  kiln_tensor *out = &g->tensors[n->outputs[i]];
  out->dtype = t;
  out->shape = *s;
}

// ---- Shapes and strides ----

bool kiln_broadcast_shapes(const kiln_shape *a, const kiln_shape *b, kiln_shape *out) {
  int rank = a->rank > b->rank ? a->rank : b->rank;
  kiln_shape r = {.rank = rank};
  // Align from the right; a missing dimension acts as 1.
  for (int i = 0; i < rank; i++) {
    int ia = i - (rank - a->rank), ib = i - (rank - b->rank);
    int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
    if (da != db && da != 1 && db != 1) return false;
    r.dim[i] = da == 1 ? db : da;
  }
  *out = r;
  return true;
}

void kiln_contiguous_strides(const kiln_shape *s, int64_t *strides) {
  int64_t stride = 1;
  for (int i = s->rank - 1; i >= 0; i--) {
    strides[i] = stride;
    stride *= s->dim[i];
  }
}

void kiln_broadcast_strides(const kiln_shape *s, const kiln_shape *out, int64_t *strides) {
  int64_t own[KILN_MAX_RANK];
  kiln_contiguous_strides(s, own);
  int lead = out->rank - s->rank;
  for (int i = 0; i < out->rank; i++) {
    int is = i - lead;
    strides[i] = is >= 0 && s->dim[is] != 1 ? own[is] : 0;
  }
}

// ---- Loop nests ----

kiln_lexpr *kiln_lower_index(kiln_lb *b, int rank, const int *vars, const int64_t *strides) {
  kiln_lexpr *index = lx_int(b, 0);
  for (int i = 0; i < rank; i++) {
    if (strides[i] == 0) continue;
    index = lx_add(b, index, lx_mul(b, lx_var(b, vars[i]), lx_int(b, strides[i])));
  }
  return index;
}

void kiln_lower_begin_nest(kiln_lb *b, const kiln_shape *s, int *vars) {
  for (int i = 0; i < s->rank; i++) {
    char name[16];
    snprintf(name, sizeof name, "d%d", i);
    vars[i] = kiln_lb_for_n(b, name, s->dim[i]);
  }
}

void kiln_lower_end_nest(kiln_lb *b, const kiln_shape *s) {
  for (int i = 0; i < s->rank; i++) kiln_lb_end_for(b);
}

kiln_lexpr *kiln_lx_nchw(kiln_lb *b, kiln_lexpr *n, kiln_lexpr *c, const int64_t dims[4],
                         kiln_lexpr *h, kiln_lexpr *w) {
  kiln_lexpr *plane = lx_madd(b, n, dims[1], c);
  kiln_lexpr *row = lx_madd(b, plane, dims[2], h);
  return lx_madd(b, row, dims[3], w);
}

kiln_lexpr *kiln_lx_ncx(kiln_lb *b, kiln_lexpr *n, kiln_lexpr *c, const kiln_shape *s,
                        kiln_lexpr *const *pos) {
  kiln_lexpr *index = lx_madd(b, n, s->dim[1], c);
  for (int i = 2; i < s->rank; i++) index = lx_madd(b, index, s->dim[i], pos[i - 2]);
  return index;
}

// ---- Attributes ----

char *kiln_ints_str(const int64_t *v, int count, char *buf, int size) {
  int len = snprintf(buf, size, "[");
  for (int i = 0; i < count && len < size; i++)
    len += snprintf(buf + len, size - len, "%s%lld", i ? ", " : "", (long long)v[i]);
  if (len < size) snprintf(buf + len, size - len, "]");
  return buf;
}

static const char *ints_rule_words(kiln_ints_rule rule) {
  switch (rule) {
    case KILN_INTS_POSITIVE: return "positive ";
    case KILN_INTS_NONNEGATIVE: return "non-negative ";
    default: return "";
  }
}

bool kiln_op_read_ints(const kiln_node *n, kiln_diag *d, const char *name, int count,
                       kiln_ints_rule rule, int64_t *out) {
  const kiln_attr *a = kiln_node_attr(n, name);
  if (!a) return true;
  bool ok = a->type == KILN_ATTR_INTS && a->count == count;
  for (int i = 0; ok && i < count; i++) {
    if (rule == KILN_INTS_POSITIVE && a->ints[i] < 1) ok = false;
    if (rule == KILN_INTS_NONNEGATIVE && a->ints[i] < 0) ok = false;
  }
  if (!ok) {
    char got[256];
    kiln_op_error(d, n, "attrs.%s: expected %d %sintegers, got %s", name, count,
                  ints_rule_words(rule),
                  a->type == KILN_ATTR_INTS ? kiln_ints_str(a->ints, a->count, got, sizeof got)
                                            : "a value of another type");
    return false;
  }
  memcpy(out, a->ints, sizeof(int64_t) * count);
  return true;
}

bool kiln_op_read_int(const kiln_node *n, kiln_diag *d, const char *name, int64_t dflt, int64_t lo,
                      int64_t hi, int64_t *out) {
  int64_t v = kiln_attr_int(n, name, dflt);
  if (v >= lo && v <= hi) {
    *out = v;
    return true;
  }
  if (hi == INT64_MAX)
    kiln_op_error(d, n, "attrs.%s: expected an integer >= %lld, got %lld", name, (long long)lo,
                  (long long)v);
  else if (lo == hi)
    kiln_op_error(d, n, "attrs.%s: only %lld is supported, got %lld", name, (long long)lo,
                  (long long)v);
  else
    kiln_op_error(d, n, "attrs.%s: expected an integer in [%lld, %lld], got %lld", name,
                  (long long)lo, (long long)hi, (long long)v);
  return false;
}

// ---- Reference kernel helpers ----

void kiln_unravel(int64_t flat, const kiln_shape *s, int64_t *idx) {
  for (int i = s->rank - 1; i >= 0; i--) {
    idx[i] = flat % s->dim[i];
    flat /= s->dim[i];
  }
}

int64_t kiln_dot_index(int rank, const int64_t *idx, const int64_t *strides) {
  int64_t flat = 0;
  for (int i = 0; i < rank; i++) flat += idx[i] * strides[i];
  return flat;
}

void kiln_copy_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  (void)n;
  int64_t numel = kiln_shape_numel(out->shape);
  for (int64_t i = 0; i < numel; i++) out->data[i] = in[0].data[i];
}

void kiln_copy_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *x = kiln_lower_in(c, 0), *y = kiln_lower_out(c, 0);
  kiln_lb_comment(b, "%s %s: %s -> %s (a copy)", kiln_op_get(c->node->op)->name, c->node->name,
                  kiln_describe(x).text, kiln_describe(y).text);
  int i = kiln_lb_for_n(b, "i", kiln_shape_numel(&y->shape));
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, i), lx_load(b, kiln_in_buf(c, 0), lx_var(b, i)));
  kiln_lb_end_for(b);
}

int64_t kiln_no_flops(const kiln_graph *g, const kiln_node *n) {
  (void)g, (void)n;
  return 0;
}

int64_t kiln_output_numel_flops(const kiln_graph *g, const kiln_node *n) {
  return kiln_shape_numel(&kiln_out(g, n, 0)->shape);
}

// ---- The channel-blocked layout NCHWc (op_internal.h) ----

kiln_shape kiln_nchwc_shape(const kiln_shape *s, int64_t L) {
  return (kiln_shape){.rank = 5, .dim = {s->dim[0], s->dim[1] / L, s->dim[2], s->dim[3], L}};
}

kiln_shape kiln_nchw_shape(const kiln_shape *s) {
  kiln_shape p = *s;
  if (s->rank == 5) p.rank = 4, p.dim[1] = s->dim[1] * s->dim[4];
  return p;
}

// Element (n, c, h, w) of a planar (N, C, H, W) array at `planar`: where NCHWc keeps it.
static int64_t nchwc_index(int64_t planar, int64_t HW, int64_t L) {
  int64_t nc = planar / HW, hw = planar % HW;
  return ((nc / L) * HW + hw) * L + nc % L;
}

void kiln_nchwc_copy(const kiln_shape *planar, int64_t L, const double *from, double *to,
                     bool to_blocked) {
  int64_t HW = planar->dim[2] * planar->dim[3], numel = kiln_shape_numel(planar);
  for (int64_t i = 0; i < numel; i++) {
    int64_t j = nchwc_index(i, HW, L);
    to[to_blocked ? j : i] = from[to_blocked ? i : j];
  }
}

kiln_eval_tensor kiln_eval_unblocked(const kiln_eval_tensor *t, int64_t L, kiln_shape *shape) {
  *shape = kiln_nchw_shape(t->shape);
  double *data = kiln_xmalloc(sizeof(double) * (size_t)kiln_shape_numel(shape));
  kiln_nchwc_copy(shape, L, t->data, data, false);
  return (kiln_eval_tensor){shape, t->dtype, data};
}
