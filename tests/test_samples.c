// The sample models end to end: `kiln run` (interpreter) and binaries built by `kiln build` must
// match the PyTorch goldens within 1e-5 absolute (the bar), and each other within 1e-5,
// for every target, with weights in a file or embedded, on one or two threads.
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sample_util.h"

TestSuite(samples, .fini = check_leaks);

enum { MAX_ARGS = 24 };
static const double ATOL = 1e-5, RTOL = 0;

// Runs a model binary (or `kiln run MODEL`) on the sample's golden input; returns its output.
static kiln_array run_model(const sample *s, char **prefix, int n_prefix, const char *out_path,
                            const char *extra) {
  char in_flag[600], out_flag[600], golden_in[512];
  sample_golden(s, s->input, golden_in, sizeof(golden_in));
  snprintf(in_flag, sizeof(in_flag), "%s=%s", s->input, golden_in);
  snprintf(out_flag, sizeof(out_flag), "%s=%s", s->output, out_path);
  char *args[MAX_ARGS];
  int n = 0;
  for (int i = 0; i < n_prefix; i++) args[n++] = prefix[i];
  args[n++] = "--input";
  args[n++] = in_flag;
  args[n++] = "--output";
  args[n++] = out_flag;
  char extra_copy[128] = "";
  if (extra) {
    snprintf(extra_copy, sizeof(extra_copy), "%s", extra);
    for (char *tok = strtok(extra_copy, " "); tok && n < MAX_ARGS - 1; tok = strtok(NULL, " "))
      args[n++] = tok;
  }
  args[n] = NULL;
  run_result r = run_cmd(args, 300);
  cr_assert_eq(r.status, 0, "%s: %s failed (%d): %s", s->name, args[0], r.status, r.err);
  run_result_free(&r);
  return read_npy_or_fail(out_path);
}

static void expect_close(const sample *s, const kiln_array *got, const kiln_array *want,
                         const char *what) {
  char why[512];
  cr_expect(arrays_close(got, want, ATOL, RTOL, why, sizeof(why)), "%s: %s: %s", s->name, what,
            why);
}

static kiln_array golden_output(const sample *s) {
  char p[512];
  sample_golden(s, s->output, p, sizeof(p));
  return read_npy_or_fail(p);
}

static kiln_array interpret(const sample *s, const char *dir) {
  char model[512];
  sample_model(s, model, sizeof(model));
  char *out = path_join(dir, "interp.npy");
  char *prefix[] = {KILN_EXE, "run", model};
  kiln_array a = run_model(s, prefix, 3, out, NULL);
  free(out);
  return a;
}

static char *build(const sample *s, const char *dir, const char *tag, const char *flags) {
  char model[512], name[128];
  sample_model(s, model, sizeof(model));
  snprintf(name, sizeof(name), "%s-%s", s->name, tag);
  char *exe = path_join(dir, name);
  char *args[MAX_ARGS] = {KILN_EXE, "build", model, "-o", exe};
  int n = 5;
  char copy[128] = "";
  snprintf(copy, sizeof(copy), "%s", flags ? flags : "");
  for (char *tok = strtok(copy, " "); tok && n < MAX_ARGS - 1; tok = strtok(NULL, " "))
    args[n++] = tok;
  args[n] = NULL;
  run_result r = run_cmd(args, 300);
  cr_assert_eq(r.status, 0, "%s: kiln build %s failed (%d): %s", s->name, flags ? flags : "",
               r.status, r.err);
  run_result_free(&r);
  return exe;
}

Test(samples, interpreter_matches_pytorch) {
  char *dir = make_temp_dir();
  for (int i = 0; i < N_SAMPLES; i++) {
    kiln_array want = golden_output(&samples[i]), got = interpret(&samples[i], dir);
    expect_close(&samples[i], &got, &want, "kiln run vs PyTorch");
    kiln_array_free(&want);
    kiln_array_free(&got);
  }
  rm_rf(dir);
  free(dir);
}

// One build configuration: kiln build flags, then flags for the binary.
typedef struct config {
  const char *tag, *build_flags, *run_flags;
} config;

static const config configs[] = {
    {"native", NULL, NULL},
    {"generic", "--target generic", "--threads 1"},
    {"avx2", "--target avx2", "--threads 2"},
    {"embedded", "--embed-weights", NULL},
};

static bool cpu_has(const char *feature) {
  __builtin_cpu_init();
  if (strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2");
  return true;
}

Test(samples, compiled_matches_pytorch_and_interpreter, .timeout = 900) {
  char *dir = make_temp_dir();
  for (int i = 0; i < N_SAMPLES; i++) {
    const sample *s = &samples[i];
    kiln_array want = golden_output(s), ref = interpret(s, dir);
    for (size_t c = 0; c < sizeof(configs) / sizeof(configs[0]); c++) {
      if (!cpu_has(configs[c].tag)) continue;
      char *exe = build(s, dir, configs[c].tag, configs[c].build_flags);
      char *out = path_join(dir, "out.npy");
      kiln_array got = run_model(s, &exe, 1, out, configs[c].run_flags);
      char what[128];
      snprintf(what, sizeof(what), "%s build vs PyTorch", configs[c].tag);
      expect_close(s, &got, &want, what);
      snprintf(what, sizeof(what), "%s build vs interpreter", configs[c].tag);
      expect_close(s, &got, &ref, what);
      kiln_array_free(&got);
      free(out);
      free(exe);
    }
    kiln_array_free(&want);
    kiln_array_free(&ref);
  }
  rm_rf(dir);
  free(dir);
}

Test(samples, bench_prints_median, .timeout = 300) {
  char *dir = make_temp_dir();
  char *exe = build(&samples[2], dir, "bench", NULL);
  char golden_in[512], flag[600];
  sample_golden(&samples[2], "x", golden_in, sizeof(golden_in));
  snprintf(flag, sizeof(flag), "x=%s", golden_in);
  char *args[] = {exe, "--input", flag, "--bench", "5", NULL};
  run_result r = run_cmd(args, 120);
  cr_assert_eq(r.status, 0, "%s", r.err);
  const char *line = strstr(r.out, "median_ms=");
  cr_assert(line, "no median_ms= line in: %s", r.out);
  double ms = strtod(line + strlen("median_ms="), NULL);
  cr_expect(ms > 0 && ms < 10000, "median_ms=%g", ms);
  run_result_free(&r);
  rm_rf(dir);
  free(exe);
  free(dir);
}
