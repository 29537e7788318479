// The weights blob written by `kiln compile`: a 64-byte header (KILN_WEIGHTS_MAGIC, u64 payload
// bytes, u64 kiln_weights_checksum of the payload, zero padding) followed by the payload.
// Integers are little-endian. Reading checks magic, size and checksum against what the model
// expects.
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kiln_rt_internal.h"
#include "kiln_runtime.h"

static const char weights_magic[8] = KILN_WEIGHTS_MAGIC;
static const char weights_magic_v1[8] = {'K', 'I', 'L', 'N', 'W', 'T', 'S', '1'};

uint64_t kiln_fnv1a64(const void *data, size_t n) {
  const unsigned char *p = data;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

// The payload checksum: four independent 64-bit lanes, each folding in every fourth 8-byte
// little-endian word (w: lane = rotl(lane ^ w * K1, 29) * K2), then the tail bytes, the length and
// a final avalanche. Independent lanes keep four multiplies in flight, so large payloads hash at
// memory speed, where byte-at-a-time FNV-1a (one dependent multiply per byte) took ~0.25 s for
// 240 MB. Detects any change of one word (odd multipliers and rotations are bijections); it is a
// corruption check, not a cryptographic one.
static const uint64_t mix_k1 = 0x9e3779b97f4a7c15ull, mix_k2 = 0xbf58476d1ce4e5b9ull,
                      mix_k3 = 0x94d049bb133111ebull;

static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t load_le64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);  // one load; the bytes reversed on a big-endian host
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

static uint64_t fold_word(uint64_t lane, uint64_t w) {
  return rotl64(lane ^ (w * mix_k1), 29) * mix_k2;
}

static uint64_t avalanche(uint64_t h) {
  h = (h ^ (h >> 30)) * mix_k2;
  h = (h ^ (h >> 27)) * mix_k3;
  return h ^ (h >> 31);
}

uint64_t kiln_weights_checksum(const void *data, size_t n) {
  const unsigned char *p = data;
  uint64_t l0 = mix_k1, l1 = mix_k2, l2 = mix_k3, l3 = mix_k1 ^ mix_k2;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {  // four independent chains
    l0 = fold_word(l0, load_le64(p + i));
    l1 = fold_word(l1, load_le64(p + i + 8));
    l2 = fold_word(l2, load_le64(p + i + 16));
    l3 = fold_word(l3, load_le64(p + i + 24));
  }
  uint64_t h = fold_word(fold_word(fold_word(fold_word((uint64_t)n * mix_k3, l0), l1), l2), l3);
  for (; i < n; i++) h = fold_word(h, p[i]);
  return avalanche(h);
}

static void put_u64le(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

int kiln_weights_write(const char *path, const void *payload, size_t bytes, char *err,
                       size_t errlen) {
  kiln_rt_errf(err, errlen, "%s", "");
  if (!path || (!payload && bytes > 0)) {
    kiln_rt_errf(err, errlen, "%s: no payload given", path ? path : "(null)");
    return KILN_ERR_ARG;
  }
  unsigned char header[KILN_WEIGHTS_HEADER_BYTES] = {0};
  memcpy(header, weights_magic, sizeof weights_magic);
  put_u64le(header + 8, bytes);
  put_u64le(header + 16, kiln_weights_checksum(payload, bytes));
  kiln_rt_span parts[2] = {{header, sizeof header}, {payload, bytes}};
  return kiln_rt_write_atomic(path, parts, 2, err, errlen);
}

// Splits a header into payload size and checksum; false if the magic is wrong.
static bool parse_header(const unsigned char *header, uint64_t *bytes, uint64_t *checksum) {
  if (memcmp(header, weights_magic, sizeof weights_magic) != 0) return false;
  *bytes = load_le64(header + 8);
  *checksum = load_le64(header + 16);
  return true;
}

int kiln_weights_check(const void *blob, size_t blob_bytes, size_t expect_bytes,
                       uint64_t expect_checksum, const void **payload) {
  if (!blob || !payload) return KILN_ERR_ARG;
  *payload = NULL;
  uint64_t bytes = 0, checksum = 0;
  if (blob_bytes < KILN_WEIGHTS_HEADER_BYTES || !parse_header(blob, &bytes, &checksum)) {
    return KILN_ERR_FORMAT;
  }
  if (bytes != expect_bytes || checksum != expect_checksum) return KILN_ERR_WEIGHTS;
  if (blob_bytes - KILN_WEIGHTS_HEADER_BYTES != bytes) return KILN_ERR_FORMAT;
  const unsigned char *data = (const unsigned char *)blob + KILN_WEIGHTS_HEADER_BYTES;
  if (kiln_weights_checksum(data, bytes) != checksum) return KILN_ERR_FORMAT;
  *payload = data;
  return KILN_OK;
}

// Reads and checks the header of an open blob: magic, and that the file holds exactly the payload.
static int read_header(FILE *f, const char *path, uint64_t *bytes, uint64_t *checksum, char *err,
                       size_t errlen) {
  unsigned char header[KILN_WEIGHTS_HEADER_BYTES];
  size_t got = fread(header, 1, sizeof header, f);
  if (got >= 8 && memcmp(header, weights_magic_v1, sizeof weights_magic_v1) == 0) {
    kiln_rt_errf(err, errlen,
                 "weights file %s was written by an older Kiln (format KILNWTS1, FNV-1a "
                 "checksum): rebuild the model with this one",
                 path);
    return KILN_ERR_FORMAT;
  }
  if (got < 8 || !parse_header(header, bytes, checksum)) {
    kiln_rt_errf(err, errlen, "%s is not a Kiln weights file (bad magic)", path);
    return KILN_ERR_FORMAT;
  }
  if (got < sizeof header) {
    kiln_rt_errf(err, errlen, "weights file %s is truncated: %zu bytes, the header alone is %d",
                 path, got, KILN_WEIGHTS_HEADER_BYTES);
    return KILN_ERR_FORMAT;
  }
  uint64_t size = 0;
  if (kiln_rt_file_size(f, &size) && size - KILN_WEIGHTS_HEADER_BYTES != *bytes) {
    kiln_rt_errf(
        err, errlen,
        "weights file %s is damaged: its header promises %llu payload bytes, it holds %llu", path,
        (unsigned long long)*bytes, (unsigned long long)(size - KILN_WEIGHTS_HEADER_BYTES));
    return KILN_ERR_FORMAT;
  }
  return KILN_OK;
}

static FILE *open_blob(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) kiln_rt_errf(err, errlen, "cannot open weights file %s: %s", path, strerror(errno));
  return f;
}

