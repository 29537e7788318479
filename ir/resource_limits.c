// Resource limits (resource_limits.h): defaults, KILN_LIMITS, and the KEY=SIZE parser.
#include "resource_limits.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kiln_limits limits = {
    .model_bytes = (int64_t)2 << 30,    // 2 GiB (a VGG-16 ONNX file is ~530 MiB)
    .tensor_bytes = (int64_t)16 << 30,  // 16 GiB
    .total_bytes = (int64_t)64 << 30,   // 64 GiB
    .nodes = 200000,                    // the largest zoo model has ~700
};
static bool env_read;

typedef struct limit_key {
  const char *name;
  size_t offset;
} limit_key;

static const limit_key keys[] = {
    {"model-bytes", offsetof(kiln_limits, model_bytes)},
    {"tensor-bytes", offsetof(kiln_limits, tensor_bytes)},
    {"total-bytes", offsetof(kiln_limits, total_bytes)},
    {"nodes", offsetof(kiln_limits, nodes)},
};

// "64", "4K", "2G": a positive size; false if malformed or out of range.
static bool parse_size(const char *s, size_t len, int64_t *out) {
  char buf[32];
  if (len == 0 || len >= sizeof buf) return false;
  memcpy(buf, s, len);
  buf[len] = 0;
  char *end;
  errno = 0;
  long long v = strtoll(buf, &end, 10);
  if (end == buf || errno || v < 1) return false;
  int shift = 0;
  if (*end) {
    const char *units = "KMGT", *u = strchr(units, *end);
    if (!u || end[1]) return false;
    shift = 10 * (int)(u - units + 1);
  }
  if (v > (INT64_MAX >> shift)) return false;
  *out = (int64_t)v << shift;
  return true;
}

// One KEY=SIZE item into *l.
static bool set_item(kiln_limits *l, const char *item, size_t len, char *err, size_t errlen) {
  const char *eq = memchr(item, '=', len);
  for (size_t k = 0; eq && k < sizeof keys / sizeof keys[0]; k++) {
    if (strlen(keys[k].name) != (size_t)(eq - item) || strncmp(item, keys[k].name, eq - item))
      continue;
    if (parse_size(eq + 1, len - (size_t)(eq - item) - 1, (int64_t *)((char *)l + keys[k].offset)))
      return true;
    snprintf(err, errlen,
             "limit '%.*s': expected a whole number >= 1 with an optional K, M, G or T", (int)len,
             item);
    return false;
  }
  snprintf(err, errlen,
           "limit '%.*s': expected KEY=SIZE with KEY one of model-bytes, tensor-bytes, "
           "total-bytes, nodes",
           (int)len, item);
  return false;
}

static bool apply(const char *spec, char *err, size_t errlen) {
  kiln_limits next = limits;
  for (const char *s = spec; *s;) {
    size_t len = strcspn(s, ",");
    if (!set_item(&next, s, len, err, errlen)) return false;
    s += len + (s[len] == ',');
  }
  limits = next;
  return true;
}

static void read_env(void) {
  if (env_read) return;
  env_read = true;
  const char *spec = getenv("KILN_LIMITS");
  char err[256];
  if (spec && !apply(spec, err, sizeof err))
    fprintf(stderr, "kiln: KILN_LIMITS ignored: %s\n", err);
}

const kiln_limits *kiln_limits_get(void) {
  read_env();
  return &limits;
}

bool kiln_limits_set(const char *spec, char *err, size_t errlen) {
  read_env();
  return apply(spec, err, errlen);
}

const char *kiln_bytes_str(int64_t bytes, char *buf, size_t n) {
  static const char *units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;  // the largest unit not above bytes
  while (u < 6 && bytes >= ((int64_t)1 << (10 * (u + 1)))) u++;
  int64_t scale = (int64_t)1 << (10 * u);
  if (bytes % scale == 0)
    snprintf(buf, n, "%" PRId64 " %s", bytes / scale, units[u]);
  else
    snprintf(buf, n, "%.1f %s", (double)bytes / (double)scale, units[u]);
  return buf;
}
