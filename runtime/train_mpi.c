// Data-parallel training over MPI (docs/distributed.md): the main of trainers built with
// `kiln build --train --distributed mpi`. Every rank runs the same trainer (train.c) on the same
// seeded order of samples; on each global batch, rank r takes the r-th contiguous shard, runs the
// generated backward half of the step (NAME_train_grads) on it micro-batch by micro-batch
// (accumulating when the shard holds several), and the gradients are summed over all ranks with
// MPI_Iallreduce in buckets of one contiguous buffer, divided by the number of micro-batches in
// the global batch, and handed to the generated update half (NAME_apply_update), identically on
// every rank. The initial state is broadcast from rank 0, and BatchNorm's running statistics are
// made rank 0's after every step (PyTorch DDP's broadcast_buffers).
//
// The generated half calls back into this file while it runs (kiln_dist_hooks, train_mpi.h): a
// gradient is final (in the last micro-batch, a bucket whose gradients are all final starts its
// all-reduce during the rest of the backward pass), a BatchNorm statistic is to be averaged over
// the ranks (--sync-bn), a running statistic was updated. A rank that fails stops the whole job
// with MPI_Abort; checkpoints (rank 0) are written atomically, so the last one stays intact.
//
// Environment: KILN_MPI_BUCKET_FLOATS=N (bucket size), KILN_MPI_OVERLAP=0 (start every bucket
// after the backward half), KILN_MPI_TIMING=1 (rank 0 prints median step times at the end).
// Test hook: KILN_MPI_FAULT_STEP=N makes the last rank kill itself with SIGKILL before step N
// (tests/test_mpi.sh uses it to check that a dead rank stops the job and that --resume recovers).
#include <limits.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln_rt_internal.h"
#include "train_mpi.h"

enum { EXIT_INTERRUPTED = 130 };

// Floats per all-reduce bucket (16 MiB): large enough to reach the link's bandwidth, small enough
// that several buckets are in flight at once on a large model.
#define BUCKET_FLOATS ((size_t)4 << 20)

// One all-reduce bucket: gradient outputs [first_grad, end_grad), floats [at, at + n) of flat.
typedef struct bucket {
  int first_grad, end_grad;
  size_t at, n;
  int pending;  // gradients of the bucket not yet final in this micro-batch
  MPI_Request req;
  bool started;
} bucket;

// KILN_MPI_TIMING=1 (docs/distributed.md, "Measured here"): per step, the wall time of the
// gradient half (all micro-batches) and of the wait for the all-reduce after it; rank 0 prints
// their medians at the end.
enum { MAX_TIMED_STEPS = 4096 };
typedef struct step_times {
  double grads_ms[MAX_TIMED_STEPS], wait_ms[MAX_TIMED_STEPS], step_ms[MAX_TIMED_STEPS];
  int n;
  int64_t early, buckets;  // buckets started during the gradient half, of all started
} step_times;

typedef struct model_buffer {
  void *p;
  size_t bytes;
} model_buffer;

typedef struct mpi_state {
  const kiln_train_comm *comm;
  float *flat;       // every gradient, contiguous, in output order
  size_t numel;      // floats in flat
  size_t *grad_at;   // per gradient output: its offset in flat
  int *grad_bucket;  // per gradient output: its bucket
  bool *gathered;    // per gradient output: copied into flat in this micro-batch
  bucket *buckets;
  int n_buckets;
  size_t bucket_floats;  // KILN_MPI_BUCKET_FLOATS (default BUCKET_FLOATS)
  bool overlap;          // KILN_MPI_OVERLAP=0: start the all-reduce after the backward half
  int64_t fault_step;
  // The micro-batch being run: where its gradients go, and whether it is the last one.
  const kiln_train_batch *batch;
  bool accumulate, last_micro;
  int err;                // the first MPI error of a callback (they cannot return one)
  step_times *times;      // KILN_MPI_TIMING=1, else NULL
  model_buffer *buffers;  // the model buffers the step updates (on_buffer_updated)
  int n_buffers, cap_buffers;
  bool buffers_lost;  // out of memory while recording them
} mpi_state;

