// `kiln compare` (compare.h): one build per pass configuration, all run on the same inputs.
#include "compare.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../backends/backend.h"
#include "../runtime/kiln_runtime.h"
#include "frontend.h"
#include "interp.h"
#include "measure.h"
#include "passes/pipeline.h"

enum { MAX_VARIANTS = 24, MAX_IO = 16 };

typedef struct variant {
  char name[256];       // "all passes" or "-cse,dce"
  const char *off[32];  // passes turned off
  int n_off;
  double median_ms;
  int64_t binary_bytes, arena_bytes;
  double max_abs, max_ulp;
  bool ok;
} variant;

typedef struct session {
  const kiln_compare_options *o;
  char dir[256];
  kiln_array ref[MAX_IO];  // interpreter outputs
  int n_inputs, n_outputs;
  char in_flags[MAX_IO][600], out_flags[MAX_IO][600], out_paths[MAX_IO][512];
  char names_out[MAX_IO][128];
} session;

// ---- inputs and the reference ----

static bool prepare_inputs(session *s, const kiln_graph *g) {
  kiln_array in[MAX_IO];
  s->n_inputs = g->n_inputs;
  s->n_outputs = g->n_outputs;
  if (g->n_inputs > MAX_IO || g->n_outputs > MAX_IO) {
    fprintf(stderr, "kiln compare: at most %d inputs and outputs\n", MAX_IO);
    return false;
  }
  bool ok = true;
  for (int i = 0; i < g->n_inputs && ok; i++) {
    const kiln_tensor *t = &g->tensors[g->inputs[i]];
    kiln_measure_random_input(t, 1234 + (uint64_t)i, &in[i]);
    char path[400], err[512];
    snprintf(path, sizeof(path), "%s/in%d.npy", s->dir, i);
    snprintf(s->in_flags[i], sizeof(s->in_flags[i]), "%s=%s", t->name, path);
    ok = kiln_npy_write(path, &in[i], err, sizeof(err)) == KILN_OK;
    if (!ok) fprintf(stderr, "kiln compare: %s\n", err);
  }
  kiln_diag d;
  kiln_diag_init(&d, g->source_file);
  ok = ok && kiln_interp_run(g, in, s->ref, &d);
  for (int i = 0; i < g->n_inputs; i++) kiln_array_free(&in[i]);
  for (int i = 0; i < g->n_outputs; i++) {
    const char *name = g->tensors[g->outputs[i]].name;
    snprintf(s->names_out[i], sizeof(s->names_out[i]), "%s", name);
    snprintf(s->out_paths[i], sizeof(s->out_paths[i]), "%s/out%d.npy", s->dir, i);
    snprintf(s->out_flags[i], sizeof(s->out_flags[i]), "%s=%s", name, s->out_paths[i]);
  }
  return ok;
}

// ---- differences ----

// Distance in units in the last place between two floats of the same type.
static double ulp_distance(double a, double b, int dtype) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) ? 0 : INFINITY;
  if (dtype == KILN_RT_F32) {
    float fa = (float)a, fb = (float)b;
    int32_t ia, ib;
    memcpy(&ia, &fa, 4);
    memcpy(&ib, &fb, 4);
    if (ia < 0) ia = INT32_MIN - ia;  // order negative floats below positive ones
    if (ib < 0) ib = INT32_MIN - ib;
    return fabs((double)ia - (double)ib);
  }
  if (dtype == KILN_RT_F64) {
    int64_t ia, ib;
    memcpy(&ia, &a, 8);
    memcpy(&ib, &b, 8);
    if (ia < 0) ia = INT64_MIN - ia;
    if (ib < 0) ib = INT64_MIN - ib;
    return fabs((double)ia - (double)ib);
  }
  return fabs(a - b);
}

