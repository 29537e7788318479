// Adversarial training (docs/training.md §8): one model holds a generator G and a discriminator
// (critic) D; `training.adversarial` names them. A training build compiles two ordinary training
// steps from it, one per phase, each by kiln_build_training_graph from the training section this
// file makes:
//   D step: the discriminator's loss; D's params trained; G's params STATE but not updated.
//     gan:  BCE-with-logits(d_real, 1) + BCE-with-logits(d_fake, 0)
//     wgan: mean d_fake - mean d_real, then D's params clipped to [-clip, clip] (WeightClip)
//   G step ("<model>_g", step counter kiln.g_step): G's params trained, D's shared.
//     gan:  BCE-with-logits(d_fake, 1)  (the non-saturating loss -log D(G(z)))
//     wgan: -mean d_fake
// Both draw the noise input afresh every step (NormalNoise; the G step with salt base 3 * 2^32,
// so its draws differ from the D step's). The generated trainer (runtime/train.c) alternates the
// steps and copies the stepped net's params into the other step's context.
#include <string.h>

#include "training.h"

// The generator step's noise salt base (the D step's is the default 2^32).
static const int64_t g_noise_salt = INT64_C(3) << 32;

static kiln_loss_spec bce_term(const char *output, double label) {
  return (kiln_loss_spec){.kind = KILN_LOSS_BCE_WITH_LOGITS,
                          .output = output,
                          .reduction = KILN_REDUCE_MEAN,
                          .delta = 1,  // the parser's defaults (unused by this kind)
                          .clip = 1,
                          .coef = 1,
                          .has_target_value = true,
                          .target_value = label};
}

static kiln_loss_spec mean_term(const char *output, double coef) {
  return (kiln_loss_spec){
      .is_tensor = true, .output = output, .reduction = KILN_REDUCE_MEAN, .coef = coef};
}

// The phase's loss terms into terms[0..2); their count.
static int phase_terms(const kiln_adversarial *a, kiln_adv_phase phase, kiln_loss_spec *terms) {
  bool wgan = a->kind == KILN_ADV_WGAN;
  if (phase == KILN_PHASE_G) {
    terms[0] = wgan ? mean_term(a->d_fake, -1) : bce_term(a->d_fake, 1);
    return 1;
  }
  terms[0] = wgan ? mean_term(a->d_fake, 1) : bce_term(a->d_real, 1);
  terms[1] = wgan ? mean_term(a->d_real, -1) : bce_term(a->d_fake, 0);
  return 2;
}

// Keeps only the named tensors as g's outputs, in that order.
static void keep_outputs(kiln_graph *g, const char *const *names, int n) {
  for (int i = 0; i < g->n_outputs; i++) g->tensors[g->outputs[i]].is_output = false;
  g->n_outputs = 0;
  for (int i = 0; i < n; i++) {
    int id = kiln_graph_find_tensor(g, names[i]);
    g->tensors[id].is_output = true;
    KILN_VEC_PUSH(g->outputs, g->n_outputs, g->cap_outputs, id);
  }
}

bool kiln_adversarial_phase(const kiln_training *t, kiln_adv_phase phase, kiln_graph *g,
                            kiln_training *out, kiln_diag *d) {
  const kiln_adversarial *a = &t->adv;
  if (!a->present) {
    kiln_diag_error(d, "training", "the model has no training.adversarial section");
    return false;
  }
  bool g_phase = phase == KILN_PHASE_G;
  const kiln_adv_net *trained = g_phase ? &a->g : &a->d, *shared = g_phase ? &a->d : &a->g;
  *out = *t;
  out->terms = kiln_pool_alloc(&g->pool, sizeof(kiln_loss_spec) * 2);
  out->n_terms = phase_terms(a, phase, out->terms);
  out->loss = out->terms[0];
  out->opt = trained->opt;
  out->names = trained->params, out->n_names = trained->n_params;
  out->names_are_trainable = true;
  out->shared = shared->params, out->n_shared = shared->n_params;
  out->noise = kiln_pool_alloc(&g->pool, sizeof(char *));
  out->noise[0] = a->noise, out->n_noise = 1;
  out->clip_weights = g_phase ? 0 : a->clip;
  out->step_name = g_phase ? KILN_G_STEP_TENSOR : NULL;
  out->noise_salt = g_phase ? g_noise_salt : 0;
  const char *outputs[] = {a->fake, a->d_real, a->d_fake};
  if (g_phase) {
    const char *g_outputs[] = {a->fake, a->d_fake};
    keep_outputs(g, g_outputs, 2);
    g->name = kiln_pool_printf(&g->pool, "%s_g", g->name);
  } else {
    keep_outputs(g, outputs, 3);
  }
  return true;
}
