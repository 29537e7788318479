// quantize: running a graph over the calibration samples (docs/quantization.md, "Calibration
// runs"). The pass needs the values of some tensors (the layers' inputs and outputs, the outputs of
// the ops kept in u8) twice: of the FP32 graph to choose the scales, of the quantized graph for
// the report. Two engines show them to the same observer, batch by batch:
//   interp   the reference interpreter (kiln_interp_run_observed): slow (about a minute per
//            224x224 ResNet-18 image), needs nothing else;
//   binary   a copy of the graph with every watched tensor as an extra output, compiled by the
//            normal pipeline and C compiler, run once over each calibration file (the binary's
//            batch mode); its f32 values differ from the interpreter's (doubles rounded to f32
//            per op) by f32 rounding only.
// `auto` (the default) compiles when the interpreter would take long (estimated from the FLOPs)
// and falls back to the interpreter, with a warning, when the build fails (no C compiler, ...).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../backends/backend.h"
#include "../../runtime/kiln_runtime.h"
#include "../interp.h"
#include "../measure.h"
#include "ptq_internal.h"

// The interpreter does about this many FLOPs a second; above AUTO_SECONDS of it, compile.
#define INTERP_FLOPS_PER_SECOND 3e7
#define AUTO_SECONDS 10.0

typedef struct run {  // one run over the calibration files
  ptq *q;
  const kiln_graph *g;  // the graph run (indices the observer sees)
  const bool *watch;    // per tensor of g: wanted by the observer (binary engine)
  int64_t limit;        // at most this many samples (0: all)
  kiln_interp_observer observe;
  void *ctx;
  // binary engine
  char dir[256], exe[300];
  int *slot_tensor;  // per output of the binary: the tensor of g it holds
  int n_slots;
} run;

// ---- The interpreter ----

static void free_arrays(kiln_array *a, int n) {
  for (int i = 0; i < n; i++) kiln_array_free(&a[i]);
}

// Views batch b of x (batch samples each).
static kiln_array batch_of(const kiln_array *x, int64_t batch, int64_t b) {
  kiln_array v = *x;
  size_t bytes = x->nbytes / (size_t)x->shape[0] * (size_t)batch;
  v.shape[0] = batch;
  v.nbytes = bytes;
  v.data = (char *)x->data + (size_t)b * bytes;
  return v;
}

static bool interp_file(run *r, const kiln_array *x, int64_t batch) {
  const kiln_graph *g = r->g;
  kiln_array *outs = calloc((size_t)g->n_outputs + 1, sizeof(kiln_array));
  bool ok = true;
  for (int64_t b = 0; ok && b < x->shape[0] / batch; b++) {
    kiln_array v = batch_of(x, batch, b);
    ok = kiln_interp_run_observed(g, &v, outs, r->q->d, r->observe, r->ctx);
    if (ok) free_arrays(outs, g->n_outputs);
  }
  free(outs);
  return ok;
}

// ---- The binary ----

static void copy_tensor(kiln_graph *m, const kiln_tensor *t) {
  int i = kiln_graph_add_tensor(m, t->name, t->kind, t->dtype, &t->shape);
  kiln_tensor *c = &m->tensors[i];
  c->where = t->where, c->role = t->role, c->is_output = t->is_output;
  if (t->data) {  // copied: the pipeline may rewrite params in place
    size_t bytes = (size_t)kiln_shape_numel(&t->shape) * kiln_dtype_size(t->dtype);
    c->data = kiln_pool_alloc(&m->pool, bytes);
    memcpy(c->data, t->data, bytes);
  }
}

// A copy of g (same tensor indices until compacted) whose outputs are g's, then every watched
// value; r->slot_tensor[k] is the tensor of g output k holds.
static kiln_graph *observing_copy(run *r) {
  const kiln_graph *g = r->g;
  kiln_graph *m = kiln_graph_new(g->name, g->source_file);
  for (int t = 0; t < g->n_tensors; t++) copy_tensor(m, &g->tensors[t]);
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    int k =
        kiln_graph_add_node(m, n->op, n->name, n->n_inputs, n->inputs, n->n_outputs, n->outputs);
    m->nodes[k].attrs = n->attrs;  // shared: g outlives the copy
    m->nodes[k].n_attrs = n->n_attrs;
    m->nodes[k].where = n->where;
  }
  for (int i = 0; i < g->n_inputs; i++)
    KILN_VEC_PUSH(m->inputs, m->n_inputs, m->cap_inputs, g->inputs[i]);
  r->slot_tensor = malloc(sizeof(int) * (size_t)(g->n_outputs + g->n_tensors));
  for (int i = 0; i < g->n_outputs; i++) {
    KILN_VEC_PUSH(m->outputs, m->n_outputs, m->cap_outputs, g->outputs[i]);
    r->slot_tensor[r->n_slots++] = g->outputs[i];
  }
  for (int t = 0; t < g->n_tensors; t++) {
    if (!r->watch[t] || g->tensors[t].kind != KILN_TENSOR_VALUE || g->tensors[t].is_output)
      continue;
    m->tensors[t].is_output = true;
    KILN_VEC_PUSH(m->outputs, m->n_outputs, m->cap_outputs, t);
    r->slot_tensor[r->n_slots++] = t;
  }
  return m;
}