static void measure_drift(const session *s, variant *v) {
  v->max_abs = v->max_ulp = 0;
  for (int i = 0; i < s->n_outputs; i++) {
    kiln_array got;
    char err[512];
    if (kiln_npy_read(s->out_paths[i], &got, err, sizeof(err)) != KILN_OK) {
      fprintf(stderr, "kiln compare: %s\n", err);
      v->ok = false;
      return;
    }
    for (int64_t k = 0; k < kiln_array_numel(&got); k++) {
      double a = kiln_element_get(got.data, got.dtype, k);
      double b = kiln_element_get(s->ref[i].data, s->ref[i].dtype, k);
      v->max_abs = fmax(v->max_abs, fabs(a - b));
      v->max_ulp = fmax(v->max_ulp, ulp_distance(a, b, got.dtype));
    }
    kiln_array_free(&got);
  }
}

// ---- building and running one variant ----

static bool build_variant(const session *s, variant *v, const char *exe) {
  kiln_diag d;
  kiln_diag_init(&d, s->o->model);
  kiln_graph *g = kiln_load_model(s->o->model, &d);
  if (!g) return false;
  kiln_compilation c;
  kiln_compilation_init(&c, g);
  kiln_compilation_set_target(&c, s->o->target);
  c.tuning = s->o->tuning;
  for (int i = 0; i < v->n_off; i++) c.disabled[c.n_disabled++] = v->off[i];
  kiln_build_options bo = {.target = s->o->target ? s->o->target : "native"};
  bool ok = kiln_compile_pipeline(&c, &d) && kiln_build_binary(c.prog, &bo, exe, &d);
  v->arena_bytes = c.arena_bytes;
  kiln_compilation_free(&c);
  return ok;
}

static bool run_variant(const session *s, variant *v, const char *exe) {
  char *argv[4 * MAX_IO + 8];
  int n = 0;
  char runs[32], threads[32];
  argv[n++] = (char *)exe;
  for (int i = 0; i < s->n_inputs; i++) argv[n++] = "--input", argv[n++] = (char *)s->in_flags[i];
  for (int i = 0; i < s->n_outputs; i++)
    argv[n++] = "--output", argv[n++] = (char *)s->out_flags[i];
  snprintf(runs, sizeof(runs), "%d", s->o->runs > 0 ? s->o->runs : 200);
  argv[n++] = "--bench";
  argv[n++] = runs;
  if (s->o->threads > 0) {
    snprintf(threads, sizeof(threads), "%d", s->o->threads);
    argv[n++] = "--threads";
    argv[n++] = threads;
  }
  argv[n] = NULL;
  char out[4096];
  if (!kiln_measure_run(argv, out, sizeof(out)) || !kiln_measure_median_ms(out, &v->median_ms))
    return false;
  struct stat st;
  v->binary_bytes = stat(exe, &st) == 0 ? (int64_t)st.st_size : -1;
  return true;
}

static void evaluate(session *s, variant *v, int index) {
  char exe[400];
  snprintf(exe, sizeof(exe), "%s/variant%d", s->dir, index);
  v->ok = build_variant(s, v, exe) && run_variant(s, v, exe);
  if (v->ok) measure_drift(s, v);
  if (!v->ok) fprintf(stderr, "kiln compare: variant '%s' failed\n", v->name);
}

// ---- variants ----

static void name_variant(variant *v) {
  if (!v->n_off) {
    snprintf(v->name, sizeof(v->name), "all passes");
    return;
  }
  size_t used = (size_t)snprintf(v->name, sizeof(v->name), "-");
  for (int i = 0; i < v->n_off && used < sizeof(v->name); i++)
    used +=
        (size_t)snprintf(v->name + used, sizeof(v->name) - used, "%s%s", i ? "," : "", v->off[i]);
}

// Splits a comma-separated set into v->off (pointing into `copy`); false on an unknown pass.
static bool parse_set(char *copy, variant *v) {
  for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
    if (!kiln_pass_optional(tok)) {
      fprintf(stderr,
              "kiln compare: '%s' is not a pass that can be turned off (see `kiln passes`)\n", tok);
      return false;
    }
    if (v->n_off < 32) v->off[v->n_off++] = tok;
  }
  return true;
}

