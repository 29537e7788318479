// A user's own program embedding generated code: it includes the header `kiln compile` wrote,
// links the generated C, and runs LeNet-5 on the golden images through each init variant
// (weights file; in-memory blob with a caller-owned arena; run_arena), checking the logits
// against PyTorch's within 1e-5. Usage: embed_lenet5 PATH/lenet5.weights
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln_runtime.h"
#include "lenet5.h"

#ifndef KILN_TEST_GOLDENS_DIR
#define KILN_TEST_GOLDENS_DIR "tests/goldens"
#endif

static int check(const float *got, const float *want, int n, const char *what) {
  for (int i = 0; i < n; i++) {
    if (!(fabsf(got[i] - want[i]) <= 1e-5f)) {
      fprintf(stderr, "%s: logit %d is %.9g, PyTorch says %.9g\n", what, i, got[i], want[i]);
      return 1;
    }
  }
  return 0;
}

static void *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *data = kiln_aligned_alloc((size_t)n);
  if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
    kiln_aligned_free(data);
    data = NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return data;
}

static int expect_status(int got, int want, const char *what) {
  if (got == want) return 0;
  fprintf(stderr, "%s: expected %s, got %s\n", what, kiln_status_str(want), kiln_status_str(got));
  return 1;
}

// The generated API's argument checks: every bad call returns an error code, never crashes.
static int bad_arguments(unsigned char *blob, size_t blob_bytes, void *arena, const float *x,
                         float *logits) {
  lenet5_ctx ctx;
  int failures = 0;
  failures += expect_status(lenet5_init_blob(&ctx, blob, blob_bytes, arena, 16), KILN_ERR_ARG,
                            "init_blob with a too-small arena");
  failures += expect_status(lenet5_init_blob(&ctx, blob, blob_bytes - 1, arena, lenet5_ARENA_BYTES),
                            KILN_ERR_FORMAT, "init_blob with a truncated blob");
  blob[blob_bytes / 2] ^= 0x40;  // one flipped bit in the payload: the checksum must catch it
  failures += expect_status(lenet5_init_blob(&ctx, blob, blob_bytes, arena, lenet5_ARENA_BYTES),
                            KILN_ERR_FORMAT, "init_blob with a corrupted payload");
  blob[blob_bytes / 2] ^= 0x40;
  blob[16] ^= 1;  // the header's checksum (bytes 16..23): a blob made for another model
  failures += expect_status(lenet5_init_blob(&ctx, blob, blob_bytes, arena, lenet5_ARENA_BYTES),
                            KILN_ERR_WEIGHTS, "init_blob with another model's blob");
  blob[16] ^= 1;
  failures += expect_status(lenet5_init_blob(&ctx, NULL, blob_bytes, arena, lenet5_ARENA_BYTES),
                            KILN_ERR_ARG, "init_blob with a NULL blob");
  failures += expect_status(lenet5_init_file(&ctx, "/nonexistent/lenet5.weights"), KILN_ERR_IO,
                            "init_file with a missing file");
  failures += expect_status(lenet5_run(NULL, x, logits), KILN_ERR_ARG, "run with a NULL context");
  failures += expect_status(lenet5_init_blob(&ctx, blob, blob_bytes, arena, lenet5_ARENA_BYTES),
                            KILN_OK, "init_blob after the bad calls");
  failures += expect_status(lenet5_run(&ctx, NULL, logits), KILN_ERR_ARG, "run with a NULL input");
  failures += expect_status(lenet5_run_arena(&ctx, NULL, x, logits), KILN_ERR_ARG,
                            "run_arena with a NULL arena");
  lenet5_release(&ctx);
  return failures;
}

int main(int argc, char **argv) {
  if (argc != 2) return fprintf(stderr, "usage: %s lenet5.weights\n", argv[0]), 2;
  char err[512];
  kiln_array x, y;
  if (kiln_npy_read(KILN_TEST_GOLDENS_DIR "/lenet5/x.npy", &x, err, sizeof(err)) ||
      kiln_npy_read(KILN_TEST_GOLDENS_DIR "/lenet5/logits.npy", &y, err, sizeof(err)))
    return fprintf(stderr, "%s\n", err), 1;
  int images = (int)x.shape[0], failures = 0;
  const float *xs = x.data, *ys = y.data;

  lenet5_ctx ctx;
  int rc = lenet5_init_file(&ctx, argv[1]);
  if (rc) return fprintf(stderr, "init_file: %s\n", kiln_status_str(rc)), 1;
  float logits[10];
  for (int i = 0; i < images; i++) {
    rc = lenet5_run(&ctx, xs + i * 28 * 28, logits);
    failures += rc ? 1 : check(logits, ys + i * 10, 10, "init_file + run");
  }
  // Argument checking: a NULL output is an error code, not a crash.
  failures += lenet5_run(&ctx, xs, NULL) == KILN_ERR_ARG ? 0 : 1;
  lenet5_release(&ctx);

  size_t blob_bytes;
  void *blob = read_file(argv[1], &blob_bytes);
  void *arena = kiln_aligned_alloc(lenet5_ARENA_BYTES);
  if (!blob || !arena) return fprintf(stderr, "cannot read %s\n", argv[1]), 1;
  rc = lenet5_init_blob(&ctx, blob, blob_bytes, arena, lenet5_ARENA_BYTES);
  if (rc) return fprintf(stderr, "init_blob: %s\n", kiln_status_str(rc)), 1;
  void *second_arena = kiln_aligned_alloc(lenet5_ARENA_BYTES);
  for (int i = 0; i < images; i++) {
    rc = lenet5_run_arena(&ctx, second_arena, xs + i * 28 * 28, logits);
    failures += rc ? 1 : check(logits, ys + i * 10, 10, "init_blob + run_arena");
  }
  lenet5_release(&ctx);
  failures += bad_arguments(blob, blob_bytes, arena, xs, logits);
  kiln_aligned_free(second_arena);
  kiln_aligned_free(arena);
  kiln_aligned_free(blob);
  kiln_array_free(&x);
  kiln_array_free(&y);
  if (failures)
    fprintf(stderr, "%d failures\n", failures);
  else
    printf("embedding: %d images match PyTorch\n", images);
  return failures != 0;
}