int kiln_rt_weights_probe(const char *path, uint64_t *payload_bytes, char *err, size_t errlen) {
  FILE *f = open_blob(path, err, errlen);
  if (!f) return KILN_ERR_IO;
  uint64_t checksum = 0;
  int status = read_header(f, path, payload_bytes, &checksum, err, errlen);
  fclose(f);
  return status;
}

static int check_expected(const char *path, uint64_t bytes, uint64_t checksum, size_t expect_bytes,
                          uint64_t expect_checksum, char *err, size_t errlen) {
  if (bytes != expect_bytes) {
    kiln_rt_errf(err, errlen, "weights file %s has %llu bytes of payload, model expects %zu", path,
                 (unsigned long long)bytes, expect_bytes);
    return KILN_ERR_WEIGHTS;
  }
  if (checksum != expect_checksum) {
    kiln_rt_errf(
        err, errlen,
        "weights file %s: checksum mismatch: the weights were not compiled with this model", path);
    return KILN_ERR_WEIGHTS;
  }
  return KILN_OK;
}

static int read_payload(FILE *f, const char *path, size_t bytes, uint64_t checksum, void **payload,
                        char *err, size_t errlen) {
  void *data = kiln_aligned_alloc(bytes);
  if (!data) {
    kiln_rt_errf(err, errlen, "weights file %s: out of memory for %zu bytes", path, bytes);
    return KILN_ERR_NOMEM;
  }
  size_t got = fread(data, 1, bytes, f);
  int status = KILN_OK;
  if (got != bytes) {
    kiln_rt_errf(err, errlen, "weights file %s is truncated: expected %zu payload bytes, got %zu",
                 path, bytes, got);
    status = KILN_ERR_FORMAT;
  } else if (kiln_weights_checksum(data, bytes) != checksum) {
    kiln_rt_errf(err, errlen, "weights file %s is corrupt: its payload does not match its checksum",
                 path);
    status = KILN_ERR_FORMAT;
  }
  if (status == KILN_OK)
    *payload = data;
  else
    kiln_aligned_free(data);
  return status;
}

int kiln_weights_read(const char *path, size_t expect_bytes, uint64_t expect_checksum,
                      void **payload, char *err, size_t errlen) {
  kiln_rt_errf(err, errlen, "%s", "");
  if (!path || !payload) {
    kiln_rt_errf(err, errlen, "%s: no path or output given", path ? path : "(null)");
    return KILN_ERR_ARG;
  }
  *payload = NULL;
  FILE *f = open_blob(path, err, errlen);
  if (!f) return KILN_ERR_IO;
  uint64_t bytes = 0, checksum = 0;
  int status = read_header(f, path, &bytes, &checksum, err, errlen);
  if (status == KILN_OK) {
    status = check_expected(path, bytes, checksum, expect_bytes, expect_checksum, err, errlen);
  }
  if (status == KILN_OK)
    status = read_payload(f, path, expect_bytes, checksum, payload, err, errlen);
  fclose(f);
  return status;
}
