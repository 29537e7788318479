// `kiln prune`'s report: per layer the weight's elements before and after, the non-zero ones, the
// sparsity (the share of the original weights that is gone or zero), the FLOPs before and after
// and what happened to it; then the totals over the layers and over the whole model. Plain
// aligned text on stdout, a Markdown table with --report.
#include <inttypes.h>
#include <stdio.h>

#include "prune_internal.h"

static double share(int64_t part, int64_t whole) {
  return whole ? (double)part / (double)whole : 0;
}

// What happened to the layer, in words.
static void layer_note(const prune_ctx *c, const prune_layer *l, char *buf, size_t size) {
  if (!c->o->structured)
    snprintf(buf, size, "%s", l->nonzero_after < l->numel_before ? "zeros in place" : "-");
  else if (l->skipped)
    snprintf(buf, size, "skipped: %s", l->skipped);
  else
    snprintf(buf, size, "filters %" PRId64 " -> %" PRId64, l->filters_before, l->filters_after);
}

static void row(FILE *out, bool md, const char *name, const char *op, int64_t before, int64_t after,
                int64_t nonzero, int64_t flops_before, int64_t flops_after, const char *note) {
  double sparsity = 100 * (1 - share(nonzero, before));
  if (md)
    fprintf(out,
            "| %s | %s | %" PRId64 " | %" PRId64 " | %" PRId64 " | %.1f %% | %" PRId64 " | %" PRId64
            " | %s |\n",
            name, op, before, after, nonzero, sparsity, flops_before, flops_after, note);
  else
    fprintf(out,
            "%-16s %-7s %12" PRId64 " %12" PRId64 " %12" PRId64 " %8.1f%% %14" PRId64 " %14" PRId64
            "  %s\n",
            name, op, before, after, nonzero, sparsity, flops_before, flops_after, note);
}

static void header(const prune_ctx *c, FILE *out, bool md) {
  const kiln_prune_options *o = c->o;
  const char *how = o->structured                   ? "structured (filters), per layer"
                    : o->scope == KILN_PRUNE_GLOBAL ? "unstructured, global"
                                                    : "unstructured, per layer";
  if (md) {
    fprintf(out, "# Pruning report\n\n`%s` -> `%s`: %s, sparsity %g%s.\n\n", o->model, o->out, how,
            o->sparsity, !o->structured && o->mask ? ", zeros kept by masks in fine-tuning" : "");
    fputs(
        "| layer | op | params before | params after | non-zero | sparsity | FLOPs before | "
        "FLOPs after | note |\n|---|---|---:|---:|---:|---:|---:|---:|---|\n",
        out);
  } else {
    fprintf(out, "kiln prune: %s -> %s (%s, sparsity %g)\n", o->model, o->out, how, o->sparsity);
    fprintf(out, "%-16s %-7s %12s %12s %12s %9s %14s %14s  %s\n", "layer", "op", "params", "after",
            "non-zero", "sparsity", "FLOPs", "after", "note");
  }
}

static void totals(const prune_ctx *c, FILE *out, bool md) {
  int64_t before = 0, after = 0, nonzero = 0, fb = 0, fa = 0;
  for (int i = 0; i < c->n_layers; i++) {
    const prune_layer *l = &c->layers[i];
    before += l->numel_before, after += l->numel_after, nonzero += l->nonzero_after;
    fb += l->flops_before, fa += l->flops_after;
  }
  row(out, md, md ? "**layers**" : "(layers)", "", before, after, nonzero, fb, fa, "");
  row(out, md, md ? "**model**" : "(model)", "", c->before.params, c->after.params,
      c->after.nonzero, c->before.flops, c->after.flops, "all learned weights, all nodes");
  fprintf(out,
          "%sparams %" PRId64 " -> %" PRId64 " (%.1f %%), non-zero %" PRId64 " -> %" PRId64
          " (%.1f %%), FLOPs %" PRId64 " -> %" PRId64 " (%.1f %%)\n",
          md ? "\n" : "", c->before.params, c->after.params,
          100 * share(c->after.params, c->before.params), c->before.nonzero, c->after.nonzero,
          100 * share(c->after.nonzero, c->before.nonzero), c->before.flops, c->after.flops,
          100 * share(c->after.flops, c->before.flops));
  if (!c->o->structured && md)
    fputs("\nUnstructured zeros are not skipped by the kernels: the FLOPs are the dense count.\n",
          out);
}

void prune_report(const prune_ctx *c, FILE *out, bool markdown) {
  header(c, out, markdown);
  for (int i = 0; i < c->n_layers; i++) {
    const prune_layer *l = &c->layers[i];
    char note[300];
    layer_note(c, l, note, sizeof note);
    row(out, markdown, l->name, l->op, l->numel_before, l->numel_after, l->nonzero_after,
        l->flops_before, l->flops_after, note);
  }
  totals(c, out, markdown);
}
