// The generated trainer (docs/training.md §5): kiln_train_main drives a training build's step
// function over a dataset (train_data.c) with seeded shuffling, batching, a progress bar, per-epoch
// evaluation, atomic checkpoints of every STATE tensor (kiln_state_save) and exact resumption.
//
// Resumption is exact because nothing but the STATE tensors carries over between steps: the
// order of epoch e is a permutation drawn from (seed, e), and the step counter `kiln.step` says
// where in it the run stopped.
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "augment.h"
#include "curves.h"
#include "kiln_rt_internal.h"
#include "plot.h"
#include "train_data.h"
#include "train_mpi.h"

enum { EXIT_OK = 0, EXIT_INTERNAL = 1, EXIT_BAD = 2, EXIT_INTERRUPTED = 130 };

// The training/inference mode flag (compiler/autodiff/train_mode.h, KILN_TRAINING_FLAG_TENSOR).
#define KILN_TRAINING_FLAG "kiln.training"

// ---- Checkpoints ----

static size_t state_bytes(const kiln_state_desc *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) n *= s->shape[i];
  return (size_t)n * kiln_rt_dtype_size(s->dtype);
}

int kiln_state_save(const kiln_train_desc *t, void *ctx, const char *path, char *err,
                    size_t errlen) {
  if (!t || !ctx || !path) return KILN_ERR_ARG;
  char *base = t->state(ctx);
  kiln_array *arrays = calloc((size_t)t->n_state + 1, sizeof(kiln_array));
  const char **names = calloc((size_t)t->n_state + 1, sizeof(char *));
  if (!arrays || !names) {
    free(arrays);
    free((void *)names);
    return KILN_ERR_NOMEM;
  }
  for (int i = 0; i < t->n_state; i++) {
    const kiln_state_desc *s = &t->states[i];
    names[i] = s->name;
    arrays[i] = (kiln_array){
        .dtype = s->dtype, .rank = s->rank, .data = base + s->offset, .nbytes = state_bytes(s)};
    memcpy(arrays[i].shape, s->shape, sizeof(int64_t) * (size_t)s->rank);
  }
  int st = kiln_safetensors_write(path, t->n_state, names, arrays, err, errlen);
  free(arrays);
  free((void *)names);
  return st;
}

static bool same_shape(const kiln_st_entry *e, const kiln_state_desc *s) {
  if (e->rank != s->rank) return false;
  for (int i = 0; i < s->rank; i++)
    if (e->shape[i] != s->shape[i]) return false;
  return true;
}

int kiln_state_load(const kiln_train_desc *t, void *ctx, const char *path, int strict, char *err,
                    size_t errlen) {
  if (!t || !ctx || !path) return KILN_ERR_ARG;
  kiln_safetensors st;
  int rc = kiln_safetensors_read(path, &st, err, errlen);
  if (rc != KILN_OK) return rc;
  char *base = t->state(ctx);
  int found = 0;
  for (int i = 0; i < t->n_state && rc == KILN_OK; i++) {
    const kiln_state_desc *s = &t->states[i];
    const kiln_st_entry *e = kiln_safetensors_find(&st, s->name);
    if (!e) {
      if (strict && strcmp(s->name, KILN_TRAINING_FLAG) != 0) {  // the flag: set after loading
        kiln_rt_errf(err, errlen, "%s: no tensor '%s'; a checkpoint of this model holds all %d",
                     path, s->name, t->n_state);
        rc = KILN_ERR_FORMAT;
      }
      continue;
    }
    if (e->dtype != s->dtype || !same_shape(e, s) || e->nbytes != state_bytes(s)) {
      kiln_rt_errf(err, errlen, "%s: tensor '%s' has dtype %s and %d dims, the model expects %s",
                   path, s->name, kiln_rt_dtype_name(e->dtype), e->rank,
                   kiln_rt_dtype_name(s->dtype));
      rc = KILN_ERR_SHAPE;
      continue;
    }
    memcpy(base + s->offset, e->data, e->nbytes);
    found++;
  }
  if (rc == KILN_OK && found == 0) {
    kiln_rt_errf(err, errlen, "%s: none of the model's %d trainable tensors is in it", path,
                 t->n_state);
    rc = KILN_ERR_FORMAT;
  }
  kiln_safetensors_free(&st);
  return rc;
}

// ---- Options ----

typedef struct options {
  const char *train, *test, *save, *resume, *log, *weights;
  int64_t epochs, batch, max_steps;
  uint64_t seed;
  int threads;
  // Fighting overfitting (docs/training.md, "Overfitting and underfitting")
  const char *val;      // --val SRC
  double val_fraction;  // --val-fraction F: held out of --train (0: none)
  int64_t train_limit;  // --train-limit N: train on N samples only (0: all)
  int64_t patience;     // --patience N: early stopping on the validation loss (0: off)
  bool keep_best;       // --keep-best: also keep the best epoch's checkpoint
  // Pictures of generative models (docs/training.md §8): --sample PREFIX, --sample-class C...
  const char *sample;
  int64_t sample_class[10];
  int n_sample_class;
  int64_t bench_steps;  // --bench-steps N: time N training steps on one batch instead of training
} options;

static void usage(const char *prog) {
  fprintf(stderr,
          "usage: %s --train SRC [--test SRC] [--epochs N] [--batch N] [--save CKPT.safetensors]\n"
          "          [--resume CKPT] [--weights FILE.safetensors] [--max-steps N] [--seed S]\n"
          "          [--log FILE.csv] [--threads N] [--val SRC | --val-fraction F]\n"
          "          [--train-limit N] [--patience N] [--keep-best]\n"
          "          [--sample PREFIX [--sample-class C]...]   (PNG image grids)\n"
          "          [--bench-steps N]   time N steps on one batch: prints median_ms=\n"
          "SRC: X.npy,Y.npy | IMAGES,LABELS (IDX, plain or .gz) | fashion-mnist:train|test |\n"
          "     mnist:train|test | FILE.csv (label in the last column)\n",
          prog);
}

static bool parse_int(const char *flag, const char *v, int64_t lo, int64_t *out) {
  char *end;
  errno = 0;
  long long x = v ? strtoll(v, &end, 10) : 0;
  if (!v || errno || end == v || *end || x < lo) {
    fprintf(stderr, "kiln-train: %s expects an integer >= %lld, got %s\n", flag, (long long)lo,
            v ? v : "nothing");
    return false;
  }
  *out = x;
  return true;
}

static bool parse_fraction(const char *flag, const char *v, double *out) {
  char *end;
  double x = v ? strtod(v, &end) : NAN;
  if (!v || end == v || *end || !(x > 0 && x < 1)) {
    fprintf(stderr, "kiln-train: %s expects a number in (0, 1), got %s\n", flag, v ? v : "nothing");
    return false;
  }
  *out = x;
  return true;
}

// The options of the validation family (--val-fraction, --train-limit, --patience, --keep-best);
// *used: 0 (not one of them), 1 (a flag alone) or 2 (a flag and its value); false on a bad value.
static bool parse_validation_option(const char *a, const char *v, options *o, int *used) {
  *used = 2;
  if (strcmp(a, "--val-fraction") == 0) return parse_fraction(a, v, &o->val_fraction);
  if (strcmp(a, "--train-limit") == 0) return parse_int(a, v, 1, &o->train_limit);
  if (strcmp(a, "--patience") == 0) return parse_int(a, v, 1, &o->patience);
  if (strcmp(a, "--sample-class") == 0) {
    if (o->n_sample_class == 10)
      return fprintf(stderr, "kiln-train: at most 10 --sample-class\n"), false;
    return parse_int(a, v, 0, &o->sample_class[o->n_sample_class++]);
  }
  if (strcmp(a, "--sample") == 0) {
    o->sample = v;
    return v ? true : (fprintf(stderr, "kiln-train: missing value for --sample\n"), false);
  }
  *used = strcmp(a, "--keep-best") == 0 ? 1 : 0;
  if (*used) o->keep_best = true;
  return true;
}

static bool parse_options(int argc, char **argv, const kiln_train_desc *t, options *o) {
  *o = (options){.epochs = 1, .max_steps = -1, .seed = t->seed};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int used;
    if (!parse_validation_option(a, v, o, &used)) return false;
    if (used) {
      i += used - 1;
      continue;
    }
    const char **slot = strcmp(a, "--train") == 0     ? &o->train
                        : strcmp(a, "--val") == 0     ? &o->val
                        : strcmp(a, "--test") == 0    ? &o->test
                        : strcmp(a, "--save") == 0    ? &o->save
                        : strcmp(a, "--resume") == 0  ? &o->resume
                        : strcmp(a, "--log") == 0     ? &o->log
                        : strcmp(a, "--weights") == 0 ? &o->weights
                                                      : NULL;
    int64_t x;
    if (slot) {
      if (!v) return fprintf(stderr, "kiln-train: missing value for %s\n", a), false;
      *slot = v;
    } else if (strcmp(a, "--epochs") == 0) {
      if (!parse_int(a, v, 1, &o->epochs)) return false;
    } else if (strcmp(a, "--batch") == 0) {
      if (!parse_int(a, v, 1, &o->batch)) return false;
    } else if (strcmp(a, "--max-steps") == 0) {
      if (!parse_int(a, v, 0, &o->max_steps)) return false;
    } else if (strcmp(a, "--bench-steps") == 0) {
      if (!parse_int(a, v, 1, &o->bench_steps)) return false;
    } else if (strcmp(a, "--seed") == 0) {
      if (!parse_int(a, v, 0, &x)) return false;
      o->seed = (uint64_t)x;
    } else if (strcmp(a, "--threads") == 0) {
      if (!parse_int(a, v, 1, &x)) return false;
      o->threads = (int)x;
    } else {
      fprintf(stderr, "kiln-train: unknown argument %s\n", a);
      return false;
    }
    i++;
  }
  if (!o->train) fprintf(stderr, "kiln-train: --train SRC is required\n");
  if (o->val && o->val_fraction > 0)
    return fprintf(stderr, "kiln-train: give --val or --val-fraction, not both\n"), false;
  if ((o->patience || o->keep_best) && !o->val && !o->val_fraction)
    return fprintf(stderr,
                   "kiln-train: --patience and --keep-best watch the validation loss: give --val "
                   "SRC or --val-fraction F\n"),
           false;
  if (o->keep_best && !o->save)
    return fprintf(stderr, "kiln-train: --keep-best needs --save CKPT (the best goes beside it)\n"),
           false;
  if (o->n_sample_class && !o->sample)
    return fprintf(stderr, "kiln-train: --sample-class needs --sample PREFIX\n"), false;
  return o->train != NULL;
}

