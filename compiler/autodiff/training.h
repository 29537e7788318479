// The `training` section of a JSON model (docs/training.md §1), checked, and the construction of
// the training graph from it (autodiff.c): forward pass, loss, backward pass and optimizer updates
// in one graph.
#ifndef KILN_AUTODIFF_TRAINING_H
#define KILN_AUTODIFF_TRAINING_H

#include <json-c/json.h>

#include "../../ir/graph.h"

typedef enum {
  KILN_LOSS_MSE,
  KILN_LOSS_MAE,
  KILN_LOSS_HUBER,
  KILN_LOSS_BCE,
  KILN_LOSS_BCE_WITH_LOGITS,
  KILN_LOSS_CROSS_ENTROPY,
  KILN_LOSS_KL_DIV,
  KILN_LOSS_CLIPPED_MSE,
  KILN_LOSS_COUNT
} kiln_loss_kind;

typedef enum { KILN_REDUCE_MEAN, KILN_REDUCE_SUM, KILN_REDUCE_BATCHMEAN } kiln_loss_reduction;

typedef enum {
  KILN_OPT_SGD,
  KILN_OPT_ADAM,
  KILN_OPT_ADAMW,
  KILN_OPT_ADAGRAD,
  KILN_OPT_RMSPROP
} kiln_opt_kind;

// `training.optimizer` (or an adversarial phase's `optimizer`).
typedef struct kiln_optimizer_spec {
  kiln_opt_kind kind;
  double lr, momentum, dampening, beta1, beta2, eps, weight_decay, initial_accumulator;
  double alpha;  // rmsprop
  bool nesterov;
} kiln_optimizer_spec;

typedef enum { KILN_SCHED_CONSTANT, KILN_SCHED_STEP, KILN_SCHED_COSINE } kiln_sched_kind;

// One loss (`training.loss`) or one term of `training.loss.terms` (docs/training.md §8).
typedef struct kiln_loss_spec {
  kiln_loss_kind kind;
  bool is_tensor;      // kind "tensor": the term is a graph tensor the model computes, reduced
  const char *output;  // graph tensor the loss reads
  const char *target;  // name of the new label input, or NULL (no target, or target_input)
  const char *target_input;  // `"target": {"input": NAME}`: an existing model input, or NULL
  // `"target": {"tensor": NAME}`: a tensor the model computes (a teacher's soft labels), or NULL;
  // no gradient flows into it (a stop-gradient)
  const char *target_tensor;
  kiln_dtype target_dtype;
  bool target_has_shape;
  kiln_shape target_shape;
  const char *weight;  // name of the new per-sample weight input, or NULL
  kiln_loss_reduction reduction;
  double delta;  // huber
  double clip;   // clipped_mse
  double coef;   // the term's weight in the sum (1 for a single loss)
  // Set by adversarial phases only (adversarial.c): the target is a constant, every element
  // target_value (a GAN's real = 1 / fake = 0 labels), and coef may be negative.
  bool has_target_value;
  double target_value;
} kiln_loss_spec;

// `training.adversarial` (docs/training.md §8): a generator G and a discriminator (critic) D in
// one model, trained alternately by two compiled steps (adversarial.c).
typedef enum { KILN_ADV_GAN, KILN_ADV_WGAN } kiln_adv_kind;
typedef struct kiln_adv_net {
  const char **params;  // the net's params (names)
  int n_params;
  kiln_optimizer_spec opt;
} kiln_adv_net;
typedef struct kiln_adversarial {
  bool present;
  kiln_adv_kind kind;  // gan: BCE losses (non-saturating G); wgan: Wasserstein losses
  const char *noise;   // G's input z: N(0, 1) noise in training builds
  const char *fake;    // G(z), the generated samples (a model output)
  const char *d_real;  // D(x) on the data input (logits for gan), (N, 1)
  const char *d_fake;  // D(G(z)), the same D on the fake samples
  kiln_adv_net g, d;
  int64_t n_critic;  // D steps per G step
  double clip;       // wgan weight clipping of D's params to [-clip, clip]; 0: none
} kiln_adversarial;

