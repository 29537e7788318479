// The ONNX backend node tests Debian ships (libonnx-testdata), run through the compiled code path:
// for each test directory (model.onnx + test_data_set_*/input_N.pb, output_N.pb) the model is
// loaded in-process (to learn its inputs and outputs, and to classify a rejection), built with
// `kiln build` into a standalone binary, run on .npy files converted from the input .pb files,
// and its outputs compared with the output .pb files: |got - want| <= atol + rtol * |want| with
// 1e-5 + 1e-4 * |want|, raised to the tolerance an op states for itself (compiler/ops) when the
// model uses one that needs more; an infinity must be the same infinity, NaN must be NaN
// (tests/array_compare.h).
//
// A model rejected because it needs a graph input as a constant (runtime-input: Reshape's shape,
// Slice's starts, ...; or an empty integer input) is retried with the inputs the message names
// frozen to the first data set's values (`kiln build --freeze-input NAME=FILE`); such a pass is
// reported with the names of its frozen inputs (docs/onnx.md).
//
// Tests expected not to pass are listed in tests/onnx/expected_failures.txt, one a line:
//   SUITE/TEST  CATEGORY: detail
// A test not on the list that fails fails the run; a test on the list that passes is reported
// ("unexpected pass: remove it from the list") and fails the run too, so the list only shrinks.
// --update-expected rewrites the list from what failed, each entry with its category; an entry
// already listed keeps its text while the test fails the same way (reason_to_write).
//
//   onnx_conformance --kiln KILN --data DIR --expected FILE [--jobs N] [--subset FILE]
//                    [--backend c|llvm]
//                    [--update-expected] [--verbose]
// The last line is "N passed, M failed, K skipped" (skipped: on the list and still failing).
// Exit status: 0 if nothing failed, 1 otherwise, 77 (skip) if DIR does not exist.
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../compiler/frontend.h"
#include "../../compiler/onnx/onnx_import.h"
#include "../../compiler/ops/op.h"
#include "../array_compare.h"

enum { EXIT_SKIP = 77, REASON_MAX = 240, BUILD_TIMEOUT_S = 120, RUN_TIMEOUT_S = 60 };
static const char *const suites[] = {"node", "pytorch-converted", "pytorch-operator", NULL};
// Reason categories of expected failures (the first word of an entry's reason).
static const char *const categories[] = {
    "op",  "opset",    "dtype", "attribute", "dynamic-shape", "runtime-input", "check", "build",
    "run", "mismatch", "data",  "crash",     "malformed",     "empty",         NULL};

typedef struct options {
  const char *kiln, *data, *expected, *subset;
  const char *backend;  // --backend c|llvm: the `kiln build` backend (default c)
  int jobs;
  bool update, verbose;
} options;

typedef struct test_case {
  char *name;      // "node/test_abs"
  char *dir;       // absolute directory
  char *expected;  // reason from the list, or NULL
  bool passed;
  char reason[REASON_MAX];  // why it failed; for a pass, the inputs it froze ("" if none)
} test_case;

enum { MAX_FROZEN = 16 };

// The graph inputs a test compiles in (`kiln build --freeze-input NAME=FILE`) because the model
// needs them as constants (they determine shapes): input_N.pb of the first data set, as .npy.
typedef struct frozen_set {
  int n;
  kiln_frozen_input f[MAX_FROZEN];  // name and work/frozenN.npy
  int index[MAX_FROZEN];            // N of input_N.pb
  kiln_array value[MAX_FROZEN];
} frozen_set;

// ---- Small utilities ----

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) abort();
  return p;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) abort();
  va_end(ap);
  return s;
}

