// kiln build --tune: it measures LeNet-5's two convolutions, caches the fastest tiles, and a later
// build reuses them; a tile read from the cache changes the generated kernel but not one bit of
// the output (each output element's sum runs over the same taps in the same order); a malformed
// cache or a misplaced --tune is refused with a clear message.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sample_util.h"

TestSuite(tune, .fini = check_leaks);

static run_result kiln_build(const char *dir, const char *exe, const char *cache, const char *a,
                             const char *b) {
  char model[512];
  sample_model(&samples[2], model, sizeof(model));
  char *out = path_join(dir, exe);
  char *args[] = {KILN_EXE,       "build",       model,     "-o",      out,
                  "--tune-cache", (char *)cache, (char *)a, (char *)b, NULL};
  run_result r = run_cmd(args, 300);
  free(out);
  return r;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  cr_assert(f, "cannot open %s", path);
  static char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strdup(buf);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert(f && fputs(text, f) >= 0 && fclose(f) == 0, "cannot write %s", path);
}

// The cache line whose key contains `part`, as "KEY" (up to " = ").
static char *cache_key(const char *cache_text, const char *part) {
  const char *hit = strstr(cache_text, part);
  cr_assert(hit, "no cache entry with '%s' in:\n%s", part, cache_text);
  const char *start = hit;
  while (start > cache_text && start[-1] != '\n') start--;
  const char *eq = strstr(start, " = ");
  cr_assert(eq, "malformed cache line");
  return strndup(start, (size_t)(eq - start));
}

// Runs the binary dir/exe on LeNet-5's golden input, writing dir/exe.npy.
static void run_lenet(const char *dir, const char *exe) {
  char *bin = path_join(dir, exe), x[512], y[600];
  sample_golden(&samples[2], "x", x, sizeof(x));
  snprintf(y, sizeof(y), "%s.npy", bin);
  char *args[] = {bin, "--input", x, "--output", y, NULL};
  run_result r = run_cmd(args, 60);
  cr_assert_eq(r.status, 0, "%s failed: %s", bin, r.err);
  run_result_free(&r);
  free(bin);
}

Test(tune, measures_caches_reuses_and_keeps_every_bit) {
  char *dir = make_temp_dir(), *cache = path_join(dir, "cache/tuning.txt");
  run_result r = kiln_build(dir, "tuned", cache, "--tune", "120");
  cr_assert_eq(r.status, 0, "kiln build --tune failed: %s", r.err);
  cr_expect(strstr(r.err, "2 tunable kernels: 0 cached, 2 tuned now"), "stderr: %s", r.err);
  run_result_free(&r);
  char *text = read_text(cache);
  char *conv1 = cache_key(text, "C1 M6 "), *conv2 = cache_key(text, "C6 M16 ");
  cr_expect(strstr(conv1, "K5x5") && strstr(conv2, "O10x10"), "keys: %s / %s", conv1, conv2);

  r = kiln_build(dir, "again", cache, "--tune", "120");  // everything is cached now
  cr_assert_eq(r.status, 0, "%s", r.err);
  cr_expect(strstr(r.err, "2 cached, 0 tuned now (0 builds"), "stderr: %s", r.err);
  run_result_free(&r);

  // A tile of the cache's choosing (1 vector of channels by 5 columns: 28 = 5 * 5 + 3, so a
  // tail tile too) must reach the kernel and leave the output unchanged.
  char forced[512];
  snprintf(forced, sizeof(forced), "# hand-written\n%s = 1 5  # 0.1\n", conv1);
  write_text(cache, forced);
  r = kiln_build(dir, "forced", cache, "--keep-sources", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_result_free(&r);
  char *src_path = path_join(dir, "forced.c"), *src = read_text(src_path);
  cr_expect(strstr(src, "blocked: 1 x 16 channels by 5 columns per tile") ||
                strstr(src, "blocked: 1 x 8 channels by 5 columns per tile") ||
                strstr(src, "blocked: 1 x 4 channels by 5 columns per tile"),
            "the cached tile did not reach conv1's kernel");
  r = kiln_build(dir, "untuned", "none", NULL, NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_result_free(&r);
  run_lenet(dir, "forced");
  run_lenet(dir, "untuned");
  char *a = path_join(dir, "forced.npy"), *b = path_join(dir, "untuned.npy");
  cr_expect(files_equal(a, b), "a tuned tile changed the output bits");
  free(a), free(b), free(src_path), free(src), free(conv1), free(conv2), free(text);
  rm_rf(dir);
  free(dir), free(cache);
}

Test(tune, refuses_a_malformed_cache_and_misplaced_flags) {
  char *dir = make_temp_dir(), *cache = path_join(dir, "tuning.txt");
  write_text(cache, "# ok\nconv N1 C1 = 2 three\n");
  run_result r = kiln_build(dir, "x", cache, NULL, NULL);
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "tuning.txt:2:"), "the error should name the file and line: %s", r.err);
  run_result_free(&r);
  r = kiln_build(dir, "x", "none", "--tune", "0");
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "--tune expects a time budget"), "stderr: %s", r.err);
  run_result_free(&r);
  char model[512];
  sample_model(&samples[2], model, sizeof(model));
  char *args[] = {KILN_EXE, "compile", model, "-o", dir, "--tune", "5", NULL};
  r = run_cmd(args, 60);
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "kiln build"), "stderr: %s", r.err);
  run_result_free(&r);
  rm_rf(dir);
  free(dir), free(cache);
}
