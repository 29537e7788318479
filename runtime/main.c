// kiln_main(): the command-line driver of a standalone model binary. It parses the flags, binds
// .npy files to the model's inputs and outputs, checks dtypes and shapes, loads the weights, runs
// the model in chunks of its own batch size, optionally benchmarks the first chunk, and writes the
// requested outputs once every run has succeeded. Exit codes: 0 ok, 2 bad input, 1 internal error.
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L  // readlink, access
#endif

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln_rt_internal.h"
#include "kiln_runtime.h"

enum { EXIT_GOOD = 0, EXIT_INTERNAL = 1, EXIT_BAD_INPUT = 2 };
#define MAX_BENCH_RUNS 10000000L
#define MAX_THREADS 4096L

typedef struct cli {
  const char **in_args, **out_args;  // the [NAME=]FILE values, in command-line order
  int n_in_args, n_out_args;
  const char *weights;
  long bench;    // timed runs; 0: no benchmark
  long threads;  // 0: OpenMP's default
  bool help;
} cli;

typedef struct session {
  const kiln_model_desc *m;
  const char *prog;
  cli c;
  const char **in_path, **out_path;  // the file bound to each model input / output, or NULL
  kiln_array *in, *out;              // one per model input / output
  int64_t chunks;                    // the batch runs as this many model-sized chunks
  int chunk_source;                  // the input that set `chunks`
  size_t *in_chunk, *out_chunk;      // bytes per chunk
  void **in_stage, **out_stage;      // aligned copies of chunks that are not 64-byte aligned
  const void **in_ptr;               // what run() receives
  void **out_ptr;
  char *default_weights;
  void *ctx;
  bool ctx_init;  // an init function was called, so release must be
  double *times;
} session;

// One side of the model's interface, for binding files to names.
typedef struct io_side {
  const char *kind;  // "input" / "output"
  const char *flag;  // "--input" / "--output"
  const kiln_io_desc *io;
  int n;
  const char **args;
  int n_args;
  const char **paths;  // result: the file bound to each slot
} io_side;

static int fail(const session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(const session *s, int code, const char *fmt, ...) {
  fprintf(stderr, "%s: ", s->prog);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return code;
}

static int status_exit(int status) {
  return status == KILN_ERR_NOMEM ? EXIT_INTERNAL : EXIT_BAD_INPUT;
}

// "[2, 3]"; "[]" for a scalar.
static const char *shape_str(const int64_t *shape, int rank, char *buf, size_t cap) {
  size_t n = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < rank && n < cap; i++) {
    n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
  }
  if (n < cap) snprintf(buf + n, cap - n, "]");
  return buf;
}

#define SHAPE_BUF (KILN_RT_MAX_RANK * 24 + 4)

static void print_names(FILE *f, const io_side *side) {
  if (side->n == 0) fputs("(none)", f);
  for (int i = 0; i < side->n; i++) fprintf(f, "%s%s", i ? ", " : "", side->io[i].name);
}

// ---- usage ----

static int name_width(const kiln_io_desc *io, int n, int width) {
  for (int i = 0; i < n; i++) {
    int len = (int)strlen(io[i].name);
    if (len > width) width = len;
  }
  return width;
}

static void print_io(FILE *f, const kiln_io_desc *io, int n, int width) {
  char shape[SHAPE_BUF];
  for (int i = 0; i < n; i++) {
    fprintf(f, "  %-*s  %-4s  %s\n", width, io[i].name, kiln_rt_dtype_name(io[i].dtype),
            shape_str(io[i].shape, io[i].rank, shape, sizeof shape));
  }
  if (n == 0) fprintf(f, "  (none)\n");
}