// ---- The session: the model, its context and one batch of inputs and outputs ----

typedef struct session {
  const kiln_train_desc *t;
  const kiln_model_desc *m;
  void *ctx;
  void **in, **out;
  int data_input;
  // The input the data's labels (Y) feed: the loss's label input; for a loss without labels
  // (autoencoders), the model's second input if any (e.g. a CVAE's class), else -1 (Y ignored).
  int y_input;
  // The model's other inputs, in order, fed from the dataset's extra arrays ("X,Y,E1,..."); the
  // per-sample weight input, when it is the last and the data has no array for it, is all 1.
  int extra_input[KILN_DATASET_MAX_EXTRA];
  int n_extra;
  int64_t batch, x_numel, y_numel, classes;
  int64_t *step;  // the STATE step counter
  FILE *log;
  // Data-parallel training (train_mpi.h; NULL: one process) and its global batch (--batch; one
  // process: the compiled batch).
  const kiln_train_comm *comm;
  int64_t global_batch;
  // Augmentation and normalization (augment.h; the model's training.augment): the spec, the
  // samples' geometry, whether batches are augmented now (training, not evaluation), the seed
  // keying the random stream, and scratch for one sample (2 x x_numel floats).
  kiln_augment aug;
  kiln_image_shape img;
  bool augment_on;
  uint64_t aug_seed;
  float *scratch;
  struct batch_worker *worker;  // prepares the next batch while the step runs (one process)
  struct adv_session *adv;      // adversarial builds: the generator's step (else NULL)
} session;

// Rank 0 (or the only process) restores, logs, prints and writes checkpoints.
static bool leader(const session *s) { return !s->comm || s->comm->rank == 0; }

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

static int64_t io_numel(const kiln_io_desc *io) {
  int64_t n = 1;
  for (int i = 0; i < io->rank; i++) n *= io->shape[i];
  return n;
}

static void *alloc_io(const kiln_io_desc *io) {
  size_t bytes = (size_t)io_numel(io) * kiln_rt_dtype_size(io->dtype);
  void *p = kiln_aligned_alloc(bytes ? bytes : 64);
  if (p) memset(p, 0, bytes);
  return p;
}

static int64_t *find_step(const kiln_train_desc *t, void *ctx) {
  for (int i = 0; i < t->n_state; i++)
    if (strcmp(t->states[i].name, "kiln.step") == 0 && t->states[i].dtype == KILN_RT_I64)
      return (int64_t *)(void *)((char *)t->state(ctx) + t->states[i].offset);
  return NULL;
}

// --seed drives dropout too: the training step reads its masks' seed from the STATE tensor
// `kiln.seed` (models with training-mode Dropout; docs/training.md), set after any --resume.
static void set_dropout_seed(const kiln_train_desc *t, void *ctx, uint64_t seed) {
  for (int i = 0; i < t->n_state; i++)
    if (strcmp(t->states[i].name, "kiln.seed") == 0 && t->states[i].dtype == KILN_RT_I64)
      memcpy((char *)t->state(ctx) + t->states[i].offset, &seed, sizeof seed);
}

// The mode flag `kiln.training` (models with BatchNormalization or Dropout; docs/training.md §3):
// 1 for training steps, as at init; 0 while evaluating (running statistics, no dropout), like
// PyTorch's model.train() / model.eval(). Evaluation puts it back to 1 before returning, so the
// checkpoints always hold 1; it is set again after any --resume or --weights.
static void set_training_mode(const kiln_train_desc *t, void *ctx, bool training) {
  float f = training ? 1.0f : 0.0f;
  for (int i = 0; i < t->n_state; i++)
    if (strcmp(t->states[i].name, KILN_TRAINING_FLAG) == 0 && t->states[i].dtype == KILN_RT_F32)
      memcpy((char *)t->state(ctx) + t->states[i].offset, &f, sizeof f);
}

// The weights of a context: embedded, else the file argv0 + suffix. Returns an exit code.
static int init_weights(const kiln_model_desc *m, void *ctx, const char *argv0,
                        const char *suffix) {
  int st;
  if (m->init_embedded) {
    st = m->init_embedded(ctx);
  } else {
    size_t n = strlen(argv0) + strlen(suffix) + 1;
    char *path = malloc(n);
    if (!path) return EXIT_INTERNAL;
    snprintf(path, n, "%s%s", argv0, suffix);
    st = m->init_file(ctx, path);
    if (st != KILN_OK) fprintf(stderr, "kiln-train: %s: %s\n", path, kiln_status_str(st));
    free(path);
    if (st != KILN_OK) return st == KILN_ERR_NOMEM ? EXIT_INTERNAL : EXIT_BAD;
  }
  if (st != KILN_OK) return fprintf(stderr, "kiln-train: %s\n", kiln_status_str(st)), EXIT_BAD;
  return EXIT_OK;
}

// n zeroed buffers for the inputs or outputs io[0..n); false if out of memory.
static bool alloc_ios(const kiln_io_desc *io, int n, void ***bufs) {
  *bufs = calloc((size_t)n + 1, sizeof(void *));
  for (int i = 0; *bufs && i < n; i++)
    if (!((*bufs)[i] = alloc_io(&io[i]))) return false;
  return *bufs != NULL;
}

static int open_session(session *s, const kiln_train_desc *t, const char *argv0, const options *o) {
  memset(s, 0, sizeof(*s));
  s->t = t, s->m = t->model, s->data_input = -1, s->y_input = t->label_input;
  const kiln_model_desc *m = s->m;
  for (int i = 0; i < m->n_inputs; i++) {
    if (i == t->label_input) continue;
    if (s->data_input < 0 && i != t->weight_input) {
      s->data_input = i;
    } else if (s->n_extra == KILN_DATASET_MAX_EXTRA) {
      fprintf(stderr, "kiln-train: the model has more than %d inputs besides the samples\n",
              KILN_DATASET_MAX_EXTRA);
      return EXIT_BAD;
    } else {
      s->extra_input[s->n_extra++] = i;
    }
  }
  if (s->data_input < 0)
    return fprintf(stderr, "kiln-train: the model has no data input\n"), EXIT_BAD;
  if (s->y_input < 0 && s->n_extra > 0) {  // no label input: Y feeds the next input
    s->y_input = s->extra_input[0];
    memmove(s->extra_input, s->extra_input + 1, sizeof(int) * (size_t)--s->n_extra);
  }
  s->batch = m->inputs[s->data_input].shape[0];
  if (o->batch && o->batch != s->batch) {
    fprintf(stderr,
            "kiln-train: --batch %lld: this trainer was compiled for batch %lld "
            "(training.batch_size); rebuild it to change the batch\n",
            (long long)o->batch, (long long)s->batch);
    return EXIT_BAD;
  }
  s->x_numel = io_numel(&m->inputs[s->data_input]) / s->batch;
  s->y_numel = s->y_input >= 0 ? io_numel(&m->inputs[s->y_input]) / s->batch : 0;
  if (t->classification && t->logits_output > 0 && m->outputs[t->logits_output].rank == 2)
    s->classes = m->outputs[t->logits_output].shape[1];
  s->ctx = calloc(1, m->ctx_bytes);
  if (!s->ctx || !alloc_ios(m->inputs, m->n_inputs, &s->in) ||
      !alloc_ios(m->outputs, m->n_outputs, &s->out))
    return EXIT_INTERNAL;
  if (t->weight_input >= 0)  // per-sample weights: 1 unless the data gives them (fill_extras)
    for (int64_t k = 0; k < io_numel(&m->inputs[t->weight_input]); k++)
      kiln_element_set(s->in[t->weight_input], m->inputs[t->weight_input].dtype, k, 1.0);
  int st = init_weights(m, s->ctx, argv0, ".weights");
  if (st != EXIT_OK) return st;
  s->step = find_step(t, s->ctx);
  if (!s->step) return fprintf(stderr, "kiln-train: no step counter in the model\n"), EXIT_INTERNAL;
  return EXIT_OK;
}

static void free_batches(session *s);

static void close_adversarial(session *s);

static void close_session(session *s) {
  close_adversarial(s);
  free_batches(s);
  if (s->ctx && s->m) s->m->release(s->ctx);
  for (int i = 0; s->m && s->in && i < s->m->n_inputs; i++) kiln_aligned_free(s->in[i]);
  for (int i = 0; s->m && s->out && i < s->m->n_outputs; i++) kiln_aligned_free(s->out[i]);
  free(s->in);
  free(s->out);
  free(s->ctx);
  if (s->log) fclose(s->log);
}

