// Tests of the runtime library: .npy and .safetensors reading against fixtures written by numpy and
// by tools/make_runtime_fixtures.py (values recomputed here from the same formulas), error
// messages, write/read round trips, the weights blob, timers, parallel_for, and kiln_main() driven
// end to end with small models defined in this file.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  // mkdtemp, dup
#endif

#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kiln_runtime.h"

#ifndef KILN_TEST_DATA_DIR
#define KILN_TEST_DATA_DIR "tests/data"
#endif
#define FIXTURE(name) KILN_TEST_DATA_DIR "/runtime/" name

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

// ---- helpers ----

// Under AddressSanitizer, crashes the test if it leaked: Criterion ignores leaks reported when a
// worker exits, and failed assertions in .fini do not fail the test.
static void check_leaks(void) {
#if defined(__SANITIZE_ADDRESS__)
  if (__lsan_do_recoverable_leak_check() != 0) abort();
#endif
}

static char tmpdir[64];

static void make_tmpdir(void) {
  strcpy(tmpdir, "/tmp/kiln-rt-test-XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void) {
  DIR *d = opendir(tmpdir);
  if (!d) return;
  struct dirent *e;
  char path[512];
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(tmpdir);
  check_leaks();
}

// A path inside the test's temporary directory (a few rotating buffers).
static const char *tmp_path(const char *name) {
  static char bufs[8][512];
  static int next;
  char *b = bufs[next++ % 8];
  snprintf(b, 512, "%s/%s", tmpdir, name);
  return b;
}

static int count_dir_entries(const char *dir) {
  DIR *d = opendir(dir);
  cr_assert_not_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

static unsigned char *slurp(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc((size_t)n + 1);
  cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  buf[n] = 0;
  *size = (size_t)n;
  return buf;
}

static void spit(const char *path, const void *data, size_t size) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(data, 1, size, f), size);
  fclose(f);
}

static bool file_exists(const char *path) { return access(path, F_OK) == 0; }

#define assert_contains(haystack, needle) \
  cr_assert(strstr((haystack), (needle)) != NULL, "expected \"%s\" in \"%s\"", (needle), (haystack))

static void assert_shape(const int64_t *shape, int rank, int want_rank, const int64_t *want) {
  cr_assert_eq(rank, want_rank);
  for (int i = 0; i < rank; i++) cr_assert_eq(shape[i], want[i], "dim %d", i);
}

static bool aligned64(const void *p) { return ((uintptr_t)p % 64) == 0; }

// The fixture formulas of tools/make_runtime_fixtures.py, as functions of the flat index i.
static float f32_at(int i) { return 0.5f * (float)i - 1.0f; }
static double f64_at(int i) { return 0.25 * i + 1.0; }
static int8_t i8_at(int i) { return (int8_t)(36 * i - 128); }
static uint8_t u8_at(int i) { return (uint8_t)(40 * i + 7); }
static int32_t i32_at(int i) { return 7 - 100000 * i; }
static int64_t i64_at(int i) { return ((int64_t)1 << 40) * i - 5; }
static uint8_t bool_at(int i) { return i % 3 == 0; }

static void check_f32(const float *v, int n) {
  for (int i = 0; i < n; i++) cr_assert_eq(v[i], f32_at(i), "f32[%d] = %g", i, v[i]);
}
static void check_i8(const int8_t *v, int n) {
  for (int i = 0; i < n; i++) cr_assert_eq(v[i], i8_at(i), "i8[%d] = %d", i, v[i]);
}
static void check_f64(const double *v, int n) {
  for (int i = 0; i < n; i++) cr_assert_eq(v[i], f64_at(i), "f64[%d] = %g", i, v[i]);
}
static void check_i64(const int64_t *v, int n) {
  for (int i = 0; i < n; i++) cr_assert_eq(v[i], i64_at(i), "i64[%d]", i);
}
static void check_bool(const uint8_t *v, int n) {
  for (int i = 0; i < n; i++) cr_assert_eq(v[i], bool_at(i), "bool[%d]", i);
}

// Reads a fixture that must load; checks dtype, shape and 64-byte alignment.
static void read_ok(const char *path, kiln_array *a, int dtype, int rank, const int64_t *shape) {
  char err[512];
  int st = kiln_npy_read(path, a, err, sizeof err);
  cr_assert_eq(st, KILN_OK, "%s: %s", path, err);
  cr_assert_eq(a->dtype, dtype);
  assert_shape(a->shape, a->rank, rank, shape);
  cr_assert(aligned64(a->data));
  cr_assert_eq(a->nbytes, (size_t)kiln_array_numel(a) * kiln_rt_dtype_size(dtype));
}

// Reads a fixture that must fail with `status`; the message must name the file and hold `needle`.
static void read_fails(const char *path, int status, const char *needle) {
  kiln_array a;
  char err[512];
  int st = kiln_npy_read(path, &a, err, sizeof err);
  cr_assert_eq(st, status, "%s: status %d (%s)", path, st, err);
  cr_assert_null(a.data);
  assert_contains(err, path);
  assert_contains(err, needle);
}

