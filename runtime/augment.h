// Data augmentation and per-channel normalization for the generated trainer (docs/training.md,
// "Overfitting and underfitting"). The compiler turns the JSON `training.augment` and
// `training.normalize` into a canonical spec string (kiln_train_desc.augment), e.g.
//   "random_crop padding=4; hflip p=0.5; translate max_pixels=2; gaussian_noise std=0.05;
//    cutout size=8; normalize mean=0.5,0.4 std=0.25,0.2"
// which kiln_augment_parse reads back. Augmentations run in the declared order on one sample at a
// time, from a random stream keyed by (seed, step, slot in the batch): the result depends on
// nothing else (not on threads or timing), so runs and resumed runs are reproducible.
// Normalization runs after them, at training and at evaluation; augmentations only at training.
// Private to the runtime (and its tests).
#ifndef KILN_AUGMENT_H
#define KILN_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

enum { KILN_AUG_MAX_STEPS = 16, KILN_AUG_MAX_CHANNELS = 64 };

typedef enum {
  KILN_AUG_RANDOM_CROP,  // value: padding (pixels of zeros on each side)
  KILN_AUG_HFLIP,        // value: probability of a horizontal flip
  KILN_AUG_TRANSLATE,    // value: max_pixels (shift in each direction, zero fill)
  KILN_AUG_NOISE,        // value: std of the added Gaussian noise
  KILN_AUG_CUTOUT,       // value: size of the zeroed square
  KILN_AUG_KIND_COUNT
} kiln_aug_kind;

typedef struct kiln_aug_step {
  kiln_aug_kind kind;
  double value;
} kiln_aug_step;

typedef struct kiln_augment {
  int n_steps;
  kiln_aug_step steps[KILN_AUG_MAX_STEPS];
  int n_channels;  // normalize: 0 (none), 1 (every channel) or C
  double mean[KILN_AUG_MAX_CHANNELS], std[KILN_AUG_MAX_CHANNELS];
} kiln_augment;

// One sample's geometry: (C, H, W).
typedef struct kiln_image_shape {
  int64_t c, h, w;
} kiln_image_shape;

// Parses a spec (NULL or "" gives no augmentation). KILN_OK or KILN_ERR_FORMAT with a message.
int kiln_augment_parse(const char *spec, kiln_augment *out, char *err, size_t errlen);
// Whether the spec needs anything done to the samples.
int kiln_augment_active(const kiln_augment *a);
// Derives the sample geometry from the model input's per-sample dims (rank 1-3: (F), (H, W),
// (C, H, W)) and checks that the spec fits it (spatial steps need H and W; normalize needs 1 or C
// channels). KILN_OK or KILN_ERR_SHAPE with a message.
int kiln_augment_check(const kiln_augment *a, int rank, const int64_t *dims, kiln_image_shape *s,
                       char *err, size_t errlen);
// Applies the augmentation steps to img (C*H*W floats) in place. scratch: C*H*W floats.
void kiln_augment_sample(const kiln_augment *a, kiln_image_shape s, float *img, float *scratch,
                         uint64_t seed, uint64_t step, uint64_t slot);
// (x - mean[c]) / std[c] for every element, in place.
void kiln_normalize_sample(const kiln_augment *a, kiln_image_shape s, float *img);

// The random stream (exposed for tests and the reference in tools/goldens_augment.py).
typedef struct kiln_aug_rng {
  uint64_t state;
} kiln_aug_rng;
kiln_aug_rng kiln_aug_rng_init(uint64_t seed, uint64_t step, uint64_t slot);
uint64_t kiln_aug_rng_next(kiln_aug_rng *r);
double kiln_aug_uniform(kiln_aug_rng *r);            // [0, 1), 53 bits
int64_t kiln_aug_below(kiln_aug_rng *r, int64_t n);  // floor(uniform * n)
double kiln_aug_normal(kiln_aug_rng *r);             // Box-Muller, cosine branch

#endif