// Class labels (one value a sample) feeding a float input of K > 1 values a sample (a CVAE's
// condition, when the loss has no label input) are one-hot encoded.
static bool one_hot_labels(const session *s, const kiln_dataset *d) {
  return s->t->label_input < 0 && d->y_numel == 1 && s->y_numel > 1 &&
         (s->m->inputs[s->y_input].dtype == KILN_RT_F32 ||
          s->m->inputs[s->y_input].dtype == KILN_RT_F64);
}

// One-hot labels must be classes in [0, K).
static bool check_one_hot(const session *s, const kiln_dataset *d) {
  for (int64_t i = 0; i < d->n; i++) {
    double l = kiln_dataset_y(d, i, 0);
    if (!(l >= 0 && l < (double)s->y_numel && l == floor(l))) {
      fprintf(stderr,
              "kiln-train: %s: the label of sample %lld is %g; the model's %s takes it one-hot, "
              "a class in [0, %lld)\n",
              d->source, (long long)i, l, s->m->inputs[s->y_input].name, (long long)s->y_numel);
      return false;
    }
  }
  return true;
}

// The data must fit the model: sample size, label size, class labels in range.
static bool check_data(const session *s, const kiln_dataset *d) {
  if (d->x_numel != s->x_numel) {
    fprintf(
        stderr, "kiln-train: %s: each sample has %lld values, the model's input %s takes %lld\n",
        d->source, (long long)d->x_numel, s->m->inputs[s->data_input].name, (long long)s->x_numel);
    return false;
  }
  if (s->y_input >= 0 && d->y_numel != s->y_numel && !one_hot_labels(s, d)) {
    fprintf(stderr, "kiln-train: %s: each label has %lld values, the model's %s takes %lld\n",
            d->source, (long long)d->y_numel, s->m->inputs[s->y_input].name, (long long)s->y_numel);
    return false;
  }
  // The extra arrays: one per further model input; only per-sample weights may be left out.
  int needed = s->n_extra;
  if (needed > 0 && s->extra_input[needed - 1] == s->t->weight_input && d->n_extra == needed - 1)
    needed--;
  if (d->n_extra != needed) {
    fprintf(stderr,
            "kiln-train: %s: %d extra arrays after the samples and labels, the model takes %d "
            "(give them as --train X.npy,Y.npy,E1.npy,... in the order of its inputs:",
            d->source, d->n_extra, needed);
    for (int j = 0; j < s->n_extra; j++)
      fprintf(stderr, " %s", s->m->inputs[s->extra_input[j]].name);
    fprintf(stderr, ")\n");
    return false;
  }
  for (int j = 0; j < d->n_extra; j++) {
    const kiln_io_desc *io = &s->m->inputs[s->extra_input[j]];
    if (d->extra_numel[j] * s->batch != io_numel(io)) {
      fprintf(stderr,
              "kiln-train: %s: extra array %d has %lld values per sample, the model's %s "
              "takes %lld\n",
              d->source, j + 1, (long long)d->extra_numel[j], io->name,
              (long long)(io_numel(io) / s->batch));
      return false;
    }
  }
  if (d->n < s->batch) {
    fprintf(stderr, "kiln-train: %s: %lld samples, fewer than one batch of %lld\n", d->source,
            (long long)d->n, (long long)s->batch);
    return false;
  }
  for (int64_t i = 0; i < d->n; i++) {
    int64_t k = 0;
    while (k < d->x_numel && isfinite(kiln_dataset_x(d, i, k))) k++;
    if (k < d->x_numel) {
      fprintf(stderr, "kiln-train: %s: sample %lld holds %g at element %lld\n", d->source,
              (long long)i, kiln_dataset_x(d, i, k), (long long)k);
      return false;
    }
    k = 0;
    while (k < d->y_numel && s->y_input >= 0 && isfinite(kiln_dataset_y(d, i, k))) k++;
    if (k < d->y_numel && s->y_input >= 0) {
      fprintf(stderr, "kiln-train: %s: the label of sample %lld holds %g at element %lld\n",
              d->source, (long long)i, kiln_dataset_y(d, i, k), (long long)k);
      return false;
    }
  }
  if (s->y_input >= 0 && one_hot_labels(s, d) && !check_one_hot(s, d)) return false;
  for (int64_t i = 0; s->t->classification && i < d->n; i++) {
    double l = kiln_dataset_y(d, i, 0);
    if (!(l >= 0 && l < (double)s->classes && l == floor(l))) {
      fprintf(stderr,
              "kiln-train: %s: the label of sample %lld is %g, outside the %lld classes "
              "[0, %lld)\n",
              d->source, (long long)i, l, (long long)s->classes, (long long)s->classes);
      return false;
    }
  }
  return true;
}

// ---- Batches: augmentation, and a worker thread preparing the next batch during the step ----

// One batch to prepare: samples idx[0..batch) of d into x and y, augmented (when `augment`)
// from the random stream of (seed, step, sample index), then normalized. The result depends on
// these fields only, whichever thread runs it and whenever.
typedef struct batch_job {
  const session *s;
  const kiln_dataset *d;
  const int64_t *idx;
  int64_t step;
  bool augment;
  void *x, *y;     // the data and label input buffers to fill
  float *scratch;  // 2 x x_numel floats
} batch_job;

// Sample i, augmented and normalized, converted to the input's dtype at x[b].
static void prepare_sample(const batch_job *j, int64_t b) {
  const session *s = j->s;
  int dtype = s->m->inputs[s->data_input].dtype;
  int64_t i = j->idx[b];
  if (!kiln_augment_active(&s->aug)) {  // exactly the stored values
    for (int64_t k = 0; k < s->x_numel; k++)
      kiln_element_set(j->x, dtype, b * s->x_numel + k, kiln_dataset_x(j->d, i, k));
    return;
  }
  float *img = j->scratch, *tmp = j->scratch + s->x_numel;  // img: (C, H, W)
  for (int64_t k = 0; k < s->x_numel; k++) img[k] = (float)kiln_dataset_x(j->d, i, k);
  if (j->augment)
    kiln_augment_sample(&s->aug, s->img, img, tmp, s->aug_seed, (uint64_t)j->step, (uint64_t)i);
  kiln_normalize_sample(&s->aug, s->img, img);
  for (int64_t k = 0; k < s->x_numel; k++)
    kiln_element_set(j->x, dtype, b * s->x_numel + k, img[k]);
}

static void prepare_batch(const batch_job *j) {
  const session *s = j->s;
  int ydtype = s->y_input >= 0 ? s->m->inputs[s->y_input].dtype : KILN_RT_F32;
  bool one_hot = s->y_input >= 0 && one_hot_labels(s, j->d);
  for (int64_t b = 0; b < s->batch; b++) {
    prepare_sample(j, b);
    double label = one_hot ? kiln_dataset_y(j->d, j->idx[b], 0) : 0;
    for (int64_t k = 0; k < s->y_numel; k++)
      kiln_element_set(
          j->y, ydtype, b * s->y_numel + k,
          one_hot ? (double)(k == (int64_t)label) : kiln_dataset_y(j->d, j->idx[b], k));
  }
}

// Copies samples idx[0..batch) into the input buffers (converting to the inputs' dtypes),
// augmented while training, keyed by the step about to run.
// The extra inputs of samples idx[0..batch), as stored (no augmentation).
static void fill_extras(session *s, const kiln_dataset *d, const int64_t *idx) {
  for (int j = 0; j < d->n_extra; j++) {
    const kiln_io_desc *io = &s->m->inputs[s->extra_input[j]];
    int64_t per = d->extra_numel[j];
    for (int64_t b = 0; b < s->batch; b++)
      for (int64_t k = 0; k < per; k++)
        kiln_element_set(s->in[s->extra_input[j]], io->dtype, b * per + k,
                         kiln_dataset_extra(d, j, idx[b], k));
  }
}

static void fill_batch(session *s, const kiln_dataset *d, const int64_t *idx) {
  batch_job j = {.s = s,
                 .d = d,
                 .idx = idx,
                 .step = *s->step,
                 .augment = s->augment_on,
                 .x = s->in[s->data_input],
                 .y = s->y_input >= 0 ? s->in[s->y_input] : NULL,
                 .scratch = s->scratch};
  prepare_batch(&j);
  fill_extras(s, d, idx);
}

typedef struct batch_worker {
  pthread_t thread;
  bool running, ready;  // a thread to join; job's buffers hold its batch
  batch_job job;
  void *x, *y;  // spare input buffers, swapped with the session's when taken
  float *scratch;
} batch_worker;

static void *worker_main(void *job) {
  prepare_batch(job);
  return NULL;
}

static void worker_wait(batch_worker *w) {
  if (w && w->running) pthread_join(w->thread, NULL);
  if (w) w->running = false;
}

// Starts preparing the batch idx for `step` in the spare buffers (at once if no thread starts).
static void worker_start(session *s, const kiln_dataset *d, const int64_t *idx, int64_t step) {
  batch_worker *w = s->worker;
  worker_wait(w);
  w->job = (batch_job){.s = s,
                       .d = d,
                       .idx = idx,
                       .step = step,
                       .augment = s->augment_on,
                       .x = w->x,
                       .y = w->y,
                       .scratch = w->scratch};
  w->ready = true;
  w->running = pthread_create(&w->thread, NULL, worker_main, &w->job) == 0;
  if (!w->running) prepare_batch(&w->job);
}

// Puts batch idx for `step` into the session's input buffers: the worker's if it prepared
// exactly that one (the buffers are swapped), else prepared now.
static void take_batch(session *s, const kiln_dataset *d, const int64_t *idx, int64_t step) {
  batch_worker *w = s->worker;
  worker_wait(w);
  if (w && w->ready && w->job.d == d && w->job.idx == idx && w->job.step == step &&
      w->job.augment == s->augment_on) {
    void *x = s->in[s->data_input];
    s->in[s->data_input] = w->x, w->x = x;
    if (s->y_input >= 0) {
      void *y = s->in[s->y_input];
      s->in[s->y_input] = w->y, w->y = y;
    }
    fill_extras(s, d, idx);
  } else {
    fill_batch(s, d, idx);
  }
  if (w) w->ready = false;
}