// Compiles the observing copy into r->exe; false (after a warning) if anything fails.
static bool build(run *r) {
  const char *tmp = getenv("TMPDIR");
  snprintf(r->dir, sizeof r->dir, "%s/kiln-calib-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(r->dir)) {
    fprintf(stderr, "kiln: warning: calibration: mkdtemp: %s\n", strerror(errno));
    r->dir[0] = '\0';
    return false;
  }
  snprintf(r->exe, sizeof r->exe, "%s/calib", r->dir);
  kiln_diag d;
  kiln_diag_init(&d, r->g->source_file);
  kiln_graph *m = observing_copy(r);
  kiln_graph_compact(m);
  kiln_compilation c;
  kiln_compilation_init(&c, m);
  kiln_build_options o = {.target = "native"};
  bool ok = kiln_graph_toposort(m, &d) && kiln_compile_pipeline(&c, &d) &&
            kiln_build_binary(c.prog, &o, r->exe, &d);
  kiln_compilation_free(&c);
  return ok;
}

static void slot_path(const run *r, int k, char *path, size_t size) {
  snprintf(path, size, "%s/out%d.npy", r->dir, k);
}

static void remove_files(run *r) {
  if (!r->dir[0]) return;
  char path[400];
  for (int k = 0; k < r->n_slots; k++) slot_path(r, k, path, sizeof path), unlink(path);
  const char *names[] = {"calib", "calib.weights", "x.npy"};
  for (int i = 0; i < 3; i++) snprintf(path, sizeof path, "%s/%s", r->dir, names[i]), unlink(path);
  rmdir(r->dir);
}

// Shows the values of array a (batches of tensor t) to the observer, batch by batch.
static void observe_array(run *r, int t, const kiln_array *a) {
  int64_t per = kiln_shape_numel(&r->g->tensors[t].shape), total = kiln_array_numel(a);
  double *v = malloc(sizeof(double) * (size_t)per);
  for (int64_t at = 0; at + per <= total; at += per) {
    for (int64_t i = 0; i < per; i++) v[i] = kiln_element_get(a->data, a->dtype, at + i);
    r->observe(r->g, t, v, r->ctx);
  }
  free(v);
}

static bool run_binary(run *r, const char *x_path) {
  char **argv = calloc((size_t)(2 * r->n_slots + 4), sizeof(char *));
  char(*paths)[400] = malloc(sizeof(*paths) * (size_t)r->n_slots);
  int n = 0;
  argv[n++] = r->exe, argv[n++] = "--input", argv[n++] = (char *)x_path;
  for (int k = 0; k < r->n_slots; k++) {
    slot_path(r, k, paths[k], sizeof paths[k]);
    argv[n++] = "--output", argv[n++] = paths[k];
  }
  char out[4096];
  bool ok = kiln_measure_run(argv, out, sizeof out);
  free(argv), free(paths);
  return ok;
}

static bool binary_file(run *r, const kiln_array *x) {
  char x_path[400], err[512];
  snprintf(x_path, sizeof x_path, "%s/x.npy", r->dir);
  if (kiln_npy_write(x_path, x, err, sizeof err) != KILN_OK || !run_binary(r, x_path)) {
    kiln_diag_error(r->q->d, r->g->source_file, "calibration: the compiled model failed (%s)",
                    r->exe);
    return false;
  }
  const int input = r->g->inputs[0];
  if (r->watch[input]) observe_array(r, input, x);
  for (int k = 0; k < r->n_slots; k++) {
    char path[400];
    kiln_array a;
    slot_path(r, k, path, sizeof path);
    if (kiln_npy_read(path, &a, err, sizeof err) != KILN_OK) {
      kiln_diag_error(r->q->d, path, "calibration: %s", err);
      return false;
    }
    if (r->watch[r->slot_tensor[k]]) observe_array(r, r->slot_tensor[k], &a);
    kiln_array_free(&a);
  }
  return true;
}

