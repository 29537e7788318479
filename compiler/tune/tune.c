// The auto-tuner behind kiln build --tune (tune.h).
#include "tune.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../backends/backend.h"
#include "../measure.h"
#include "../ops/op.h"
#include "../passes/pipeline.h"

enum { MAX_CANDIDATES = 16, MAX_TUNABLES = 512, MAX_INPUTS = 8 };

typedef struct tunable {
  const kiln_node *node;
  char key[KILN_TUNE_KEY_MAX];
  kiln_tile_choice cands[MAX_CANDIDATES];
  int n_cands;
} tunable;

typedef struct session {
  const kiln_graph *g;
  const kiln_tune_options *o;
  kiln_diag *d;
  char dir[256];
  char inputs[MAX_INPUTS][300];  // the one-node model's input files
  int n_inputs;
  double start;
  int done, total;  // candidates timed, to time
} session;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---- what to tune: distinct keys, in graph order ----

static int collect(const kiln_graph *g, int lanes, tunable *out) {
  int n = 0;
  for (int i = 0; i < g->n_nodes && n < MAX_TUNABLES; i++) {
    const kiln_node *node = &g->nodes[i];
    const kiln_op_def *def = kiln_op_get(node->op);
    if (node->dead || !def->tune_space) continue;
    kiln_lower_ctx ctx = {.g = g, .node = node, .f32_lanes = lanes};
    tunable *t = &out[n];
    t->node = node;
    t->n_cands = def->tune_space(&ctx, t->key, sizeof(t->key), t->cands, MAX_CANDIDATES);
    bool seen = false;
    for (int k = 0; k < n && !seen; k++) seen = strcmp(out[k].key, t->key) == 0;
    if (t->n_cands > 0 && !seen) n++;
  }
  return n;
}

// ---- a one-node model: the node, its params, its other inputs as model inputs ----

static int copy_tensor(kiln_graph *m, const kiln_tensor *t) {
  int found = kiln_graph_find_tensor(m, t->name);
  if (found >= 0) return found;
  bool param = t->kind == KILN_TENSOR_PARAM || t->kind == KILN_TENSOR_STATE;
  int i = kiln_graph_add_tensor(m, t->name, param ? KILN_TENSOR_PARAM : KILN_TENSOR_INPUT, t->dtype,
                                &t->shape);
  kiln_tensor *c = &m->tensors[i];
  c->where = t->where;
  if (param) {
    c->data = t->data;  // shared: the source graph outlives the one-node model
    c->role = t->role;
  } else {
    KILN_VEC_PUSH(m->inputs, m->n_inputs, m->cap_inputs, i);
  }
  return i;
}

static kiln_graph *one_node_graph(const kiln_graph *g, const kiln_node *n, kiln_diag *d) {
  kiln_graph *m = kiln_graph_new("kiln_tune", g->source_file);
  int in[16];
  for (int i = 0; i < n->n_inputs && i < 16; i++)
    in[i] = kiln_in(g, n, i) ? copy_tensor(m, kiln_in(g, n, i)) : -1;
  const kiln_tensor *y = kiln_out(g, n, 0);
  int out = kiln_graph_add_tensor(m, y->name, KILN_TENSOR_VALUE, y->dtype, &y->shape);
  m->tensors[out].is_output = true;
  KILN_VEC_PUSH(m->outputs, m->n_outputs, m->cap_outputs, out);
  int k = kiln_graph_add_node(m, n->op, n->name, n->n_inputs, in, 1, &out);
  m->nodes[k].attrs = n->attrs;  // shared, like the params
  m->nodes[k].n_attrs = n->n_attrs;
  m->nodes[k].where = n->where;
  if (kiln_graph_toposort(m, d)) return m;
  kiln_graph_free(m);
  return NULL;
}

// ---- timing one candidate ----

static bool write_inputs(session *s, const tunable *k) {
  kiln_graph *m = one_node_graph(s->g, k->node, s->d);
  if (!m) return false;
  bool ok = m->n_inputs <= MAX_INPUTS;
  s->n_inputs = 0;
  for (int i = 0; i < m->n_inputs && ok; i++) {
    kiln_array a;
    char err[512];
    kiln_measure_random_input(&m->tensors[m->inputs[i]], 99 + (uint64_t)i, &a);
    snprintf(s->inputs[i], sizeof(s->inputs[i]), "%s/in%d.npy", s->dir, i);
    ok = kiln_npy_write(s->inputs[i], &a, err, sizeof(err)) == KILN_OK;
    if (!ok) kiln_diag_error(s->d, NULL, "--tune: %s", err);
    kiln_array_free(&a);
    s->n_inputs++;
  }
  kiln_graph_free(m);
  return ok;
}

static void candidate_path(const session *s, int i, char *path, size_t size) {
  snprintf(path, size, "%s/candidate%d", s->dir, i);
}

static bool build_candidate(session *s, const tunable *k, int i) {
  kiln_tile_choice c = k->cands[i];
  char exe[400];
  candidate_path(s, i, exe, sizeof(exe));
  kiln_graph *m = one_node_graph(s->g, k->node, s->d);
  if (!m) return false;
  kiln_tuning forced = {0};
  kiln_tuning_set(&forced, k->key, c, 0);
  kiln_compilation mc;
  kiln_compilation_init(&mc, m);
  mc.f32_lanes = s->o->f32_lanes;
  mc.tuning = &forced;
  kiln_build_options bo = {.cc = s->o->cc, .target = s->o->target ? s->o->target : "native"};
  bool ok = kiln_compile_pipeline(&mc, s->d) && kiln_build_binary(mc.prog, &bo, exe, s->d);
  kiln_compilation_free(&mc);
  kiln_tuning_free(&forced);
  return ok;
}