static void print_usage(const session *s, FILE *f) {
  const kiln_model_desc *m = s->m;
  fprintf(f,
          "usage: %s --input [NAME=]FILE.npy ... [--output [NAME=]FILE.npy ...]\n"
          "       [--weights FILE] [--bench N] [--threads N]\n\n",
          s->prog);
  fprintf(f, "Runs the model '%s' on .npy inputs.\n\ninputs:\n", m->name ? m->name : s->prog);
  int width = name_width(m->outputs, m->n_outputs, name_width(m->inputs, m->n_inputs, 4));
  print_io(f, m->inputs, m->n_inputs, width);
  fprintf(f, "outputs:\n");
  print_io(f, m->outputs, m->n_outputs, width);
  fprintf(
      f,
      "\noptions:\n"
      "  --input [NAME=]FILE.npy   an input; files without NAME= fill the inputs in order.\n"
      "                            The leading dimension may be any multiple of the model's:\n"
      "                            the batch then runs in chunks and outputs are stacked.\n"
      "  --output [NAME=]FILE.npy  write an output (outputs not named are not written)\n"
      "  --weights FILE            the weights file (default: %s)\n"
      "  --bench N                 after a warm-up, time N runs of the first chunk and print\n"
      "                            median_ms=<milliseconds>\n"
      "  --threads N               OpenMP threads (default: OMP_NUM_THREADS or all cores)\n"
      "  -h, --help                show this help\n",
      m->init_embedded ? "the weights embedded in the binary" : "this binary's path + .weights");
}

// ---- flags ----

typedef enum {
  OPT_INPUT,
  OPT_OUTPUT,
  OPT_WEIGHTS,
  OPT_BENCH,
  OPT_THREADS,
  OPT_HELP,
  OPT_NONE
} opt_kind;

static const struct {
  const char *name;
  opt_kind kind;
} options[] = {
    {"--input", OPT_INPUT}, {"--output", OPT_OUTPUT},   {"--weights", OPT_WEIGHTS},
    {"--bench", OPT_BENCH}, {"--threads", OPT_THREADS}, {"--help", OPT_HELP},
    {"-h", OPT_HELP},
};

// Which option arg is; for --name=value, *value points at the value.
static opt_kind classify(const char *arg, const char **value) {
  *value = NULL;
  for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
    size_t len = strlen(options[i].name);
    if (strncmp(arg, options[i].name, len) != 0) continue;
    if (arg[len] == '\0') return options[i].kind;
    if (arg[len] == '=' && options[i].kind != OPT_HELP) {
      *value = arg + len + 1;
      return options[i].kind;
    }
  }
  return OPT_NONE;
}

static bool parse_count(const char *text, long lo, long hi, long *out) {
  char *end = NULL;
  long v = strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static int set_count(session *s, const char *flag, const char *value, long hi, long *out) {
  if (*out != 0) return fail(s, EXIT_BAD_INPUT, "%s given twice", flag);
  if (parse_count(value, 1, hi, out)) return EXIT_GOOD;
  return fail(s, EXIT_BAD_INPUT, "%s needs a whole number from 1 to %ld, got '%s'", flag, hi,
              value);
}

static int apply_option(session *s, opt_kind kind, const char *flag, const char *value) {
  if (*value == '\0') return fail(s, EXIT_BAD_INPUT, "%s needs a non-empty value", flag);
  switch (kind) {
    case OPT_INPUT: s->c.in_args[s->c.n_in_args++] = value; return EXIT_GOOD;
    case OPT_OUTPUT: s->c.out_args[s->c.n_out_args++] = value; return EXIT_GOOD;
    case OPT_BENCH: return set_count(s, "--bench", value, MAX_BENCH_RUNS, &s->c.bench);
    case OPT_THREADS: return set_count(s, "--threads", value, MAX_THREADS, &s->c.threads);
    default: break;
  }
  if (s->c.weights) return fail(s, EXIT_BAD_INPUT, "--weights given twice");
  s->c.weights = value;
  return EXIT_GOOD;
}

static int reject_arg(const session *s, const char *arg) {
  if (arg[0] == '-') return fail(s, EXIT_BAD_INPUT, "unknown option '%s' (try --help)", arg);
  return fail(s, EXIT_BAD_INPUT,
              "unexpected argument '%s'; give inputs as --input FILE.npy (try --help)", arg);
}

static int parse_args(session *s, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *value = NULL;
    opt_kind kind = classify(arg, &value);
    if (kind == OPT_HELP) {
      s->c.help = true;
      return EXIT_GOOD;
    }
    if (kind == OPT_NONE) return reject_arg(s, arg);
    if (!value && i + 1 >= argc) return fail(s, EXIT_BAD_INPUT, "%s needs a value", arg);
    if (!value) value = argv[++i];
    int rc = apply_option(s, kind, arg, value);
    if (rc != EXIT_GOOD) return rc;
  }
  return EXIT_GOOD;
}