// Every test gets a fresh temporary directory and, under ASan, a leak check at the end.
TestSuite(basics, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(npy, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(npy_write, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(safetensors, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(weights, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(timer, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(threads, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(kiln_main, .init = make_tmpdir, .fini = remove_tmpdir);

// ---- status, dtypes, allocation ----

Test(basics, status_strings_are_distinct) {
  for (int a = 0; a <= KILN_ERR_CPU; a++) {
    cr_assert(strlen(kiln_status_str(a)) > 0);
    for (int b = 0; b < a; b++) cr_assert_str_neq(kiln_status_str(a), kiln_status_str(b));
  }
  cr_assert_str_eq(kiln_status_str(999), "unknown error");
  cr_assert_str_eq(kiln_status_str(KILN_ERR_NOMEM), "out of memory");
}

// ---- AMX tiles (runtime/tiles.c): kiln_tile_dot against its definition in ir/loop.h ----

// One kiln_tile_dot with rows x cols sums over k bytes in runs of run_k, stored row by row or
// column by column into a zeroed 40 x 40 area; every element compared with the plain sum (0
// outside the tile).
static void check_tile_dot(int64_t rows, int64_t cols, int64_t k, int64_t run_k, bool by_cols) {
  enum { LD = 40, A_LD = 200, RUN_LD = 5000 };
  int64_t w_ld = k * 16;
  uint8_t *a = malloc(32 * A_LD + 8 * RUN_LD);
  int8_t *w = malloc((size_t)(2 * w_ld));
  int32_t *c = calloc(LD * LD, sizeof(int32_t));
  uint32_t seed = 12345;
  for (int64_t i = 0; i < 32 * A_LD + 8 * RUN_LD; i++)
    a[i] = (uint8_t)(seed = seed * 1103515245 + 12345) >> 3;
  for (int64_t i = 0; i < 2 * w_ld; i++) w[i] = (int8_t)((seed = seed * 1103515245 + 12345) >> 9);
  kiln_tile_dot(c, by_cols ? 1 : LD, by_cols ? LD : 1, a, A_LD, RUN_LD, run_k, k, w, w_ld, rows,
                cols);
  for (int64_t i = 0; i < LD; i++)
    for (int64_t j = 0; j < LD; j++) {
      int32_t sum = 0;
      for (int64_t kk = 0; i < rows && j < cols && kk < k; kk++)
        sum += a[i * A_LD + (kk / run_k) * RUN_LD + kk % run_k] *
               w[(j / 16) * w_ld + (kk / 4) * 64 + (j % 16) * 4 + kk % 4];
      int32_t got = by_cols ? c[j * LD + i] : c[i * LD + j];
      cr_assert_eq(got, sum, "tile %lldx%lld k %lld (runs of %lld)%s: (%lld, %lld) = %d, want %d",
                   (long long)rows, (long long)cols, (long long)k, (long long)run_k,
                   by_cols ? " by columns" : "", (long long)i, (long long)j, got, sum);
    }
  free(a);
  free(w);
  free(c);
}

Test(basics, tile_dot_matches_its_definition) {
  if (kiln_tiles_init() != KILN_OK) cr_skip_test("no AMX tiles on this machine");
  // rows and columns: whole tiles, tails below and above 16; k: whole 64-byte chunks, a tail
  // only, both; several runs
  static const int64_t shapes[][4] = {{32, 32, 576, 192}, {17, 5, 148, 148}, {7, 20, 64, 64},
                                      {16, 16, 20, 20},   {32, 17, 288, 96}, {1, 32, 512, 512},
                                      {30, 31, 200, 40}};
  for (int by_cols = 0; by_cols < 2; by_cols++)
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++)
      check_tile_dot(shapes[t][0], shapes[t][1], shapes[t][2], shapes[t][3], by_cols);
}

Test(basics, dtype_table) {
  const char *names[] = {"f32", "f64", "i8", "u8", "i32", "i64", "bool"};
  size_t sizes[] = {4, 8, 1, 1, 4, 8, 1};
  for (int d = 0; d < KILN_RT_DTYPE_COUNT; d++) {
    cr_assert_str_eq(kiln_rt_dtype_name(d), names[d]);
    cr_assert_eq(kiln_rt_dtype_size(d), sizes[d]);
  }
  cr_assert_eq(kiln_rt_dtype_size(KILN_RT_DTYPE_COUNT), 0);
  cr_assert_eq(kiln_rt_dtype_size(-1), 0);
}

Test(basics, aligned_alloc_is_aligned) {
  size_t sizes[] = {0, 1, 63, 64, 65, 1000, 4096 + 3};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    unsigned char *p = kiln_aligned_alloc(sizes[i]);
    cr_assert_not_null(p);
    cr_assert(aligned64(p));
    memset(p, 0xab, sizes[i]);
    kiln_aligned_free(p);
  }
  cr_assert_null(kiln_aligned_alloc(SIZE_MAX - 10));
}

// 2 MiB and more: 2 MiB aligned, so that the transparent huge pages runtime/arena.c asks for can
// back the whole allocation (weights and arenas streamed every inference).
Test(basics, large_allocations_are_huge_page_aligned) {
  size_t sizes[] = {(size_t)1 << 21, ((size_t)5 << 20) + 3};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    unsigned char *p = kiln_aligned_alloc(sizes[i]);
    cr_assert_not_null(p);
    cr_assert_eq((uintptr_t)p % ((uintptr_t)1 << 21), 0, "%p is not 2 MiB aligned", (void *)p);
    memset(p, 0xab, sizes[i]);
    kiln_aligned_free(p);
  }
}

Test(basics, array_numel) {
  kiln_array a = {.dtype = KILN_RT_F32, .rank = 3, .shape = {2, 3, 4}};
  cr_assert_eq(kiln_array_numel(&a), 24);
  a.rank = 0;
  cr_assert_eq(kiln_array_numel(&a), 1);
  a.rank = 2;
  a.shape[1] = 0;
  cr_assert_eq(kiln_array_numel(&a), 0);
  kiln_array_free(NULL);
}

// ---- .npy reading ----

Test(npy, reads_f32) {
  kiln_array a;
  read_ok(FIXTURE("f32.npy"), &a, KILN_RT_F32, 2, (int64_t[]){2, 3});
  check_f32(a.data, 6);
  kiln_array_free(&a);
  cr_assert_null(a.data);
}

Test(npy, reads_f64) {
  kiln_array a;
  read_ok(FIXTURE("f64.npy"), &a, KILN_RT_F64, 1, (int64_t[]){5});
  check_f64(a.data, 5);
  kiln_array_free(&a);
}

Test(npy, reads_i8) {
  kiln_array a;
  read_ok(FIXTURE("i8.npy"), &a, KILN_RT_I8, 3, (int64_t[]){2, 2, 2});
  check_i8(a.data, 8);
  kiln_array_free(&a);
}

Test(npy, reads_u8) {
  kiln_array a;
  read_ok(FIXTURE("u8.npy"), &a, KILN_RT_U8, 1, (int64_t[]){7});
  for (int i = 0; i < 7; i++) cr_assert_eq(((uint8_t *)a.data)[i], u8_at(i));
  kiln_array_free(&a);
}

Test(npy, reads_i32) {
  kiln_array a;
  read_ok(FIXTURE("i32.npy"), &a, KILN_RT_I32, 2, (int64_t[]){3, 2});
  for (int i = 0; i < 6; i++) cr_assert_eq(((int32_t *)a.data)[i], i32_at(i));
  kiln_array_free(&a);
}

Test(npy, reads_i64) {
  kiln_array a;
  read_ok(FIXTURE("i64.npy"), &a, KILN_RT_I64, 1, (int64_t[]){4});
  check_i64(a.data, 4);
  kiln_array_free(&a);
}

Test(npy, reads_bool) {
  kiln_array a;
  read_ok(FIXTURE("bool.npy"), &a, KILN_RT_BOOL, 1, (int64_t[]){6});
  check_bool(a.data, 6);
  kiln_array_free(&a);
}

Test(npy, reads_v2_header) {
  kiln_array a;
  read_ok(FIXTURE("v2.npy"), &a, KILN_RT_F32, 2, (int64_t[]){2, 3});
  check_f32(a.data, 6);
  kiln_array_free(&a);
}

Test(npy, reads_v3_header) {
  kiln_array a;
  read_ok(FIXTURE("v3.npy"), &a, KILN_RT_I32, 2, (int64_t[]){3, 2});
  for (int i = 0; i < 6; i++) cr_assert_eq(((int32_t *)a.data)[i], i32_at(i));
  kiln_array_free(&a);
}

Test(npy, reads_scalar) {
  kiln_array a;
  read_ok(FIXTURE("scalar.npy"), &a, KILN_RT_F32, 0, NULL);
  cr_assert_eq(kiln_array_numel(&a), 1);
  cr_assert_eq(a.nbytes, 4);
  cr_assert_eq(*(float *)a.data, 3.5f);
  kiln_array_free(&a);
}

Test(npy, reads_empty_array) {
  kiln_array a;
  read_ok(FIXTURE("empty.npy"), &a, KILN_RT_F32, 2, (int64_t[]){0, 3});
  cr_assert_eq(a.nbytes, 0);
  cr_assert_not_null(a.data);
  kiln_array_free(&a);
}

Test(npy, reads_unusual_header_layout) {
  // double quotes, other key order, no trailing comma, '7L', '<u1'
  kiln_array a;
  read_ok(FIXTURE("oddheader.npy"), &a, KILN_RT_U8, 1, (int64_t[]){7});
  for (int i = 0; i < 7; i++) cr_assert_eq(((uint8_t *)a.data)[i], u8_at(i));
  kiln_array_free(&a);
}

Test(npy, rejects_fortran_order) {
  read_fails(FIXTURE("fortran.npy"), KILN_ERR_FORMAT, "fortran_order");
}

Test(npy, rejects_big_endian) {
  read_fails(FIXTURE("bigendian.npy"), KILN_ERR_DTYPE, "big-endian dtype '>f4'");
}

Test(npy, rejects_truncated_data) {
  read_fails(FIXTURE("truncated.npy"), KILN_ERR_FORMAT, "expected 24 bytes of data, got 19");
}

Test(npy, rejects_bad_magic) { read_fails(FIXTURE("badmagic.npy"), KILN_ERR_FORMAT, "bad magic"); }

Test(npy, rejects_unsupported_dtype) {
  read_fails(FIXTURE("complex.npy"), KILN_ERR_DTYPE, "unsupported dtype '<c8'");
}

Test(npy, rejects_absurd_shape) { read_fails(FIXTURE("huge.npy"), KILN_ERR_FORMAT, "too large"); }

Test(npy, rejects_missing_file) {
  read_fails(FIXTURE("no-such-file.npy"), KILN_ERR_IO, "cannot open");
}

// Hand-made headers that must parse, or fail with a message.
static void write_npy_header(const char *path, const char *dict, const void *data, size_t n) {
  unsigned char buf[512];
  size_t len = strlen(dict);
  memcpy(buf, "\x93NUMPY\x01\x00", 8);
  buf[8] = (unsigned char)(len & 0xff);
  buf[9] = (unsigned char)(len >> 8);
  memcpy(buf + 10, dict, len);
  memcpy(buf + 10 + len, data, n);
  spit(path, buf, 10 + len + n);
}

Test(npy, header_variants) {
  const int32_t v[3] = {1, -2, 3};
  const char *good[] = {
      "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }       \n",
      "{'shape': (3,), 'descr': '<i4', 'fortran_order': False}",
      "{'fortran_order': False,'shape':(3,),'descr':'<i4','extra': ('x', [1, 2]),}\n",
      "{'descr': '<i4', 'fortran_order': False, 'shape': (3, ), }",
      "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 3), }",
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    const char *p = tmp_path("h.npy");
    write_npy_header(p, good[i], v, sizeof v);
    kiln_array a;
    char err[256];
    cr_assert_eq(kiln_npy_read(p, &a, err, sizeof err), KILN_OK, "%s: %s", good[i], err);
    cr_assert_eq(kiln_array_numel(&a), 3);
    cr_assert_eq(((int32_t *)a.data)[1], -2);
    kiln_array_free(&a);
  }
  const char *bad[] = {
      "{'descr': '<i4', 'fortran_order': False}",                                // no shape
      "{'descr': '<i4', 'fortran_order': False, 'shape': (3,) junk",             // no '}'
      "{'descr': '<i4', 'fortran_order': maybe, 'shape': (3,)}",                 // not a bool
      "{'descr': '<i4', 'fortran_order': False, 'shape': (-3,)}",                // negative
      "{'descr': '<i4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,3)}",  // rank 9
      "{'descr': '|i4', 'fortran_order': False, 'shape': (3,)}",                 // '|' on 4 bytes
      "{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (3,)}",        // structured
      "{'descr': '<i4', 'fortran_order': False, 'shape': (3,)} extra",           // trailing text
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *p = tmp_path("h.npy");
    write_npy_header(p, bad[i], v, sizeof v);
    kiln_array a;
    char err[256];
    cr_assert_neq(kiln_npy_read(p, &a, err, sizeof err), KILN_OK, "accepted %s", bad[i]);
    assert_contains(err, p);
    cr_assert_null(a.data);
  }
}

Test(npy, one_byte_types_accept_any_byte_order) {
  const char *descrs[] = {"<i1", "|i1", "<u1", "|u1", "|b1", "<b1"};
  int dtypes[] = {KILN_RT_I8, KILN_RT_I8, KILN_RT_U8, KILN_RT_U8, KILN_RT_BOOL, KILN_RT_BOOL};
  for (int i = 0; i < 6; i++) {
    char dict[128];
    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (2,), }",
             descrs[i]);
    const char *p = tmp_path("b.npy");
    write_npy_header(p, dict, "\x01\x00", 2);
    kiln_array a;
    char err[256];
    cr_assert_eq(kiln_npy_read(p, &a, err, sizeof err), KILN_OK, "%s: %s", descrs[i], err);
    cr_assert_eq(a.dtype, dtypes[i]);
    kiln_array_free(&a);
  }
}

// ---- .npy writing ----

// Re-writing each numpy fixture must give numpy's bytes exactly (same header layout and padding).
Test(npy_write, matches_numpy_bytes) {
  const char *names[] = {"f32.npy", "f64.npy",  "i8.npy",     "u8.npy",   "i32.npy",
                         "i64.npy", "bool.npy", "scalar.npy", "empty.npy"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char src[512];
    snprintf(src, sizeof src, "%s/runtime/%s", KILN_TEST_DATA_DIR, names[i]);
    kiln_array a;
    char err[512];
    cr_assert_eq(kiln_npy_read(src, &a, err, sizeof err), KILN_OK, "%s", err);
    const char *dst = tmp_path(names[i]);
    cr_assert_eq(kiln_npy_write(dst, &a, err, sizeof err), KILN_OK, "%s", err);
    kiln_array_free(&a);
    size_t n1, n2;
    unsigned char *want = slurp(src, &n1), *got = slurp(dst, &n2);
    cr_assert_eq(n2, n1, "%s: %zu bytes, numpy wrote %zu", names[i], n2, n1);
    cr_assert(memcmp(got, want, n1) == 0, "%s differs from numpy's file", names[i]);
    size_t header = 10 + (size_t)got[8] + 256u * got[9];
    cr_assert_eq(header % 64, 0);
    cr_assert_eq(got[header - 1], '\n');
    free(want);
    free(got);
  }
}

Test(npy_write, round_trips_every_dtype) {
  for (int d = 0; d < KILN_RT_DTYPE_COUNT; d++) {
    kiln_array a = {.dtype = d, .rank = 3, .shape = {2, 1, 5}};
    a.nbytes = 10 * kiln_rt_dtype_size(d);
    a.data = kiln_aligned_alloc(a.nbytes);
    for (size_t i = 0; i < a.nbytes; i++) ((unsigned char *)a.data)[i] = (unsigned char)(i * 7 + d);
    if (d == KILN_RT_BOOL) memset(a.data, 1, a.nbytes);
    char err[512];
    const char *p = tmp_path("rt.npy");
    cr_assert_eq(kiln_npy_write(p, &a, err, sizeof err), KILN_OK, "%s", err);
    kiln_array b;
    cr_assert_eq(kiln_npy_read(p, &b, err, sizeof err), KILN_OK, "%s", err);
    cr_assert_eq(b.dtype, d);
    assert_shape(b.shape, b.rank, 3, a.shape);
    cr_assert_eq(b.nbytes, a.nbytes);
    cr_assert(memcmp(a.data, b.data, a.nbytes) == 0);
    kiln_array_free(&a);
    kiln_array_free(&b);
  }
  cr_assert_eq(count_dir_entries(tmpdir), 1, "a temporary file was left behind");
}

Test(npy_write, overwrites_and_leaves_no_temp_files) {
  float v[2] = {1, 2};
  kiln_array a = {.dtype = KILN_RT_F32, .rank = 1, .shape = {2}, .data = v, .nbytes = 8};
  const char *p = tmp_path("o.npy");
  spit(p, "old", 3);
  char err[256];
  cr_assert_eq(kiln_npy_write(p, &a, err, sizeof err), KILN_OK, "%s", err);
  cr_assert_eq(kiln_npy_write(p, &a, err, sizeof err), KILN_OK, "%s", err);
  cr_assert_eq(count_dir_entries(tmpdir), 1);
  struct stat st;
  cr_assert_eq(stat(p, &st), 0);
  cr_assert_eq(st.st_size, 128 + 8);
}

// A special file as the destination (`--output /dev/null`, a FIFO): it receives the bytes and
// stays what it is. (Renaming the temporary file over it, as root, once turned /dev/null into a
// regular file.)
Test(npy_write, a_fifo_stays_a_fifo) {
  float v[2] = {1, 2};
  kiln_array a = {.dtype = KILN_RT_F32, .rank = 1, .shape = {2}, .data = v, .nbytes = 8};
  const char *p = tmp_path("fifo");
  cr_assert_eq(mkfifo(p, 0600), 0);
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  pid_t reader = fork();
  if (reader == 0) {  // counts the bytes that come through the FIFO, reports them on the pipe
    int in = open(p, O_RDONLY);
    char buf[256];
    long total = 0;
    for (ssize_t n; (n = read(in, buf, sizeof buf)) > 0;) total += n;
    _exit(write(fds[1], &total, sizeof total) == sizeof total ? 0 : 1);
  }
  char err[256];
  int status = kiln_npy_write(p, &a, err, sizeof err);
  struct stat st;
  bool fifo = stat(p, &st) == 0 && S_ISFIFO(st.st_mode);
  if (!fifo) kill(reader, SIGKILL);  // it would wait for a writer forever
  cr_assert_eq(status, KILN_OK, "%s", err);
  cr_assert(fifo, "the FIFO was replaced");
  long total = 0;
  cr_assert_eq(read(fds[0], &total, sizeof total), (ssize_t)sizeof total);
  waitpid(reader, NULL, 0);
  close(fds[0]), close(fds[1]);
  cr_expect_eq(total, 128 + 8);
  cr_expect_eq(count_dir_entries(tmpdir), 1, "a temporary file was left behind");
}

Test(npy_write, errors_name_the_file) {
  float v[2] = {1, 2};
  kiln_array a = {.dtype = KILN_RT_F32, .rank = 1, .shape = {2}, .data = v, .nbytes = 8};
  char err[256];
  const char *p = tmp_path("missing-dir/x.npy");
  cr_assert_eq(kiln_npy_write(p, &a, err, sizeof err), KILN_ERR_IO);
  assert_contains(err, p);
  a.nbytes = 4;  // does not match the shape
  p = tmp_path("x.npy");
  cr_assert_eq(kiln_npy_write(p, &a, err, sizeof err), KILN_ERR_ARG);
  assert_contains(err, p);
  a.nbytes = 8;
  a.dtype = 42;
  cr_assert_eq(kiln_npy_write(p, &a, err, sizeof err), KILN_ERR_ARG);
  cr_assert_not(file_exists(p));
  cr_assert_eq(count_dir_entries(tmpdir), 0);
}

// ---- .safetensors ----

static const kiln_st_entry *find_ok(const kiln_safetensors *st, const char *name, int dtype,
                                    int rank, const int64_t *shape) {
  const kiln_st_entry *e = kiln_safetensors_find(st, name);
  cr_assert_not_null(e, "no tensor %s", name);
  cr_assert_eq(e->dtype, dtype, "%s", name);
  assert_shape(e->shape, e->rank, rank, shape);
  return e;
}

Test(safetensors, reads_values) {
  kiln_safetensors st;
  char err[512];
  cr_assert_eq(kiln_safetensors_read(FIXTURE("model.safetensors"), &st, err, sizeof err), KILN_OK,
               "%s", err);
  cr_assert_eq(st.count, 6);
  const char *order[] = {"weight", "bias", "ids", "mask", "layer.0/q\xc3\xa9\xf0\x9f\x98\x80",
                         "scalar"};
  for (int i = 0; i < 6; i++) cr_assert_str_eq(st.entries[i].name, order[i]);
  float w[6];
  memcpy(w, find_ok(&st, "weight", KILN_RT_F32, 2, (int64_t[]){2, 3})->data, sizeof w);
  check_f32(w, 6);
  double b[5];
  memcpy(b, find_ok(&st, "bias", KILN_RT_F64, 1, (int64_t[]){5})->data, sizeof b);
  check_f64(b, 5);
  int64_t ids[4];
  memcpy(ids, find_ok(&st, "ids", KILN_RT_I64, 1, (int64_t[]){4})->data, sizeof ids);
  check_i64(ids, 4);
  check_bool(find_ok(&st, "mask", KILN_RT_BOOL, 1, (int64_t[]){6})->data, 6);
  check_i8(find_ok(&st, order[4], KILN_RT_I8, 3, (int64_t[]){2, 2, 2})->data, 8);
  const kiln_st_entry *s = find_ok(&st, "scalar", KILN_RT_F32, 0, NULL);
  float sv;
  memcpy(&sv, s->data, 4);
  cr_assert_eq(sv, 3.5f);
  cr_assert_eq(s->nbytes, 4);
  cr_assert_null(kiln_safetensors_find(&st, "__metadata__"));
  cr_assert_null(kiln_safetensors_find(&st, "nope"));
  kiln_safetensors_free(&st);
  cr_assert_null(st.entries);
}

static void st_fails(const char *path, int status, const char *needle) {
  kiln_safetensors st;
  char err[512];
  int got = kiln_safetensors_read(path, &st, err, sizeof err);
  cr_assert_eq(got, status, "%s: status %d (%s)", path, got, err);
  cr_assert_null(st.entries);
  cr_assert_null(st.file);
  assert_contains(err, path);
  assert_contains(err, needle);
}

Test(safetensors, rejects_offsets_past_the_end) {
  st_fails(FIXTURE("badoffsets.safetensors"), KILN_ERR_FORMAT,
           "tensor 'w' has data_offsets [0, 32] outside the 24 data bytes");
}

Test(safetensors, rejects_size_mismatch) {
  st_fails(FIXTURE("badsize.safetensors"), KILN_ERR_FORMAT,
           "tensor 'w' has 24 data bytes, its dtype and shape need 16");
}

Test(safetensors, rejects_unsupported_dtype) {
  st_fails(FIXTURE("bf16.safetensors"), KILN_ERR_DTYPE, "tensor 'w' has dtype BF16");
}

Test(safetensors, rejects_bad_header_length) {
  st_fails(FIXTURE("badheaderlen.safetensors"), KILN_ERR_FORMAT, "header length");
}

Test(safetensors, rejects_missing_file) {
  st_fails(FIXTURE("nope.safetensors"), KILN_ERR_IO, "cannot open");
}

// Writes a safetensors file from a header text and data bytes.
static void write_st(const char *path, const char *header, const void *data, size_t n) {
  size_t len = strlen(header);
  unsigned char *buf = malloc(8 + len + n);
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)len >> (8 * i));
  memcpy(buf + 8, header, len);
  memcpy(buf + 8 + len, data, n);
  spit(path, buf, 8 + len + n);
  free(buf);
}

