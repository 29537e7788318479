// Adversarial training (docs/training.md §8, docs/models.md "Training recipes"): GAN and WGAN.
//  - parity with PyTorch 1.13 (tools/goldens_gan.py, tests/goldens/gan/): 3 alternations of
//    n_critic discriminator steps and one generator step of a tiny G and D, the same initial
//    weights and noise streams: the losses of every step and the params of both nets after the
//    last, through the reference interpreter (the two phase graphs, params copied between them
//    as the trainer copies them) and through a trainer built by `kiln build --train`;
//  - WGAN's weight clipping: the critic's params end inside [-c, c], some on the bound, while
//    the generator's are not clipped;
//  - either net frozen while the other steps (the interpreter, one phase only): the
//    discriminator's loss falls with G frozen, the generator's with D frozen; a built trainer's
//    losses fall over a short run and it writes the per-epoch samples and the plot; --resume
//    mid-epoch ends bit-identical to an uninterrupted run;
//  - errors of the `training.adversarial` section, naming the file and the field.
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../compiler/autodiff/training.h"
#include "../compiler/frontend.h"
#include "../compiler/interp.h"
#include "test_util.h"

TestSuite(gan, .fini = check_leaks);

// f32 sums in other orders than PyTorch's, compounded over 6 to 9 steps.
static const double LOSS_RTOL = 5e-5, LOSS_ATOL = 1e-5;
static const double PARAM_RTOL = 2e-4, PARAM_ATOL = 1e-5;
static const double CLIP = 0.1;  // the WGAN golden's clip (tools/goldens_gan.py)

static char *golden(const char *c, const char *file) {
  char *dir = path_join(KILN_TEST_GOLDENS_DIR "/gan", c);
  char *p = path_join(dir, file);
  free(dir);
  return p;
}

// ---- The interpreter: the two phase graphs, alternated ----

typedef struct phases {
  kiln_graph *g[2];  // KILN_PHASE_D, KILN_PHASE_G
  int64_t n_critic;
} phases;

static kiln_graph *phase_graph(const char *model, kiln_adv_phase phase, int64_t *n_critic) {
  kiln_training parsed, tr;
  kiln_load_options o = {.training = &parsed};
  kiln_diag d;
  kiln_diag_init(&d, model);
  kiln_graph *g = kiln_load_model_ex(model, &o, &d);
  cr_assert(g && kiln_adversarial_phase(&parsed, phase, g, &tr, &d) &&
                kiln_build_training_graph(g, &tr, &d),
            "%s: no training graph for phase %d", model, (int)phase);
  *n_critic = parsed.adv.n_critic;
  return g;
}

static phases load_phases(const char *c) {
  char *model = golden(c, "model.json");
  phases p;
  p.g[KILN_PHASE_D] = phase_graph(model, KILN_PHASE_D, &p.n_critic);
  p.g[KILN_PHASE_G] = phase_graph(model, KILN_PHASE_G, &p.n_critic);
  free(model);
  return p;
}

static void free_phases(phases *p) {
  kiln_graph_free(p->g[0]);
  kiln_graph_free(p->g[1]);
}

// Copies the params with `prefix` from graph a to graph b (the trainer's copy between steps).
static void copy_params(const kiln_graph *a, kiln_graph *b, const char *prefix) {
  for (int i = 0; i < a->n_tensors; i++) {
    const kiln_tensor *x = &a->tensors[i];
    if (x->kind != KILN_TENSOR_STATE || !x->name || strncmp(x->name, prefix, strlen(prefix)) != 0 ||
        strchr(x->name + strlen(prefix), '.') != strrchr(x->name, '.'))
      continue;  // not a param of that net (its optimizer state has one more dot)
    int j = kiln_graph_find_tensor(b, x->name);
    cr_assert(j >= 0, "%s: not in the other step", x->name);
    memcpy(b->tensors[j].data, x->data,
           (size_t)kiln_shape_numel(&x->shape) * kiln_dtype_size(x->dtype));
  }
}

