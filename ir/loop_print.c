// Loop IR printer: a readable, C-like dump used by --dump-ir-after and the pass tests.
#include <inttypes.h>

#include "loop.h"

static void print_expr(const kiln_lprog *p, const kiln_lkernel *k, const kiln_lexpr *e, FILE *out) {
  switch (e->kind) {
    case LE_INT: fprintf(out, "%" PRId64, e->i); break;
    case LE_FLOAT: fprintf(out, "%.9g:%s", e->f, kiln_dtype_name(e->dtype)); break;
    case LE_VAR: fputs(k->vars[e->var].name, out); break;
    case LE_LOAD:
      fprintf(out, "%s[", p->bufs[e->buf].name);
      print_expr(p, k, e->a, out);
      fputc(']', out);
      break;
    case LE_BIN:
      if (e->op == LB_MIN || e->op == LB_MAX) {
        fprintf(out, "%s(", kiln_lbin_name(e->op));
        print_expr(p, k, e->a, out);
        fputs(", ", out);
        print_expr(p, k, e->b, out);
        fputc(')', out);
      } else {
        fputc('(', out);
        print_expr(p, k, e->a, out);
        fprintf(out, " %s ", kiln_lbin_name(e->op));
        print_expr(p, k, e->b, out);
        fputc(')', out);
      }
      break;
    case LE_UNARY:
      fprintf(out, "%s(", kiln_lunary_name(e->op));
      print_expr(p, k, e->a, out);
      fputc(')', out);
      break;
    case LE_SELECT:
      fputs("select(", out);
      print_expr(p, k, e->a, out);
      fputs(", ", out);
      print_expr(p, k, e->b, out);
      fputs(", ", out);
      print_expr(p, k, e->c, out);
      fputc(')', out);
      break;
    case LE_CAST:
      fprintf(out, "%s(", kiln_dtype_name(e->dtype));
      print_expr(p, k, e->a, out);
      fputc(')', out);
      break;
    case LE_LOCAL:
      fprintf(out, "%s[", k->vars[e->var].name);
      print_expr(p, k, e->a, out);
      fputc(']', out);
      break;
    case LE_MULADD:
      fputs("muladd(", out);
      print_expr(p, k, e->a, out);
      fputs(", ", out);
      print_expr(p, k, e->b, out);
      fputs(", ", out);
      print_expr(p, k, e->c, out);
      fputc(')', out);
      break;
  }
}

static void indent(int depth, FILE *out) {
  for (int i = 0; i < depth; i++) fputs("  ", out);
}

static void print_flags(const kiln_lkernel *k, const kiln_lstmt *s, FILE *out) {
  if (s->flags & KILN_LOOP_PARALLEL) fputs(" parallel", out);
  if (s->flags & KILN_LOOP_VECTORIZE) fputs(" vectorize", out);
  if (s->flags & KILN_LOOP_UNROLL) fprintf(out, " unroll(%d)", s->unroll);
  if (s->flags & KILN_LOOP_SERIAL) fputs(" serial", out);
  for (int i = 0; (s->flags & KILN_LOOP_REDUCE) && i < s->n_reduce; i++)
    fprintf(out, " reduce(%s:%s)", kiln_lbin_name(s->reduce_ops[i]),
            k->vars[s->reduce_vars[i]].name);
}

