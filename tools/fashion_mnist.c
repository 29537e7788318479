// kiln-fashion-mnist: turns the IDX files of Debian's dataset-fashion-mnist into .npy inputs and
// scores a model's logits against the labels.
//   kiln-fashion-mnist images IMAGES-idx3-ubyte.gz OUT.npy   -> f32 (N, 1, 28, 28), pixels / 255
//   kiln-fashion-mnist accuracy LOGITS.npy LABELS-idx1-ubyte.gz  -> prints test_accuracy=<float>
// Exit status: 0 ok, 2 bad input.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "kiln_runtime.h"

enum { IDX_IMAGES = 0x00000803, IDX_LABELS = 0x00000801, MAX_ITEMS = 1 << 20 };

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int fail(const char *path, const char *what) {
  fprintf(stderr, "kiln-fashion-mnist: %s: %s\n", path, what);
  return 2;
}

// Reads a gzip'd IDX file: header (magic, dims) then bytes. Returns the payload or NULL.
static unsigned char *read_idx(const char *path, uint32_t magic, int n_dims, uint32_t *dims,
                               size_t *bytes) {
  gzFile f = gzopen(path, "rb");
  if (!f) return fail(path, "cannot open"), NULL;
  unsigned char head[16];
  int head_bytes = 4 + 4 * n_dims;
  unsigned char *data = NULL;
  if (gzread(f, head, (unsigned)head_bytes) != head_bytes || be32(head) != magic) {
    fail(path, "not an IDX file of the expected kind");
  } else {
    size_t total = 1;
    for (int i = 0; i < n_dims; i++) total *= dims[i] = be32(head + 4 + 4 * i);
    if (dims[0] == 0 || dims[0] > MAX_ITEMS)
      fail(path, "implausible item count");
    else if (!(data = malloc(total)))
      fail(path, "out of memory");
    else if (gzread(f, data, (unsigned)total) != (int)total) {
      free(data);
      data = NULL;
      fail(path, "truncated");
    }
    *bytes = total;
  }
  gzclose(f);
  return data;
}

static int cmd_images(const char *in, const char *out) {
  uint32_t dims[3];
  size_t bytes;
  unsigned char *px = read_idx(in, IDX_IMAGES, 3, dims, &bytes);
  if (!px) return 2;
  kiln_array a = {.dtype = KILN_RT_F32, .rank = 4, .shape = {dims[0], 1, dims[1], dims[2]}};
  a.nbytes = bytes * sizeof(float);
  a.data = kiln_aligned_alloc(a.nbytes);
  if (!a.data) return free(px), fail(out, "out of memory");
  float *v = a.data;
  for (size_t i = 0; i < bytes; i++) v[i] = (float)px[i] / 255.0f;
  free(px);
  char err[512];
  int rc = kiln_npy_write(out, &a, err, sizeof(err));
  kiln_aligned_free(a.data);
  if (rc) return fprintf(stderr, "kiln-fashion-mnist: %s\n", err), 2;
  printf("wrote %s: %u images of %ux%u\n", out, dims[0], dims[1], dims[2]);
  return 0;
}

static int argmax(const float *v, int n) {
  int best = 0;
  for (int i = 1; i < n; i++)
    if (v[i] > v[best]) best = i;
  return best;
}

static int cmd_accuracy(const char *logits_path, const char *labels_path) {
  char err[512];
  kiln_array logits;
  if (kiln_npy_read(logits_path, &logits, err, sizeof(err)))
    return fprintf(stderr, "kiln-fashion-mnist: %s\n", err), 2;
  uint32_t dims[1];
  size_t n;
  unsigned char *labels = read_idx(labels_path, IDX_LABELS, 1, dims, &n);
  int rc = 0;
  if (!labels) {
    rc = 2;
  } else if (logits.dtype != KILN_RT_F32 || logits.rank != 2 || (size_t)logits.shape[0] != n) {
    rc = fail(logits_path,
              "expected f32 logits of shape (N, classes) with N = the number of labels");
  } else {
    int classes = (int)logits.shape[1];
    size_t correct = 0;
    for (size_t i = 0; i < n; i++)
      correct += argmax((const float *)logits.data + i * (size_t)classes, classes) == labels[i];
    printf("test_accuracy=%.4f\n", (double)correct / (double)n);
  }
  free(labels);
  kiln_array_free(&logits);
  return rc;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "images") == 0) return cmd_images(argv[2], argv[3]);
  if (argc == 4 && strcmp(argv[1], "accuracy") == 0) return cmd_accuracy(argv[2], argv[3]);
  fputs(
      "usage: kiln-fashion-mnist images IMAGES.gz OUT.npy\n"
      "       kiln-fashion-mnist accuracy LOGITS.npy LABELS.gz\n",
      stderr);
  return 2;
}