static bool time_binary(const session *s, int i, double *ms) {
  char *argv[2 * MAX_INPUTS + 8], runs[32], exe[400];
  int n = 0;
  candidate_path(s, i, exe, sizeof(exe));
  argv[n++] = exe;
  for (int i = 0; i < s->n_inputs; i++) argv[n++] = "--input", argv[n++] = (char *)s->inputs[i];
  snprintf(runs, sizeof(runs), "%d", s->o->runs > 0 ? s->o->runs : 30);
  argv[n++] = "--bench";
  argv[n++] = runs;
  argv[n++] = "--threads";
  argv[n++] = "1";
  argv[n] = NULL;
  char out[4096];
  return kiln_measure_run(argv, out, sizeof(out)) && kiln_measure_median_ms(out, ms);
}

// ---- progress ----

static void progress(const session *s, const tunable *k, double best) {
  if (!s->o->progress) return;
  int width = 30, filled = s->total ? width * s->done / s->total : width;
  char bar[64];
  for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
  bar[width] = '\0';
  fprintf(stderr, "\rkiln: tuning [%s] %d/%d candidates, %.0f s  %s: best %.4f ms\033[K", bar,
          s->done, s->total, now() - s->start, k->node->name, best);
  fflush(stderr);
}

static void report_kernel(const session *s, const tunable *k, kiln_tile_choice c, double ms,
                          double first_ms) {
  if (s->o->progress) return;
  fprintf(stderr, "kiln: tuned %s (%s): tile %dx%d %.4f ms (analytical %dx%d %.4f ms)\n",
          k->node->name, k->key, c.a, c.b, ms, k->cands[0].a, k->cands[0].b, first_ms);
}

static bool fail(session *s, const tunable *k, int i, const char *what, bool *failed) {
  kiln_diag_error(s->d, k->node->where, "--tune: %s tile %dx%d of %s failed", what, k->cands[i].a,
                  k->cands[i].b, k->node->name);
  *failed = true;
  return false;
}

// Builds every candidate of k, then times them round-robin (ROUNDS times, the best median of
// each): a burst of load on a shared machine then hits every candidate alike. False if the
// budget ran out first (k stays untuned) or on an error.
enum { ROUNDS = 3 };
static bool tune_one(session *s, const tunable *k, kiln_tuning *t, kiln_tune_result *r,
                     bool *failed) {
  if (!write_inputs(s, k)) return *failed = true, false;
  double best[MAX_CANDIDATES];
  for (int i = 0; i < k->n_cands; i++) {
    if (now() - s->start >= s->o->seconds) return false;
    if (!build_candidate(s, k, i)) return fail(s, k, i, "building", failed);
    r->candidates++;
  }
  for (int round = 0; round < ROUNDS; round++)
    for (int i = 0; i < k->n_cands; i++) {
      double ms;
      if (!time_binary(s, i, &ms)) return fail(s, k, i, "timing", failed);
      best[i] = round == 0 || ms < best[i] ? ms : best[i];
    }
  int choice = 0;
  for (int i = 1; i < k->n_cands; i++)
    if (best[i] < best[choice]) choice = i;
  s->done += k->n_cands;
  progress(s, k, best[choice]);
  kiln_tuning_set(t, k->key, k->cands[choice], best[choice]);
  report_kernel(s, k, k->cands[choice], best[choice], best[0]);
  return true;
}

static void remove_outputs(const session *s) {
  char path[400];
  for (int i = 0; i < MAX_CANDIDATES; i++) {
    candidate_path(s, i, path, sizeof(path));
    unlink(path);
    strcat(path, ".weights");
    unlink(path);
  }
  for (int i = 0; i < MAX_INPUTS; i++) {
    snprintf(path, sizeof(path), "%s/in%d.npy", s->dir, i);
    unlink(path);
  }
  rmdir(s->dir);
}

bool kiln_tune(const kiln_graph *g, const kiln_tune_options *o, kiln_tuning *t, kiln_tune_result *r,
               kiln_diag *d) {
  memset(r, 0, sizeof(*r));
  static tunable ks[MAX_TUNABLES];
  int n = collect(g, o->f32_lanes, ks);
  session s = {.g = g, .o = o, .d = d, .start = now()};
  r->kernels = n;
  for (int i = 0; i < n; i++)
    if (kiln_tuning_find(t, ks[i].key))
      r->cached++;
    else
      s.total += ks[i].n_cands;
  if (r->cached == n) return true;
  const char *tmp = getenv("TMPDIR");
  snprintf(s.dir, sizeof(s.dir), "%s/kiln-tune-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(s.dir)) {
    kiln_diag_error(d, NULL, "--tune: mkdtemp %s: %s", s.dir, strerror(errno));
    return false;
  }
  bool failed = false;
  for (int i = 0; i < n && !failed; i++)
    if (!kiln_tuning_find(t, ks[i].key) && tune_one(&s, &ks[i], t, r, &failed)) r->tuned++;
  if (o->progress) fputc('\n', stderr);
  remove_outputs(&s);
  r->seconds = now() - s.start;
  return !failed;
}