// Parses the model's augmentation spec, checks it against the samples, allocates the buffers.
static int setup_batches(session *s, const options *o) {
  char err[512];
  const kiln_io_desc *xi = &s->m->inputs[s->data_input];
  if (kiln_augment_parse(s->t->augment, &s->aug, err, sizeof err) != KILN_OK ||
      kiln_augment_check(&s->aug, xi->rank - 1, xi->shape + 1, &s->img, err, sizeof err) != KILN_OK)
    return fprintf(stderr, "kiln-train: training.augment: %s\n", err), EXIT_BAD;
  s->aug_seed = o->seed;
  s->scratch = malloc(sizeof(float) * 2 * (size_t)s->x_numel);
  s->worker = calloc(1, sizeof(batch_worker));
  if (!s->scratch || !s->worker) return EXIT_INTERNAL;
  s->worker->scratch = malloc(sizeof(float) * 2 * (size_t)s->x_numel);
  s->worker->x = alloc_io(xi);
  if (s->y_input >= 0 && !(s->worker->y = alloc_io(&s->m->inputs[s->y_input])))
    return EXIT_INTERNAL;
  return s->worker->scratch && s->worker->x ? EXIT_OK : EXIT_INTERNAL;
}

static void free_batches(session *s) {
  worker_wait(s->worker);
  if (s->worker) {
    kiln_aligned_free(s->worker->x);
    kiln_aligned_free(s->worker->y);
    free(s->worker->scratch);
  }
  free(s->worker);
  free(s->scratch);
}

static double loss_of(const session *s) {
  return kiln_element_get(s->out[0], s->m->outputs[0].dtype, 0);
}

// ---- Shuffling: epoch e's order is a permutation drawn from (seed, e) ----

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static void shuffle(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch) {
  uint64_t state = seed * UINT64_C(0x2545f4914f6cdd1d) + (uint64_t)epoch;
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)(splitmix(&state) % (uint64_t)(i + 1));
    int64_t tmp = perm[i];
    perm[i] = perm[j], perm[j] = tmp;
  }
}

// ---- Evaluation ----

typedef struct eval_result {
  double loss, accuracy;  // accuracy < 0: not a classifier
} eval_result;

static int64_t argmax_row(const session *s, int64_t b) {
  const kiln_io_desc *lo = &s->m->outputs[s->t->logits_output];
  int64_t best = 0;
  for (int64_t c = 1; c < s->classes; c++)
    if (kiln_element_get(s->out[s->t->logits_output], lo->dtype, b * s->classes + c) >
        kiln_element_get(s->out[s->t->logits_output], lo->dtype, b * s->classes + best))
      best = c;
  return best;
}

// Rows of the batch just run whose argmax is their label (classifiers; 0 otherwise).
static int64_t batch_correct(const session *s) {
  if (s->classes <= 0) return 0;
  const kiln_io_desc *yi = &s->m->inputs[s->y_input];
  int64_t correct = 0;
  for (int64_t b = 0; b < s->batch && s->classes > 0; b++)
    correct +=
        argmax_row(s, b) == (int64_t)kiln_element_get(s->in[s->y_input], yi->dtype, b * s->y_numel);
  return correct;
}

// Forward pass and loss over all of d in batches, in inference mode; the last partial batch is
// padded with the first samples, which count for neither the loss nor the accuracy.
static bool evaluate(session *s, const kiln_dataset *d, eval_result *r) {
  bool augmenting = s->augment_on;
  s->augment_on = false;  // evaluation sees the samples as they are (normalized)
  set_training_mode(s->t, s->ctx, false);
  int64_t *idx = malloc(sizeof(int64_t) * (size_t)s->batch), correct = 0, full = 0;
  double loss_sum = 0;
  bool ok = true;
  for (int64_t start = 0; start < d->n && ok; start += s->batch) {
    int64_t valid = d->n - start < s->batch ? d->n - start : s->batch;
    for (int64_t b = 0; b < s->batch; b++) idx[b] = b < valid ? start + b : b - valid;
    fill_batch(s, d, idx);
    int st = s->t->eval(s->ctx, (const void *const *)s->in, s->out);
    if (st != KILN_OK) {
      fprintf(stderr, "kiln-train: evaluation failed: %s\n", kiln_status_str(st));
      ok = false;
    }
    if (valid == s->batch) loss_sum += loss_of(s), full++;
    for (int64_t b = 0; b < valid && s->classes > 0; b++)
      correct += argmax_row(s, b) == (int64_t)kiln_dataset_y(d, start + b, 0);
  }
  free(idx);
  r->loss = full ? loss_sum / (double)full : NAN;
  r->accuracy = s->classes > 0 ? (double)correct / (double)d->n : -1;
  s->augment_on = augmenting;
  set_training_mode(s->t, s->ctx, true);
  return ok;
}

// ---- Adversarial builds (docs/training.md §8): the generator's step beside the D step ----

static char *beside(const char *path, const char *old_ext, const char *new_ext);

// One param copied between the two steps' weights payloads.
typedef struct param_copy {
  size_t from, to, bytes;
} param_copy;

typedef struct adv_session {
  const kiln_adversarial_desc *a;
  const kiln_train_desc *gt;  // the generator's step
  void *ctx;
  void **in, **out;
  int *d_input;  // the D step's input each G input reads (by name), or -1 (own zeroed buffer)
  param_copy *to_g, *to_d;  // D's params into G's context after a D step; G's into D's after G
  int n_to_g, n_to_d;
  int64_t *g_step;  // kiln.g_step
  double g_loss;    // the last G step's loss
  bool g_stepped;   // a G step followed the last D step
  // The run's per-step losses (the plot beside --log); g is NAN where no G step ran.
  double *d_hist, *g_hist;
  int64_t n_hist, cap_hist;
} adv_session;

static const kiln_state_desc *find_state(const kiln_train_desc *t, const char *name) {
  for (int i = 0; i < t->n_state; i++)
    if (strcmp(t->states[i].name, name) == 0) return &t->states[i];
  return NULL;
}

// The copies of params names[0..n) from `from`'s payload to `to`'s; an exit code.
static int map_params(const kiln_train_desc *from, const kiln_train_desc *to,
                      const char *const *names, int n, param_copy **out) {
  *out = calloc((size_t)n + 1, sizeof(param_copy));
  if (!*out) return EXIT_INTERNAL;
  for (int i = 0; i < n; i++) {
    const kiln_state_desc *f = find_state(from, names[i]), *t = find_state(to, names[i]);
    if (!f || !t || state_bytes(f) != state_bytes(t)) {
      fprintf(stderr, "kiln-train: the adversarial steps do not share the param '%s'\n", names[i]);
      return EXIT_INTERNAL;
    }
    (*out)[i] = (param_copy){f->offset, t->offset, state_bytes(f)};
  }
  return EXIT_OK;
}

static void copy_params(const param_copy *c, int n, void *from, void *to) {
  for (int i = 0; i < n; i++) memcpy((char *)to + c[i].to, (char *)from + c[i].from, c[i].bytes);
}

// Each G input reads the D step's input of the same name (the data), else a zeroed buffer.
static bool link_inputs(adv_session *v, const kiln_model_desc *dm) {
  const kiln_model_desc *gm = v->gt->model;
  v->d_input = calloc((size_t)gm->n_inputs + 1, sizeof(int));
  v->in = calloc((size_t)gm->n_inputs + 1, sizeof(void *));
  if (!v->d_input || !v->in) return false;
  for (int i = 0; i < gm->n_inputs; i++) {
    v->d_input[i] = -1;
    for (int j = 0; j < dm->n_inputs; j++)
      if (strcmp(gm->inputs[i].name, dm->inputs[j].name) == 0) v->d_input[i] = j;
    if (v->d_input[i] < 0 && !(v->in[i] = alloc_io(&gm->inputs[i]))) return false;
  }
  return true;
}

// Opens the generator's step: its context (weights OUT.g.weights), buffers, the param copies.
static int open_adversarial(session *s, const char *argv0) {
  const kiln_adversarial_desc *a = s->t->adversarial;
  if (!a) return EXIT_OK;
  adv_session *v = s->adv = calloc(1, sizeof(adv_session));
  if (!v) return EXIT_INTERNAL;
  v->a = a, v->gt = a->g, v->g_loss = NAN;
  const kiln_model_desc *gm = a->g->model;
  if (!(v->ctx = calloc(1, gm->ctx_bytes)) || !link_inputs(v, s->m) ||
      !alloc_ios(gm->outputs, gm->n_outputs, &v->out))
    return EXIT_INTERNAL;
  int rc = init_weights(gm, v->ctx, argv0, ".g.weights");
  if (rc == EXIT_OK) rc = map_params(s->t, v->gt, a->d_params, a->n_d_params, &v->to_g);
  if (rc == EXIT_OK) rc = map_params(v->gt, s->t, a->g_params, a->n_g_params, &v->to_d);
  v->n_to_g = a->n_d_params, v->n_to_d = a->n_g_params;
  const kiln_state_desc *gs = find_state(v->gt, "kiln.g_step");
  if (rc == EXIT_OK && (!gs || gs->dtype != KILN_RT_I64))
    return fprintf(stderr, "kiln-train: no step counter kiln.g_step in the generator\n"),
           EXIT_INTERNAL;
  if (gs) v->g_step = (int64_t *)(void *)((char *)v->gt->state(v->ctx) + gs->offset);
  return rc;
}