static size_t output_numel(const kiln_train_desc *t, int i) {
  const kiln_io_desc *io = &t->model->outputs[i];
  size_t n = 1;
  for (int d = 0; d < io->rank; d++) n *= (size_t)io->shape[d];
  return n;
}

// ---- Collectives ----

static int report_mpi(const char *what, int err, int rank) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(err, msg, &len);
  fprintf(stderr, "kiln-train: rank %d: %s failed: %s (another rank probably died)\n", rank, what,
          msg);
  return KILN_ERR_IO;
}

static int broadcast(const kiln_train_comm *c, void *p, size_t bytes) {
  for (size_t done = 0; done < bytes;) {  // counts are ints: INT_MAX bytes at a time
    size_t n = bytes - done < (size_t)INT_MAX ? bytes - done : (size_t)INT_MAX;
    int err = MPI_Bcast((char *)p + done, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) return report_mpi("MPI_Bcast of the initial state", err, c->rank);
    done += n;
  }
  return KILN_OK;
}

// ---- Buckets ----
// Gradient outputs are grouped, from the last to the first (the backward pass finishes the last
// layers' gradients first), into buckets of at least bucket_floats floats (one large gradient is
// a bucket of its own). Each bucket is a contiguous range of flat.

static bool make_buckets(mpi_state *s, const kiln_train_desc *t) {
  int n = t->n_grads;
  s->grad_at = calloc((size_t)n, sizeof(size_t));
  s->grad_bucket = calloc((size_t)n, sizeof(int));
  s->gathered = calloc((size_t)n, sizeof(bool));
  s->buckets = calloc((size_t)n, sizeof(bucket));
  if (!s->grad_at || !s->grad_bucket || !s->gathered || !s->buckets) return false;
  for (int g = 1; g < n; g++)
    s->grad_at[g] = s->grad_at[g - 1] + output_numel(t, t->first_grad_output + g - 1);
  for (int end = n; end > 0;) {  // bucket [first, end)
    int first = end;
    size_t floats = 0;
    while (first > 0 && (floats == 0 || floats < s->bucket_floats))
      floats += output_numel(t, t->first_grad_output + --first);
    s->buckets[s->n_buckets++] =
        (bucket){.first_grad = first, .end_grad = end, .at = s->grad_at[first], .n = floats};
    for (int g = first; g < end; g++) s->grad_bucket[g] = s->n_buckets - 1;
    end = first;
  }
  return true;
}

static void free_buckets(mpi_state *s) {
  free(s->grad_at);
  free(s->grad_bucket);
  free(s->gathered);
  free(s->buckets);
}

static void keep_error(mpi_state *s, int err) {
  if (err != MPI_SUCCESS && s->err == MPI_SUCCESS) s->err = err;
}

// Starts the sum over all ranks of bucket i, in place.
static void start_bucket(mpi_state *s, int i) {
  bucket *k = &s->buckets[i];
  if (k->started || s->err != MPI_SUCCESS) return;
  k->started = true;
  keep_error(s, MPI_Iallreduce(MPI_IN_PLACE, s->flat + k->at, (int)k->n, MPI_FLOAT, MPI_SUM,
                               MPI_COMM_WORLD, &k->req));
}

// Lets the all-reduces in flight progress (Open MPI's TCP transport moves data only inside MPI
// calls).
static void progress(mpi_state *s) {
  for (int i = 0; i < s->n_buckets && s->err == MPI_SUCCESS; i++) {
    if (!s->buckets[i].started || s->buckets[i].req == MPI_REQUEST_NULL) continue;
    int done = 0;
    keep_error(s, MPI_Test(&s->buckets[i].req, &done, MPI_STATUS_IGNORE));
  }
}

// ---- Gradients between the two halves of the step ----

