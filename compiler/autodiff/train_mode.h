// Training-mode rewrites of the forward graph (docs/training.md §3): ops that behave differently
// when training are replaced, in place in the node order, by graph ops computing their training
// behaviour, so that the ordinary gradient rules differentiate them:
//   BatchNormalization -> one BatchNormTrain node (compiler/ops/nn/batchnorm_train.c: batch
//     statistics over every axis but the channels, the normalization and the affine map, and a
//     Relu that is the output's only reader, absorbed), differentiated by BatchNormTrainGrad;
//     with --sync-bn, graph ops (ReduceMean, RankMean, ...) instead. The running mean and
//     variance become STATE tensors that RunningStatUpdate nodes (added after the backward pass)
//     update.
//   Dropout (ratio > 0) -> y = x * DropoutMask(kiln.seed, kiln.step): a fresh, seeded mask per
//     step, scaled by 1 / (1 - ratio); its gradient dy * mask comes from Mul's rule.
//   RandomNormalLike and `training.noise` inputs -> NormalNoise(kiln.seed, kiln.step): the
//     reparameterization noise of VAEs, fresh every step (not blended: evaluation draws too).
// Both read the mode flag `kiln.training` (STATE, (1), 1 = training, 0 = inference, like
// PyTorch's model.train() / model.eval()), blending without a branch:
//   mean = f * batch_mean + (1 - f) * running_mean (the variance likewise),
//   mask = f * DropoutMask + (1 - f).
// With f = 1 both are exactly the training values (x * 1 + 0), so the step and its gradients are
// unchanged; the trainer sets f = 0 around evaluation (runtime/train.c).
#ifndef KILN_AUTODIFF_TRAIN_MODE_H
#define KILN_AUTODIFF_TRAIN_MODE_H

#include "../../ir/graph.h"

// One running average to update after the step: running = running * momentum + batch * unbias *
// (1 - momentum).
typedef struct kiln_running_stat {
  int running;  // the STATE tensor (C)
  int batch;    // the batch statistic (numel C)
  double momentum, unbias;
} kiln_running_stat;

typedef struct kiln_train_mode {
  kiln_running_stat *stats;  // kiln_xmalloc'd; free with free()
  int n_stats;
  int seed;      // the `kiln.seed` STATE tensor (i64 (1)), or -1 without dropout
  int training;  // the `kiln.training` STATE flag ((1), 1 at init), or -1 without BN/Dropout
  // In (set by the caller, kept by the rewrite): --sync-bn (docs/distributed.md). The batch
  // mean and variance pass through RankMean (the mean over the ranks of a data-parallel job), so
  // that BatchNormalization normalizes with the global batch's statistics.
  bool sync_bn;
  // In, kept: the salt base of the noise inputs' streams (0: 2^32; adversarial generator steps
  // use another, docs/training.md §8).
  int64_t noise_salt;
} kiln_train_mode;

// The name of the dropout seed STATE tensor: training.seed at compile time, --seed in the trainer.
#define KILN_SEED_TENSOR "kiln.seed"
// The name of the training/inference mode flag: 1 for training steps, 0 for evaluation.
#define KILN_TRAINING_FLAG_TENSOR "kiln.training"

// Rewrites g's nodes (shapes must be inferred). `step` is the step counter tensor; seed the
// initial value of kiln.seed. The inputs named noise[0..n_noise) (training.noise) become
// NormalNoise(kiln.seed, kiln.step) outputs, as do RandomNormalLike nodes: fresh N(0, 1) noise
// every step. Returns false after reporting.
bool kiln_training_mode_rewrite(kiln_graph *g, int step, uint64_t seed, const char *const *noise,
                                int n_noise, kiln_train_mode *out, kiln_diag *d);

// BatchNormalization nodes with training_mode = 1 in a model (inference or not) become a
// BatchNormTrain node with the flag a constant 1 (Y normalized with the batch's statistics) and
// graph ops for the optional outputs running_mean = input_mean * momentum + mean * (1 - momentum)
// and running_var likewise with the biased batch variance (ONNX). Shapes must be inferred. False
// after reporting.
bool kiln_batchnorm_training_expand(kiln_graph *g, kiln_diag *d);

#endif