Test(safetensors, json_variants) {
  const int32_t v[2] = {5, -6};
  const char *good[] = {
      "{}",
      " {\n \"x\" : {\"data_offsets\": [0, 8], \"dtype\": \"I32\", \"shape\": [2]}\n}   ",
      ("{\"__metadata__\": {\"a\": \"b\\\"c\\u00e9\"}, \"x\": {\"dtype\": \"I32\", \"shape\": [2],"
       " \"data_offsets\": [0, 8], \"extra\": [1, {\"k\": null}, -2.5e3, true, false, []]}}"),
      "{\"x\":{\"dtype\":\"I32\",\"shape\":[1,2],\"data_offsets\":[0,8]}}",
      "{\"x\\t\\u0041\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    const char *p = tmp_path("j.safetensors");
    write_st(p, good[i], v, sizeof v);
    kiln_safetensors st;
    char err[512];
    cr_assert_eq(kiln_safetensors_read(p, &st, err, sizeof err), KILN_OK, "%s: %s", good[i], err);
    if (i == 4) cr_assert_str_eq(st.entries[0].name, "x\tA");
    int32_t got[2] = {0, 0};  // tensor data in a safetensors file is not aligned
    if (i > 0) memcpy(got, st.entries[0].data, sizeof got);
    if (i > 0) cr_assert_eq(got[1], -6);
    kiln_safetensors_free(&st);
  }
  const char *bad[] = {
      "",
      "[]",
      "{\"x\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]}",  // no '}'
      "{\"x\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]}} x",
      "{\"x\": {\"dtype\": \"I32\", \"shape\": [2]}}",  // no offsets
      "{\"x\": {\"dtype\": \"I32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}",
      "{\"x\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [8, 0]}}",
      "{\"x\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8, 9]}}",
      "{\"x\": {\"dtype\": \"I32\", \"shape\": [2.5], \"data_offsets\": [0, 8]}}",
      "{\"x\": {\"dtype\": \"I32\", \"shape\": [1,1,1,1,1,1,1,1,2], \"data_offsets\": [0, 8]}}",
      "{\"x\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
      " \"x\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",  // duplicate
      "{\"x\\ud800\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
      "{\"x\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 99999999999999999999]}}",
      "{\"__metadata__\": [1], \"x\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, "
      "8]}}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *p = tmp_path("j.safetensors");
    write_st(p, bad[i], v, sizeof v);
    kiln_safetensors st;
    char err[512];
    cr_assert_neq(kiln_safetensors_read(p, &st, err, sizeof err), KILN_OK, "accepted %s", bad[i]);
    assert_contains(err, p);
  }
}