static void close_adversarial(session *s) {
  adv_session *v = s->adv;
  if (!v) return;
  const kiln_model_desc *gm = v->gt->model;
  if (v->ctx && v->d_input && v->out) gm->release(v->ctx);
  for (int i = 0; v->in && v->d_input && i < gm->n_inputs; i++)
    if (v->d_input[i] < 0) kiln_aligned_free(v->in[i]);  // not the D step's buffers
  for (int i = 0; v->out && i < gm->n_outputs; i++) kiln_aligned_free(v->out[i]);
  free(v->in), free(v->out), free(v->d_input), free(v->ctx);
  free(v->to_g), free(v->to_d), free(v->d_hist), free(v->g_hist);
  free(v);
  s->adv = NULL;
}

// After --resume / --weights: each step's context takes the other's trained params too.
static void sync_adversarial(session *s) {
  adv_session *v = s->adv;
  if (!v) return;
  copy_params(v->to_g, v->n_to_g, s->t->state(s->ctx), v->gt->state(v->ctx));
  copy_params(v->to_d, v->n_to_d, v->gt->state(v->ctx), s->t->state(s->ctx));
}

// After a D step (kiln.step counts them): D's params go to the G step's context; every
// n_critic D steps, one G step (fresh noise) updates G, whose params come back.
static int generator_step(session *s) {
  adv_session *v = s->adv;
  copy_params(v->to_g, v->n_to_g, s->t->state(s->ctx), v->gt->state(v->ctx));
  v->g_stepped = *s->step % v->a->n_critic == 0;
  if (!v->g_stepped) return KILN_OK;
  for (int i = 0; i < v->gt->model->n_inputs; i++)
    if (v->d_input[i] >= 0) v->in[i] = s->in[v->d_input[i]];
  int st = v->gt->model->run(v->ctx, (const void *const *)v->in, v->out);
  v->g_loss = kiln_element_get(v->out[0], v->gt->model->outputs[0].dtype, 0);
  copy_params(v->to_d, v->n_to_d, v->gt->state(v->ctx), s->t->state(s->ctx));
  return st;
}

// Checkpoints of adversarial builds: the D step's STATE tensors, then the G step's others
// (its params' optimizer state, kiln.g_step).
static int save_adversarial(session *s, const char *path, char *err, size_t errlen) {
  const kiln_train_desc *d = s->t, *g = s->adv->gt;
  int n = 0;
  const char **names = calloc((size_t)(d->n_state + g->n_state) + 1, sizeof(char *));
  kiln_array *arrays = calloc((size_t)(d->n_state + g->n_state) + 1, sizeof(kiln_array));
  if (!names || !arrays) return free((void *)names), free(arrays), KILN_ERR_NOMEM;
  for (int k = 0; k < 2; k++) {
    const kiln_train_desc *t = k ? g : d;
    char *base = t->state(k ? s->adv->ctx : s->ctx);
    for (int i = 0; i < t->n_state; i++) {
      const kiln_state_desc *st = &t->states[i];
      if (k && find_state(d, st->name)) continue;
      names[n] = st->name;
      arrays[n] = (kiln_array){.dtype = st->dtype,
                               .rank = st->rank,
                               .data = base + st->offset,
                               .nbytes = state_bytes(st)};
      memcpy(arrays[n++].shape, st->shape, sizeof(int64_t) * (size_t)st->rank);
    }
  }
  int rc = kiln_safetensors_write(path, n, names, arrays, err, errlen);
  free((void *)names), free(arrays);
  return rc;
}

// Appends the step's losses to the plot's history (dropped if out of memory).
static void record_adversarial(adv_session *v, double d_loss) {
  if (v->n_hist == v->cap_hist) {
    int64_t cap = v->cap_hist ? 2 * v->cap_hist : 1024;
    double *d = realloc(v->d_hist, sizeof(double) * (size_t)cap);
    if (d) v->d_hist = d;
    double *g = d ? realloc(v->g_hist, sizeof(double) * (size_t)cap) : NULL;
    if (g) v->g_hist = g;
    if (!g) return;
    v->cap_hist = cap;
  }
  v->d_hist[v->n_hist] = d_loss;
  v->g_hist[v->n_hist++] = v->g_stepped ? v->g_loss : NAN;
}

// Bucket means of h[0..n) (NAN entries skipped) into out[0..ceil(n / per)).
static int bucket_means(const double *h, int64_t n, int64_t per, double *out) {
  int m = 0;
  for (int64_t i = 0; i < n; i += per, m++) {
    double sum = 0;
    int64_t k = 0;
    for (int64_t j = i; j < n && j < i + per; j++)
      if (isfinite(h[j])) sum += h[j], k++;
    out[m] = k ? sum / (double)k : NAN;
  }
  return m;
}

// The d_loss and g_loss curves of the run, as means over buckets of steps (at most 200 points),
// plotted beside the --log.
static void plot_adversarial(const session *s, const char *log) {
  adv_session *v = s->adv;
  char *png = log ? beside(log, ".csv", ".png") : NULL;
  int64_t per = v->n_hist > 200 ? (v->n_hist + 199) / 200 : 1;
  double *d = malloc(sizeof(double) * 201), *g = malloc(sizeof(double) * 201);
  if (png && d && g && v->n_hist > 0) {
    int n = bucket_means(v->d_hist, v->n_hist, per, d);
    bucket_means(v->g_hist, v->n_hist, per, g);
    kiln_curve c[2] = {{"d loss", d, n, {31, 119, 180}}, {"g loss", g, n, {230, 110, 10}}};
    char x_label[64], err[512];
    snprintf(x_label, sizeof x_label, "groups of %lld steps", (long long)per);
    kiln_panel panel = {"losses", c, 2};
    if (kiln_plot_png_x(png, &panel, 1, 640, 360, x_label, err, sizeof err) != KILN_OK)
      fprintf(stderr, "kiln-train: %s\n", err);
    else
      fprintf(stderr, "kiln-train: losses plotted in %s\n", png);
  }
  free(png), free(d), free(g);
}

// ---- Progress ----

static void progress(int64_t epoch, int64_t epochs, int64_t pos, int64_t per_epoch, double loss,
                     double rate) {
  int width = 24, done = (int)(width * pos / per_epoch);
  char bar[32];
  for (int i = 0; i < width; i++) bar[i] = i < done ? '=' : i == done ? '>' : ' ';
  bar[width] = 0;
  double eta = rate > 0 ? (double)(per_epoch - pos) / rate : 0;
  fprintf(stderr, "\repoch %lld/%lld [%s] %lld/%lld loss %.4f %.0f steps/s ETA %.0fs   ",
          (long long)epoch + 1, (long long)epochs, bar, (long long)pos, (long long)per_epoch, loss,
          rate, eta);
}

static int save_checkpoint(session *s, const char *path) {
  if (!leader(s)) return EXIT_OK;
  char err[512];
  int st = s->adv ? save_adversarial(s, path, err, sizeof err)
                  : kiln_state_save(s->t, s->ctx, path, err, sizeof err);
  if (st != KILN_OK) fprintf(stderr, "kiln-train: cannot save the checkpoint: %s\n", err);
  return st == KILN_OK ? EXIT_OK : EXIT_BAD;
}

// ---- One step: this process alone, or data-parallel through s->comm (train_mpi.h) ----

typedef struct batch_source {
  session *s;
  const kiln_dataset *d;
} batch_source;

static void fill_from(void *source, const int64_t *idx) {
  batch_source *b = source;
  fill_batch(b->s, b->d, idx);
}

// Trains on the global batch idx[0..global_batch); *loss is its mean loss. One process: the
// worker prepares the batch `next` (NULL: none) while the step runs.
static int train_step(session *s, const kiln_dataset *d, const int64_t *idx, const int64_t *next,
                      double *loss) {
  if (!s->comm) {
    take_batch(s, d, idx, *s->step);
    if (next) worker_start(s, d, next, *s->step + 1);
    int st = s->m->run(s->ctx, (const void *const *)s->in, s->out);
    *loss = loss_of(s);
    if (st == KILN_OK && s->adv) st = generator_step(s);
    return st;
  }
  batch_source source = {s, d};
  kiln_train_batch b = {.t = s->t,
                        .ctx = s->ctx,
                        .in = s->in,
                        .out = s->out,
                        .micro = s->batch,
                        .global = s->global_batch,
                        .idx = idx,
                        .step = *s->step,
                        .fill = fill_from,
                        .session = &source,
                        .stop = interrupted != 0};
  int st = s->comm->step(s->comm, &b);
  *loss = b.loss;
  if (b.stop) interrupted = 1;  // some rank was interrupted: all stop at this step
  return st;
}

// The global batch: one process trains on the compiled batch; data-parallel ranks on --batch
// samples (default: the compiled batch on each rank), a multiple of compiled batch x ranks.
static int set_global_batch(session *s, int64_t requested) {
  int64_t per_call = s->batch * (s->comm ? s->comm->size : 1);
  s->global_batch = requested ? requested : per_call;
  if (s->global_batch % per_call == 0) return EXIT_OK;
  fprintf(stderr,
          "kiln-train: --batch %lld: the global batch must be a multiple of %lld (the compiled "
          "batch %lld x %d ranks)\n",
          (long long)requested, (long long)per_call, (long long)s->batch, s->comm->size);
  return EXIT_BAD;
}

// Every rank starts from rank 0's state (its restored checkpoint or weights).
static int sync_state(session *s) {
  if (!s->comm) return EXIT_OK;
  int st = s->comm->broadcast(s->comm, s->t->state(s->ctx), s->m->weights_bytes);
  return st == KILN_OK ? EXIT_OK : EXIT_INTERNAL;
}

// ---- The loop ----