static bool is_dir(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

// Copies the first line of text (trimmed, at most REASON_MAX - 1 bytes) into out.
static void first_line(const char *text, char *out) {
  while (*text == ' ' || *text == '\n') text++;
  size_t n = strcspn(text, "\n");
  if (n >= REASON_MAX) n = REASON_MAX - 1;
  memcpy(out, text, n);
  out[n] = 0;
}

// Runs argv with stdout discarded and stderr captured (first 8 KiB) into err; returns the exit
// status, 128 + signal, or 124 on timeout.
static int run(char *const argv[], int timeout_s, char *err, size_t errlen) {
  int pe[2];
  if (pipe(pe) != 0) abort();
  pid_t pid = fork();
  if (pid < 0) abort();
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(pe[1], 2);
    close(pe[0]), close(pe[1]);
    execv(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(pe[1]);
  size_t len = 0;
  err[0] = 0;
  time_t deadline = time(NULL) + timeout_s;
  bool timed_out = false;
  for (;;) {
    struct pollfd p = {pe[0], POLLIN, 0};
    int left = (int)(deadline - time(NULL));
    if (left <= 0 || poll(&p, 1, left * 1000) == 0) {
      timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    char buf[4096];
    ssize_t n = read(pe[0], buf, sizeof buf);
    if (n <= 0) break;
    size_t take = (size_t)n < errlen - 1 - len ? (size_t)n : errlen - 1 - len;
    memcpy(err + len, buf, take);
    len += take;
    err[len] = 0;
  }
  close(pe[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (timed_out) return 124;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Formats into a REASON_MAX buffer, truncating long messages.
static void set_reason(char *reason, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_reason(char *reason, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, REASON_MAX, fmt, ap);
  va_end(ap);
}

// ---- Classifying a rejected model ----

// The importer's sections ("unsupported ops (2): Foo (node 'a'), ...") name the category; for
// ops the detail is the list of distinct op names.
static void classify_rejection(const char *msg, char *reason) {
  static const struct {
    const char *marker, *category;
  } sections[] = {{"unsupported ops (", "op"},
                  {"unsupported opsets (", "opset"},
                  {"unsupported dtypes (", "dtype"},
                  {"unsupported attributes (", "attribute"},
                  {"dynamic shapes (", "dynamic-shape"},
                  {"empty tensors (", "empty"},
                  {"not a valid ONNX model", "malformed"}};
  for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
    const char *at = strstr(msg, sections[i].marker);
    if (!at) continue;
    const char *detail = strchr(at, ':');
    char line[REASON_MAX];
    first_line(detail ? detail + 1 : at, line);
    set_reason(reason, "%s: %s", sections[i].category, line);
    return;
  }
  // Anything else is a check (attribute values, shape inference) of the frontend or an op, or,
  // when the op needs an input as a constant (a shape, axes, pads, sizes, a mode: what Kiln
  // compiles in) and the test feeds it as a graph input, runtime-input.
  const char *e = strstr(msg, "error: ");
  char line[REASON_MAX];
  first_line(e ? e + 7 : msg, line);
  bool runtime_input = strstr(line, "needs a constant") || strstr(line, "must be a constant") ||
                       strstr(line, "computed at run time") || strstr(line, "must be a param");
  set_reason(reason, "%s: %s", runtime_input ? "runtime-input" : "check", line);
}

// ---- Freezing the inputs that determine shapes ----

static bool is_name_char(char c) { return c == '_' || isalnum((unsigned char)c); }

// Whether the message names `name` as a whole word (e.g. "inputs[1] (shape): ...").
static bool message_names(const char *msg, const char *name) {
  size_t n = strlen(name);
  for (const char *p = strstr(msg, name); p && n; p = strstr(p + 1, name))
    if ((p == msg || !is_name_char(p[-1])) && !is_name_char(p[n])) return true;
  return false;
}

static bool is_frozen(const frozen_set *fz, int index) {
  for (int i = 0; i < fz->n; i++)
    if (fz->index[i] == index) return true;
  return false;
}

// Freezes every input of data set 0 that the rejection message names and is not frozen yet (with
// ints_only, only integer ones: an empty `axes` or `split`, not a zero-size activation); returns
// how many it added.
static int freeze_named_inputs(const test_case *t, const char *work, const char *msg,
                               bool ints_only, frozen_set *fz) {
  int added = 0;
  for (int i = 0; fz->n < MAX_FROZEN; i++) {
    char *pb = xasprintf("%s/test_data_set_0/input_%d.pb", t->dir, i);
    bool exists = is_file(pb);
    kiln_array a = {0};
    char *name = NULL, err[512];
    if (exists && !is_frozen(fz, i) &&
        kiln_onnx_read_tensor_file(pb, &a, &name, err, sizeof err) == KILN_OK && *name &&
        message_names(msg, name) &&
        (!ints_only || a.dtype == KILN_RT_I64 || a.dtype == KILN_RT_I32)) {
      char *npy = xasprintf("%s/frozen%d.npy", work, i);
      if (kiln_npy_write(npy, &a, err, sizeof err) == KILN_OK) {
        fz->f[fz->n] = (kiln_frozen_input){.name = name, .file = npy};
        fz->index[fz->n] = i;
        fz->value[fz->n++] = a;
        name = NULL, a = (kiln_array){0};
        added++;
      } else {
        free(npy);
      }
    }
    kiln_array_free(&a);
    free(name);
    free(pb);
    if (!exists) break;
  }
  return added;
}

static void frozen_set_free(frozen_set *fz) {
  for (int i = 0; i < fz->n; i++) {
    free((char *)fz->f[i].name);
    free((char *)fz->f[i].file);
    kiln_array_free(&fz->value[i]);
  }
  fz->n = 0;
}

// "shape, axes": the frozen inputs, for the report.
static void frozen_names(const frozen_set *fz, char *out) {
  out[0] = 0;
  for (int i = 0; i < fz->n; i++)
    snprintf(out + strlen(out), REASON_MAX - strlen(out), "%s%s", i ? ", " : "", fz->f[i].name);
}

// Loads the model in-process. When it is rejected because an input must be a constant (the
// runner's runtime-input classification; or an empty input, e.g. an empty `axes`), the inputs the
// message names are frozen to data set 0's values and it is loaded again, until it loads or the
// message names no new input. On failure, reason says why (with the last rejection).
static kiln_graph *load_freezing(const test_case *t, const char *model, const char *work,
                                 frozen_set *fz, char *reason) {
  for (;;) {
    char *msg = NULL;
    size_t msg_len = 0;
    kiln_diag d;
    kiln_diag_init(&d, model);
    d.out = open_memstream(&msg, &msg_len);
    kiln_load_options o = {.frozen = fz->f, .n_frozen = fz->n};
    kiln_graph *g = kiln_load_model_ex(model, &o, &d);
    fclose(d.out);
    if (!g) classify_rejection(msg, reason);
    bool empty = strncmp(reason, "empty:", 6) == 0;
    bool retry = !g && (empty || strncmp(reason, "runtime-input:", 14) == 0) &&
                 freeze_named_inputs(t, work, msg, empty, fz) > 0;
    free(msg);
    if (!retry) return g;
  }
}

// ---- Comparing ----

// 1e-5 + 1e-4 * |want|, or more when an op of the model states it needs more.
static kiln_tolerance model_tolerance(const kiln_graph *g) {
  kiln_tolerance t = {1e-5, 1e-4};
  for (int i = 0; i < g->n_nodes; i++) {
    kiln_tolerance o = kiln_op_get(g->nodes[i].op)->tol;
    if (o.atol > t.atol) t.atol = o.atol;
    if (o.rtol > t.rtol) t.rtol = o.rtol;
  }
  return t;
}

// ---- One test ----

typedef struct test_ctx {
  const options *o;
  const test_case *t;
  const char *work;  // this test's scratch directory
  const kiln_graph *g;
  const frozen_set *fz;
} test_ctx;

static bool same_array(const kiln_array *a, const kiln_array *b) {
  bool same = a->dtype == b->dtype && a->rank == b->rank && a->nbytes == b->nbytes;
  for (int i = 0; same && i < a->rank; i++) same = a->shape[i] == b->shape[i];
  return same && (!a->nbytes || memcmp(a->data, b->data, a->nbytes) == 0);
}

// A data set must feed a frozen input the value it was frozen to (data set 0's).
static bool check_frozen(const test_ctx *c, int i, const kiln_array *a, char *reason) {
  for (int k = 0; k < c->fz->n; k++)
    if (c->fz->index[k] == i && !same_array(a, &c->fz->value[k])) {
      set_reason(reason,
                 "runtime-input: a data set feeds input '%s' a value other than the one "
                 "frozen (data set 0's)",
                 c->fz->f[k].name);
      return false;
    }
  return true;
}

// Converts set/input_N.pb to work/inK.npy for every model input (K counts the inputs that are
// not frozen; frozen ones are checked instead).
static bool convert_inputs(const test_ctx *c, const char *set, char *reason) {
  int k = 0;
  for (int i = 0; k < c->g->n_inputs || is_frozen(c->fz, i); i++) {
    bool frozen = is_frozen(c->fz, i);
    char *pb = xasprintf("%s/input_%d.pb", set, i), *npy = xasprintf("%s/in%d.npy", c->work, k);
    kiln_array a;
    char err[512];
    int st = kiln_onnx_read_tensor_file(pb, &a, NULL, err, sizeof err);
    bool ok = st == KILN_OK && (frozen ? check_frozen(c, i, &a, reason) : true);
    if (ok && !frozen) st = kiln_npy_write(npy, &a, err, sizeof err);
    if (st == KILN_OK && !frozen) k++;
    kiln_array_free(&a);
    free(pb);
    free(npy);
    if (st != KILN_OK) set_reason(reason, "%s: %s", st == KILN_ERR_DTYPE ? "dtype" : "data", err);
    if (st != KILN_OK || !ok) return false;
  }
  return true;
}

static bool run_binary(const test_ctx *c, const char *exe, char *reason) {
  int n = c->g->n_inputs, m = c->g->n_outputs;
  char **argv = xcalloc((size_t)(2 * (n + m) + 2), sizeof(char *));
  int k = 0;
  argv[k++] = (char *)exe;
  for (int i = 0; i < n; i++) {
    argv[k++] = "--input";
    argv[k++] = xasprintf("%s/in%d.npy", c->work, i);
  }
  for (int i = 0; i < m; i++) {
    argv[k++] = "--output";
    argv[k++] = xasprintf("%s/out%d.npy", c->work, i);
  }
  char err[8192];
  int st = run(argv, RUN_TIMEOUT_S, err, sizeof err);
  for (int i = 2; i < k; i += 2) free(argv[i]);
  free(argv);
  if (st == 0) return true;
  char line[REASON_MAX];
  first_line(err, line);
  set_reason(reason, "%s: exit %d: %s", st >= 128 ? "crash" : "run", st, line);
  return false;
}

static bool compare_outputs(const test_ctx *c, const char *set, char *reason) {
  kiln_tolerance tol = model_tolerance(c->g);
  bool ok = true;
  for (int i = 0; ok && i < c->g->n_outputs; i++) {
    char *pb = xasprintf("%s/output_%d.pb", set, i), *npy = xasprintf("%s/out%d.npy", c->work, i);
    kiln_array want = {0}, got = {0};
    char err[512], why[REASON_MAX];
    int st = kiln_onnx_read_tensor_file(pb, &want, NULL, err, sizeof err);
    if (st == KILN_OK) st = kiln_npy_read(npy, &got, err, sizeof err);
    if (st != KILN_OK) {
      set_reason(reason, "%s: %s", st == KILN_ERR_DTYPE ? "dtype" : "data", err);
      ok = false;
    } else if (!compare_arrays(&got, &want, tol.atol, tol.rtol, true, why, sizeof why)) {
      set_reason(reason, "mismatch: output %d (%s): %s", i, c->g->tensors[c->g->outputs[i]].name,
                 why);
      ok = false;
    }
    kiln_array_free(&want);
    kiln_array_free(&got);
    free(pb);
    free(npy);
  }
  return ok;
}

static int set_filter(const struct dirent *e) {
  return strncmp(e->d_name, "test_data_set_", 14) == 0;
}

// Every data set of the test through the built binary.
static bool run_data_sets(const test_ctx *c, const char *exe, char *reason) {
  struct dirent **sets;
  int n = scandir(c->t->dir, &sets, set_filter, alphasort);
  bool ok = n > 0;
  if (n <= 0) set_reason(reason, "data: no test_data_set_* directory");
  for (int i = 0; i < n; i++) {
    char *set = xasprintf("%s/%s", c->t->dir, sets[i]->d_name);
    if (ok)
      ok = convert_inputs(c, set, reason) && run_binary(c, exe, reason) &&
           compare_outputs(c, set, reason);
    free(set);
    free(sets[i]);
  }
  free(sets);
  return ok;
}

// `kiln build MODEL --backend B -o EXE [--freeze-input NAME=FILE]...`
static int build(const options *o, const char *model, const char *exe, const frozen_set *fz,
                 char *err, size_t errlen) {
  char *argv[8 + 2 * MAX_FROZEN] = {(char *)o->kiln,    "build", (char *)model, "--backend",
                                    (char *)o->backend, "-o",    (char *)exe};
  int k = 7;
  for (int i = 0; i < fz->n; i++) {
    argv[k++] = "--freeze-input";
    argv[k++] = xasprintf("%s=%s", fz->f[i].name, fz->f[i].file);
  }
  int st = run(argv, BUILD_TIMEOUT_S, err, errlen);
  for (int i = 8; i < k; i += 2) free(argv[i]);
  return st;
}

// Runs one test; returns true if it passed, else writes the reason. A test that passed with
// frozen inputs leaves their names in reason.
static bool run_test(const options *o, const test_case *t, const char *work, char *reason) {
  char *model = xasprintf("%s/model.onnx", t->dir);
  frozen_set fz = {0};
  kiln_graph *g = load_freezing(t, model, work, &fz, reason);
  bool ok = g != NULL;
  char *exe = xasprintf("%s/model", work);
  if (ok) {
    char err[8192];
    int st = build(o, model, exe, &fz, err, sizeof err);
    if (st != 0) {
      char line[REASON_MAX];
      first_line(err, line);
      set_reason(reason, "build: exit %d: %s", st, line);
      ok = false;
    }
  }
  if (ok) {
    test_ctx c = {.o = o, .t = t, .work = work, .g = g, .fz = &fz};
    ok = run_data_sets(&c, exe, reason);
  }
  if (ok) frozen_names(&fz, reason);
  frozen_set_free(&fz);
  kiln_graph_free(g);
  free(exe);
  free(model);
  return ok;
}

// ---- The list of tests and the expected failures ----

static int model_dir_filter(const struct dirent *e) { return e->d_name[0] != '.'; }

static test_case *list_tests(const char *data, int *count) {
  test_case *tests = NULL;
  int n = 0, cap = 0;
  for (int s = 0; suites[s]; s++) {
    char *dir = xasprintf("%s/%s", data, suites[s]);
    struct dirent **ents;
    int k = scandir(dir, &ents, model_dir_filter, alphasort);
    for (int i = 0; i < k; i++) {
      char *tdir = xasprintf("%s/%s", dir, ents[i]->d_name);
      char *model = xasprintf("%s/model.onnx", tdir);
      if (is_file(model)) {
        if (n == cap) tests = realloc(tests, (size_t)(cap = cap ? cap * 2 : 256) * sizeof *tests);
        if (!tests) abort();
        tests[n++] =
            (test_case){.name = xasprintf("%s/%s", suites[s], ents[i]->d_name), .dir = tdir};
      } else {
        free(tdir);
      }
      free(model);
      free(ents[i]);
    }
    if (k > 0) free(ents);
    free(dir);
  }
  *count = n;
  return tests;
}

static bool known_category(const char *reason) {
  size_t n = strcspn(reason, ":");
  for (int i = 0; categories[i]; i++)
    if (strlen(categories[i]) == n && strncmp(categories[i], reason, n) == 0) return true;
  return false;
}

static test_case *find_test(test_case *tests, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(tests[i].name, name) == 0) return &tests[i];
  return NULL;
}

// Reads "NAME  CATEGORY: detail" lines (# comments). False on a malformed line.
static bool read_expected(const char *path, test_case *tests, int n, bool full_run) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return false;
  }
  char line[1024];
  int lineno = 0;
  bool ok = true;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    line[strcspn(line, "\n")] = 0;
    if (!line[0] || line[0] == '#') continue;
    char *sp = strpbrk(line, " \t");
    char *reason = sp ? sp + strspn(sp, " \t") : NULL;
    if (!sp || !*reason || !known_category(reason)) {
      fprintf(stderr, "%s:%d: expected 'SUITE/TEST  CATEGORY: reason' with a known category\n",
              path, lineno);
      ok = false;
      continue;
    }
    *sp = 0;
    test_case *t = find_test(tests, n, line);
    if (t)
      t->expected = strdup(reason);
    else if (full_run)
      fprintf(stderr, "%s:%d: no test named %s (stale entry: remove it)\n", path, lineno, line);
  }
  fclose(f);
  return ok;
}

static bool in_subset(const char *path, const char *name) {
  FILE *f = fopen(path, "r");
  if (!f) return false;
  char line[512];
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) {
    line[strcspn(line, " \t\n")] = 0;
    found = line[0] != '#' && strcmp(line, name) == 0;
  }
  fclose(f);
  return found;
}