Test(safetensors, write_read_round_trip) {
  float f[6];
  for (int i = 0; i < 6; i++) f[i] = f32_at(i);
  int64_t ids[4];
  for (int i = 0; i < 4; i++) ids[i] = i64_at(i);
  uint8_t flag = 1;
  kiln_array arrays[3] = {
      {.dtype = KILN_RT_F32, .rank = 2, .shape = {3, 2}, .data = f, .nbytes = sizeof f},
      {.dtype = KILN_RT_I64, .rank = 1, .shape = {4}, .data = ids, .nbytes = sizeof ids},
      {.dtype = KILN_RT_BOOL, .rank = 0, .data = &flag, .nbytes = 1},
  };
  const char *names[3] = {"zeta", "a\"b\\c\n", "alpha"};
  const char *p = tmp_path("w.safetensors");
  char err[512];
  cr_assert_eq(kiln_safetensors_write(p, 3, names, arrays, err, sizeof err), KILN_OK, "%s", err);
  cr_assert_eq(count_dir_entries(tmpdir), 1);
  size_t size;
  unsigned char *raw = slurp(p, &size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | raw[i];
  cr_assert_eq(n % 8, 0);
  cr_assert_eq(size, 8 + n + sizeof f + sizeof ids + 1);
  cr_assert_eq(raw[8], '{');
  free(raw);
  kiln_safetensors st;
  cr_assert_eq(kiln_safetensors_read(p, &st, err, sizeof err), KILN_OK, "%s", err);
  cr_assert_eq(st.count, 3);
  for (int i = 0; i < 3; i++) {
    cr_assert_str_eq(st.entries[i].name, names[i]);
    cr_assert_eq(st.entries[i].dtype, arrays[i].dtype);
    assert_shape(st.entries[i].shape, st.entries[i].rank, arrays[i].rank, arrays[i].shape);
    cr_assert_eq(st.entries[i].nbytes, arrays[i].nbytes);
    cr_assert(memcmp(st.entries[i].data, arrays[i].data, arrays[i].nbytes) == 0);
  }
  kiln_safetensors_free(&st);
}

Test(safetensors, write_rejects_bad_names) {
  float f = 1;
  kiln_array arrays[2] = {
      {.dtype = KILN_RT_F32, .rank = 0, .data = &f, .nbytes = 4},
      {.dtype = KILN_RT_F32, .rank = 0, .data = &f, .nbytes = 4},
  };
  const char *dup[2] = {"w", "w"}, *meta[1] = {"__metadata__"};
  const char *p = tmp_path("d.safetensors");
  char err[512];
  cr_assert_eq(kiln_safetensors_write(p, 2, dup, arrays, err, sizeof err), KILN_ERR_ARG);
  assert_contains(err, "'w' given twice");
  assert_contains(err, p);
  cr_assert_eq(kiln_safetensors_write(p, 1, meta, arrays, err, sizeof err), KILN_ERR_ARG);
  cr_assert_eq(count_dir_entries(tmpdir), 0);
}

// ---- weights ----

Test(weights, fnv1a64_reference_vectors) {
  cr_assert_eq(kiln_fnv1a64("", 0), 0xcbf29ce484222325ull);
  cr_assert_eq(kiln_fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);
  cr_assert_eq(kiln_fnv1a64("foobar", 6), 0x85944171f73967e8ull);
}

static void fill_payload(unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 13 + 5);
}