// flat (+)= gradient output g (once per micro-batch).
static void gather_grad(mpi_state *s, int g) {
  const kiln_train_batch *b = s->batch;
  const kiln_train_desc *t = b->t;
  if (s->gathered[g]) return;
  s->gathered[g] = true;
  const float *src = b->out[t->first_grad_output + g];
  float *dst = s->flat + s->grad_at[g];
  size_t n = output_numel(t, t->first_grad_output + g);
  if (s->accumulate)
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
  else
    memcpy(dst, src, n * sizeof(float));
}

// The generated step's callback: gradient g is final. In the last micro-batch, a bucket whose
// gradients are all final starts its all-reduce while the backward pass goes on.
static void on_grad_ready(void *user, int g) {
  mpi_state *s = user;
  if (g < 0 || g >= s->batch->t->n_grads) return;
  gather_grad(s, g);
  bucket *k = &s->buckets[s->grad_bucket[g]];
  if (--k->pending == 0 && s->last_micro && s->overlap) {
    start_bucket(s, s->grad_bucket[g]);
    if (s->times) s->times->early++;
  }
  progress(s);
}

// The generated step's callback after a RankMean / RankSum kernel (--sync-bn): p = its mean /
// sum over the ranks, every rank calling it at the same point of the same step.
static void on_rank_reduce(void *user, float *p, int64_t n, bool mean) {
  mpi_state *s = user;
  if (s->err != MPI_SUCCESS) return;
  keep_error(s, MPI_Allreduce(MPI_IN_PLACE, p, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
  float scale = 1.0f / (float)s->comm->size;
  for (int64_t i = 0; i < n && mean; i++) p[i] *= scale;
}

// ---- Model buffers (BatchNorm running statistics) ----
// Like PyTorch DDP's broadcast_buffers: after every step, the model buffers the step updated
// (the generated step names each after updating it) become rank 0's on every rank, so that every
// rank evaluates and checkpoints the same model. The list is the same on every rank (the same
// generated code), in the order the step updated them.

static void on_buffer_updated(void *user, void *p, int64_t bytes) {
  mpi_state *s = user;
  for (int i = 0; i < s->n_buffers; i++)
    if (s->buffers[i].p == p) return;
  if (s->n_buffers == s->cap_buffers) {
    int cap = s->cap_buffers ? 2 * s->cap_buffers : 8;
    model_buffer *grown = realloc(s->buffers, sizeof(model_buffer) * (size_t)cap);
    if (!grown) {
      s->buffers_lost = true;
      return;
    }
    s->buffers = grown, s->cap_buffers = cap;
  }
  s->buffers[s->n_buffers++] = (model_buffer){p, (size_t)bytes};
}

static int broadcast_buffers(const kiln_train_comm *c, mpi_state *s) {
  if (s->buffers_lost) {
    fprintf(stderr, "kiln-train: rank %d: out of memory\n", c->rank);
    return KILN_ERR_NOMEM;
  }
  for (int i = 0; i < s->n_buffers; i++) {
    int st = broadcast(c, s->buffers[i].p, s->buffers[i].bytes);
    if (st != KILN_OK) return st;
  }
  return KILN_OK;
}

// One micro-batch through the gradient half, the callbacks installed.
static int run_grads(mpi_state *s, kiln_train_batch *b, bool accumulate, bool last) {
  s->batch = b, s->accumulate = accumulate, s->last_micro = last;
  memset(s->gathered, 0, sizeof(bool) * (size_t)b->t->n_grads);
  for (int i = 0; i < s->n_buckets; i++)
    s->buckets[i].pending = s->buckets[i].end_grad - s->buckets[i].first_grad;
  kiln_dist_hooks hooks = {.grad_ready = on_grad_ready,
                           .rank_reduce_f32 = on_rank_reduce,
                           .buffer_updated = on_buffer_updated,
                           .user = s};
  kiln_dist_set_hooks(&hooks);
  int st = b->t->grads(b->ctx, (const void *const *)b->in, b->out);
  kiln_dist_set_hooks(NULL);
  for (int g = 0; g < b->t->n_grads; g++) gather_grad(s, g);  // any the step did not report
  return st;
}

// Finishes the sum of flat over all ranks (starting the buckets not started yet) and sums the
// two scalars (loss, stop) meanwhile.
static int finish_allreduce(const kiln_train_comm *c, mpi_state *s, double scalars[2]) {
  for (int i = 0; i < s->n_buckets; i++) start_bucket(s, i);
  if (s->err == MPI_SUCCESS)
    keep_error(s, MPI_Allreduce(MPI_IN_PLACE, scalars, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
  for (int i = 0; i < s->n_buckets && s->err == MPI_SUCCESS; i++)
    keep_error(s, MPI_Wait(&s->buckets[i].req, MPI_STATUS_IGNORE));
  for (int i = 0; i < s->n_buckets; i++) s->buckets[i].started = false;
  return s->err == MPI_SUCCESS ? KILN_OK : report_mpi("the gradient all-reduce", s->err, c->rank);
}

// The gradient outputs = flat * scale.
static void scatter_grads(const kiln_train_batch *b, const float *flat, float scale) {
  const kiln_train_desc *t = b->t;
  size_t at = 0;
  for (int g = 0; g < t->n_grads; g++) {
    float *dst = b->out[t->first_grad_output + g];
    size_t n = output_numel(t, t->first_grad_output + g);
    for (size_t i = 0; i < n; i++) dst[i] = flat[at + i] * scale;
    at += n;
  }
}

// ---- Timing (KILN_MPI_TIMING=1) ----

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(double), compare_doubles);
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void record_step(mpi_state *s, double t0, double t1, double t2, double t3) {
  step_times *m = s->times;
  if (!m || m->n == MAX_TIMED_STEPS) return;
  m->grads_ms[m->n] = (t1 - t0) * 1e3, m->wait_ms[m->n] = (t2 - t1) * 1e3;
  m->step_ms[m->n++] = (t3 - t0) * 1e3;
  m->buckets += s->n_buckets;
}

static void print_times(const kiln_train_comm *c, mpi_state *s) {
  step_times *m = s->times;
  if (!m || c->rank != 0 || m->n == 0) return;
  int n = m->n;
  fprintf(stderr,
          "kiln-train: timing: %d steps, medians: step %.2f ms, gradient half %.2f ms, "
          "all-reduce wait after it %.2f ms (%d buckets, overlap %s: %lld of %lld started "
          "during the gradient half)\n",
          n, median(m->step_ms, n), median(m->grads_ms, n), median(m->wait_ms, n), s->n_buckets,
          s->overlap ? "on" : "off", (long long)m->early, (long long)m->buckets);
}

// ---- The step ----

static int step(const kiln_train_comm *c, kiln_train_batch *b) {
  mpi_state *s = c->impl;
  const kiln_train_desc *t = b->t;
  if (s->fault_step >= 0 && b->step == s->fault_step && c->rank == c->size - 1) {
    fprintf(stderr, "kiln-train: rank %d: KILN_MPI_FAULT_STEP=%lld: killing myself\n", c->rank,
            (long long)s->fault_step);
    raise(SIGKILL);
  }
  int64_t local = b->global / c->size, micro_batches = local / b->micro;
  const int64_t *shard = b->idx + (int64_t)c->rank * local;  // rank r: the r-th slice
  double scalars[2] = {0, b->stop};                          // loss sum, stop votes
  double t0 = MPI_Wtime();
  for (int64_t k = 0; k < micro_batches; k++) {
    b->fill(b->session, shard + k * b->micro);
    int st = run_grads(s, b, k > 0, k == micro_batches - 1);
    if (st != KILN_OK) return st;
    if (s->err != MPI_SUCCESS) return report_mpi("a collective of the step", s->err, c->rank);
    scalars[0] += kiln_element_get(b->out[0], t->model->outputs[0].dtype, 0);
  }
  double t1 = MPI_Wtime();
  int st = finish_allreduce(c, s, scalars);
  if (st != KILN_OK) return st;
  double t2 = MPI_Wtime();
  double parts = (double)micro_batches * c->size;  // mean of equally sized micro-batch means
  scatter_grads(b, s->flat, (float)(1.0 / parts));
  b->loss = scalars[0] / parts;
  b->stop = scalars[1] > 0;
  st = t->apply(b->ctx, (const void *const *)b->in, b->out);
  if (st == KILN_OK) st = broadcast_buffers(c, s);
  record_step(s, t0, t1, t2, MPI_Wtime());
  return st;
}

// ---- Main ----

// The build must expose float gradients and the two halves of the step.
static bool check_desc(const kiln_train_desc *t, size_t *numel) {
  if (!t->grads || !t->apply || t->n_grads <= 0) {
    fprintf(stderr,
            "kiln-train: this trainer was not built for data-parallel training "
            "(kiln build --train --distributed mpi)\n");
    return false;
  }
  *numel = 0;
  for (int g = 0; g < t->n_grads; g++) {
    const kiln_io_desc *io = &t->model->outputs[t->first_grad_output + g];
    if (io->dtype != KILN_RT_F32) {
      fprintf(stderr, "kiln-train: gradient %s is %s; data-parallel training averages f32 only\n",
              io->name, kiln_rt_dtype_name(io->dtype));
      return false;
    }
    *numel += output_numel(t, t->first_grad_output + g);
  }
  return true;
}

// Whether every rank reaches this point within `seconds` (a barrier on a communicator of its own,
// so that it cannot match a collective another rank is blocked in).
static bool all_ranks_arrive(MPI_Comm comm, double seconds) {
  MPI_Request req;
  if (MPI_Ibarrier(comm, &req) != MPI_SUCCESS) return false;
  double deadline = MPI_Wtime() + seconds;
  int done = 0;
  while (!done && MPI_Wtime() < deadline) {
    if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return false;
    if (!done) {
      struct timespec pause = {0, 1000000};
      nanosleep(&pause, NULL);
    }
  }
  return done != 0;
}

static int64_t int_from_env(const char *name, int64_t dflt) {
  const char *v = getenv(name);
  return v && *v ? strtoll(v, NULL, 10) : dflt;
}

int kiln_train_mpi_main(const kiln_train_desc *t, int argc, char **argv) {
  if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
    fprintf(stderr, "kiln-train: MPI_Init failed (run the trainer with mpirun)\n");
    return 1;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);  // report, then abort the job
  MPI_Comm failures;  // where failing ranks meet (all_ranks_arrive)
  MPI_Comm_dup(MPI_COMM_WORLD, &failures);
  int64_t bucket_floats = int_from_env("KILN_MPI_BUCKET_FLOATS", (int64_t)BUCKET_FLOATS);
  mpi_state s = {.fault_step = int_from_env("KILN_MPI_FAULT_STEP", -1),
                 .bucket_floats = bucket_floats > 0 ? (size_t)bucket_floats : BUCKET_FLOATS,
                 .overlap = int_from_env("KILN_MPI_OVERLAP", 1) != 0};
  kiln_train_comm c = {.broadcast = broadcast, .step = step, .impl = &s};
  s.comm = &c;
  if (int_from_env("KILN_MPI_TIMING", 0)) s.times = calloc(1, sizeof(step_times));
  MPI_Comm_rank(MPI_COMM_WORLD, &c.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &c.size);
  int rc = 2;
  if (t && t->model && check_desc(t, &s.numel)) {
    s.flat = kiln_aligned_alloc((s.numel ? s.numel : 1) * sizeof(float));
    rc = s.flat && make_buckets(&s, t) ? kiln_train_main_comm(t, argc, argv, &c) : 1;
    print_times(&c, &s);
  }
  kiln_aligned_free(s.flat);
  free_buckets(&s);
  free(s.times);
  free(s.buffers);
  fflush(stdout);
  fflush(stderr);
  // Every rank agrees on an interruption (the stop vote of the step). Another failure is either
  // every rank's (bad flags or data: they all stop at the same check) or one rank's alone while
  // the others wait in a collective: then end them all.
  if (rc != 0 && rc != EXIT_INTERRUPTED && !all_ranks_arrive(failures, 5.0))
    MPI_Abort(MPI_COMM_WORLD, rc);
  MPI_Comm_free(&failures);
  MPI_Finalize();
  return rc;
}