// ---- binding files to names ----

// The slot whose name prefixes arg as "NAME=" (the longest such name), or -1.
static int named_slot(const io_side *side, const char *arg, const char **path) {
  int best = -1;
  size_t best_len = 0;
  for (int i = 0; i < side->n; i++) {
    size_t len = strlen(side->io[i].name);
    if (strncmp(arg, side->io[i].name, len) == 0 && arg[len] == '=' &&
        (best < 0 || len > best_len)) {
      best = i;
      best_len = len;
    }
  }
  if (best >= 0) *path = arg + best_len + 1;
  return best;
}

static int unknown_name(const session *s, const io_side *side, const char *arg) {
  int len = (int)(strchr(arg, '=') - arg);
  fprintf(stderr, "%s: unknown %s '%.*s' in %s %s; the model's %ss are: ", s->prog, side->kind, len,
          arg, side->flag, arg, side->kind);
  print_names(stderr, side);
  fputc('\n', stderr);
  return EXIT_BAD_INPUT;
}

// Binds one NAME=FILE argument; sets *positional for a plain FILE.
static int bind_named(const session *s, io_side *side, const char *arg, bool *positional) {
  const char *path = NULL;
  int slot = named_slot(side, arg, &path);
  *positional = false;
  if (slot < 0 && strchr(arg, '=') && access(arg, F_OK) != 0) return unknown_name(s, side, arg);
  if (slot < 0) {
    *positional = true;
    return EXIT_GOOD;
  }
  if (*path == '\0') return fail(s, EXIT_BAD_INPUT, "%s %s: no file name", side->flag, arg);
  if (side->paths[slot]) {
    return fail(s, EXIT_BAD_INPUT, "%s '%s' given twice (%s and %s)", side->kind,
                side->io[slot].name, side->paths[slot], path);
  }
  side->paths[slot] = path;
  return EXIT_GOOD;
}

static int too_many(const session *s, const io_side *side, const char *arg) {
  fprintf(stderr, "%s: too many %s files at '%s': the model has %d %s%s: ", s->prog, side->kind,
          arg, side->n, side->kind, side->n == 1 ? "" : "s");
  print_names(stderr, side);
  fputc('\n', stderr);
  return EXIT_BAD_INPUT;
}

// Named files first, then plain files fill the remaining slots in order.
static int bind_side(const session *s, io_side *side) {
  bool *positional = calloc((size_t)side->n_args + 1, sizeof *positional);
  if (!positional) return fail(s, EXIT_INTERNAL, "out of memory");
  int rc = EXIT_GOOD;
  for (int a = 0; a < side->n_args && rc == EXIT_GOOD; a++) {
    rc = bind_named(s, side, side->args[a], &positional[a]);
  }
  int next = 0;
  for (int a = 0; a < side->n_args && rc == EXIT_GOOD; a++) {
    if (!positional[a]) continue;
    while (next < side->n && side->paths[next]) next++;
    if (next == side->n)
      rc = too_many(s, side, side->args[a]);
    else
      side->paths[next] = side->args[a];
  }
  free(positional);
  return rc;
}

static int check_inputs_complete(const session *s) {
  int rc = EXIT_GOOD;
  char shape[SHAPE_BUF];
  for (int i = 0; i < s->m->n_inputs; i++) {
    if (s->in_path[i]) continue;
    const kiln_io_desc *d = &s->m->inputs[i];
    rc = fail(s, EXIT_BAD_INPUT, "missing input '%s' (%s %s); give it with --input %s=FILE.npy",
              d->name, kiln_rt_dtype_name(d->dtype),
              shape_str(d->shape, d->rank, shape, sizeof shape), d->name);
  }
  return rc;
}

static int check_outputs_distinct(const session *s) {
  for (int i = 0; i < s->m->n_outputs; i++) {
    for (int j = 0; j < i; j++) {
      if (!s->out_path[i] || !s->out_path[j] || strcmp(s->out_path[i], s->out_path[j]) != 0)
        continue;
      return fail(s, EXIT_BAD_INPUT, "outputs '%s' and '%s' would both be written to %s",
                  s->m->outputs[j].name, s->m->outputs[i].name, s->out_path[i]);
    }
  }
  return EXIT_GOOD;
}

