// The tuned-tiling table and its cache file (tuning.h).
#include "tuning.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../ir/pool.h"
#include "../../runtime/kiln_runtime.h"

void kiln_tuning_free(kiln_tuning *t) {
  free(t->v);
  memset(t, 0, sizeof(*t));
}

const kiln_tuning_entry *kiln_tuning_find(const kiln_tuning *t, const char *key) {
  for (int i = 0; t && i < t->n; i++)
    if (strcmp(t->v[i].key, key) == 0) return &t->v[i];
  return NULL;
}

void kiln_tuning_set(kiln_tuning *t, const char *key, kiln_tile_choice c, double ms) {
  kiln_tuning_entry e = {.choice = c, .ms = ms};
  snprintf(e.key, sizeof(e.key), "%s", key);
  for (int i = 0; i < t->n; i++)
    if (strcmp(t->v[i].key, key) == 0) {
      t->v[i] = e;
      return;
    }
  KILN_VEC_PUSH(t->v, t->n, t->cap, e);
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  char *end = s + strlen(s);
  while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
    *--end = '\0';
  return s;
}

// "KEY = A B  # ms": false if the line is not one.
static bool parse_line(char *line, kiln_tuning *t) {
  char *hash = strchr(line, '#'), *eq = strchr(line, '=');
  double ms = 0;
  if (hash) ms = strtod(hash + 1, NULL), *hash = '\0';
  if (!*trim(line)) return true;  // blank or comment only
  if (!eq || (hash && eq > hash)) return false;
  *eq = '\0';
  char *key = trim(line), *rest = trim(eq + 1);
  int a, b, used = 0;
  if (!*key || strlen(key) >= KILN_TUNE_KEY_MAX || sscanf(rest, "%d %d%n", &a, &b, &used) != 2 ||
      rest[used] != '\0' || a < 1 || b < 1 || a > 4096 || b > 4096)
    return false;
  kiln_tuning_set(t, key, (kiln_tile_choice){a, b}, ms);
  return true;
}

bool kiln_tuning_load(kiln_tuning *t, const char *path, char *err, size_t err_size) {
  FILE *f = fopen(path, "r");
  if (!f) {
    if (errno == ENOENT) return true;
    snprintf(err, err_size, "%s: %s", path, strerror(errno));
    return false;
  }
  char line[512];
  int lineno = 0;
  bool ok = true;
  while (ok && fgets(line, sizeof(line), f)) {
    lineno++;
    ok = strchr(line, '\n') || feof(f) ? parse_line(line, t) : false;
    if (!ok)
      snprintf(err, err_size, "%s:%d: expected 'KEY = A B  # ms' (a tuning cache line)", path,
               lineno);
  }
  fclose(f);
  return ok;
}

// mkdir -p of path's directory.
static bool make_parent_dirs(const char *path) {
  char dir[1024];
  snprintf(dir, sizeof(dir), "%s", path);
  for (char *p = dir + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return false;
    *p = '/';
  }
  return true;
}

bool kiln_tuning_save(const kiln_tuning *t, const char *path, char *err, size_t err_size) {
  char tmp[1100];
  snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
  FILE *f = make_parent_dirs(path) ? fopen(tmp, "w") : NULL;
  if (!f) {
    snprintf(err, err_size, "%s: %s", path, strerror(errno));
    return false;
  }
  fputs("# kiln --tune cache: KEY = tile  # measured median ms (docs/performance.md)\n", f);
  for (int i = 0; i < t->n; i++)
    fprintf(f, "%s = %d %d  # %.4f\n", t->v[i].key, t->v[i].choice.a, t->v[i].choice.b, t->v[i].ms);
  bool ok = fflush(f) == 0 && !ferror(f);
  ok = fclose(f) == 0 && ok;
  if (ok && kiln_rename_into_place(tmp, path) == 0) return true;
  snprintf(err, err_size, "%s: %s", path, strerror(errno));
  unlink(tmp);
  return false;
}

const char *kiln_tuning_default_path(char *buf, size_t size) {
  const char *env = getenv("KILN_TUNE_CACHE"), *xdg = getenv("XDG_CACHE_HOME"),
             *home = getenv("HOME");
  if (env && *env)
    snprintf(buf, size, "%s", env);
  else if (xdg && *xdg)
    snprintf(buf, size, "%s/kiln/tuning.txt", xdg);
  else if (home && *home)
    snprintf(buf, size, "%s/.cache/kiln/tuning.txt", home);
  else
    return NULL;
  return buf;
}
