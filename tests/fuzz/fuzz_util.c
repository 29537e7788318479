// Scratch files for the fuzz harnesses: the readers under test take paths, so each input is
// written to a file in a private directory first.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"

static char scratch[512];

static void remove_scratch(void) {
  DIR *dir = opendir(scratch);
  if (!dir) return;
  char path[1024];
  for (struct dirent *e; (e = readdir(dir));) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof(path), "%s/%s", scratch, e->d_name);
    unlink(path);
  }
  closedir(dir);
  rmdir(scratch);
}

const char *fuzz_dir(void) {
  if (scratch[0]) return scratch;
  // Resource limits well below libFuzzer's 2 GiB malloc limit (docs/testing.md): a model that
  // asks for more must be refused by them, so any larger allocation is a real finding. (The
  // replay tests set KILN_LIMITS themselves: they replay inputs under the default limits.)
  setenv("KILN_LIMITS", "tensor-bytes=256M,total-bytes=1G", 0);
  const char *tmp = getenv("TMPDIR");
  snprintf(scratch, sizeof(scratch), "%s/kiln-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(scratch)) {
    perror("fuzz: mkdtemp");
    abort();
  }
  atexit(remove_scratch);
  return scratch;
}

const char *fuzz_file(const char *name, const void *bytes, size_t n) {
  static char paths[8][1024];
  static const char *names[8];
  int slot = 0;
  while (slot < 7 && names[slot] && strcmp(names[slot], name) != 0) slot++;
  names[slot] = name;
  snprintf(paths[slot], sizeof(paths[slot]), "%s/%s", fuzz_dir(), name);
  FILE *f = fopen(paths[slot], "wb");
  if (!f || (n && fwrite(bytes, 1, n, f) != n) || fclose(f) != 0) {
    perror(paths[slot]);
    abort();
  }
  return paths[slot];
}

FILE *fuzz_devnull(void) {
  static FILE *null;
  if (!null) null = fopen("/dev/null", "w");
  return null ? null : stderr;
}