// ---- Choosing the engine ----

static double graph_flops(const kiln_graph *g) {
  double sum = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_op_def *def = kiln_op_get(g->nodes[i].op);
    if (!g->nodes[i].dead && def->flops) sum += (double)def->flops(g, &g->nodes[i]);
  }
  return sum;
}

static bool wants_binary(const run *r, int64_t samples) {
  kiln_calib_engine e = r->q->o->engine;
  if (e != KILN_CALIB_RUN_AUTO) return e == KILN_CALIB_RUN_BINARY;
  int64_t batch = r->g->tensors[r->g->inputs[0]].shape.dim[0];
  double seconds = graph_flops(r->g) * (double)(samples / batch) / INTERP_FLOPS_PER_SECOND;
  return seconds > AUTO_SECONDS;
}

// ---- The files ----

static bool check_sample_file(const run *r, const char *path, const kiln_array *a) {
  const kiln_tensor *in = &r->g->tensors[r->g->inputs[0]];
  bool same = a->dtype == KILN_RT_F32 && a->rank == in->shape.rank;
  for (int k = 1; same && k < a->rank; k++) same = a->shape[k] == in->shape.dim[k];
  if (!same) {
    char want[128];
    kiln_diag_error(r->q->d, path,
                    "--calibrate: expected f32 samples of shape (S, ...) matching input '%s' %s",
                    in->name, kiln_shape_str(&in->shape, want, sizeof want));
    return false;
  }
  if (a->shape[0] < in->shape.dim[0]) {
    kiln_diag_error(r->q->d, path, "--calibrate: %lld samples, fewer than one batch of %lld",
                    (long long)a->shape[0], (long long)in->shape.dim[0]);
    return false;
  }
  return true;
}

// Calibration file f as whole batches, at most `left` samples (0: all).
static bool read_samples(run *r, int f, int64_t left, kiln_array *a) {
  char err[512];
  const char *path = r->q->o->files[f];
  if (kiln_npy_read(path, a, err, sizeof err) != KILN_OK) {
    kiln_diag_error(r->q->d, path, "--calibrate: %s", err);
    return false;
  }
  if (!check_sample_file(r, path, a)) {
    kiln_array_free(a);
    return false;
  }
  int64_t batch = r->g->tensors[r->g->inputs[0]].shape.dim[0], n = a->shape[0];
  if (left > 0 && n > left) n = left;
  n -= n % batch;  // a last partial batch is dropped
  a->nbytes = a->nbytes / (size_t)a->shape[0] * (size_t)n;
  a->shape[0] = n;
  return true;
}

static int64_t samples_in_files(run *r) {
  int64_t total = 0;
  for (int f = 0; f < r->q->o->n_files; f++) {
    kiln_array a;
    if (!read_samples(r, f, r->limit > 0 ? r->limit - total : 0, &a)) return -1;
    total += a.shape[0];
    kiln_array_free(&a);
    if (r->limit > 0 && total >= r->limit) break;
  }
  return total;
}

int64_t kiln_ptq_run_samples(ptq *q, const kiln_graph *g, const bool *watch, int64_t limit,
                             kiln_interp_observer observe, void *ctx) {
  run r = {.q = q, .g = g, .watch = watch, .limit = limit, .observe = observe, .ctx = ctx};
  int64_t total = samples_in_files(&r), done = 0;
  if (total < 0) return -1;
  bool binary = wants_binary(&r, total) && build(&r);
  if (wants_binary(&r, total) && !binary)
    fprintf(stderr,
            "kiln: warning: calibration: could not compile the model (above); running "
            "the reference interpreter instead (slow)\n");
  int64_t batch = g->tensors[g->inputs[0]].shape.dim[0];
  bool ok = true;
  for (int f = 0; ok && f < q->o->n_files && (limit <= 0 || done < limit); f++) {
    kiln_array a;
    ok = read_samples(&r, f, limit > 0 ? limit - done : 0, &a);
    if (!ok) break;
    if (a.shape[0] > 0) ok = binary ? binary_file(&r, &a) : interp_file(&r, &a, batch);
    done += a.shape[0];
    kiln_array_free(&a);
  }
  remove_files(&r);
  free(r.slot_tensor);
  return ok ? done : -1;
}