static bool same_category(const char *a, const char *b) {
  size_t n = strcspn(a, ":");
  return n == strcspn(b, ":") && strncmp(a, b, n) == 0;
}

// The reason written for a failing test. An entry already on the list keeps its (possibly
// hand-written, more precise) text while the test fails the same way: the generated reason has
// the listed category, or is a generic `check` (an op's rejection message) where the list gives
// what exactly is unsupported.
static const char *reason_to_write(const test_case *t) {
  if (t->expected && (same_category(t->reason, t->expected) || same_category(t->reason, "check:")))
    return t->expected;
  return t->reason;
}

static bool write_expected(const char *path, const test_case *tests, int n) {
  char *tmp = xasprintf("%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return false;
  fputs(
      "# ONNX backend tests (libonnx-testdata) expected NOT to pass through `kiln build`,\n"
      "# one per line: SUITE/TEST  CATEGORY: detail. Generated by\n"
      "#   onnx_conformance ... --update-expected   (docs/onnx.md)\n"
      "# Categories: op (an op Kiln does not have), opset, dtype, attribute (a kind of\n"
      "# attribute Kiln has no form for), dynamic-shape, empty (a zero dimension), check (the\n"
      "# model is rejected by an op's checks), build, run, crash, mismatch (wrong numbers),\n"
      "# data, malformed.\n",
      f);
  for (int i = 0; i < n; i++)
    if (!tests[i].passed) fprintf(f, "%s  %s\n", tests[i].name, reason_to_write(&tests[i]));
  bool ok = fclose(f) == 0 && rename(tmp, path) == 0;
  free(tmp);
  return ok;
}

// ---- Running them, in parallel ----

// Runs test i in a child process that writes "1\n" or "0\nreason" to work/i.result.
static pid_t spawn(const options *o, const test_case *t, const char *work_root, int i) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  char *work = xasprintf("%s/%d", work_root, i), *result = xasprintf("%s/%d.result", work_root, i);
  mkdir(work, 0700);
  char reason[REASON_MAX] = "";
  bool ok = run_test(o, t, work, reason);
  FILE *f = fopen(result, "w");
  if (f) {
    fprintf(f, "%d\n%s\n", ok, reason);
    fclose(f);
  }
  nftw(work, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(work);
  free(result);
  exit(0);  // exit, not _exit: under ASan the leak check runs in each child
}

static void collect(test_case *t, const char *work_root, int i, int status) {
  char *result = xasprintf("%s/%d.result", work_root, i);
  FILE *f = fopen(result, "r");
  char line[REASON_MAX + 8] = "";
  int ok = 0;
  if (f && fscanf(f, "%d\n", &ok) == 1 && fgets(line, sizeof line, f))
    line[strcspn(line, "\n")] = 0;
  if (f) fclose(f);
  remove(result);
  free(result);
  bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  t->passed = ok && clean;
  if (!clean)
    set_reason(t->reason, "crash: the test process (in-process import) exited with %d%s",
               WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
               line[0] ? "" : " before writing a result");
  else
    set_reason(t->reason, "%s", line);  // a pass's line names its frozen inputs
}

static void run_all(const options *o, test_case *tests, int n, const bool *selected,
                    const char *work_root) {
  pid_t *pids = xcalloc((size_t)n, sizeof(pid_t));
  int next = 0, running = 0;
  while (next < n || running > 0) {
    while (running < o->jobs && next < n) {
      if (selected[next]) {
        pids[next] = spawn(o, &tests[next], work_root, next);
        running++;
      }
      next++;
    }
    if (!running) break;
    int status;
    pid_t pid = wait(&status);
    if (pid < 0) break;
    for (int i = 0; i < n; i++)
      if (pids[i] == pid) {
        collect(&tests[i], work_root, i, status);
        pids[i] = 0;
        running--;
      }
  }
  free(pids);
}

// ---- Report ----

static int report(const options *o, const test_case *tests, int n, const bool *selected) {
  int passed = 0, failed = 0, skipped = 0, frozen = 0;
  for (int i = 0; i < n; i++) {
    const test_case *t = &tests[i];
    if (!selected[i]) continue;
    if (t->passed && !t->expected) {
      passed++;
      frozen += t->reason[0] != 0;
      if (t->reason[0])  // always said: it passed only because these inputs were compiled in
        printf("pass  %s (frozen inputs: %s)\n", t->name, t->reason);
      else if (o->verbose)
        printf("pass  %s\n", t->name);
    } else if (t->passed) {
      failed++;
      printf("FAIL  %s: unexpected pass: remove it from the list (%s)\n", t->name, t->expected);
    } else if (t->expected) {
      skipped++;
      if (o->verbose) printf("skip  %s: %s\n", t->name, t->reason);
    } else {
      failed++;
      printf("FAIL  %s: %s\n", t->name, t->reason);
    }
  }
  if (frozen)
    printf("%d of the passed tests froze inputs that determine shapes (--freeze-input)\n", frozen);
  printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  return failed ? 1 : 0;
}

static bool parse_options(int argc, char **argv, options *o) {
  *o = (options){.jobs = 2, .backend = "c"};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    bool takes = true;
    if (strcmp(a, "--kiln") == 0)
      o->kiln = v;
    else if (strcmp(a, "--data") == 0)
      o->data = v;
    else if (strcmp(a, "--expected") == 0)
      o->expected = v;
    else if (strcmp(a, "--subset") == 0)
      o->subset = v;
    else if (strcmp(a, "--backend") == 0)
      o->backend = v;
    else if (strcmp(a, "--jobs") == 0)
      o->jobs = v ? atoi(v) : 0;
    else {
      takes = false;
      if (strcmp(a, "--update-expected") == 0)
        o->update = true;
      else if (strcmp(a, "--verbose") == 0)
        o->verbose = true;
      else
        return fprintf(stderr, "unknown argument %s\n", a), false;
    }
    if (takes && !v) return fprintf(stderr, "missing value for %s\n", a), false;
    i += takes;
  }
  if (o->update && o->subset) return fputs("--update-expected needs the full run\n", stderr), false;
  if (!o->kiln || !o->data || !o->expected || o->jobs < 1) {
    fputs(
        "usage: onnx_conformance --kiln KILN --data DIR --expected FILE [--jobs N] "
        "[--backend c|llvm] [--subset FILE] [--update-expected] [--verbose]\n",
        stderr);
    return false;
  }
  return true;
}

