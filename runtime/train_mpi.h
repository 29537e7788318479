// Data-parallel training (docs/distributed.md): the interface between the trainer (train.c, in
// libkiln-runtime.a, which does not depend on MPI) and its MPI implementation (train_mpi.c, in
// libkiln-runtime-mpi.a, linked only into trainers built with `kiln build --distributed mpi`).
//
// The trainer stays in charge of data, shuffling, logging and checkpoints; a kiln_train_comm
// tells it its rank and does the collective parts: broadcasting the initial state, and the step
// on one global batch (each rank's shard, gradient all-reduce, identical update).
#ifndef KILN_TRAIN_MPI_H
#define KILN_TRAIN_MPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln_runtime.h"

// One step on one global batch, as the trainer hands it to the communicator.
typedef struct kiln_train_batch {
  const kiln_train_desc *t;
  void *ctx;
  void **in, **out;    // the model's input and output buffers (one micro-batch)
  int64_t micro;       // samples per call of the generated step (training.batch_size)
  int64_t global;      // samples per global batch (--batch), a multiple of micro * size
  const int64_t *idx;  // the global batch's sample indices, identical on every rank
  int64_t step;        // the step counter before this step
  void (*fill)(void *session, const int64_t *idx);  // copies micro samples into `in`
  void *session;
  int stop;     // in: this rank was interrupted; out: some rank was (every rank stops together)
  double loss;  // out: the mean loss over the global batch
} kiln_train_batch;

typedef struct kiln_train_comm {
  int rank, size;
  // Makes every rank's `bytes` at p equal to rank 0's.
  int (*broadcast)(const struct kiln_train_comm *c, void *p, size_t bytes);
  // Runs one step on this rank's shard of b->idx and averages the gradients over all ranks
  // before the update. Returns KILN_OK or a status.
  int (*step)(const struct kiln_train_comm *c, kiln_train_batch *b);
  void *impl;
} kiln_train_comm;

// Callbacks of generated data-parallel steps (backends/c, docs/distributed.md). The generated
// code calls kiln_dist_grad_ready(g) once gradient output g is final (after the last kernel
// writing it), and kiln_dist_rank_mean_f32(p, n) / kiln_dist_rank_sum_f32(p, n) after a RankMean
// / RankSum kernel (--sync-bn: p = its mean / sum over the ranks), and
// kiln_dist_buffer_updated(p, bytes) after a BatchNorm running statistic (a STATE tensor) is
// updated. All are defined in train.c, without MPI, and do nothing unless hooks are installed:
// train_mpi.c installs them around its calls of the step. Process-wide: one data-parallel
// trainer per process.
typedef struct kiln_dist_hooks {
  void (*grad_ready)(void *user, int grad);
  void (*rank_reduce_f32)(void *user, float *p, int64_t n, bool mean);
  void (*buffer_updated)(void *user, void *p, int64_t bytes);
  void *user;
} kiln_dist_hooks;

void kiln_dist_set_hooks(const kiln_dist_hooks *h);  // NULL: none (no-ops)
void kiln_dist_grad_ready(int grad);
void kiln_dist_rank_mean_f32(float *p, int64_t n);
void kiln_dist_rank_sum_f32(float *p, int64_t n);
void kiln_dist_buffer_updated(void *p, int64_t bytes);

// kiln_train_main with a communicator (NULL: one process). Rank 0 alone restores checkpoints,
// writes logs, checkpoints and the last line; every rank trains.
int kiln_train_main_comm(const kiln_train_desc *t, int argc, char **argv,
                         const kiln_train_comm *comm);

// The data-parallel trainer's main: MPI_Init, kiln_train_main_comm, MPI_Finalize (MPI_Abort
// with the exit code if any rank fails, so that no rank waits forever).
int kiln_train_mpi_main(const kiln_train_desc *t, int argc, char **argv);

#endif