typedef struct run_state {
  const options *o;
  const kiln_dataset *train, *test;
  int64_t per_epoch;
  int64_t *perm;
  eval_result last;   // the last evaluation of the test set
  double train_loss;  // mean loss of the steps of the last epoch run (or since the start)
  // Validation (--val, --val-fraction), early stopping and the curves of this run
  const kiln_dataset *val;
  eval_result val_last;
  double train_accuracy;  // of the last epoch's batches (augmented, weights changing), or -1
  kiln_early_stop es;
  char *best_path;  // --keep-best: the best epoch's checkpoint
  // This run's epochs, in order (a resumed run starts afresh): train loss, train accuracy, val
  // loss, val accuracy; grown as epochs end (--epochs may be huge).
  int n_hist, cap_hist;
  double *hist[4];
  // Adversarial builds: the generator's losses of the epoch (its mean: train_g_loss)
  double g_loss_sum, train_g_loss;
  int64_t g_steps;
} run_state;

enum { STOPPED_EARLY = -3 };

static double *history(const run_state *r, int curve) { return r->hist[curve]; }

static void free_history(run_state *r) {
  for (int c = 0; c < 4; c++) free(r->hist[c]), r->hist[c] = NULL;
  r->n_hist = r->cap_hist = 0;
}

// Appends the epoch just ended; false if out of memory (the history is then dropped).
static bool record_epoch(run_state *r) {
  if (r->n_hist == INT_MAX) return true;  // keep the first INT_MAX epochs
  if (r->n_hist == r->cap_hist) {
    int cap = r->cap_hist ? (r->cap_hist > INT_MAX / 2 ? INT_MAX : r->cap_hist * 2) : 64;
    for (int c = 0; c < 4; c++) {
      double *grown = realloc(r->hist[c], sizeof(double) * (size_t)cap);
      if (!grown) return free_history(r), false;
      r->hist[c] = grown;
    }
    r->cap_hist = cap;
  }
  double v[4] = {r->train_loss, r->train_accuracy, r->val_last.loss, r->val_last.accuracy};
  for (int c = 0; c < 4; c++) r->hist[c][r->n_hist] = v[c];
  r->n_hist++;
  return true;
}

static void print_epoch(const session *s, const run_state *r, int64_t epoch, double t0) {
  fprintf(stderr, "epoch %lld: train_loss=%.6f", (long long)epoch + 1, r->train_loss);
  if (s->adv) fprintf(stderr, " g_loss=%.6f", r->train_g_loss);
  if (r->train_accuracy >= 0) fprintf(stderr, " train_accuracy=%.4f", r->train_accuracy);
  if (r->val) fprintf(stderr, " val_loss=%.6f", r->val_last.loss);
  if (r->val && r->val_last.accuracy >= 0)
    fprintf(stderr, " val_accuracy=%.4f", r->val_last.accuracy);
  if (r->test) fprintf(stderr, " test_loss=%.6f", r->last.loss);
  if (r->test && r->last.accuracy >= 0) fprintf(stderr, " test_accuracy=%.4f", r->last.accuracy);
  fprintf(stderr, " (%.1fs)\n", (kiln_now_ms() - t0) / 1000.0);
  if (s->log && s->adv)  // step,epoch,d_loss,g_loss,train_d_loss,train_g_loss
    fprintf(s->log, "%lld,%lld,,,%.9g,%.9g\n", (long long)*s->step, (long long)epoch + 1,
            r->train_loss, r->train_g_loss);
  else if (s->log)
    fprintf(s->log, "%lld,%lld,,%.9g,%.6g,%.9g,%.6g,%.9g,%.6g\n", (long long)*s->step,
            (long long)epoch + 1, r->last.loss, r->last.accuracy, r->train_loss, r->train_accuracy,
            r->val_last.loss, r->val_last.accuracy);
}

// Early stopping and --keep-best after an epoch's validation: -1 to go on, STOPPED_EARLY, or an
// exit code.
static int watch_validation(session *s, run_state *r, int64_t epoch) {
  if (!r->val || (!r->o->patience && !r->o->keep_best)) return -1;
  kiln_es_decision d = kiln_early_stop_update(&r->es, epoch + 1, r->val_last.loss);
  if (d == KILN_ES_IMPROVED && r->best_path && save_checkpoint(s, r->best_path) != EXIT_OK)
    return EXIT_BAD;
  if (d != KILN_ES_STOP) return -1;
  if (leader(s))
    fprintf(stderr,
            "kiln-train: early stop after epoch %lld: val_loss has not improved for %lld epochs "
            "(lowest %.6f at epoch %lld)\n",
            (long long)epoch + 1, (long long)r->es.waited, r->es.best, (long long)r->es.best_epoch);
  return STOPPED_EARLY;
}

static void write_image_outputs(const session *s, const char *prefix, const char *tag);

// Adversarial builds: the step's row of the --log (step,epoch,d_loss,g_loss,,: g_loss empty
// unless a generator step ran), the epoch's generator losses and the plot's history.
static void note_adversarial_step(session *s, run_state *r, int64_t epoch, double d_loss) {
  adv_session *v = s->adv;
  if (v->g_stepped) r->g_loss_sum += v->g_loss, r->g_steps++;
  r->train_g_loss = r->g_steps ? r->g_loss_sum / (double)r->g_steps : NAN;
  record_adversarial(v, d_loss);
  if (!s->log) return;
  fprintf(s->log, "%lld,%lld,%.9g,", (long long)*s->step, (long long)epoch + 1, d_loss);
  if (v->g_stepped) fprintf(s->log, "%.9g", v->g_loss);
  fputs(",,\n", s->log);
}

// --sample PREFIX with an adversarial build: after every epoch, the generator's samples on
// fresh noise (the D step's forward pass, run without an update): PREFIX.epochN.FAKE.png.
static void epoch_samples(session *s, const run_state *r, int64_t epoch) {
  char tag[32];
  snprintf(tag, sizeof tag, ".epoch%lld", (long long)epoch + 1);
  if (s->t->eval(s->ctx, (const void *const *)s->in, s->out) == KILN_OK)
    write_image_outputs(s, r->o->sample, tag);
}

// One epoch from position pos; returns an exit code, or -1 to go on.
static int run_epoch(session *s, run_state *r, int64_t epoch) {
  const options *o = r->o;
  bool tty = isatty(2) && leader(s);
  double t0 = kiln_now_ms(), loss_sum = 0;
  int64_t pos = *s->step % r->per_epoch, first = pos;
  int64_t correct = 0, seen = 0;
  shuffle(r->perm, r->train->n, o->seed, epoch);
  r->g_loss_sum = 0, r->g_steps = 0;
  for (; pos < r->per_epoch; pos++) {
    if (o->max_steps >= 0 && *s->step >= o->max_steps) return -2;
    double loss;
    const int64_t *idx = r->perm + pos * s->global_batch;
    int st =
        train_step(s, r->train, idx, pos + 1 < r->per_epoch ? idx + s->global_batch : NULL, &loss);
    if (st != KILN_OK)
      return fprintf(stderr, "\nkiln-train: the training step failed: %s\n", kiln_status_str(st)),
             EXIT_INTERNAL;
    if (!isfinite(loss)) {
      fprintf(stderr,
              "\nkiln-train: the loss became %g at step %lld (epoch %lld, batch %lld of %s); "
              "stopping. %s%s\n",
              loss, (long long)*s->step, (long long)epoch + 1, (long long)pos, r->train->source,
              o->save ? "The last good checkpoint is kept: " : "No checkpoint was written",
              o->save ? o->save : "");
      return EXIT_BAD;
    }
    loss_sum += loss;
    correct += batch_correct(s), seen += s->batch;
    r->train_loss = loss_sum / (double)(pos + 1 - first);
    if (s->adv)
      note_adversarial_step(s, r, epoch, loss);
    else if (s->log)
      fprintf(s->log, "%lld,%lld,%.9g,,,,,,\n", (long long)*s->step, (long long)epoch + 1, loss);
    double rate = (double)(pos + 1 - first) / ((kiln_now_ms() - t0) / 1000.0 + 1e-9);
    if (tty && (pos % 10 == 0 || pos + 1 == r->per_epoch))
      progress(epoch, o->epochs, pos + 1, r->per_epoch, loss, rate);
    if (interrupted) {
      const char *path = o->save ? o->save : "interrupted.safetensors";
      fprintf(stderr, "\nkiln-train: interrupted at step %lld; saving %s\n", (long long)*s->step,
              path);
      return save_checkpoint(s, path) == EXIT_OK ? EXIT_INTERRUPTED : EXIT_BAD;
    }
  }
  if (tty) fputc('\n', stderr);
  int64_t n = r->per_epoch - first;
  r->train_loss = n ? loss_sum / (double)n : NAN;
  r->train_accuracy = s->classes > 0 && seen ? (double)correct / (double)seen : -1;
  r->train_g_loss = r->g_steps ? r->g_loss_sum / (double)r->g_steps : NAN;
  if (s->adv && o->sample && leader(s)) epoch_samples(s, r, epoch);
  if (r->test && !evaluate(s, r->test, &r->last)) return EXIT_INTERNAL;
  if (r->val && !evaluate(s, r->val, &r->val_last)) return EXIT_INTERNAL;
  if (!record_epoch(r)) fputs("kiln-train: out of memory: no learning curves\n", stderr);
  if (leader(s)) print_epoch(s, r, epoch, t0);
  if (o->save && save_checkpoint(s, o->save) != EXIT_OK) return EXIT_BAD;
  return watch_validation(s, r, epoch);
}

// ---- Pictures of generative models: --sample PREFIX ----