// The payload checksum must see every bit of every byte (the 32-byte blocks, the tail), the order
// of the words, and the length (trailing zeros).
Test(weights, checksum_sees_every_bit_order_and_length) {
  unsigned char p[203];  // 6 blocks of 32 bytes and an 11-byte tail
  fill_payload(p, sizeof p);
  uint64_t sum = kiln_weights_checksum(p, sizeof p);
  for (size_t i = 0; i < sizeof p; i++) {
    for (int b = 0; b < 8; b++) {
      p[i] ^= (unsigned char)(1u << b);
      cr_assert_neq(kiln_weights_checksum(p, sizeof p), sum, "flipping bit %d of byte %zu", b, i);
      p[i] ^= (unsigned char)(1u << b);
    }
  }
  unsigned char swapped[sizeof p];
  memcpy(swapped, p, sizeof p);
  memcpy(swapped, p + 8, 8);  // words 0 and 1 exchanged (two lanes)
  memcpy(swapped + 8, p, 8);
  cr_assert_neq(kiln_weights_checksum(swapped, sizeof p), sum);
  memcpy(swapped, p + 32, 32);  // blocks 0 and 1 exchanged (same lanes)
  memcpy(swapped + 32, p, 32);
  cr_assert_neq(kiln_weights_checksum(swapped, sizeof p), sum);
  unsigned char zeros[64] = {0};
  cr_assert_neq(kiln_weights_checksum(zeros, 32), kiln_weights_checksum(zeros, 64));
  cr_assert_neq(kiln_weights_checksum(zeros, 3), kiln_weights_checksum(zeros, 4));
  cr_assert_eq(kiln_weights_checksum(p, sizeof p), sum, "not deterministic");
}

static uint64_t le64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

Test(weights, write_layout_and_read) {
  unsigned char payload[100];
  fill_payload(payload, sizeof payload);
  uint64_t sum = kiln_weights_checksum(payload, sizeof payload);
  const char *p = tmp_path("m.weights");
  char err[512];
  cr_assert_eq(kiln_weights_write(p, payload, sizeof payload, err, sizeof err), KILN_OK, "%s", err);
  size_t size;
  unsigned char *raw = slurp(p, &size);
  cr_assert_eq(size, 64 + sizeof payload);
  cr_assert(memcmp(raw, "KILNWTS2", 8) == 0);
  cr_assert_eq(le64(raw + 8), sizeof payload);
  cr_assert_eq(le64(raw + 16), sum);
  for (int i = 24; i < 64; i++) cr_assert_eq(raw[i], 0);
  cr_assert(memcmp(raw + 64, payload, sizeof payload) == 0);
  const void *inside = NULL;
  cr_assert_eq(kiln_weights_check(raw, size, sizeof payload, sum, &inside), KILN_OK);
  cr_assert_eq(inside, raw + 64);
  cr_assert_eq(kiln_weights_check(raw, size, 99, sum, &inside), KILN_ERR_WEIGHTS);
  cr_assert_eq(kiln_weights_check(raw, size, sizeof payload, sum + 1, &inside), KILN_ERR_WEIGHTS);
  cr_assert_null(inside);
  cr_assert_eq(kiln_weights_check(raw, size - 1, sizeof payload, sum, &inside), KILN_ERR_FORMAT);
  cr_assert_eq(kiln_weights_check(raw, 10, sizeof payload, sum, &inside), KILN_ERR_FORMAT);
  raw[70] ^= 1;
  cr_assert_eq(kiln_weights_check(raw, size, sizeof payload, sum, &inside), KILN_ERR_FORMAT);
  free(raw);
  void *data = NULL;
  cr_assert_eq(kiln_weights_read(p, sizeof payload, sum, &data, err, sizeof err), KILN_OK, "%s",
               err);
  cr_assert(aligned64(data));
  cr_assert(memcmp(data, payload, sizeof payload) == 0);
  kiln_aligned_free(data);
}

Test(weights, empty_payload) {
  const char *p = tmp_path("e.weights");
  char err[512];
  cr_assert_eq(kiln_weights_write(p, NULL, 0, err, sizeof err), KILN_OK, "%s", err);
  void *data = NULL;
  cr_assert_eq(kiln_weights_read(p, 0, kiln_weights_checksum(NULL, 0), &data, err, sizeof err),
               KILN_OK, "%s", err);
  cr_assert_not_null(data);
  kiln_aligned_free(data);
}

// Writes a 100-byte weights file and expects reading it with the given expectations to fail.
static void weights_fail(const char *p, size_t expect, uint64_t sum, int status,
                         const char *needle) {
  void *data = (void *)1;
  char err[512];
  int got = kiln_weights_read(p, expect, sum, &data, err, sizeof err);
  cr_assert_eq(got, status, "status %d: %s", got, err);
  cr_assert_null(data);
  assert_contains(err, p);
  assert_contains(err, needle);
}

Test(weights, read_errors) {
  unsigned char payload[100];
  fill_payload(payload, sizeof payload);
  uint64_t sum = kiln_weights_checksum(payload, sizeof payload);
  const char *p = tmp_path("m.weights");
  char err[512];
  cr_assert_eq(kiln_weights_write(p, payload, sizeof payload, err, sizeof err), KILN_OK);
  weights_fail(p, 99, sum, KILN_ERR_WEIGHTS, "has 100 bytes of payload, model expects 99");
  weights_fail(p, 100, sum ^ 1, KILN_ERR_WEIGHTS,
               "checksum mismatch: the weights were not compiled with this model");
  weights_fail(tmp_path("none.weights"), 100, sum, KILN_ERR_IO, "cannot open");

  size_t size;
  unsigned char *raw = slurp(p, &size);
  raw[64 + 50] ^= 0x40;  // corrupt the payload
  spit(p, raw, size);
  weights_fail(p, 100, sum, KILN_ERR_FORMAT, "corrupt");
  spit(p, raw, size - 10);  // truncate
  weights_fail(p, 100, sum, KILN_ERR_FORMAT, "holds 90");
  spit(p, raw, 30);  // shorter than the header
  weights_fail(p, 100, sum, KILN_ERR_FORMAT, "truncated");
  memcpy(raw, "KILNWTS1", 8);  // the first format (FNV-1a checksum)
  spit(p, raw, size);
  weights_fail(p, 100, sum, KILN_ERR_FORMAT, "written by an older Kiln");
  raw[0] = 'X';
  spit(p, raw, size);
  weights_fail(p, 100, sum, KILN_ERR_FORMAT, "not a Kiln weights file");
  free(raw);
}