int main(int argc, char **argv) {
  options o;
  if (!parse_options(argc, argv, &o)) return 2;
  if (!is_dir(o.data)) {
    printf("%s does not exist (apt-get install libonnx-testdata): skipping\n", o.data);
    return EXIT_SKIP;
  }
  int n;
  test_case *tests = list_tests(o.data, &n);
  bool *selected = xcalloc((size_t)n, sizeof(bool));
  if (o.subset && access(o.subset, R_OK) != 0) return perror(o.subset), 2;
  int n_selected = 0;
  for (int i = 0; i < n; i++) {
    selected[i] = !o.subset || in_subset(o.subset, tests[i].name);
    n_selected += selected[i];
  }
  if (n_selected == 0) {  // a run of nothing must not pass
    fprintf(stderr, "no test selected (%d tests in %s)\n", n, o.data);
    return 2;
  }
  bool list_ok = read_expected(o.expected, tests, n, !o.subset) || o.update;
  const char *tmp = getenv("TMPDIR");
  char *work_root = xasprintf("%s/kiln-onnx-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(work_root)) return perror(work_root), 1;
  run_all(&o, tests, n, selected, work_root);
  nftw(work_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  int rc;
  if (o.update) {
    rc = write_expected(o.expected, tests, n) ? 0 : 1;
    printf("wrote %s\n", o.expected);
  } else {
    rc = report(&o, tests, n, selected);
    if (!list_ok) rc = 1;
  }
  for (int i = 0; i < n; i++) {
    free(tests[i].name);
    free(tests[i].dir);
    free(tests[i].expected);
  }
  free(tests);
  free(selected);
  free(work_root);
  return rc;
}