typedef struct kiln_training {
  bool present;  // the model has a non-empty `training` section
  int64_t batch_size;
  // The loss; with `loss.terms`, a copy of the first term (so that the driver finds the output
  // and the label input), and the terms themselves below.
  kiln_loss_spec loss;
  kiln_loss_spec *terms;  // n_terms >= 1 with `loss.terms`, else NULL
  int n_terms;
  // `noise`: model inputs replaced in training builds by seeded N(0, 1) noise drawn afresh every
  // step (NormalNoise(kiln.seed, kiln.step)); the inference build keeps them as inputs.
  const char **noise;
  int n_noise;
  kiln_optimizer_spec opt;
  struct {
    kiln_sched_kind kind;
    int64_t step_size, total_steps;
    double gamma, min_lr;
  } sched;
  double l1, l2;
  double clip_grad_norm;  // 0: no clipping
  const char **names;     // `frozen` or `trainable` names
  int n_names;
  bool names_are_trainable;  // the list came from `trainable`
  uint64_t seed;
  // `init`: params initialized afresh in training builds (name -> data, filled at parse time)
  int n_inits;
  const char **init_names;
  void **init_data;
  // Set by the driver, not the JSON (kiln build --distributed): every trainable param's gradient
  // (before clipping) also becomes a graph output, after the model's, so that a data-parallel
  // trainer can average it across processes between the backward pass and the update.
  bool expose_grads;
  // Also the driver's (kiln build --distributed mpi --sync-bn): BatchNormalization's batch
  // statistics averaged over the ranks (RankMean, docs/distributed.md).
  bool sync_bn;
  // `augment` and `normalize`, as the trainer's spec string (runtime/augment.h), or NULL
  const char *augment;
  // `adversarial` (docs/training.md §8); then loss and optimizer are the phases', made by
  // kiln_adversarial_phase, which also sets the fields below (zero otherwise).
  kiln_adversarial adv;
  const char **shared;    // params that become STATE without training (the other net's): the
  int n_shared;           // trainer copies their values in between steps
  double clip_weights;    // > 0: WeightClip of every trained param to [-c, c] after its update
  const char *step_name;  // the step counter's name (NULL: KILN_STEP_TENSOR)
  int64_t noise_salt;     // the noise inputs' salt base (0: 2^32; docs/training.md §8)
} kiln_training;

const char *kiln_loss_kind_name(kiln_loss_kind k);  // "mse", ...

// Checks the `training` object of a loaded graph's model strictly (unknown fields, types, ranges,
// names that must exist in g) and fills *out; strings live in g's pool. Errors are reported as
// "training.optimizer.lr: ..." through d. An empty object leaves out->present false.
bool kiln_training_parse(json_object *tr, kiln_graph *g, kiln_training *out, kiln_diag *d);

// Replaces g with the training graph (docs/training.md §3): inputs re-batched to
// t->batch_size, the loss and regularizers, the gradients, clipping, and one optimizer-update node
// per trainable param, which becomes a STATE tensor (as do the optimizer's state and the step
// counter `kiln.step`). Outputs: the loss (shape (1,)), then the model's outputs. The nodes up to
// the one producing the loss compute the forward pass and the loss; every node after it computes
// gradients or updates (eval runs only the first part: backends/c). Returns false after reporting.
bool kiln_build_training_graph(kiln_graph *g, const kiln_training *t, kiln_diag *d);

// The name of the step counter STATE tensor (i64, shape (1,)).
#define KILN_STEP_TENSOR "kiln.step"

// ---- Adversarial training (adversarial.c, docs/training.md §8) ----

// The generator step's step counter.
#define KILN_G_STEP_TENSOR "kiln.g_step"
typedef enum { KILN_PHASE_D, KILN_PHASE_G } kiln_adv_phase;

// Checks `training.adversarial` into t->adv (the model's loss and optimizer fields must then be
// absent). Errors name "training.adversarial.FIELD".
bool kiln_adversarial_parse(json_object *adv, kiln_graph *g, kiln_training *t, kiln_diag *d);
// The training section of one phase of an adversarial model, for kiln_build_training_graph:
// D (the discriminator's step: its loss, its params trained, G's shared) or G (the generator's
// step, named "<model>_g", with its own step counter kiln.g_step; D's params shared). Keeps in
// g's outputs only what the phase needs (D: fake, d_real, d_fake; G: fake, d_fake). Strings
// live in g's pool.
bool kiln_adversarial_phase(const kiln_training *t, kiln_adv_phase phase, kiln_graph *g,
                            kiln_training *out, kiln_diag *d);

#endif