static int bind_all(session *s) {
  const kiln_model_desc *m = s->m;
  io_side in = {"input",      "--input",      m->inputs, m->n_inputs,
                s->c.in_args, s->c.n_in_args, s->in_path};
  io_side out = {"output",      "--output",      m->outputs, m->n_outputs,
                 s->c.out_args, s->c.n_out_args, s->out_path};
  int rc = bind_side(s, &in);
  if (rc == EXIT_GOOD) rc = bind_side(s, &out);
  if (rc == EXIT_GOOD) rc = check_inputs_complete(s);
  if (rc == EXIT_GOOD) rc = check_outputs_distinct(s);
  return rc;
}

// ---- inputs ----

// How many model-sized chunks `a` holds along its leading dimension; 0 if the shape does not fit.
static int64_t chunk_count(const kiln_array *a, const kiln_io_desc *d) {
  if (a->rank != d->rank) return 0;
  for (int i = 1; i < d->rank; i++) {
    if (a->shape[i] != d->shape[i]) return 0;
  }
  if (d->rank == 0 || a->shape[0] == d->shape[0]) return 1;
  if (d->shape[0] <= 0 || a->shape[0] <= 0 || a->shape[0] % d->shape[0] != 0) return 0;
  return a->shape[0] / d->shape[0];
}

static int shape_error(const session *s, const char *path, const kiln_array *a,
                       const kiln_io_desc *d) {
  char got[SHAPE_BUF], want[SHAPE_BUF], note[96] = "";
  if (d->rank > 0 && d->shape[0] > 0) {
    snprintf(note, sizeof note, " (or a multiple of %lld along the first dimension)",
             (long long)d->shape[0]);
  }
  return fail(s, EXIT_BAD_INPUT, "%s: shape %s, but input '%s' has shape %s%s", path,
              shape_str(a->shape, a->rank, got, sizeof got), d->name,
              shape_str(d->shape, d->rank, want, sizeof want), note);
}

static int load_input(session *s, int i) {
  const kiln_io_desc *d = &s->m->inputs[i];
  const char *path = s->in_path[i];
  kiln_array *a = &s->in[i];
  char err[512];
  int status = kiln_npy_read(path, a, err, sizeof err);
  if (status != KILN_OK) return fail(s, status_exit(status), "%s", err);
  if (a->dtype != d->dtype) {
    return fail(s, EXIT_BAD_INPUT, "%s: dtype %s, but input '%s' is %s", path,
                kiln_rt_dtype_name(a->dtype), d->name, kiln_rt_dtype_name(d->dtype));
  }
  int64_t k = chunk_count(a, d);
  if (k == 0) return shape_error(s, path, a, d);
  if (s->chunks == 0) {
    s->chunks = k;
    s->chunk_source = i;
  } else if (k != s->chunks) {
    return fail(s, EXIT_BAD_INPUT,
                "%s: holds %lld batches of input '%s', but %s holds %lld batches of input '%s'; "
                "all inputs must hold the same number",
                path, (long long)k, d->name, s->in_path[s->chunk_source], (long long)s->chunks,
                s->m->inputs[s->chunk_source].name);
  }
  s->in_chunk[i] = a->nbytes / (size_t)k;
  return EXIT_GOOD;
}

static int load_inputs(session *s) {
  for (int i = 0; i < s->m->n_inputs; i++) {
    int rc = load_input(s, i);
    if (rc != EXIT_GOOD) return rc;
  }
  if (s->chunks == 0) s->chunks = 1;
  return EXIT_GOOD;
}

// ---- outputs and staging buffers ----