static void print_stmt(const kiln_lprog *p, const kiln_lkernel *k, const kiln_lstmt *s, int depth,
                       FILE *out) {
  switch (s->kind) {
    case LS_BLOCK:
      for (int i = 0; i < s->n; i++) print_stmt(p, k, s->stmts[i], depth, out);
      break;
    case LS_FOR:
      indent(depth, out);
      fprintf(out, "for %s in [", k->vars[s->var].name);
      print_expr(p, k, s->lo, out);
      fputs(", ", out);
      print_expr(p, k, s->hi, out);
      fputc(')', out);
      print_flags(k, s, out);
      fputs(" {\n", out);
      print_stmt(p, k, s->body, depth + 1, out);
      indent(depth, out);
      fputs("}\n", out);
      break;
    case LS_DECL:
      if (k->vars[s->var].len > 0) {  // a local array
        indent(depth, out);
        fprintf(out, "%s %s[%" PRId64 "]\n", kiln_dtype_name(k->vars[s->var].dtype),
                k->vars[s->var].name, k->vars[s->var].len);
        break;
      }
      // fall through
    case LS_ASSIGN:
      indent(depth, out);
      if (s->kind == LS_DECL) fprintf(out, "%s ", kiln_dtype_name(k->vars[s->var].dtype));
      fprintf(out, "%s = ", k->vars[s->var].name);
      print_expr(p, k, s->value, out);
      fputc('\n', out);
      break;
    case LS_STORE:
      indent(depth, out);
      fprintf(out, "%s[", p->bufs[s->buf].name);
      print_expr(p, k, s->index, out);
      fputs("] = ", out);
      print_expr(p, k, s->value, out);
      fputc('\n', out);
      break;
    case LS_LSTORE:
      indent(depth, out);
      fprintf(out, "%s[", k->vars[s->var].name);
      print_expr(p, k, s->index, out);
      fputs("] = ", out);
      print_expr(p, k, s->value, out);
      fputc('\n', out);
      break;
    case LS_DOT4:
      indent(depth, out);
      fprintf(out, "%s[0..%d) += dot4(%s[", k->vars[s->var].name, s->lanes, p->bufs[s->buf].name);
      print_expr(p, k, s->index, out);
      fprintf(out, "], %s[", p->bufs[s->w_buf].name);
      print_expr(p, k, s->w_index, out);
      fputs("])\n", out);
      break;
    case LS_TILEDOT: {
      const kiln_ltile *t = &s->tile;
      indent(depth, out);
      fprintf(out, "%s[", p->bufs[s->c_buf].name);
      print_expr(p, k, s->c_index, out);
      fprintf(out, " ..] = tiledot(%lldx%lld, k %lld, %s[", (long long)t->rows, (long long)t->cols,
              (long long)t->k, p->bufs[s->buf].name);
      print_expr(p, k, s->index, out);
      fprintf(out, "] rows %lld runs %lld x %lld at %lld, %s[", (long long)t->a_ld,
              (long long)(t->k / t->run_k), (long long)t->run_k, (long long)t->run_ld,
              p->bufs[s->w_buf].name);
      print_expr(p, k, s->w_index, out);
      fprintf(out, "] vectors %lld; c rows %lld, columns %lld)\n", (long long)t->w_ld,
              (long long)t->c_row, (long long)t->c_col);
      break;
    }
    case LS_IF:
      indent(depth, out);
      fputs("if ", out);
      print_expr(p, k, s->cond, out);
      fputs(" {\n", out);
      print_stmt(p, k, s->then_, depth + 1, out);
      if (s->else_) {
        indent(depth, out);
        fputs("} else {\n", out);
        print_stmt(p, k, s->else_, depth + 1, out);
      }
      indent(depth, out);
      fputs("}\n", out);
      break;
    case LS_COMMENT:
      indent(depth, out);
      fprintf(out, "// %s\n", s->text);
      break;
  }
}

static const char *buf_kind_name(kiln_buf_kind k) {
  switch (k) {
    case KILN_BUF_INPUT: return "input";
    case KILN_BUF_OUTPUT: return "output";
    case KILN_BUF_WEIGHT: return "weight";
    case KILN_BUF_ARENA: return "arena";
    case KILN_BUF_STATE: return "state";
  }
  return "?";
}

void kiln_lprog_print(const kiln_lprog *p, FILE *out) {
  fprintf(out, "program %s: arena %" PRId64 " bytes, weights %" PRId64 " bytes\n", p->name,
          p->arena_bytes, p->weights_bytes);
  for (int i = 0; i < p->n_bufs; i++) {
    const kiln_lbuf *b = &p->bufs[i];
    fprintf(out, "  buf %s: %s %s[%" PRId64 "]", b->name, buf_kind_name(b->kind),
            kiln_dtype_name(b->dtype), b->numel);
    if (b->kind == KILN_BUF_INPUT || b->kind == KILN_BUF_OUTPUT)
      fprintf(out, " #%d", b->index);
    else
      fprintf(out, " @%" PRId64, b->offset);
    fputc('\n', out);
  }
  for (int i = 0; i < p->n_kernels; i++) {
    const kiln_lkernel *k = &p->kernels[i];
    fprintf(out, "kernel %s (%s %s) {\n", k->name, k->op, k->node);
    print_stmt(p, k, k->body, 1, out);
    fputs("}\n", out);
  }
}
