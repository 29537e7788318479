// Resource limits on what Kiln reads (docs/testing.md, "Resource limits"): models from strangers
// must be refused with a message before they make the compiler allocate absurd amounts of memory
// or time. Defaults suit every real model we know of; KILN_LIMITS or `kiln --limits` changes them.
#ifndef KILN_IR_RESOURCE_LIMITS_H
#define KILN_IR_RESOURCE_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kiln_limits {
  int64_t model_bytes;   // largest model file read (JSON or ONNX, external data included)
  int64_t tensor_bytes;  // largest single tensor, declared or inferred
  int64_t total_bytes;   // all of a graph's tensors together
  int64_t nodes;         // most nodes in one graph
} kiln_limits;

// The limits in force: the defaults, changed by the environment variable KILN_LIMITS (read on
// first use) and by kiln_limits_set().
const kiln_limits *kiln_limits_get(void);

// Changes limits from "KEY=SIZE[,KEY=SIZE...]": keys model-bytes, tensor-bytes, total-bytes,
// nodes; sizes are whole numbers with an optional K, M, G or T suffix (powers of 1024). On a bad
// spec nothing changes and err says why.
bool kiln_limits_set(const char *spec, char *err, size_t errlen);

// "16 GiB", "3.6 TiB", "12 bytes": for messages (one decimal when not a whole unit).
const char *kiln_bytes_str(int64_t bytes, char *buf, size_t n);

#endif