// One step of phase `ph` on input x; its loss.
static double step(phases *p, kiln_adv_phase ph, const kiln_array *x) {
  kiln_graph *g = p->g[ph];
  kiln_diag d;
  kiln_diag_init(&d, "step");
  kiln_array in[2] = {*x, *x}, *out = calloc((size_t)g->n_outputs, sizeof(kiln_array));
  cr_assert(g->n_inputs <= 1, "phase %d: inputs beyond the data: %d", (int)ph, g->n_inputs);
  cr_assert(kiln_interp_run(g, in, out, &d), "phase %d fails", (int)ph);
  double loss = kiln_element_get(out[0].data, out[0].dtype, 0);
  for (int i = 0; i < g->n_outputs; i++) kiln_array_free(&out[i]);
  free(out);
  if (ph == KILN_PHASE_D)
    copy_params(g, p->g[KILN_PHASE_G], "disc.");
  else
    copy_params(g, p->g[KILN_PHASE_D], "gen.");
  return loss;
}

static void expect_loss(const char *c, const char *what, int s, double got,
                        const kiln_array *want) {
  double w = kiln_element_get(want->data, want->dtype, s);
  cr_expect(fabs(got - w) <= LOSS_ATOL + LOSS_RTOL * fabs(w), "%s: %s step %d: %.9g, PyTorch %.9g",
            c, what, s, got, w);
}

// Compares every param of `want` with the tensor of that name in `st` (a checkpoint) or in the
// phase graph that trains it.
static void check_params(const char *c, const kiln_st_entry *e, const void *got) {
  char why[512];
  cr_expect(st_entry_close(e, got, PARAM_ATOL, PARAM_RTOL, why, sizeof why), "%s: %s: %s", c,
            e->name, why);
}

static void interpreter_parity(const char *c) {
  char *xp = golden(c, "x.npy"), *dp = golden(c, "d_losses.npy"), *gp = golden(c, "g_losses.npy");
  char *fp = golden(c, "final.safetensors"), err[512];
  phases p = load_phases(c);
  kiln_array x = read_npy_or_fail(xp), dl = read_npy_or_fail(dp), gl = read_npy_or_fail(gp);
  for (int it = 0, k = 0; it < 3; it++) {
    for (int j = 0; j < p.n_critic; j++, k++)
      expect_loss(c, "D", k, step(&p, KILN_PHASE_D, &x), &dl);
    expect_loss(c, "G", it, step(&p, KILN_PHASE_G, &x), &gl);
  }
  kiln_safetensors want;
  cr_assert_eq(kiln_safetensors_read(fp, &want, err, sizeof err), KILN_OK, "%s", err);
  for (int i = 0; i < want.count; i++) {
    const kiln_st_entry *e = &want.entries[i];
    kiln_graph *g = p.g[strncmp(e->name, "gen.", 4) == 0 ? KILN_PHASE_G : KILN_PHASE_D];
    int t = kiln_graph_find_tensor(g, e->name);
    cr_assert(t >= 0 && g->tensors[t].kind == KILN_TENSOR_STATE, "%s: %s not trained", c, e->name);
    check_params(c, e, g->tensors[t].data);
  }
  kiln_safetensors_free(&want);
  kiln_array_free(&x), kiln_array_free(&dl), kiln_array_free(&gl);
  free_phases(&p);
  free(xp), free(dp), free(gp), free(fp);
}

Test(gan, interpreter_matches_pytorch) {
  interpreter_parity("gan");
  interpreter_parity("wgan");
}

// ---- Either net frozen while the other steps ----

// Mean of losses[from, to).
static double mean_of(const double *v, int from, int to) {
  double s = 0;
  for (int i = from; i < to; i++) s += v[i];
  return s / (to - from);
}

Test(gan, each_net_learns_while_the_other_is_frozen) {
  char *xp = golden("gan", "x.npy");
  kiln_array x = read_npy_or_fail(xp);
  double loss[2][50];
  for (int ph = 0; ph < 2; ph++) {
    phases p = load_phases("gan");
    for (int s = 0; s < 50; s++) loss[ph][s] = step(&p, (kiln_adv_phase)ph, &x);
    free_phases(&p);
  }
  double d0 = mean_of(loss[0], 0, 5), d1 = mean_of(loss[0], 45, 50);
  double g0 = mean_of(loss[1], 0, 5), g1 = mean_of(loss[1], 45, 50);
  cr_expect(d1 < 0.9 * d0, "G frozen: the discriminator's loss %g over 5 steps, then %g", d0, d1);
  cr_expect(g1 < 0.9 * g0, "D frozen: the generator's loss %g over 5 steps, then %g", g0, g1);
  kiln_array_free(&x);
  free(xp);
}

