// Fuzz target: the trainer's data readers (runtime/train_data.c): IDX pairs (plain and gzip),
// .npy pairs and CSV. The first byte picks the format; the rest is split in two at its second
// byte (sample file, label file).
#include "../../runtime/train_data.h"
#include "fuzz.h"

static const char *pair(const char *a, const char *b, char *buf, size_t n) {
  snprintf(buf, n, "%s,%s", a, b);
  return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  int format = data[0] % 4;
  size_t split = (size_t)data[1] * (size - 2) / 255;
  const uint8_t *rest = data + 2;
  char src[2200], err[256];
  static const char *x_names[] = {"x.idx", "x.idx.gz", "x.npy"};
  static const char *y_names[] = {"y.idx", "y.idx.gz", "y.npy"};
  if (format == 3) {
    snprintf(src, sizeof(src), "%s", fuzz_file("data.csv", rest, size - 2));
  } else {
    const char *x = fuzz_file(x_names[format], rest, split);
    const char *y = fuzz_file(y_names[format], rest + split, size - 2 - split);
    char xs[1024];
    snprintf(xs, sizeof(xs), "%s", x);
    pair(xs, y, src, sizeof(src));
  }
  kiln_dataset ds = {0};
  if (kiln_dataset_load(src, &ds, err, sizeof(err)) != KILN_OK) return 0;
  // Touch the first and last sample and label: they must be readable.
  if (ds.n > 0) {
    volatile double v = kiln_dataset_x(&ds, ds.n - 1, ds.x_numel - 1);
    v += kiln_dataset_y(&ds, ds.n - 1, ds.y_numel - 1) + kiln_dataset_x(&ds, 0, 0);
    (void)v;
  }
  kiln_dataset_free(&ds);
  return 0;
}