static int alloc_output(session *s, int j) {
  const kiln_io_desc *d = &s->m->outputs[j];
  kiln_array *a = &s->out[j];
  a->dtype = d->dtype;
  a->rank = d->rank;
  memcpy(a->shape, d->shape, sizeof a->shape);
  if (s->chunks > 1 && d->rank == 0) {
    return fail(s, EXIT_BAD_INPUT,
                "the inputs hold %lld batches, but output '%s' is a scalar "
                "and cannot be stacked",
                (long long)s->chunks, d->name);
  }
  size_t size = kiln_rt_dtype_size(d->dtype);
  if (d->rank > 0) {  // stacked along dim 0; -1 (rejected below) if that overflows
    a->shape[0] = d->shape[0] > INT64_MAX / s->chunks ? -1 : d->shape[0] * s->chunks;
  }
  if (!kiln_rt_shape_bytes(d->shape, d->rank, size, NULL, &s->out_chunk[j]) ||
      !kiln_rt_shape_bytes(a->shape, a->rank, size, NULL, &a->nbytes)) {
    return fail(s, EXIT_BAD_INPUT, "output '%s' would be too large for %lld batches", d->name,
                (long long)s->chunks);
  }
  a->data = kiln_aligned_alloc(a->nbytes);
  if (!a->data) return fail(s, EXIT_INTERNAL, "out of memory for output '%s'", d->name);
  return EXIT_GOOD;
}

// A staging buffer is needed when chunks after the first would not be 64-byte aligned.
static int alloc_stage(const session *s, size_t chunk_bytes, void **stage) {
  if (s->chunks <= 1 || chunk_bytes % KILN_RT_ALIGN == 0) return EXIT_GOOD;
  *stage = kiln_aligned_alloc(chunk_bytes);
  return *stage ? EXIT_GOOD : fail(s, EXIT_INTERNAL, "out of memory");
}

static int prepare_buffers(session *s) {
  int rc = EXIT_GOOD;
  for (int j = 0; j < s->m->n_outputs && rc == EXIT_GOOD; j++) rc = alloc_output(s, j);
  for (int i = 0; i < s->m->n_inputs && rc == EXIT_GOOD; i++) {
    rc = alloc_stage(s, s->in_chunk[i], &s->in_stage[i]);
  }
  for (int j = 0; j < s->m->n_outputs && rc == EXIT_GOOD; j++) {
    rc = alloc_stage(s, s->out_chunk[j], &s->out_stage[j]);
  }
  return rc;
}

// ---- weights ----

static const char *default_weights_path(session *s, const char *argv0) {
  const char *base = argv0 && *argv0 ? argv0 : s->prog;
  char exe[4096];
  if (!strchr(base, '/')) {  // found on PATH: ask the kernel where the binary is
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
      exe[n] = '\0';
      base = exe;
    }
  }
  size_t len = strlen(base);
  s->default_weights = malloc(len + sizeof ".weights");
  if (!s->default_weights) return NULL;
  memcpy(s->default_weights, base, len);
  memcpy(s->default_weights + len, ".weights", sizeof ".weights");
  return s->default_weights;
}

// Checks the file's header against the model before init_file reads it, for precise messages.
static int probe_weights(const session *s, const char *path) {
  uint64_t bytes = 0;
  char err[512];
  int status = kiln_rt_weights_probe(path, &bytes, err, sizeof err);
  if (status != KILN_OK) return fail(s, EXIT_BAD_INPUT, "%s", err);
  if (bytes != s->m->weights_bytes) {
    return fail(s, EXIT_BAD_INPUT, "weights file %s has %llu bytes of payload, model expects %zu",
                path, (unsigned long long)bytes, s->m->weights_bytes);
  }
  return EXIT_GOOD;
}

// init_file reports only a status; reading the file again gives the exact message.
static int init_error(const session *s, const char *path, int status) {
  char err[512];
  void *payload = NULL;
  if (status == KILN_ERR_WEIGHTS || status == KILN_ERR_IO || status == KILN_ERR_FORMAT) {
    int again = kiln_weights_read(path, s->m->weights_bytes, s->m->weights_checksum, &payload, err,
                                  sizeof err);
    kiln_aligned_free(payload);
    if (again != KILN_OK) return fail(s, EXIT_BAD_INPUT, "%s", err);
    return fail(s, EXIT_BAD_INPUT, "cannot load weights file %s: %s", path,
                kiln_status_str(status));
  }
  return fail(s, EXIT_INTERNAL, "loading the model with weights %s failed: %s (status %d)", path,
              kiln_status_str(status), status);
}

static int init_from_file(session *s, const char *argv0) {
  const char *path = s->c.weights ? s->c.weights : default_weights_path(s, argv0);
  if (!path) return fail(s, EXIT_INTERNAL, "out of memory");
  int rc = probe_weights(s, path);
  if (rc != EXIT_GOOD) return rc;
  s->ctx_init = true;
  int status = s->m->init_file(s->ctx, path);
  return status == KILN_OK ? EXIT_GOOD : init_error(s, path, status);
}