// ---- timing and threads ----

Test(timer, median_odd_and_even) {
  double odd[5] = {5, 1, 4, 2, 3};
  cr_assert_eq(kiln_median(odd, 5), 3.0);
  for (int i = 0; i < 5; i++) cr_assert_eq(odd[i], i + 1.0, "not sorted in place");
  double even[4] = {10, 1, 4, 2};
  cr_assert_eq(kiln_median(even, 4), 3.0);
  double one[1] = {7.5};
  cr_assert_eq(kiln_median(one, 1), 7.5);
  double two[2] = {2, 1};
  cr_assert_eq(kiln_median(two, 2), 1.5);
  cr_assert(isnan(kiln_median(NULL, 0)));
}

Test(timer, now_is_monotonic_milliseconds) {
  double t0 = kiln_now_ms();
  usleep(20000);
  double t1 = kiln_now_ms();
  cr_assert(t1 - t0 >= 19.0 && t1 - t0 < 5000.0, "slept 20 ms, measured %g", t1 - t0);
}

typedef struct coverage {
  int64_t n;
  int *hits;
  int calls;
} coverage;

static void mark_range(int64_t begin, int64_t end, void *ctx) {
  coverage *c = ctx;
  cr_assert(begin >= 0 && begin < end && end <= c->n);
  for (int64_t i = begin; i < end; i++) __atomic_fetch_add(&c->hits[i], 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&c->calls, 1, __ATOMIC_RELAXED);
}

static void check_coverage(int64_t n, int threads) {
  kiln_set_threads(threads);
  cr_assert_eq(kiln_get_threads(), threads);
  coverage c = {n, calloc((size_t)n + 1, sizeof(int)), 0};
  kiln_parallel_for(n, mark_range, &c);
  for (int64_t i = 0; i < n; i++)
    cr_assert_eq(c.hits[i], 1, "index %lld hit %d times", (long long)i, c.hits[i]);
  int64_t expect_calls = n < threads ? n : threads;
  cr_assert_eq(c.calls, expect_calls, "n=%lld threads=%d: %d ranges", (long long)n, threads,
               c.calls);
  free(c.hits);
}

Test(threads, parallel_for_covers_every_index_once) {
  check_coverage(1000, 4);
  check_coverage(1001, 3);
  check_coverage(3, 8);
  check_coverage(1, 2);
  check_coverage(17, 1);
}

Test(threads, parallel_for_empty_range) {
  coverage c = {0, NULL, 0};
  kiln_parallel_for(0, mark_range, &c);
  kiln_parallel_for(-5, mark_range, &c);
  cr_assert_eq(c.calls, 0);
}

// ---- kiln_main with small models ----

// Model "double": y = scale * x for x, y f32 [2, 3]; the scale (a float) comes from the weights.
typedef struct double_ctx {
  float *scale;
} double_ctx;

static int runs;  // run() calls in this test process

static const float weights_scale = 2.0f;

static int double_init(void *ctx, const char *path) {
  double_ctx *c = ctx;
  char err[512];
  return kiln_weights_read(path, sizeof(float),
                           kiln_weights_checksum(&weights_scale, sizeof(float)), (void **)&c->scale,
                           err, sizeof err);
}

static int double_embedded(void *ctx) {
  static const float three = 3.0f;
  double_ctx *c = ctx;
  c->scale = kiln_aligned_alloc(sizeof(float));
  if (!c->scale) return KILN_ERR_NOMEM;
  *c->scale = three;
  return KILN_OK;
}

static int double_run(void *ctx, const void *const *in, void *const *out) {
  const double_ctx *c = ctx;
  runs++;
  if (!aligned64(in[0]) || !aligned64(out[0])) return KILN_ERR_ARG;  // the runtime promises this
  const float *x = in[0];
  float *y = out[0];
  for (int i = 0; i < 6; i++) y[i] = *c->scale * x[i];
  return KILN_OK;
}

static void double_release(void *ctx) {
  double_ctx *c = ctx;
  kiln_aligned_free(c->scale);
}

static int fail_run(void *ctx, const void *const *in, void *const *out) {
  (void)ctx, (void)in, (void)out;
  return KILN_ERR_SHAPE;
}

static const kiln_io_desc double_in = {"x", KILN_RT_F32, 2, {2, 3}};
static const kiln_io_desc double_out = {"y", KILN_RT_F32, 2, {2, 3}};
static const kiln_model_desc double_model = {
    .name = "double",
    .n_inputs = 1,
    .n_outputs = 1,
    .inputs = &double_in,
    .outputs = &double_out,
    .weights_bytes = sizeof(float),
    .ctx_bytes = sizeof(double_ctx),
    .init_file = double_init,
    .run = double_run,
    .release = double_release,
};

// Model "pair": sum = a + b, prod = a * b for a f32 [2], b i32 [2]; no weights.
static int pair_run(void *ctx, const void *const *in, void *const *out) {
  (void)ctx;
  runs++;
  const float *a = in[0];
  const int32_t *b = in[1];
  float *sum = out[0], *prod = out[1];
  for (int i = 0; i < 2; i++) {
    sum[i] = a[i] + (float)b[i];
    prod[i] = a[i] * (float)b[i];
  }
  return KILN_OK;
}

static const kiln_io_desc pair_in[2] = {{"a", KILN_RT_F32, 1, {2}}, {"b", KILN_RT_I32, 1, {2}}};
static const kiln_io_desc pair_out[2] = {{"sum", KILN_RT_F32, 1, {2}},
                                         {"prod", KILN_RT_F32, 1, {2}}};
static const kiln_model_desc pair_model = {
    .name = "pair",
    .n_inputs = 2,
    .n_outputs = 2,
    .inputs = pair_in,
    .outputs = pair_out,
    .ctx_bytes = 8,
    .run = pair_run,
};

static char captured_out[8192], captured_err[8192];

// Reads back a capture file and restores the original descriptor.
static void end_capture(int fd, int saved, const char *file, char *buf, size_t cap) {
  dup2(saved, fd);
  close(saved);
  FILE *f = fopen(file, "rb");
  size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
  buf[n] = '\0';
  if (f) fclose(f);
  unlink(file);
}

static int begin_capture(int fd, const char *file) {
  int saved = dup(fd);
  int tmp = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  cr_assert(saved >= 0 && tmp >= 0);
  dup2(tmp, fd);
  close(tmp);
  return saved;
}

// Runs kiln_main with argv (NULL-terminated, after the program name) and captures stdout/stderr.
static int run_main(const kiln_model_desc *m, const char *prog, ...) {
  char *argv[32];
  int argc = 0;
  argv[argc++] = (char *)prog;
  va_list ap;
  va_start(ap, prog);
  for (const char *a; (a = va_arg(ap, const char *)) != NULL;) argv[argc++] = (char *)a;
  va_end(ap);
  argv[argc] = NULL;
  char out_file[64], err_file[64];
  snprintf(out_file, sizeof out_file, "/tmp/kiln-rt-out-%d", (int)getpid());
  snprintf(err_file, sizeof err_file, "/tmp/kiln-rt-err-%d", (int)getpid());
  fflush(stdout);
  fflush(stderr);
  int saved_out = begin_capture(1, out_file), saved_err = begin_capture(2, err_file);
  int rc = kiln_main(m, argc, argv);
  fflush(stdout);
  fflush(stderr);
  end_capture(1, saved_out, out_file, captured_out, sizeof captured_out);
  end_capture(2, saved_err, err_file, captured_err, sizeof captured_err);
  return rc;
}

