// Seeded random inputs and timed runs of generated binaries (measure.h).
#include "measure.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "interp.h"

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

void kiln_measure_random_input(const kiln_tensor *t, uint64_t seed, kiln_array *a) {
  kiln_array_like(t, a);
  int64_t n = kiln_shape_numel(&t->shape);
  if (!kiln_dtype_is_float(t->dtype)) return;
  for (int64_t i = 0; i < n; i++) {
    // Two SplitMix64 draws per element -> Box-Muller.
    uint64_t z1 = splitmix64(seed * 0x100000001b3ULL + 2 * (uint64_t)i);
    uint64_t z2 = splitmix64(seed * 0x100000001b3ULL + 2 * (uint64_t)i + 1);
    double u1 = ((double)(z1 >> 11) + 0.5) * 0x1p-53, u2 = (double)(z2 >> 11) * 0x1p-53;
    kiln_element_set(a->data, a->dtype, i, sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
  }
}

bool kiln_measure_run(char *const argv[], char *out, size_t size) {
  int fd[2];
  if (pipe(fd)) return false;
  pid_t pid = fork();
  if (pid < 0) {
    close(fd[0]);
    close(fd[1]);
    return false;
  }
  if (pid == 0) {
    dup2(fd[1], 1);
    close(fd[0]);
    close(fd[1]);
    execv(argv[0], argv);
    _exit(127);
  }
  close(fd[1]);
  size_t used = 0;
  ssize_t n;
  while ((n = read(fd[0], out + used, size - 1 - used)) > 0) used += (size_t)n;
  out[used] = '\0';
  close(fd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

bool kiln_measure_median_ms(const char *output, double *ms) {
  const char *m = strstr(output, "median_ms=");
  if (!m) return false;
  char *end;
  *ms = strtod(m + strlen("median_ms="), &end);
  return end != m + strlen("median_ms=");
}
