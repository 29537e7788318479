// Paths of the sample models and their PyTorch goldens (tests/goldens/<sample>/<tensor>.npy).
#ifndef KILN_TEST_SAMPLE_UTIL_H
#define KILN_TEST_SAMPLE_UTIL_H

#include <stdio.h>

#include "test_util.h"

typedef struct sample {
  const char *name;    // samples/<name>.json
  const char *input;   // model input tensor name
  const char *output;  // model output tensor name
} sample;

static const sample samples[] = {
    {"xor_mlp", "x", "y"},
    {"mlp", "x", "y"},
    {"lenet5", "x", "logits"},
};
enum { N_SAMPLES = sizeof(samples) / sizeof(samples[0]) };

static inline void sample_model(const sample *s, char *buf, size_t n) {
  snprintf(buf, n, "%s/samples/%s.json", KILN_SOURCE_DIR, s->name);
}
static inline void sample_golden(const sample *s, const char *tensor, char *buf, size_t n) {
  snprintf(buf, n, "%s/%s/%s.npy", KILN_TEST_GOLDENS_DIR, s->name, tensor);
}

#endif