// The (h, w) of one image of n values: the data input's last two dims when it has rank >= 3
// and they hold the n values, else a square, else one row.
static void image_dims(const session *s, int64_t n, int *h, int *w) {
  const kiln_io_desc *x = &s->m->inputs[s->data_input];
  int64_t r = (int64_t)llround(sqrt((double)n));
  if (x->rank >= 3 && x->shape[x->rank - 2] * x->shape[x->rank - 1] == n)
    *h = (int)x->shape[x->rank - 2], *w = (int)x->shape[x->rank - 1];
  else if (r * r == n)
    *h = *w = (int)r;
  else
    *h = 1, *w = (int)n;
}

// Writes count images of x_numel floats, `cols` to a row, pixel values in [0, 1] (the data's
// scale: IDX bytes / 255, sigmoid outputs), as a PNG grid.
static void save_grid(const session *s, const char *path, const float *px, int64_t count,
                      int64_t cols) {
  kiln_image_grid g = {
      .pixels = px, .n = (int)count, .cols = (int)cols, .pad = 2, .lo = 0, .hi = 1};
  image_dims(s, s->x_numel, &g.h, &g.w);
  char err[512];
  if (kiln_image_grid_png(path, &g, err, sizeof err) != KILN_OK)
    fprintf(stderr, "kiln-train: %s\n", err);
  else
    fprintf(stderr, "kiln-train: picture %s\n", path);
}

// The first count rows of an output (x_numel values each), 10 to a row.
static void write_grid(const session *s, const char *path, const void *data, int dtype,
                       int64_t count) {
  float *px = malloc(sizeof(float) * (size_t)(count * s->x_numel));
  if (!px) return;
  for (int64_t k = 0; k < count * s->x_numel; k++) px[k] = (float)kiln_element_get(data, dtype, k);
  save_grid(s, path, px, count, 10);
  free(px);
}

// Inputs and their reconstructions: rows of up to 10 inputs, each followed by their outputs.
static void write_reconstructions(const session *s, const char *path, int64_t pairs) {
  int64_t n = s->x_numel, cols = pairs < 10 ? pairs : 10, rows = pairs / cols;
  const kiln_io_desc *xi = &s->m->inputs[s->data_input], *yo = &s->m->outputs[s->t->logits_output];
  float *px = malloc(sizeof(float) * (size_t)(2 * rows * cols * n));
  if (!px) return;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++)
      for (int64_t k = 0; k < n; k++) {
        int64_t src = (r * cols + c) * n + k;
        px[((2 * r) * cols + c) * n + k] =
            (float)kiln_element_get(s->in[s->data_input], xi->dtype, src);
        px[((2 * r + 1) * cols + c) * n + k] =
            (float)kiln_element_get(s->out[s->t->logits_output], yo->dtype, src);
      }
  save_grid(s, path, px, 2 * rows * cols, cols);
  free(px);
}

// Every model output but the loss and the reconstruction whose rows are images of the data's
// size (decoded prior samples, a latent traversal): PREFIX[.TAG].NAME.png.
static void write_image_outputs(const session *s, const char *prefix, const char *tag) {
  for (int i = 1; i < s->m->n_outputs; i++) {
    const kiln_io_desc *o = &s->m->outputs[i];
    int64_t rows = o->rank >= 1 ? o->shape[0] : 1;
    if (i == s->t->logits_output || io_numel(o) != rows * s->x_numel) continue;
    char path[1024];
    snprintf(path, sizeof path, "%s%s.%s.png", prefix, tag, o->name);
    write_grid(s, path, s->out[i], o->dtype, rows < 100 ? rows : 100);
  }
}

// --sample PREFIX: one batch of d (the test set, else the training set) in inference mode:
// PREFIX.recon.png and the image outputs; with --sample-class C, the image outputs again with
// every sample's class (the input the labels feed) set to C: PREFIX.classC.NAME.png.
static void write_pictures(session *s, const options *o, const kiln_dataset *d) {
  int64_t *idx = malloc(sizeof(int64_t) * (size_t)s->batch);
  if (!idx) return;
  for (int64_t b = 0; b < s->batch; b++) idx[b] = b;
  set_training_mode(s->t, s->ctx, false);
  fill_batch(s, d, idx);
  char path[1024];
  if (s->t->eval(s->ctx, (const void *const *)s->in, s->out) == KILN_OK) {
    snprintf(path, sizeof path, "%s.recon.png", o->sample);
    if (s->t->logits_output > 0) write_reconstructions(s, path, s->batch < 20 ? s->batch : 20);
    write_image_outputs(s, o->sample, "");
  }
  for (int c = 0; c < o->n_sample_class && s->y_input >= 0; c++) {
    const kiln_io_desc *yi = &s->m->inputs[s->y_input];
    bool one_hot = one_hot_labels(s, d);  // else one class value a sample
    for (int64_t k = 0; k < io_numel(yi); k++)
      kiln_element_set(
          s->in[s->y_input], yi->dtype, k,
          one_hot ? (double)(k % s->y_numel == o->sample_class[c]) : (double)o->sample_class[c]);
    char tag[32];
    snprintf(tag, sizeof tag, ".class%lld", (long long)o->sample_class[c]);
    if (s->t->eval(s->ctx, (const void *const *)s->in, s->out) == KILN_OK)
      write_image_outputs(s, o->sample, tag);
  }
  set_training_mode(s->t, s->ctx, true);
  free(idx);
}

// ---- The end of the run: diagnosis and the plot of the curves ----

// FILE.csv -> FILE.png (else FILE + ".png"); "x.safetensors" -> "x.best.safetensors".
static char *beside(const char *path, const char *old_ext, const char *new_ext) {
  size_t n = strlen(path), k = strlen(old_ext);
  bool has = n >= k && strcmp(path + n - k, old_ext) == 0;
  char *out = malloc(n + strlen(new_ext) + 1);
  if (out) snprintf(out, n + strlen(new_ext) + 1, "%.*s%s", (int)(has ? n - k : n), path, new_ext);
  return out;
}

static void plot_curves(const run_state *r, const char *path) {
  if (r->n_hist == 0) return;
  const uint8_t train_rgb[3] = {31, 119, 180}, val_rgb[3] = {230, 110, 10};
  kiln_curve loss[2] = {{"train", history(r, 0), r->n_hist, {0}},
                        {"val", history(r, 2), r->n_hist, {0}}};
  kiln_curve acc[2] = {{"train", history(r, 1), r->n_hist, {0}},
                       {"val", history(r, 3), r->n_hist, {0}}};
  for (int i = 0; i < 2; i++) {
    memcpy(loss[i].rgb, i ? val_rgb : train_rgb, 3);
    memcpy(acc[i].rgb, i ? val_rgb : train_rgb, 3);
  }
  kiln_panel panels[2] = {{"loss", loss, 2}, {"accuracy", acc, 2}};
  char err[512];
  int n_panels = history(r, 1)[0] >= 0 ? 2 : 1;
  if (kiln_plot_png(path, panels, n_panels, 480 * n_panels, 360, err, sizeof err) != KILN_OK)
    fprintf(stderr, "kiln-train: %s\n", err);
  else
    fprintf(stderr, "kiln-train: learning curves plotted in %s\n", path);
}

// With validation data: the verdict (curves.h) and, beside the --log, the plot.
static void report_curves(const run_state *r) {
  if (!r->val || r->n_hist == 0) return;
  kiln_diagnosis d = kiln_diagnose(history(r, 0), history(r, 2), r->n_hist);
  char why[768];
  kiln_diagnosis_explain(&d, why, sizeof why);
  fprintf(stderr, "diagnosis: %s: %s\n", kiln_fit_name(d.verdict), why);
  if (r->best_path && r->es.best_epoch > 0)
    fprintf(stderr, "kiln-train: the best checkpoint (epoch %lld, val_loss %.6f) is %s\n",
            (long long)r->es.best_epoch, r->es.best, r->best_path);
  char *png = r->o->log ? beside(r->o->log, ".csv", ".png") : NULL;
  if (png) plot_curves(r, png);
  free(png);
}

// --bench-steps N: the training step alone (forward, loss, backward, optimizer update: one call of
// the generated step) on the first batch, 3 warm-up steps then N timed ones; prints their median
// as `median_ms=` (like a built binary's --bench). Nothing is saved.
static int bench_steps(session *s, const options *o, const kiln_dataset *tr, int64_t *perm) {
  if (s->comm || s->adv)
    return fputs("kiln-train: --bench-steps times one process's plain training step\n", stderr),
           EXIT_BAD;
  double *ms = malloc(sizeof(double) * (size_t)o->bench_steps);
  if (!ms) return fputs("kiln-train: out of memory\n", stderr), EXIT_INTERNAL;
  shuffle(perm, tr->n, o->seed, 0);
  take_batch(s, tr, perm, 0);
  int st = KILN_OK;
  for (int64_t i = -3; i < o->bench_steps && st == KILN_OK; i++) {
    double t0 = kiln_now_ms();
    st = s->m->run(s->ctx, (const void *const *)s->in, s->out);
    if (i >= 0) ms[i] = kiln_now_ms() - t0;
  }
  if (st == KILN_OK) printf("median_ms=%.4f\n", kiln_median(ms, (int)o->bench_steps));
  free(ms);
  if (st != KILN_OK)
    fprintf(stderr, "kiln-train: the training step failed: %s\n", kiln_status_str(st));
  return st == KILN_OK ? EXIT_OK : EXIT_INTERNAL;
}

