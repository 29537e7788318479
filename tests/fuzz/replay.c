// Runs saved inputs (files, or every file in directories) through a harness's
// LLVMFuzzerTestOneInput without libFuzzer: the regression tests of the normal build and a way to
// reproduce a crash under gdb or valgrind. Exit 0 when every input ran (a crash aborts).
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return perror(path), 1;
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = malloc(cap);
  for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
    n += got;
    if (n == cap) buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  if (!buf) return fputs("replay: out of memory\n", stderr), 1;
  LLVMFuzzerTestOneInput(buf, n);
  free(buf);
  return 0;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

// Every regular file of dir, in name order (so runs are repeatable).
static int run_dir(const char *dir, int *count) {
  DIR *d = opendir(dir);
  if (!d) return perror(dir), 1;
  char **names = NULL;
  int n = 0, failed = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] == '.') continue;
    names = realloc(names, sizeof(*names) * (size_t)(n + 1));
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  if (n > 0) qsort(names, (size_t)n, sizeof(*names), compare_names);  // names is NULL if n == 0
  for (int i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) failed |= run_file(path), ++*count;
    free(names[i]);
  }
  free(names);
  return failed;
}

int main(int argc, char **argv) {
  int failed = 0, count = 0;
  // Absolute paths first: a harness may change the working directory (fuzz_main.c does).
  char **paths = calloc((size_t)argc, sizeof(*paths));
  for (int i = 1; i < argc; i++)
    if (!(paths[i] = realpath(argv[i], NULL))) perror(argv[i]), failed = 1;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (!paths[i] || stat(paths[i], &st) != 0) {
      failed = 1;
    } else if (S_ISDIR(st.st_mode)) {
      failed |= run_dir(paths[i], &count);
    } else {
      failed |= run_file(paths[i]), count++;
    }
    free(paths[i]);
  }
  free(paths);
  printf("replayed %d inputs\n", count);
  return failed;
}