// ---- Trainers built by kiln build --train ----

typedef struct logged {
  double d[64], g[64];  // per step; g is NAN where no generator step ran
  int n;
} logged;

// The per-step rows of an adversarial --log: step,epoch,d_loss,g_loss,, (epoch rows have no
// d_loss).
static logged read_log(const char *path) {
  logged l = {.n = 0};
  FILE *f = fopen(path, "r");
  cr_assert(f, "no log %s", path);
  char line[256];
  while (fgets(line, sizeof line, f) && l.n < 64) {
    long long s, e;
    double d;
    int used = 0;
    if (sscanf(line, "%lld,%lld,%lf,%n", &s, &e, &d, &used) != 3 || !used) continue;
    l.d[l.n] = d;
    l.g[l.n++] = line[used] == ',' ? NAN : strtod(line + used, NULL);
  }
  fclose(f);
  return l;
}

static char *build_trainer(const char *c, const char *dir) {
  char *model = golden(c, "model.json"), *exe = path_join(dir, c);
  char *build[] = {KILN_EXE, "build", "--train", model, "-o", exe, NULL};
  run_result r = run_cmd(build, 600);
  cr_assert_eq(r.status, 0, "%s: kiln build --train: %s", c, r.err);
  run_result_free(&r);
  free(model);
  return exe;
}

// The critic's params within [-CLIP, CLIP], at least one on the bound; the generator's not.
static void check_clipping(const kiln_safetensors *st) {
  bool on_bound = false, gen_outside = false;
  for (int i = 0; i < st->count; i++) {
    const kiln_st_entry *e = &st->entries[i];
    bool disc = strncmp(e->name, "disc.", 5) == 0, gen = strncmp(e->name, "gen.", 4) == 0;
    if (strchr(e->name + 5, '.') != strrchr(e->name, '.') || e->dtype != KILN_RT_F32) continue;
    const float *w = (const float *)e->data;  // safetensors data may be unaligned: copy
    for (size_t k = 0; k < e->nbytes / sizeof(float); k++) {
      float v;
      memcpy(&v, (const char *)w + k * sizeof(float), sizeof v);
      if (disc) cr_expect(fabsf(v) <= (float)CLIP, "%s[%zu] = %g outside the clip", e->name, k, v);
      on_bound |= disc && fabsf(v) == (float)CLIP;
      gen_outside |= gen && fabsf(v) > (float)CLIP;
    }
  }
  cr_expect(on_bound, "no critic weight on the clipping bound: is clipping tested at all?");
  cr_expect(gen_outside, "the generator's weights are clipped too");
}