static int make_variants(const kiln_compare_options *o, variant *vs, char copies[][256]) {
  int n = 1;  // vs[0]: every pass
  if (o->n_sets) {
    for (int i = 0; i < o->n_sets && n < MAX_VARIANTS; i++, n++) {
      snprintf(copies[i], 256, "%s", o->sets[i]);
      if (!parse_set(copies[i], &vs[n])) return -1;
    }
  } else {
    for (const kiln_pass *p = kiln_pipeline; p->name && n < MAX_VARIANTS; p++)
      if (!p->required) vs[n].off[vs[n].n_off++] = p->name, n++;
  }
  for (int i = 0; i < n; i++) name_variant(&vs[i]);
  return n;
}

// ---- report ----

static void report(const kiln_compare_options *o, const variant *vs, int n, FILE *out) {
  const char *fmt = o->format ? o->format : "text";
  bool md = strcmp(fmt, "md") == 0, csv = strcmp(fmt, "csv") == 0;
  const char *head[] = {"variant",     "median_ms",    "speedup",     "binary_bytes",
                        "arena_bytes", "max_abs_diff", "max_ulp_diff"};
  for (int i = 0; i < 7; i++) {
    if (csv)
      fprintf(out, "%s%s", i ? "," : "", head[i]);
    else if (md)
      fprintf(out, "| %s ", head[i]);
    else
      fprintf(out, i ? "%14s" : "%-28s", head[i]);
  }
  fputs(md ? "|\n|---|---:|---:|---:|---:|---:|---:|\n" : "\n", out);
  for (int i = 0; i < n; i++) {
    const variant *v = &vs[i];
    double speedup = v->ok && vs[0].ok ? vs[0].median_ms / v->median_ms : NAN;
    if (csv)
      fprintf(out, "%s,%.4f,%.3f,%lld,%lld,%.3g,%.0f\n", v->name, v->median_ms, speedup,
              (long long)v->binary_bytes, (long long)v->arena_bytes, v->max_abs, v->max_ulp);
    else if (md)
      fprintf(out, "| %s | %.4f | %.2fx | %lld | %lld | %.3g | %.0f |\n", v->name, v->median_ms,
              speedup, (long long)v->binary_bytes, (long long)v->arena_bytes, v->max_abs,
              v->max_ulp);
    else
      fprintf(out, "%-28s%14.4f%13.2fx%14lld%14lld%14.3g%14.0f\n", v->name, v->median_ms, speedup,
              (long long)v->binary_bytes, (long long)v->arena_bytes, v->max_abs, v->max_ulp);
  }
}

// Removes what a comparison wrote, then its directory.
static void remove_outputs(const char *dir) {
  static const char *const patterns[] = {"variant%d", "variant%d.weights", "in%d.npy", "out%d.npy"};
  for (int k = 0; k < 4; k++)
    for (int i = 0; i < MAX_VARIANTS; i++) {
      char name[64], path[512];
      snprintf(name, sizeof(name), patterns[k], i);
      snprintf(path, sizeof(path), "%s/%s", dir, name);
      unlink(path);
    }
  rmdir(dir);
}

int kiln_compare(const kiln_compare_options *o) {
  const char *fmt = o->format ? o->format : "text";
  if (strcmp(fmt, "text") && strcmp(fmt, "md") && strcmp(fmt, "csv")) {
    fprintf(stderr, "kiln compare: --format must be text, md or csv, not '%s'\n", fmt);
    return 2;
  }
  session s = {.o = o};
  const char *tmp = getenv("TMPDIR");
  snprintf(s.dir, sizeof(s.dir), "%s/kiln-compare-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(s.dir)) return fprintf(stderr, "kiln compare: mkdtemp: %s\n", strerror(errno)), 1;
  kiln_diag d;
  kiln_diag_init(&d, o->model);
  kiln_graph *g = kiln_load_model(o->model, &d);
  variant vs[MAX_VARIANTS] = {0};
  char copies[16][256];
  int n = g && prepare_inputs(&s, g) ? make_variants(o, vs, copies) : -1;
  kiln_graph_free(g);
  for (int i = 0; i < n; i++) evaluate(&s, &vs[i], i);
  if (n > 0) report(o, vs, n, stdout);
  for (int i = 0; i < s.n_outputs; i++) kiln_array_free(&s.ref[i]);
  remove_outputs(s.dir);
  if (n < 0) return 2;
  for (int i = 0; i < n; i++)
    if (!vs[i].ok) return 1;
  return 0;
}
