#include "test_util.h"

#include "../compiler/autodiff/training.h"
#include "../compiler/frontend.h"
#include "array_compare.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

typedef struct sink {
  char *data;
  size_t len, cap;
} sink;

static void sink_add(sink *s, const char *buf, size_t n) {
  if (s->len + n + 1 > s->cap) {
    s->cap = (s->len + n + 1) * 2;
    s->data = realloc(s->data, s->cap);
    if (!s->data) abort();
  }
  memcpy(s->data + s->len, buf, n);
  s->len += n;
  s->data[s->len] = '\0';
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// Drains both pipes until they close or the deadline passes.
static bool drain(int out_fd, int err_fd, sink *out, sink *err, double deadline) {
  struct pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  sink *sinks[2] = {out, err};
  int open_fds = 2;
  while (open_fds > 0) {
    int wait_ms = (int)((deadline - now_s()) * 1000);
    if (wait_ms <= 0) return false;
    if (poll(fds, 2, wait_ms) < 0 && errno != EINTR) return false;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sink_add(sinks[i], buf, (size_t)n);
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
      }
    }
  }
  return true;
}

run_result run_cmd(char *const argv[], int timeout_s) {
  int po[2], pe[2];
  if (pipe(po) || pipe(pe)) cr_assert_fail("pipe failed");
  pid_t pid = fork();
  if (pid < 0) cr_assert_fail("fork failed");
  if (pid == 0) {
    dup2(po[1], 1);
    dup2(pe[1], 2);
    close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
    execvp(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(po[1]);
  close(pe[1]);
  sink out = {0}, err = {0};
  sink_add(&out, "", 0);
  sink_add(&err, "", 0);
  bool finished = drain(po[0], pe[0], &out, &err, now_s() + timeout_s);
  if (!finished) {
    kill(pid, SIGKILL);
    close(po[0]);
    close(pe[0]);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  run_result r = {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out.data, err.data};
  return r;
}

void run_result_free(run_result *r) {
  free(r->out);
  free(r->err);
}

char *make_temp_dir(void) {
  const char *tmp = getenv("TMPDIR");
  char *path = path_join(tmp && *tmp ? tmp : "/tmp", "kiln-test-XXXXXX");
  if (!mkdtemp(path)) cr_assert_fail("mkdtemp %s: %s", path, strerror(errno));
  return path;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

void rm_rf(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

bool files_equal(const char *a, const char *b) {
  FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
  bool same = fa && fb;
  for (int ca = 0, cb = 0; same && ca != EOF;) {
    ca = fgetc(fa), cb = fgetc(fb);
    same = ca == cb;
  }
  if (fa) fclose(fa);
  if (fb) fclose(fb);
  return same;
}

char *path_join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  if (!p) abort();
  snprintf(p, n, "%s/%s", a, b);
  return p;
}

bool arrays_close(const kiln_array *a, const kiln_array *b, double atol, double rtol, char *why,
                  size_t whylen) {
  return compare_arrays(a, b, atol, rtol, false, why, whylen);
}

bool arrays_close_nan_equal(const kiln_array *a, const kiln_array *b, double atol, double rtol,
                            char *why, size_t whylen) {
  return compare_arrays(a, b, atol, rtol, true, why, whylen);
}

kiln_array read_npy_or_fail(const char *path) {
  kiln_array a;
  char err[512];
  if (kiln_npy_read(path, &a, err, sizeof(err)) != KILN_OK) cr_assert_fail("%s", err);
  return a;
}

void check_leaks(void) {
#if defined(__SANITIZE_ADDRESS__)
  if (__lsan_do_recoverable_leak_check() != 0) abort();
#endif
}

double mean_logged_loss(const char *log, int from, int to) {
  FILE *f = fopen(log, "r");
  cr_assert(f, "no log %s", log);
  char line[256];
  int n = 0;
  double sum = 0;
  while (fgets(line, sizeof line, f)) {
    long long step, epoch;
    double loss;
    if (sscanf(line, "%lld,%lld,%lf", &step, &epoch, &loss) != 3) continue;
    if (n >= from && n < to) sum += loss;
    n++;
  }
  fclose(f);
  cr_assert(n >= to, "%s: %d steps logged", log, n);
  return sum / (to - from);
}

struct kiln_graph *model_or_fail(const char *path) {
  kiln_diag d;
  kiln_diag_init(&d, path);
  kiln_graph *g = kiln_load_model(path, &d);
  cr_assert(g, "%s does not load", path);
  return g;
}

struct kiln_graph *training_graph_or_fail(const char *model) {
  kiln_training tr;
  kiln_load_options o = {.training = &tr};
  kiln_diag d;
  kiln_diag_init(&d, model);
  kiln_graph *g = kiln_load_model_ex(model, &o, &d);
  cr_assert(g && kiln_build_training_graph(g, &tr, &d), "%s: no training graph", model);
  return g;
}

bool st_entry_close(const kiln_st_entry *want, const void *got, double atol, double rtol, char *why,
                    size_t whylen) {
  kiln_array w = {
      .dtype = want->dtype, .rank = want->rank, .nbytes = want->nbytes, .data = (void *)want->data};
  memcpy(w.shape, want->shape, sizeof(int64_t) * (size_t)want->rank);
  kiln_array g = w;
  g.data = (void *)got;
  return arrays_close(&g, &w, atol, rtol, why, whylen);
}