// 3 alternations through the trainer (one batch an epoch, rows shuffled): losses, checkpoint.
static void trainer_parity(const char *c, const char *exe, int64_t n_critic) {
  char *xp = golden(c, "x.npy"), *yp = golden(c, "labels.npy");
  char *dp = golden(c, "trainer_d_losses.npy"), *gp = golden(c, "trainer_g_losses.npy");
  char *fp = golden(c, "trainer_final.safetensors");
  char src[1300], ck[700], log[700], epochs[16], err[512];
  snprintf(src, sizeof src, "%s,%s", xp, yp);
  snprintf(ck, sizeof ck, "%s.parity.safetensors", exe);
  snprintf(log, sizeof log, "%s.parity.csv", exe);
  snprintf(epochs, sizeof epochs, "%lld", (long long)(3 * n_critic));
  char *run[] = {(char *)exe, "--train", src, "--epochs", epochs, "--save", ck, "--log", log, NULL};
  run_result r = run_cmd(run, 300);
  cr_assert_eq(r.status, 0, "%s: the trainer fails: %s", c, r.err);
  cr_expect(strstr(r.out, "d_loss=") && strstr(r.out, "g_loss="), "%s: %s", c, r.out);
  run_result_free(&r);
  kiln_array dl = read_npy_or_fail(dp), gl = read_npy_or_fail(gp);
  logged l = read_log(log);
  cr_assert_eq(l.n, 3 * n_critic, "%s: %d steps logged", c, l.n);
  for (int s = 0; s < l.n; s++) {
    expect_loss(c, "trainer D", s, l.d[s], &dl);
    bool g_step = (s + 1) % n_critic == 0;
    cr_expect(g_step != isnan(l.g[s]), "%s: step %d: g_loss %g", c, s, l.g[s]);
    if (g_step) expect_loss(c, "trainer G", (int)((s + 1) / n_critic - 1), l.g[s], &gl);
  }
  kiln_safetensors want, got;
  cr_assert_eq(kiln_safetensors_read(fp, &want, err, sizeof err), KILN_OK, "%s", err);
  cr_assert_eq(kiln_safetensors_read(ck, &got, err, sizeof err), KILN_OK, "%s", err);
  for (int i = 0; i < want.count; i++) {
    const kiln_st_entry *w = &want.entries[i], *g = kiln_safetensors_find(&got, w->name);
    cr_assert(g && g->nbytes == w->nbytes, "%s: no %s in the checkpoint", c, w->name);
    check_params(c, w, g->data);
  }
  cr_expect(kiln_safetensors_find(&got, "kiln.g_step"), "%s: no generator step counter", c);
  if (strcmp(c, "wgan") == 0) check_clipping(&got);
  kiln_safetensors_free(&want), kiln_safetensors_free(&got);
  kiln_array_free(&dl), kiln_array_free(&gl);
  free(xp), free(yp), free(dp), free(gp), free(fp);
}

// The short runs' data: 64 bright samples of 8 values (tools/goldens_gan.py), labels unused.
static void short_run_data(char *src, size_t n) {
  char *xp = golden("short_run", "x.npy"), *yp = golden("short_run", "labels.npy");
  snprintf(src, n, "%s,%s", xp, yp);
  free(xp), free(yp);
}

// 3 epochs of 16 D steps on 64 samples: the discriminator's loss falls (it learns to separate
// the data from the untrained generator's samples), and so does the generator's from its start
// (it learns to make them brighter); samples per epoch, the final grid and the plot.
static void short_run(const char *exe) {
  char src[600], log[700], sample[700], png[760];
  short_run_data(src, sizeof src);
  snprintf(log, sizeof log, "%s.csv", exe);
  snprintf(sample, sizeof sample, "%s.pic", exe);
  char *run[] = {(char *)exe, "--train", src,        "--epochs", "3",
                 "--log",     log,       "--sample", sample,     NULL};
  run_result r = run_cmd(run, 300);
  cr_assert_eq(r.status, 0, "the trainer fails: %s", r.err);
  run_result_free(&r);
  logged l = read_log(log);
  cr_assert_eq(l.n, 48, "%d steps logged", l.n);
  double first = mean_of(l.d, 0, 8), last = mean_of(l.d, 32, 48);
  cr_expect(last < 0.9 * first, "d_loss %g over the first 8 steps, %g over the last 16", first,
            last);
  double g_first = mean_of(l.g, 0, 8), g_later = mean_of(l.g, 16, 32);
  cr_expect(g_later < 0.9 * g_first, "g_loss %g over the first 8 steps, %g over steps 16-31",
            g_first, g_later);
  const char *files[] = {".epoch1.fake.png", ".epoch3.fake.png", ".fake.png"};
  for (int i = 0; i < 3; i++) {
    snprintf(png, sizeof png, "%s%s", sample, files[i]);
    cr_expect(access(png, R_OK) == 0, "no %s", png);
  }
  snprintf(png, sizeof png, "%s.png", exe);
  cr_expect(access(png, R_OK) == 0, "no loss plot %s", png);
}