static int train(session *s, const options *o, const kiln_dataset *tr, const kiln_dataset *va,
                 const kiln_dataset *te) {
  run_state r = {.o = o,
                 .train = tr,
                 .test = te,
                 .per_epoch = tr->n / s->global_batch,
                 .last = {NAN, -1},
                 .train_loss = NAN,
                 .val = va,
                 .val_last = {NAN, -1},
                 .train_accuracy = -1,
                 .es = kiln_early_stop_init(o->patience)};
  if (r.per_epoch == 0)
    return fprintf(stderr, "kiln-train: %s: %lld samples, fewer than one global batch of %lld\n",
                   tr->source, (long long)tr->n, (long long)s->global_batch),
           EXIT_BAD;
  r.perm = malloc(sizeof(int64_t) * (size_t)tr->n);
  r.best_path =
      o->keep_best && leader(s) ? beside(o->save, ".safetensors", ".best.safetensors") : NULL;
  if (!r.perm) return fputs("kiln-train: out of memory\n", stderr), EXIT_INTERNAL;
  if (o->bench_steps) {
    int st = bench_steps(s, o, tr, r.perm);
    free(r.perm), free(r.best_path);
    return st;
  }
  int rc = -1;
  bool evaluated = false;
  for (int64_t e = *s->step / r.per_epoch; e < o->epochs && rc == -1; e++) {
    s->augment_on = true;
    rc = run_epoch(s, &r, e);
    evaluated = rc == -1 || rc == STOPPED_EARLY;
  }
  worker_wait(s->worker);
  s->augment_on = false;
  free(r.perm);
  if (rc < 0 && leader(s)) report_curves(&r);
  if (rc < 0 && s->adv && leader(s)) plot_adversarial(s, o->log);
  free_history(&r), free(r.best_path);
  if (rc >= 0) return rc;
  if (!evaluated) {  // stopped by --max-steps (or nothing left to do): evaluate now
    if (te && !evaluate(s, te, &r.last)) return EXIT_INTERNAL;
    if (o->save && save_checkpoint(s, o->save) != EXIT_OK) return EXIT_BAD;
  }
  if (!leader(s)) return EXIT_OK;
  if (o->sample) write_pictures(s, o, te ? te : tr);
  // The last line: the test set's accuracy (classifiers) or loss; without a test set, the mean
  // training loss of the last epoch's steps.
  if (s->adv)  // adversarial: the last epoch's mean losses of both steps
    printf("d_loss=%.9g\ng_loss=%.9g\n", r.train_loss, r.train_g_loss);
  else if (!te)
    printf("train_loss=%.9g\n", r.train_loss);
  else if (r.last.accuracy >= 0)
    printf("test_accuracy=%.6f\n", r.last.accuracy);
  else
    printf("test_loss=%.9g\n", r.last.loss);
  return EXIT_OK;
}

static int load_data(const char *src, const session *s, kiln_dataset *d) {
  char err[768];
  if (kiln_dataset_load(src, d, err, sizeof err) != KILN_OK) {
    fprintf(stderr, "kiln-train: %s\n", err);
    return EXIT_BAD;
  }
  return check_data(s, d) ? EXIT_OK : EXIT_BAD;
}

// The validation set (--val SRC, or --val-fraction F of --train held out by a permutation drawn
// from the seed), then --train-limit N: the first N of the remaining training samples.
static int split_data(const session *s, const options *o, kiln_dataset *tr, kiln_dataset *va) {
  char err[768];
  if (o->val && load_data(o->val, s, va) != EXIT_OK) return EXIT_BAD;
  if (o->val_fraction > 0) {
    kiln_dataset all = *tr;
    if (kiln_dataset_split(&all, o->val_fraction, o->seed, tr, va, err, sizeof err) != KILN_OK) {
      *tr = all;  // still owned by the caller
      return fprintf(stderr, "kiln-train: --val-fraction: %s\n", err), EXIT_BAD;
    }
    kiln_dataset_free(&all);
  }
  if ((o->val || o->val_fraction > 0) && va->n < s->batch)
    return fprintf(stderr, "kiln-train: %s: %lld samples, fewer than one batch of %lld\n",
                   va->source, (long long)va->n, (long long)s->batch),
           EXIT_BAD;
  if (o->train_limit == 0 || o->train_limit >= tr->n) return EXIT_OK;
  int64_t *idx = malloc(sizeof(int64_t) * (size_t)o->train_limit);
  if (!idx) return EXIT_INTERNAL;
  for (int64_t i = 0; i < o->train_limit; i++) idx[i] = i;
  kiln_dataset sub;
  char what[64];
  snprintf(what, sizeof what, " (first %lld)", (long long)o->train_limit);
  int st = kiln_dataset_subset(tr, idx, o->train_limit, what, &sub, err, sizeof err);
  free(idx);
  if (st != KILN_OK) return fprintf(stderr, "kiln-train: %s\n", err), EXIT_INTERNAL;
  kiln_dataset_free(tr);
  *tr = sub;
  return EXIT_OK;
}

static int restore(session *s, const options *o) {
  char err[768];
  const char *path = o->resume ? o->resume : o->weights;
  if (!path) return EXIT_OK;
  if (kiln_state_load(s->t, s->ctx, path, o->resume != NULL, err, sizeof err) != KILN_OK ||
      (s->adv && kiln_state_load(s->adv->gt, s->adv->ctx, path, o->resume != NULL, err,
                                 sizeof err) != KILN_OK)) {
    fprintf(stderr, "kiln-train: %s: %s\n", o->resume ? "--resume" : "--weights", err);
    return EXIT_BAD;
  }
  if (o->weights) *s->step = 0;  // new training from these weights
  if (o->weights && s->adv) *s->adv->g_step = 0;
  sync_adversarial(s);
  return EXIT_OK;
}

int kiln_train_main(const kiln_train_desc *t, int argc, char **argv) {
  return kiln_train_main_comm(t, argc, argv, NULL);
}

int kiln_train_main_comm(const kiln_train_desc *t, int argc, char **argv,
                         const kiln_train_comm *comm) {
  options o;
  if (!t || !t->model) return EXIT_INTERNAL;
  if (!parse_options(argc, argv, t, &o)) return usage(argv[0]), EXIT_BAD;
  int64_t global_batch = o.batch;
  if (comm) o.batch = 0;  // data-parallel: --batch is the global batch (set_global_batch)
  if (o.resume && o.weights)
    return fprintf(stderr, "kiln-train: give --resume or --weights\n"), EXIT_BAD;
  if (o.threads) kiln_set_threads(o.threads);
  session s;
  kiln_dataset tr = {0}, te = {0}, va = {0};
  int rc = open_session(&s, t, argv[0], &o);
  if (rc == EXIT_OK) rc = open_adversarial(&s, argv[0]);
  if (rc == EXIT_OK && comm && s.adv)
    fputs("kiln-train: adversarial builds train on one process\n", stderr), rc = EXIT_BAD;
  s.comm = comm;
  if (rc == EXIT_OK) rc = set_global_batch(&s, global_batch);
  if (rc == EXIT_OK && leader(&s)) rc = restore(&s, &o);
  if (rc == EXIT_OK) set_dropout_seed(t, s.ctx, o.seed);
  if (rc == EXIT_OK && s.adv) set_dropout_seed(s.adv->gt, s.adv->ctx, o.seed);
  if (rc == EXIT_OK) set_training_mode(t, s.ctx, true);
  if (rc == EXIT_OK) rc = sync_state(&s);
  if (rc == EXIT_OK) rc = load_data(o.train, &s, &tr);
  if (rc == EXIT_OK) rc = split_data(&s, &o, &tr, &va);
  if (rc == EXIT_OK && o.test) rc = load_data(o.test, &s, &te);
  if (rc == EXIT_OK) rc = setup_batches(&s, &o);
  if (rc == EXIT_OK && o.log && leader(&s) && !(s.log = fopen(o.log, o.resume ? "a" : "w"))) {
    fprintf(stderr, "kiln-train: %s: cannot open: %s\n", o.log, strerror(errno));
    rc = EXIT_BAD;
  }
  if (rc == EXIT_OK && s.log && !o.resume && s.adv)
    fputs("step,epoch,d_loss,g_loss,train_d_loss,train_g_loss\n", s.log);
  else if (rc == EXIT_OK && s.log && !o.resume)
    fprintf(s.log,
            "step,epoch,loss,eval_loss,eval_accuracy,train_loss,train_accuracy,val_loss,"
            "val_accuracy\n");
  if (rc == EXIT_OK) {
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    rc = train(&s, &o, &tr, o.val || o.val_fraction > 0 ? &va : NULL, o.test ? &te : NULL);
  }
  kiln_dataset_free(&tr);
  kiln_dataset_free(&va);
  kiln_dataset_free(&te);
  close_session(&s);
  return rc;
}

// ---- Data-parallel hooks (train_mpi.h) ----
// Generated data-parallel steps call these; without installed hooks (one process, or outside an
// MPI trainer's step) they do nothing, so this library does not depend on MPI.

static kiln_dist_hooks dist_hooks;

void kiln_dist_set_hooks(const kiln_dist_hooks *h) { dist_hooks = h ? *h : (kiln_dist_hooks){0}; }

void kiln_dist_grad_ready(int grad) {
  if (dist_hooks.grad_ready) dist_hooks.grad_ready(dist_hooks.user, grad);
}

void kiln_dist_rank_mean_f32(float *p, int64_t n) {
  if (dist_hooks.rank_reduce_f32) dist_hooks.rank_reduce_f32(dist_hooks.user, p, n, true);
}

void kiln_dist_rank_sum_f32(float *p, int64_t n) {
  if (dist_hooks.rank_reduce_f32) dist_hooks.rank_reduce_f32(dist_hooks.user, p, n, false);
}

void kiln_dist_buffer_updated(void *p, int64_t bytes) {
  if (dist_hooks.buffer_updated) dist_hooks.buffer_updated(dist_hooks.user, p, bytes);
}