static void write_array(const char *path, int dtype, int rank, const int64_t *shape,
                        const void *data) {
  kiln_array a = {.dtype = dtype, .rank = rank};
  memcpy(a.shape, shape, (size_t)rank * sizeof *shape);
  a.nbytes = (size_t)kiln_array_numel(&a) * kiln_rt_dtype_size(dtype);
  a.data = (void *)data;
  char err[512];
  cr_assert_eq(kiln_npy_write(path, &a, err, sizeof err), KILN_OK, "%s", err);
}

// Writes x.npy with `rows` rows of 3 floats (f32_at values) and the model's weights file.
static void double_setup(int rows) {
  float x[30];
  for (int i = 0; i < rows * 3; i++) x[i] = f32_at(i);
  write_array(tmp_path("x.npy"), KILN_RT_F32, 2, (int64_t[]){rows, 3}, x);
  char err[512];
  cr_assert_eq(kiln_weights_write(tmp_path("m.weights"), &weights_scale, sizeof weights_scale, err,
                                  sizeof err),
               KILN_OK);
}

static void expect_scaled(const char *path, int rows, float scale) {
  kiln_array y;
  read_ok(path, &y, KILN_RT_F32, 2, (int64_t[]){rows, 3});
  for (int i = 0; i < rows * 3; i++) {
    cr_assert_eq(((float *)y.data)[i], scale * f32_at(i), "y[%d] = %g", i, ((float *)y.data)[i]);
  }
  kiln_array_free(&y);
}

#define MAIN_TEST(name) Test(kiln_main, name)

MAIN_TEST(runs_the_model) {
  double_setup(2);
  int rc = run_main(&double_model, "double", "--input", tmp_path("x.npy"), "--output",
                    tmp_path("y.npy"), "--weights", tmp_path("m.weights"), NULL);
  cr_assert_eq(rc, 0, "stderr: %s", captured_err);
  cr_assert_str_empty(captured_err);
  expect_scaled(tmp_path("y.npy"), 2, 2.0f);
  cr_assert_eq(runs, 1);
  cr_assert_eq(count_dir_entries(tmpdir), 3);  // x.npy, m.weights, y.npy: no temporary files
}

MAIN_TEST(named_bindings_and_equals_syntax) {
  double_setup(2);
  char in[600], out[600], w[600];
  snprintf(in, sizeof in, "--input=x=%s", tmp_path("x.npy"));
  snprintf(out, sizeof out, "y=%s", tmp_path("y.npy"));
  snprintf(w, sizeof w, "--weights=%s", tmp_path("m.weights"));
  int rc = run_main(&double_model, "double", in, "--output", out, w, "--threads", "2", NULL);
  cr_assert_eq(rc, 0, "stderr: %s", captured_err);
  expect_scaled(tmp_path("y.npy"), 2, 2.0f);
}

MAIN_TEST(batches_multiples_of_the_leading_dimension) {
  double_setup(6);  // three chunks of 2 rows; chunks 2 and 3 are not 64-byte aligned
  int rc = run_main(&double_model, "double", "--input", tmp_path("x.npy"), "--output",
                    tmp_path("y.npy"), "--weights", tmp_path("m.weights"), NULL);
  cr_assert_eq(rc, 0, "stderr: %s", captured_err);
  expect_scaled(tmp_path("y.npy"), 6, 2.0f);
  cr_assert_eq(runs, 3);
}

MAIN_TEST(default_weights_path_is_beside_the_binary) {
  double_setup(2);
  char err[512];
  cr_assert_eq(
      kiln_weights_write(tmp_path("model.weights"), &weights_scale, sizeof(float), err, sizeof err),
      KILN_OK);
  int rc = run_main(&double_model, tmp_path("model"), "--input", tmp_path("x.npy"), "--output",
                    tmp_path("y.npy"), NULL);
  cr_assert_eq(rc, 0, "stderr: %s", captured_err);
  expect_scaled(tmp_path("y.npy"), 2, 2.0f);
  unlink(tmp_path("model.weights"));
  rc = run_main(&double_model, tmp_path("model"), "--input", tmp_path("x.npy"), NULL);
  cr_assert_eq(rc, 2);
  assert_contains(captured_err, tmp_path("model.weights"));
  assert_contains(captured_err, "model: ");  // prefixed with the program name
}

MAIN_TEST(embedded_weights_unless_a_file_is_given) {
  double_setup(2);
  kiln_model_desc m = double_model;
  m.init_embedded = double_embedded;
  int rc =
      run_main(&m, "double", "--input", tmp_path("x.npy"), "--output", tmp_path("y.npy"), NULL);
  cr_assert_eq(rc, 0, "stderr: %s", captured_err);
  expect_scaled(tmp_path("y.npy"), 2, 3.0f);
  rc = run_main(&m, "double", "--input", tmp_path("x.npy"), "--output", tmp_path("y.npy"),
                "--weights", tmp_path("m.weights"), NULL);
  cr_assert_eq(rc, 0, "stderr: %s", captured_err);
  expect_scaled(tmp_path("y.npy"), 2, 2.0f);
}

MAIN_TEST(rejects_a_wrong_dtype) {
  double x[6] = {0};
  write_array(tmp_path("x.npy"), KILN_RT_F64, 2, (int64_t[]){2, 3}, x);
  int rc = run_main(&double_model, "double", "--input", tmp_path("x.npy"), "--weights",
                    tmp_path("m.weights"), NULL);
  cr_assert_eq(rc, 2);
  char want[600];
  snprintf(want, sizeof want, "double: %s: dtype f64, but input 'x' is f32", tmp_path("x.npy"));
  assert_contains(captured_err, want);
  cr_assert_eq(runs, 0);
}

MAIN_TEST(rejects_a_wrong_shape) {
  float x[12] = {0};
  write_array(tmp_path("x.npy"), KILN_RT_F32, 2, (int64_t[]){2, 4}, x);
  int rc = run_main(&double_model, "double", "--input", tmp_path("x.npy"), NULL);
  cr_assert_eq(rc, 2);
  assert_contains(captured_err, "shape [2, 4], but input 'x' has shape [2, 3]");
  write_array(tmp_path("x.npy"), KILN_RT_F32, 2, (int64_t[]){3, 3}, x);  // not a multiple of 2
  cr_assert_eq(run_main(&double_model, "double", "--input", tmp_path("x.npy"), NULL), 2);
  assert_contains(captured_err, "shape [3, 3]");
  write_array(tmp_path("x.npy"), KILN_RT_F32, 1, (int64_t[]){6}, x);  // wrong rank
  cr_assert_eq(run_main(&double_model, "double", "--input", tmp_path("x.npy"), NULL), 2);
  write_array(tmp_path("x.npy"), KILN_RT_F32, 2, (int64_t[]){0, 3}, x);  // no rows
  cr_assert_eq(run_main(&double_model, "double", "--input", tmp_path("x.npy"), NULL), 2);
  cr_assert_eq(runs, 0);
}

MAIN_TEST(rejects_missing_and_unknown_inputs) {
  double_setup(2);
  cr_assert_eq(run_main(&double_model, "double", "--weights", tmp_path("m.weights"), NULL), 2);
  assert_contains(captured_err, "missing input 'x' (f32 [2, 3])");
  char named[600];
  snprintf(named, sizeof named, "z=%s", tmp_path("x.npy"));
  cr_assert_eq(run_main(&double_model, "double", "--input", named, NULL), 2);
  assert_contains(captured_err, "unknown input 'z'");
  assert_contains(captured_err, "inputs are: x");
  cr_assert_eq(run_main(&double_model, "double", "--input", tmp_path("x.npy"), "--output",
                        "nope=y.npy", NULL),
               2);
  assert_contains(captured_err, "unknown output 'nope'");
  assert_contains(captured_err, "outputs are: y");
  cr_assert_eq(run_main(&double_model, "double", "--input", tmp_path("no.npy"), NULL), 2);
  assert_contains(captured_err, tmp_path("no.npy"));
  cr_assert_eq(runs, 0);
}

