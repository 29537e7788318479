// Data-parallel training over MPI (docs/distributed.md): the main of trainers built with
// `kiln build --train --distributed mpi`. Every rank runs the same trainer (train.c) on the same
// seeded order of samples; on each global batch, rank r takes the r-th contiguous shard, runs the
// generated backward half of the step (NAME_train_grads) on it micro-batch by micro-batch
// (accumulating when the shard holds several), and the gradients are summed over all ranks with
// MPI_Iallreduce in buckets of one contiguous buffer, divided by the number of micro-batches in
// the global batch, and handed to the generated update half (NAME_apply_update), identically on
// every rank. The initial state is broadcast from rank 0.
//
// Communication does not overlap the backward pass: the generated backward half is one call, so
// the all-reduce starts when it returns (the buckets then travel concurrently). A rank that
// fails stops the whole job with MPI_Abort; checkpoints (rank 0) are written atomically, so the
// last one stays intact.
//
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

typedef struct mpi_state {
  float *flat;   // every gradient, contiguous, in output order
  size_t numel;  // floats in flat
  int64_t fault_step;
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

// Sums flat over all ranks in place, one non-blocking all-reduce per bucket, and the two scalars
// (loss, stop) meanwhile.
static int allreduce(const kiln_train_comm *c, mpi_state *s, double scalars[2]) {
  size_t n_buckets = (s->numel + BUCKET_FLOATS - 1) / BUCKET_FLOATS;
  MPI_Request *req = malloc(sizeof(MPI_Request) * (n_buckets ? n_buckets : 1));
  if (!req) return KILN_ERR_NOMEM;
  int err = MPI_SUCCESS;
  for (size_t i = 0; i < n_buckets && err == MPI_SUCCESS; i++) {
    size_t first = i * BUCKET_FLOATS;
    size_t n = s->numel - first < BUCKET_FLOATS ? s->numel - first : BUCKET_FLOATS;
    err = MPI_Iallreduce(MPI_IN_PLACE, s->flat + first, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                         &req[i]);
  }
  if (err == MPI_SUCCESS)
    err = MPI_Allreduce(MPI_IN_PLACE, scalars, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  if (err == MPI_SUCCESS) err = MPI_Waitall((int)n_buckets, req, MPI_STATUSES_IGNORE);
  free(req);
  return err == MPI_SUCCESS ? KILN_OK : report_mpi("the gradient all-reduce", err, c->rank);
}

// ---- Gradients between the two halves of the step ----

// flat (+)= the gradient outputs.
static void gather_grads(const kiln_train_batch *b, float *flat, bool accumulate) {
  const kiln_train_desc *t = b->t;
  size_t at = 0;
  for (int g = 0; g < t->n_grads; g++) {
    const float *src = b->out[t->first_grad_output + g];
    size_t n = output_numel(t, t->first_grad_output + g);
    if (accumulate)
      for (size_t i = 0; i < n; i++) flat[at + i] += src[i];
    else
      memcpy(flat + at, src, n * sizeof(float));
    at += n;
  }
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
  for (int64_t k = 0; k < micro_batches; k++) {
    b->fill(b->session, shard + k * b->micro);
    int st = t->grads(b->ctx, (const void *const *)b->in, b->out);
    if (st != KILN_OK) return st;
    scalars[0] += kiln_element_get(b->out[0], t->model->outputs[0].dtype, 0);
    gather_grads(b, s->flat, k > 0);
  }
  int st = allreduce(c, s, scalars);
  if (st != KILN_OK) return st;
  double parts = (double)micro_batches * c->size;  // mean of equally sized micro-batch means
  scatter_grads(b, s->flat, (float)(1.0 / parts));
  b->loss = scalars[0] / parts;
  b->stop = scalars[1] > 0;
  return t->apply(b->ctx, (const void *const *)b->in, b->out);
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

static int64_t fault_step_from_env(void) {
  const char *v = getenv("KILN_MPI_FAULT_STEP");
  return v && *v ? strtoll(v, NULL, 10) : -1;
}

int kiln_train_mpi_main(const kiln_train_desc *t, int argc, char **argv) {
  if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
    fprintf(stderr, "kiln-train: MPI_Init failed (run the trainer with mpirun)\n");
    return 1;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);  // report, then abort the job
  MPI_Comm failures;  // where failing ranks meet (all_ranks_arrive)
  MPI_Comm_dup(MPI_COMM_WORLD, &failures);
  mpi_state s = {.fault_step = fault_step_from_env()};
  kiln_train_comm c = {.broadcast = broadcast, .step = step, .impl = &s};
  MPI_Comm_rank(MPI_COMM_WORLD, &c.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &c.size);
  int rc = 2;
  if (t && t->model && check_desc(t, &s.numel)) {
    s.flat = kiln_aligned_alloc((s.numel ? s.numel : 1) * sizeof(float));
    rc = s.flat ? kiln_train_main_comm(t, argc, argv, &c) : 1;
  }
  kiln_aligned_free(s.flat);
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