// --resume from step 21 (mid-epoch, between two generator steps) ends bit-identical to an
// uninterrupted run: both contexts, both optimizers and both step counters are restored.
static void resume_is_exact(const char *exe) {
  char src[600], a[700], b[700];
  short_run_data(src, sizeof src);
  snprintf(a, sizeof a, "%s.a.safetensors", exe);
  snprintf(b, sizeof b, "%s.b.safetensors", exe);
  char *whole[] = {(char *)exe, "--train", src, "--epochs", "2", "--save", a, NULL};
  char *part[] = {(char *)exe,   "--train", src,      "--epochs", "2",
                  "--max-steps", "21",      "--save", b,          NULL};
  char *rest[] = {(char *)exe, "--train", src, "--epochs", "2", "--resume", b, "--save", b, NULL};
  char *const *runs[] = {whole, part, rest};
  for (int i = 0; i < 3; i++) {
    run_result r = run_cmd(runs[i], 300);
    cr_assert_eq(r.status, 0, "run %d: %s", i, r.err);
    run_result_free(&r);
  }
  cr_expect(files_equal(a, b), "a resumed run differs from an uninterrupted one");
}

Test(gan, trainers_match_pytorch_clip_and_learn, .timeout = 600) {
  char *dir = make_temp_dir();
  char *gan = build_trainer("gan", dir), *wgan = build_trainer("wgan", dir);
  trainer_parity("gan", gan, 1);
  trainer_parity("wgan", wgan, 2);
  short_run(gan);
  resume_is_exact(wgan);
  rm_rf(dir);
  free(dir), free(gan), free(wgan);
}

// ---- Errors ----

// The tiny GAN golden's model with one field of `training` (`where` "training"), of
// `training.adversarial` ("adversarial") or of its "generator" / "discriminator" set to `value`
// (JSON): `kiln build --train` must fail with status 2 and `message`, naming the file.
static void expect_error(const char *where, const char *key, const char *value,
                         const char *message) {
  char *model = golden("gan", "model.json"), *dir = make_temp_dir();
  char *path = path_join(dir, "m.json");
  json_object *m = json_object_from_file(model), *tr = NULL, *adv = NULL, *obj = NULL;
  cr_assert(m && json_object_object_get_ex(m, "training", &tr) &&
            json_object_object_get_ex(tr, "adversarial", &adv));
  obj = strcmp(where, "training") == 0 ? tr : adv;
  if (strcmp(where, "generator") == 0 || strcmp(where, "discriminator") == 0)
    cr_assert(json_object_object_get_ex(adv, where, &obj));
  json_object_object_add(obj, key, json_tokener_parse(value));
  cr_assert_eq(json_object_to_file(path, m), 0);
  json_object_put(m);
  char *args[] = {KILN_EXE, "build", "--train", path, "-o", dir, NULL};
  run_result r = run_cmd(args, 120);
  cr_expect_eq(r.status, 2, "%s.%s = %s: status %d", where, key, value, r.status);
  cr_expect(strstr(r.err, "m.json") && strstr(r.err, message), "expected '%s' in: %s", message,
            r.err);
  run_result_free(&r);
  rm_rf(dir);
  free(model), free(dir), free(path);
}

Test(gan, bad_adversarial_sections_are_named) {
  expect_error("adversarial", "clip", "0.1",
               "training.adversarial.clip: error: weight clipping is for \"kind\": \"wgan\"");
  expect_error("adversarial", "kind", "\"lsgan\"",
               "training.adversarial.kind: error: unknown value \"lsgan\"");
  expect_error("training", "loss",
               "{\"kind\": \"mse\", \"output\": \"fake\", \"target\": {\"input\": \"x\"}}",
               "training.loss: error: not with training.adversarial");
  expect_error("adversarial", "n_critic", "0",
               "training.adversarial.n_critic: error: expected an integer >= 1");
  expect_error("adversarial", "noise", "\"fake\"",
               "training.adversarial.noise: error: 'fake' is not a float input");
  expect_error("adversarial", "d_fake", "\"fake\"",
               "training.adversarial.d_fake: error: 'fake' must have shape (N) or (N, 1)");
  expect_error("generator", "params", "[\"gen.*\", \"disc.fc1.weight\"]",
               "training.adversarial.discriminator.params: error: 'disc.fc1.weight' is also a "
               "generator param");
  expect_error("generator", "params", "[\"q.*\"]",
               "training.adversarial.generator.params[0]: error: no float weight param starts "
               "with 'q.'");
  expect_error("discriminator", "optimizer", "{\"kind\": \"rmsprop\", \"lr\": 0.1, \"alpha\": 2}",
               "training.adversarial.discriminator.optimizer.alpha: error: expected a number in "
               "[0, 1]");
}