MAIN_TEST(rejects_bad_flags) {
  double_setup(2);
  const char *x = tmp_path("x.npy");
  cr_assert_eq(run_main(&double_model, "double", "--frobnicate", NULL), 2);
  assert_contains(captured_err, "unknown option '--frobnicate'");
  cr_assert_eq(run_main(&double_model, "double", x, NULL), 2);
  assert_contains(captured_err, "unexpected argument");
  cr_assert_eq(run_main(&double_model, "double", "--input", NULL), 2);
  assert_contains(captured_err, "--input needs a value");
  cr_assert_eq(run_main(&double_model, "double", "--input", x, "--bench", "zero", NULL), 2);
  cr_assert_eq(run_main(&double_model, "double", "--input", x, "--bench", "0", NULL), 2);
  cr_assert_eq(run_main(&double_model, "double", "--input", x, "--threads", "-1", NULL), 2);
  cr_assert_eq(run_main(&double_model, "double", "--input", x, "--input", x, NULL), 2);
  assert_contains(captured_err, "too many input files");
  cr_assert_eq(runs, 0);
}

MAIN_TEST(rejects_foreign_weights) {
  double_setup(2);
  const char *w = tmp_path("m.weights");
  char err[512];
  double other = 2.0;  // 8 bytes: a different model's weights
  cr_assert_eq(kiln_weights_write(w, &other, sizeof other, err, sizeof err), KILN_OK);
  cr_assert_eq(
      run_main(&double_model, "double", "--input", tmp_path("x.npy"), "--weights", w, NULL), 2);
  char want[600];
  snprintf(want, sizeof want, "weights file %s has 8 bytes of payload, model expects 4", w);
  assert_contains(captured_err, want);
  float wrong = 2.5f;  // right size, wrong checksum
  cr_assert_eq(kiln_weights_write(w, &wrong, sizeof wrong, err, sizeof err), KILN_OK);
  cr_assert_eq(
      run_main(&double_model, "double", "--input", tmp_path("x.npy"), "--weights", w, NULL), 2);
  assert_contains(captured_err, "checksum mismatch: the weights were not compiled with this model");
  assert_contains(captured_err, w);
  cr_assert_eq(runs, 0);
}

MAIN_TEST(bench_prints_the_median) {
  double_setup(4);
  int rc = run_main(&double_model, "double", "--input", tmp_path("x.npy"), "--weights",
                    tmp_path("m.weights"), "--bench", "5", NULL);
  cr_assert_eq(rc, 0, "stderr: %s", captured_err);
  cr_assert_eq(runs, 2 + 5);  // two chunks (the first is the warm-up), then 5 timed runs
  double ms = -1;
  char tail[8] = "";
  cr_assert_eq(sscanf(captured_out, "median_ms=%lf%7s", &ms, tail), 1, "stdout: %s", captured_out);
  cr_assert(ms >= 0.0);
  cr_assert_eq(count_dir_entries(tmpdir), 2);  // no outputs requested, none written
}

MAIN_TEST(help_lists_inputs_and_outputs) {
  cr_assert_eq(run_main(&pair_model, "pair", "--help", NULL), 0);
  assert_contains(captured_out, "usage: pair");
  assert_contains(captured_out, "a     f32   [2]");
  assert_contains(captured_out, "b     i32   [2]");
  assert_contains(captured_out, "sum   f32   [2]");
  assert_contains(captured_out, "prod  f32   [2]");
  cr_assert_eq(run_main(&double_model, "double", "-h", NULL), 0);
  assert_contains(captured_out, "x     f32   [2, 3]");
}

static void pair_inputs(int n) {
  float a[8];
  int32_t b[8];
  for (int i = 0; i < n; i++) {
    a[i] = f32_at(i);
    b[i] = i32_at(i) / 1000;
  }
  write_array(tmp_path("a.npy"), KILN_RT_F32, 1, (int64_t[]){n}, a);
  write_array(tmp_path("b.npy"), KILN_RT_I32, 1, (int64_t[]){n}, b);
}

static void expect_pair(const char *sum_path, const char *prod_path, int n) {
  kiln_array s, p;
  if (sum_path) read_ok(sum_path, &s, KILN_RT_F32, 1, (int64_t[]){n});
  if (prod_path) read_ok(prod_path, &p, KILN_RT_F32, 1, (int64_t[]){n});
  for (int i = 0; i < n; i++) {
    float a = f32_at(i), b = (float)(i32_at(i) / 1000);
    if (sum_path) cr_assert_eq(((float *)s.data)[i], a + b);
    if (prod_path) cr_assert_eq(((float *)p.data)[i], a * b);
  }
  if (sum_path) kiln_array_free(&s);
  if (prod_path) kiln_array_free(&p);
}

MAIN_TEST(positional_files_fill_the_unnamed_slots_in_order) {
  pair_inputs(2);
  char b_named[600], prod_named[600];
  snprintf(b_named, sizeof b_named, "b=%s", tmp_path("b.npy"));
  snprintf(prod_named, sizeof prod_named, "prod=%s", tmp_path("p.npy"));
  int rc = run_main(&pair_model, "pair", "--input", b_named, "--input", tmp_path("a.npy"),
                    "--output", prod_named, "--output", tmp_path("s.npy"), NULL);
  cr_assert_eq(rc, 0, "stderr: %s", captured_err);
  expect_pair(tmp_path("s.npy"), tmp_path("p.npy"), 2);
  rc = run_main(&pair_model, "pair", "--input", tmp_path("a.npy"), "--input", tmp_path("b.npy"),
                "--output", prod_named, NULL);
  cr_assert_eq(rc, 0, "stderr: %s", captured_err);
  expect_pair(NULL, tmp_path("p.npy"), 2);
}

MAIN_TEST(only_requested_outputs_are_written) {
  pair_inputs(4);  // two chunks
  char prod_named[600];
  snprintf(prod_named, sizeof prod_named, "prod=%s", tmp_path("p.npy"));
  int rc = run_main(&pair_model, "pair", "--input", tmp_path("a.npy"), "--input", tmp_path("b.npy"),
                    "--output", prod_named, NULL);
  cr_assert_eq(rc, 0, "stderr: %s", captured_err);
  expect_pair(NULL, tmp_path("p.npy"), 4);
  cr_assert_eq(count_dir_entries(tmpdir), 3);
  cr_assert_eq(runs, 2);
}

MAIN_TEST(binding_errors) {
  pair_inputs(2);
  char a_named[600];
  snprintf(a_named, sizeof a_named, "a=%s", tmp_path("a.npy"));
  cr_assert_eq(run_main(&pair_model, "pair", "--input", a_named, "--input", a_named, NULL), 2);
  assert_contains(captured_err, "input 'a' given twice");
  cr_assert_eq(run_main(&pair_model, "pair", "--input", tmp_path("a.npy"), NULL), 2);
  assert_contains(captured_err, "missing input 'b' (i32 [2])");
  cr_assert_eq(
      run_main(&pair_model, "pair", "--input", tmp_path("a.npy"), "--input", tmp_path("b.npy"),
               "--output", tmp_path("o.npy"), "--output", tmp_path("o.npy"), NULL),
      2);
  assert_contains(captured_err, "would both be written");
  float a4[4] = {0};
  write_array(tmp_path("a.npy"), KILN_RT_F32, 1, (int64_t[]){4}, a4);
  cr_assert_eq(run_main(&pair_model, "pair", "--input", tmp_path("a.npy"), "--input",
                        tmp_path("b.npy"), NULL),
               2);
  assert_contains(captured_err, "same number");
  cr_assert_eq(runs, 0);
}

MAIN_TEST(failed_runs_write_nothing) {
  double_setup(2);
  kiln_model_desc m = double_model;
  m.run = fail_run;
  int rc = run_main(&m, "double", "--input", tmp_path("x.npy"), "--output", tmp_path("y.npy"),
                    "--weights", tmp_path("m.weights"), NULL);
  cr_assert_eq(rc, 1);
  assert_contains(captured_err, "the model failed");
  cr_assert_not(file_exists(tmp_path("y.npy")));
}

MAIN_TEST(unwritable_output_is_a_bad_input) {
  double_setup(2);
  int rc = run_main(&double_model, "double", "--input", tmp_path("x.npy"), "--output",
                    tmp_path("no-dir/y.npy"), "--weights", tmp_path("m.weights"), NULL);
  cr_assert_eq(rc, 2);
  assert_contains(captured_err, tmp_path("no-dir/y.npy"));
}