static int init_model(session *s, const char *argv0) {
  const kiln_model_desc *m = s->m;
  s->ctx = calloc(1, m->ctx_bytes ? m->ctx_bytes : 1);
  if (!s->ctx) return fail(s, EXIT_INTERNAL, "out of memory for the model context");
  if (!s->c.weights && m->init_embedded) {
    s->ctx_init = true;
    int status = m->init_embedded(s->ctx);
    if (status == KILN_OK) return EXIT_GOOD;
    return fail(s, EXIT_INTERNAL, "loading the embedded weights failed: %s (status %d)",
                kiln_status_str(status), status);
  }
  if (m->init_file) return init_from_file(s, argv0);
  if (s->c.weights) return fail(s, EXIT_BAD_INPUT, "--weights: this model takes no weights file");
  return EXIT_GOOD;
}

// ---- running ----

static void prepare_chunk(session *s, int64_t c) {
  for (int i = 0; i < s->m->n_inputs; i++) {
    const char *src = (const char *)s->in[i].data + (size_t)c * s->in_chunk[i];
    if (s->in_stage[i]) memcpy(s->in_stage[i], src, s->in_chunk[i]);
    s->in_ptr[i] = s->in_stage[i] ? s->in_stage[i] : src;
  }
  for (int j = 0; j < s->m->n_outputs; j++) {
    char *dst = (char *)s->out[j].data + (size_t)c * s->out_chunk[j];
    s->out_ptr[j] = s->out_stage[j] ? s->out_stage[j] : dst;
  }
}

static void finish_chunk(session *s, int64_t c) {
  for (int j = 0; j < s->m->n_outputs; j++) {
    char *dst = (char *)s->out[j].data + (size_t)c * s->out_chunk[j];
    if (s->out_stage[j]) memcpy(dst, s->out_stage[j], s->out_chunk[j]);
  }
}

static int run_failed(const session *s, int64_t c, int status) {
  return fail(s, EXIT_INTERNAL, "the model failed on batch %lld of %lld: %s (status %d)",
              (long long)c + 1, (long long)s->chunks, kiln_status_str(status), status);
}

static int run_all(session *s) {
  for (int64_t c = 0; c < s->chunks; c++) {
    prepare_chunk(s, c);
    int status = s->m->run(s->ctx, s->in_ptr, s->out_ptr);
    if (status != KILN_OK) return run_failed(s, c, status);
    finish_chunk(s, c);
  }
  return EXIT_GOOD;
}

// run_all has already run the first chunk once, which serves as the warm-up.
static int bench(session *s) {
  if (s->c.bench == 0) return EXIT_GOOD;
  s->times = malloc((size_t)s->c.bench * sizeof *s->times);
  if (!s->times) return fail(s, EXIT_INTERNAL, "out of memory");
  prepare_chunk(s, 0);
  for (long r = 0; r < s->c.bench; r++) {
    double start = kiln_now_ms();
    int status = s->m->run(s->ctx, s->in_ptr, s->out_ptr);
    s->times[r] = kiln_now_ms() - start;
    if (status != KILN_OK) return run_failed(s, 0, status);
  }
  finish_chunk(s, 0);
  printf("median_ms=%.4f\n", kiln_median(s->times, (int)s->c.bench));
  fflush(stdout);
  return EXIT_GOOD;
}

static int write_outputs(const session *s) {
  char err[512];
  for (int j = 0; j < s->m->n_outputs; j++) {
    if (!s->out_path[j]) continue;
    int status = kiln_npy_write(s->out_path[j], &s->out[j], err, sizeof err);
    if (status != KILN_OK) return fail(s, status_exit(status), "%s", err);
  }
  return EXIT_GOOD;
}

// ---- session ----

static bool io_valid(const kiln_io_desc *io, int n) {
  if (n < 0 || (n > 0 && !io)) return false;
  for (int i = 0; i < n; i++) {
    if (!io[i].name || kiln_rt_dtype_size(io[i].dtype) == 0) return false;
    if (!kiln_rt_shape_bytes(io[i].shape, io[i].rank, 1, NULL, NULL)) return false;
  }
  return true;
}

