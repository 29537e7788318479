// The generated trainer (docs/training.md §5): kiln_train_main drives a training build's step
// function over a dataset (train_data.c) with seeded shuffling, batching, a progress bar, per-epoch
// evaluation, atomic checkpoints of every STATE tensor (kiln_state_save) and exact resumption.
//
// Resumption is exact because nothing but the STATE tensors carries over between steps: the
// order of epoch e is a permutation drawn from (seed, e), and the step counter `kiln.step` says
// where in it the run stopped.
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln_rt_internal.h"
#include "train_data.h"

enum { EXIT_OK = 0, EXIT_INTERNAL = 1, EXIT_BAD = 2, EXIT_INTERRUPTED = 130 };

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
      if (strict) {
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
} options;

static void usage(const char *prog) {
  fprintf(stderr,
          "usage: %s --train SRC [--test SRC] [--epochs N] [--batch N] [--save CKPT.safetensors]\n"
          "          [--resume CKPT] [--weights FILE.safetensors] [--max-steps N] [--seed S]\n"
          "          [--log FILE.csv] [--threads N]\n"
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

static bool parse_options(int argc, char **argv, const kiln_train_desc *t, options *o) {
  *o = (options){.epochs = 1, .max_steps = -1, .seed = t->seed};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    const char **slot = strcmp(a, "--train") == 0     ? &o->train
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
  return o->train != NULL;
}

// ---- The session: the model, its context and one batch of inputs and outputs ----

typedef struct session {
  const kiln_train_desc *t;
  const kiln_model_desc *m;
  void *ctx;
  void **in, **out;
  int data_input;
  int64_t batch, x_numel, y_numel, classes;
  int64_t *step;  // the STATE step counter
  FILE *log;
} session;

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

static int open_session(session *s, const kiln_train_desc *t, const char *argv0, const options *o) {
  memset(s, 0, sizeof(*s));
  s->t = t, s->m = t->model, s->data_input = -1;
  const kiln_model_desc *m = s->m;
  for (int i = 0; i < m->n_inputs; i++)
    if (i != t->label_input && i != t->weight_input) {
      if (s->data_input >= 0) {
        fprintf(stderr, "kiln-train: the model has several data inputs; the trainer feeds one\n");
        return EXIT_BAD;
      }
      s->data_input = i;
    }
  if (s->data_input < 0)
    return fprintf(stderr, "kiln-train: the model has no data input\n"), EXIT_BAD;
  s->batch = m->inputs[s->data_input].shape[0];
  if (o->batch && o->batch != s->batch) {
    fprintf(stderr,
            "kiln-train: --batch %lld: this trainer was compiled for batch %lld "
            "(training.batch_size); rebuild it to change the batch\n",
            (long long)o->batch, (long long)s->batch);
    return EXIT_BAD;
  }
  s->x_numel = io_numel(&m->inputs[s->data_input]) / s->batch;
  s->y_numel = io_numel(&m->inputs[t->label_input]) / s->batch;
  if (t->classification && t->logits_output > 0 && m->outputs[t->logits_output].rank == 2)
    s->classes = m->outputs[t->logits_output].shape[1];
  s->ctx = calloc(1, m->ctx_bytes);
  s->in = calloc((size_t)m->n_inputs + 1, sizeof(void *));
  s->out = calloc((size_t)m->n_outputs + 1, sizeof(void *));
  if (!s->ctx || !s->in || !s->out) return EXIT_INTERNAL;
  for (int i = 0; i < m->n_inputs; i++)
    if (!(s->in[i] = alloc_io(&m->inputs[i]))) return EXIT_INTERNAL;
  for (int i = 0; i < m->n_outputs; i++)
    if (!(s->out[i] = alloc_io(&m->outputs[i]))) return EXIT_INTERNAL;
  if (t->weight_input >= 0)  // per-sample weights: 1 (no source gives them yet)
    for (int64_t k = 0; k < io_numel(&m->inputs[t->weight_input]); k++)
      kiln_element_set(s->in[t->weight_input], m->inputs[t->weight_input].dtype, k, 1.0);
  int st;
  if (m->init_embedded) {
    st = m->init_embedded(s->ctx);
  } else {
    size_t n = strlen(argv0) + 16;
    char *path = malloc(n);
    snprintf(path, n, "%s.weights", argv0);
    st = m->init_file(s->ctx, path);
    if (st != KILN_OK) fprintf(stderr, "kiln-train: %s: %s\n", path, kiln_status_str(st));
    free(path);
    if (st != KILN_OK) return st == KILN_ERR_NOMEM ? EXIT_INTERNAL : EXIT_BAD;
  }
  if (st != KILN_OK) return fprintf(stderr, "kiln-train: %s\n", kiln_status_str(st)), EXIT_BAD;
  s->step = find_step(t, s->ctx);
  if (!s->step) return fprintf(stderr, "kiln-train: no step counter in the model\n"), EXIT_INTERNAL;
  return EXIT_OK;
}

static void close_session(session *s) {
  if (s->ctx && s->m) s->m->release(s->ctx);
  for (int i = 0; s->m && s->in && i < s->m->n_inputs; i++) kiln_aligned_free(s->in[i]);
  for (int i = 0; s->m && s->out && i < s->m->n_outputs; i++) kiln_aligned_free(s->out[i]);
  free(s->in);
  free(s->out);
  free(s->ctx);
  if (s->log) fclose(s->log);
}

// The data must fit the model: sample size, label size, class labels in range.
static bool check_data(const session *s, const kiln_dataset *d) {
  if (d->x_numel != s->x_numel) {
    fprintf(
        stderr, "kiln-train: %s: each sample has %lld values, the model's input %s takes %lld\n",
        d->source, (long long)d->x_numel, s->m->inputs[s->data_input].name, (long long)s->x_numel);
    return false;
  }
  if (d->y_numel != s->y_numel) {
    fprintf(stderr, "kiln-train: %s: each label has %lld values, the model's %s takes %lld\n",
            d->source, (long long)d->y_numel, s->m->inputs[s->t->label_input].name,
            (long long)s->y_numel);
    return false;
  }
  if (d->n < s->batch) {
    fprintf(stderr, "kiln-train: %s: %lld samples, fewer than one batch of %lld\n", d->source,
            (long long)d->n, (long long)s->batch);
    return false;
  }
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

// Copies samples idx[0..batch) into the input buffers (converting to the inputs' dtypes).
static void fill_batch(session *s, const kiln_dataset *d, const int64_t *idx) {
  const kiln_io_desc *xi = &s->m->inputs[s->data_input], *yi = &s->m->inputs[s->t->label_input];
  for (int64_t b = 0; b < s->batch; b++) {
    for (int64_t k = 0; k < s->x_numel; k++)
      kiln_element_set(s->in[s->data_input], xi->dtype, b * s->x_numel + k,
                       kiln_dataset_x(d, idx[b], k));
    for (int64_t k = 0; k < s->y_numel; k++)
      kiln_element_set(s->in[s->t->label_input], yi->dtype, b * s->y_numel + k,
                       kiln_dataset_y(d, idx[b], k));
  }
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

// Forward pass and loss over all of d in batches; the last partial batch is padded with the
// first samples, which count for neither the loss nor the accuracy.
static bool evaluate(session *s, const kiln_dataset *d, eval_result *r) {
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
  return ok;
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
  char err[512];
  int st = kiln_state_save(s->t, s->ctx, path, err, sizeof err);
  if (st != KILN_OK) fprintf(stderr, "kiln-train: cannot save the checkpoint: %s\n", err);
  return st == KILN_OK ? EXIT_OK : EXIT_BAD;
}

// ---- The loop ----

typedef struct run_state {
  const options *o;
  const kiln_dataset *train, *test;
  int64_t per_epoch;
  int64_t *perm;
  eval_result last;   // the last evaluation of the test set
  double train_loss;  // mean loss of the steps of the last epoch run (or since the start)
} run_state;

// One epoch from position pos; returns an exit code, or -1 to go on.
static int run_epoch(session *s, run_state *r, int64_t epoch) {
  const options *o = r->o;
  bool tty = isatty(2);
  double t0 = kiln_now_ms(), loss_sum = 0;
  int64_t pos = *s->step % r->per_epoch, first = pos;
  shuffle(r->perm, r->train->n, o->seed, epoch);
  for (; pos < r->per_epoch; pos++) {
    if (o->max_steps >= 0 && *s->step >= o->max_steps) return -2;
    fill_batch(s, r->train, r->perm + pos * s->batch);
    int st = s->m->run(s->ctx, (const void *const *)s->in, s->out);
    if (st != KILN_OK)
      return fprintf(stderr, "\nkiln-train: the training step failed: %s\n", kiln_status_str(st)),
             EXIT_INTERNAL;
    double loss = loss_of(s);
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
    r->train_loss = loss_sum / (double)(pos + 1 - first);
    if (s->log)
      fprintf(s->log, "%lld,%lld,%.9g,,\n", (long long)*s->step, (long long)epoch + 1, loss);
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
  fprintf(stderr, "epoch %lld: train_loss=%.6f", (long long)epoch + 1, r->train_loss);
  if (r->test) {
    if (!evaluate(s, r->test, &r->last)) return EXIT_INTERNAL;
    fprintf(stderr, " test_loss=%.6f", r->last.loss);
    if (r->last.accuracy >= 0) fprintf(stderr, " test_accuracy=%.4f", r->last.accuracy);
  }
  fprintf(stderr, " (%.1fs)\n", (kiln_now_ms() - t0) / 1000.0);
  if (s->log)
    fprintf(s->log, "%lld,%lld,,%.9g,%.6g\n", (long long)*s->step, (long long)epoch + 1,
            r->last.loss, r->last.accuracy);
  if (o->save && save_checkpoint(s, o->save) != EXIT_OK) return EXIT_BAD;
  return -1;
}

static int train(session *s, const options *o, const kiln_dataset *tr, const kiln_dataset *te) {
  run_state r = {.o = o,
                 .train = tr,
                 .test = te,
                 .per_epoch = tr->n / s->batch,
                 .last = {NAN, -1},
                 .train_loss = NAN};
  r.perm = malloc(sizeof(int64_t) * (size_t)tr->n);
  int rc = -1;
  bool evaluated = false;
  for (int64_t e = *s->step / r.per_epoch; e < o->epochs && rc == -1; e++) {
    rc = run_epoch(s, &r, e);
    evaluated = rc == -1;
  }
  free(r.perm);
  if (rc >= 0) return rc;
  if (!evaluated) {  // stopped by --max-steps (or nothing left to do): evaluate now
    if (te && !evaluate(s, te, &r.last)) return EXIT_INTERNAL;
    if (o->save && save_checkpoint(s, o->save) != EXIT_OK) return EXIT_BAD;
  }
  // The last line: the test set's accuracy (classifiers) or loss; without a test set, the mean
  // training loss of the last epoch's steps.
  if (!te)
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

static int restore(session *s, const options *o) {
  char err[768];
  const char *path = o->resume ? o->resume : o->weights;
  if (!path) return EXIT_OK;
  if (kiln_state_load(s->t, s->ctx, path, o->resume != NULL, err, sizeof err) != KILN_OK) {
    fprintf(stderr, "kiln-train: %s: %s\n", o->resume ? "--resume" : "--weights", err);
    return EXIT_BAD;
  }
  if (o->weights) *s->step = 0;  // new training from these weights
  return EXIT_OK;
}

int kiln_train_main(const kiln_train_desc *t, int argc, char **argv) {
  options o;
  if (!t || !t->model) return EXIT_INTERNAL;
  if (!parse_options(argc, argv, t, &o)) return usage(argv[0]), EXIT_BAD;
  if (o.resume && o.weights)
    return fprintf(stderr, "kiln-train: give --resume or --weights\n"), EXIT_BAD;
  if (o.threads) kiln_set_threads(o.threads);
  session s;
  kiln_dataset tr = {0}, te = {0};
  int rc = open_session(&s, t, argv[0], &o);
  if (rc == EXIT_OK) rc = restore(&s, &o);
  if (rc == EXIT_OK) rc = load_data(o.train, &s, &tr);
  if (rc == EXIT_OK && o.test) rc = load_data(o.test, &s, &te);
  if (rc == EXIT_OK && o.log && !(s.log = fopen(o.log, o.resume ? "a" : "w"))) {
    fprintf(stderr, "kiln-train: %s: cannot open: %s\n", o.log, strerror(errno));
    rc = EXIT_BAD;
  }
  if (rc == EXIT_OK && s.log && !o.resume)
    fprintf(s.log, "step,epoch,loss,eval_loss,eval_accuracy\n");
  if (rc == EXIT_OK) {
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    rc = train(&s, &o, &tr, o.test ? &te : NULL);
  }
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);
  close_session(&s);
  return rc;
}