static int check_model(const session *s) {
  const kiln_model_desc *m = s->m;
  if (m && m->run && io_valid(m->inputs, m->n_inputs) && io_valid(m->outputs, m->n_outputs)) {
    return EXIT_GOOD;
  }
  return fail(s, EXIT_INTERNAL, "invalid model description");
}

static bool alloc_session(session *s, int argc) {
  size_t args = (size_t)(argc > 0 ? argc : 1);
  size_t ni = (size_t)s->m->n_inputs + 1, no = (size_t)s->m->n_outputs + 1;
  s->c.in_args = calloc(args, sizeof *s->c.in_args);
  s->c.out_args = calloc(args, sizeof *s->c.out_args);
  s->in_path = calloc(ni, sizeof *s->in_path);
  s->out_path = calloc(no, sizeof *s->out_path);
  s->in = calloc(ni, sizeof *s->in);
  s->out = calloc(no, sizeof *s->out);
  s->in_chunk = calloc(ni, sizeof *s->in_chunk);
  s->out_chunk = calloc(no, sizeof *s->out_chunk);
  s->in_stage = calloc(ni, sizeof *s->in_stage);
  s->out_stage = calloc(no, sizeof *s->out_stage);
  s->in_ptr = calloc(ni, sizeof *s->in_ptr);
  s->out_ptr = calloc(no, sizeof *s->out_ptr);
  return s->c.in_args && s->c.out_args && s->in_path && s->out_path && s->in && s->out &&
         s->in_chunk && s->out_chunk && s->in_stage && s->out_stage && s->in_ptr && s->out_ptr;
}

static void free_session(session *s) {
  if (s->ctx_init && s->m->release) s->m->release(s->ctx);
  free(s->ctx);
  for (int i = 0; s->in && i < s->m->n_inputs; i++) kiln_array_free(&s->in[i]);
  for (int j = 0; s->out && j < s->m->n_outputs; j++) kiln_array_free(&s->out[j]);
  for (int i = 0; s->in_stage && i < s->m->n_inputs; i++) kiln_aligned_free(s->in_stage[i]);
  for (int j = 0; s->out_stage && j < s->m->n_outputs; j++) kiln_aligned_free(s->out_stage[j]);
  free(s->c.in_args);
  free(s->c.out_args);
  free(s->in_path);
  free(s->out_path);
  free(s->in);
  free(s->out);
  free(s->in_chunk);
  free(s->out_chunk);
  free(s->in_stage);
  free(s->out_stage);
  free(s->in_ptr);
  free(s->out_ptr);
  free(s->default_weights);
  free(s->times);
}

static int run_session(session *s, int argc, char **argv) {
  if (!alloc_session(s, argc)) return fail(s, EXIT_INTERNAL, "out of memory");
  int rc = parse_args(s, argc, argv);
  if (rc != EXIT_GOOD) return rc;
  if (s->c.help) {
    print_usage(s, stdout);
    return EXIT_GOOD;
  }
  rc = bind_all(s);
  if (rc == EXIT_GOOD) rc = load_inputs(s);
  if (rc == EXIT_GOOD) rc = prepare_buffers(s);
  if (rc == EXIT_GOOD) {
    kiln_set_threads((int)s->c.threads);
    rc = init_model(s, argc > 0 ? argv[0] : NULL);
  }
  if (rc == EXIT_GOOD) rc = run_all(s);
  if (rc == EXIT_GOOD) rc = bench(s);
  if (rc == EXIT_GOOD) rc = write_outputs(s);
  return rc;
}

static const char *program_name(const kiln_model_desc *m, int argc, char **argv) {
  if (argc > 0 && argv && argv[0] && *argv[0]) {
    const char *slash = strrchr(argv[0], '/');
    return slash && slash[1] ? slash + 1 : argv[0];
  }
  return m && m->name ? m->name : "kiln-model";
}

int kiln_main(const kiln_model_desc *m, int argc, char **argv) {
  session s = {.m = m, .prog = program_name(m, argc, argv)};
  int rc = check_model(&s);
  if (rc != EXIT_GOOD) return rc;
  rc = run_session(&s, argc, argv);
  free_session(&s);
  fflush(stdout);
  return rc;
}
