// Knowledge distillation (docs/training.md §8 "Distillation"): a frozen teacher and a student in
// one model, loss = (1 - alpha) CE(student, label) + alpha T^2 KL(softmax(teacher / T) ||
// softmax(student / T)), the KL term's target the teacher's soft labels (`"target": {"tensor"}`).
//  - 5 Adam steps through the reference interpreter against PyTorch (tools/goldens_distill.py:
//    both terms, and the KL-with-temperature term alone): losses, the student's final params, the
//    teacher's params bit for bit untouched;
//  - no gradient work on the teacher: no backward node of a teacher node, no update of its params
//    (frozen or not: the target is a stop-gradient);
//  - the generated trainer: its 5 steps against PyTorch's in the trainer's order (the loss
//    falls), the teacher absent from the checkpoint, test_accuracy the student's (not the
//    teacher's);
//  - errors of the `{"tensor": NAME}` target, naming the JSON path; exit status 2.
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/autodiff/training.h"
#include "../compiler/frontend.h"
#include "../compiler/interp.h"
#include "../compiler/ops/op.h"
#include "test_util.h"

TestSuite(distill, .fini = check_leaks);

// f32 noise: PyTorch and Kiln sum in different orders (tools/goldens_distill.py, 5 Adam steps).
static const double LOSS_RTOL = 5e-5, LOSS_ATOL = 1e-5;
static const double PARAM_RTOL = 2e-4, PARAM_ATOL = 1e-5;
enum { STEPS = 5, STUDENT_PARAMS = 4 };

static char *golden(const char *c, const char *file) {
  char path[512];
  snprintf(path, sizeof path, "%s/distill/%s/%s", KILN_TEST_GOLDENS_DIR, c, file);
  return strdup(path);
}

static kiln_safetensors read_st(const char *c, const char *file) {
  char *path = golden(c, file), err[512];
  kiln_safetensors st;
  cr_assert_eq(kiln_safetensors_read(path, &st, err, sizeof err), KILN_OK, "%s", err);
  free(path);
  return st;
}

// The golden entry w against data (same dtype and shape) within atol + rtol |w|.
static void expect_entry(const char *what, const kiln_st_entry *w, const void *data, double atol,
                         double rtol) {
  char why[512];
  cr_expect(st_entry_close(w, data, atol, rtol, why, sizeof why), "%s: %s: %s", what, w->name, why);
}

// Every tensor of the golden file `file` in g, of the given kind, within the tolerance.
static void expect_graph_tensors(const char *c, const kiln_graph *g, const char *file,
                                 kiln_tensor_kind kind, double atol, double rtol) {
  kiln_safetensors want = read_st(c, file);
  for (int i = 0; i < want.count; i++) {
    int t = kiln_graph_find_tensor(g, want.entries[i].name);
    cr_assert(t >= 0 && g->tensors[t].kind == kind, "%s: %s is %s", c, want.entries[i].name,
              kind == KILN_TENSOR_STATE ? "not trained" : "not a constant param");
    expect_entry(c, &want.entries[i], g->tensors[t].data, atol, rtol);
  }
  kiln_safetensors_free(&want);
}

// The 5 losses against the golden file `file` of case c.
static void expect_losses(const char *c, const char *file, const double *got) {
  char *path = golden(c, file);
  kiln_array want = read_npy_or_fail(path);
  for (int s = 0; s < STEPS; s++) {
    double w = kiln_element_get(want.data, want.dtype, s);
    cr_expect(fabs(got[s] - w) <= LOSS_ATOL + LOSS_RTOL * fabs(w),
              "%s: %s: step %d: loss %.9g, PyTorch %.9g", c, file, s, got[s], w);
  }
  kiln_array_free(&want);
  free(path);
}

static void parity(const char *c) {
  char *model = golden(c, "model.json"), *xp = golden(c, "x.npy"), *yp = golden(c, "labels.npy");
  kiln_graph *g = training_graph_or_fail(model);
  kiln_array in[2] = {read_npy_or_fail(xp), read_npy_or_fail(yp)};
  kiln_array *out = calloc((size_t)g->n_outputs, sizeof(kiln_array));
  kiln_diag d;
  kiln_diag_init(&d, model);
  double losses[STEPS];
  for (int s = 0; s < STEPS; s++) {  // inputs: x, then the label when the loss has one
    cr_assert(kiln_interp_run(g, in, out, &d), "%s: step %d fails", c, s);
    losses[s] = kiln_element_get(out[0].data, out[0].dtype, 0);
    for (int i = 0; i < g->n_outputs; i++) kiln_array_free(&out[i]);
  }
  expect_losses(c, "losses.npy", losses);
  expect_graph_tensors(c, g, "final.safetensors", KILN_TENSOR_STATE, PARAM_ATOL, PARAM_RTOL);
  expect_graph_tensors(c, g, "teacher.safetensors", KILN_TENSOR_PARAM, 0, 0);  // bit for bit
  free(out);
  kiln_array_free(&in[0]), kiln_array_free(&in[1]);
  kiln_graph_free(g);
  free(model), free(xp), free(yp);
}

Test(distill, parity_with_pytorch_teacher_untouched) {
  parity("distill");
  parity("kl_only");  // the KL-with-temperature term alone: its gradient
}

// ---- No gradient work on the teacher ----

static bool starts_with(const char *s, const char *prefix) {
  return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

// Only the student learns: no node of the backward part is the gradient of a teacher node (named
// teacher_nodes*) or reads a weight that is not trained (the teacher's stay PARAM), and the
// updates are of the student's params (named student.*).
static void expect_only_student_trained(const kiln_graph *g, const char *teacher_nodes) {
  int first_backward = g->tensors[g->outputs[0]].producer + 1, updates = 0;
  for (int k = first_backward; k < g->n_nodes; k++) {
    const kiln_node *n = &g->nodes[k];
    cr_expect(!starts_with(n->name, teacher_nodes), "backward node %s of a teacher node", n->name);
    for (int j = 0; j < n->n_inputs; j++) {
      const kiln_tensor *x = n->inputs[j] >= 0 ? &g->tensors[n->inputs[j]] : NULL;
      cr_expect(!x || x->kind != KILN_TENSOR_PARAM || x->role != KILN_ROLE_WEIGHT,
                "backward node %s reads the teacher's %s", n->name, x->name);
    }
    if (strcmp(kiln_op_get(n->op)->name, "AdamUpdate") != 0) continue;
    updates++;
    cr_expect(starts_with(g->tensors[n->inputs[0]].name, "student."), "%s is trained",
              g->tensors[n->inputs[0]].name);
  }
  cr_expect_eq(updates, STUDENT_PARAMS, "%d params updated, want the student's %d", updates,
               STUDENT_PARAMS);
}

Test(distill, no_gradient_work_on_the_teacher_frozen_or_not) {
  char *model = golden("distill", "model.json"), *dir = make_temp_dir();
  kiln_graph *g = training_graph_or_fail(model);
  expect_only_student_trained(g, "t_");
  kiln_graph_free(g);
  // Without `frozen` the teacher's params get no gradient either: the target is a stop-gradient.
  json_object *m = json_object_from_file(model);
  json_object *tr = json_object_object_get(m, "training");
  cr_assert(tr, "no training section in %s", model);
  json_object_object_del(tr, "frozen");
  char *unfrozen = path_join(dir, "unfrozen.json");
  cr_assert_eq(json_object_to_file(unfrozen, m), 0);
  json_object_put(m);
  g = training_graph_or_fail(unfrozen);
  expect_only_student_trained(g, "t_");
  kiln_graph_free(g);
  // The sample: LeNet-5 (nodes teacher.*) teaching a 784 -> 32 -> 10 MLP.
  g = training_graph_or_fail(KILN_SOURCE_DIR "/samples/distill.json");
  expect_only_student_trained(g, "teacher.");
  kiln_graph_free(g);
  rm_rf(dir);
  free(model), free(dir), free(unfrozen);
}

// ---- The generated trainer ----

// The per-step losses of a trainer's --log CSV (rows "step,epoch,loss,...").
static void logged_losses(const char *log, double *loss, int n) {
  FILE *f = fopen(log, "r");
  cr_assert(f, "no log %s", log);
  char line[256];
  int i = 0;
  long long step, epoch;
  while (i < n && fgets(line, sizeof line, f))
    if (sscanf(line, "%lld,%lld,%lf", &step, &epoch, &loss[i]) == 3) i++;
  fclose(f);
  cr_assert_eq(i, n, "%s: %d steps logged", log, i);
}

static void expect_checkpoint(const char *ck) {
  kiln_safetensors want = read_st("distill", "trainer_final.safetensors"), got;
  char err[512];
  cr_assert_eq(kiln_safetensors_read(ck, &got, err, sizeof err), KILN_OK, "%s", err);
  for (int i = 0; i < want.count; i++) {
    const kiln_st_entry *w = &want.entries[i], *e = kiln_safetensors_find(&got, w->name);
    cr_assert(e && e->nbytes == w->nbytes, "no %s in the checkpoint", w->name);
    expect_entry("checkpoint", w, e->data, PARAM_ATOL, PARAM_RTOL);
  }
  for (int i = 0; i < got.count; i++)
    cr_expect(!starts_with(got.entries[i].name, "teacher."), "the checkpoint holds %s",
              got.entries[i].name);
  kiln_safetensors_free(&want), kiln_safetensors_free(&got);
}

// test_accuracy=<float> from the trainer's output.
static double reported_accuracy(const char *out) {
  const char *p = strstr(out, "test_accuracy=");
  cr_assert(p, "no test_accuracy in: %s", out);
  return strtod(p + strlen("test_accuracy="), NULL);
}

Test(distill, trainer_matches_pytorch_and_scores_the_student, .timeout = 300) {
  char *model = golden("distill", "model.json"), *xp = golden("distill", "x.npy");
  char *yp = golden("distill", "labels.npy"), *ap = golden("distill", "accuracy.npy");
  char *dir = make_temp_dir();
  char *exe = path_join(dir, "distill"), *ck = path_join(dir, "ck.safetensors");
  char *log = path_join(dir, "log.csv"), src[1200];
  snprintf(src, sizeof src, "%s,%s", xp, yp);
  char *build[] = {KILN_EXE, "build", "--train", model, "-o", exe, NULL};
  run_result r = run_cmd(build, 300);
  cr_assert_eq(r.status, 0, "kiln build --train: %s", r.err);
  run_result_free(&r);
  char *run[] = {exe, "--train", src, "--test", src, "--epochs",
                 "5", "--save",  ck,  "--log",  log, NULL};
  r = run_cmd(run, 120);
  cr_assert_eq(r.status, 0, "the trainer fails: %s", r.err);
  kiln_array acc = read_npy_or_fail(ap);
  double got[STEPS];
  logged_losses(log, got, STEPS);
  expect_losses("distill", "trainer_losses.npy", got);
  cr_expect(got[STEPS - 1] < 0.95 * got[0], "the loss does not fall: %g, then %g", got[0],
            got[STEPS - 1]);
  expect_checkpoint(ck);
  double student = kiln_element_get(acc.data, acc.dtype, 0);
  double teacher = kiln_element_get(acc.data, acc.dtype, 1);
  double reported = reported_accuracy(r.out);
  cr_expect(fabs(reported - student) < 1e-6,
            "test_accuracy %g: the student's is %g (the teacher's %g)", reported, student, teacher);
  run_result_free(&r);
  kiln_array_free(&acc);
  rm_rf(dir);
  free(model), free(xp), free(yp), free(ap), free(dir), free(exe), free(ck), free(log);
}

// ---- Errors ----

// x -> MatMul w -> y (the loss's output), x -> MatMul w2 -> z (another shape), y -> Dropout ->
// yd; the one loss term's target is `target`. Returns the model's path in dir.
static char *write_bad_model(const char *dir, const char *target) {
  char *path = path_join(dir, "m.json");
  FILE *f = fopen(path, "w");
  cr_assert(f, "cannot write %s", path);
  fprintf(f,
          "{\"format\": \"kiln-model\", \"version\": 1, \"name\": \"m\",\n"
          " \"inputs\": [{\"name\": \"x\", \"dtype\": \"f32\", \"shape\": [1, 4]}],\n"
          " \"outputs\": [{\"name\": \"y\"}],\n"
          " \"params\": [{\"name\": \"w\", \"dtype\": \"f32\", \"shape\": [4, 4], \"init\": "
          "{\"kind\": \"uniform\", \"seed\": 1}},\n"
          "            {\"name\": \"w2\", \"dtype\": \"f32\", \"shape\": [4, 3], \"init\": "
          "{\"kind\": \"uniform\", \"seed\": 2}}],\n"
          " \"nodes\": [{\"op\": \"MatMul\", \"name\": \"y\", \"inputs\": [\"x\", \"w\"], "
          "\"outputs\": [\"y\"]},\n"
          "           {\"op\": \"MatMul\", \"name\": \"z\", \"inputs\": [\"x\", \"w2\"], "
          "\"outputs\": [\"z\"]},\n"
          "           {\"op\": \"Dropout\", \"name\": \"drop\", \"inputs\": [\"y\"], "
          "\"outputs\": [\"yd\"]}],\n"
          " \"training\": {\"batch_size\": 2, \"optimizer\": {\"kind\": \"sgd\", \"lr\": 0.1},\n"
          "   \"loss\": {\"terms\": [{\"kind\": \"mse\", \"output\": \"y\", \"target\": %s}]}}}\n",
          target);
  fclose(f);
  return path;
}

// Loads the model with that target and builds its training graph in this process: both must
// not succeed, and the diagnostics must hold `message`.
static void expect_error(const char *target, const char *message) {
  char *dir = make_temp_dir(), *path = write_bad_model(dir, target), *text = NULL;
  size_t len = 0;
  kiln_diag d;
  kiln_diag_init(&d, path);
  d.out = open_memstream(&text, &len);
  kiln_training tr;
  kiln_load_options o = {.training = &tr};
  kiln_graph *g = kiln_load_model_ex(path, &o, &d);
  bool built = g && kiln_build_training_graph(g, &tr, &d);
  fclose(d.out);
  cr_expect(!built, "%s: accepted", target);
  cr_expect(strstr(text, message), "expected '%s' in: %s", message, text);
  if (g) kiln_graph_free(g);
  rm_rf(dir);
  free(text), free(dir), free(path);
}

Test(distill, bad_tensor_targets_are_named) {
  static const char *const cases[][2] = {
      {"{\"tensor\": \"nope\"}", "no tensor named 'nope' in the model"},
      {"{\"tensor\": \"x\"}", "'x' is a model input; write {\"input\": \"x\"}"},
      {"{\"tensor\": \"w\"}", "'w' is a param, not a tensor the model computes"},
      {"{\"tensor\": \"z\"}", "'z' has shape (1, 3); the output 'y' has (1, 4)"},
      {"{\"tensor\": \"yd\"}", "'yd' is computed through Dropout 'drop'"},
      {"{\"tensor\": 3}", "expected the name of a tensor the model computes"},
      {"{\"tensor\": \"z\", \"input\": \"x\"}", "unknown field; expected one of input"},
  };
  char want[300];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    snprintf(want, sizeof want, "training.loss.terms[0].target.tensor: error: %s", cases[i][1]);
    expect_error(cases[i][0], want);
  }
}

Test(distill, bad_target_exits_with_status_2) {
  char *dir = make_temp_dir(), *path = write_bad_model(dir, "{\"tensor\": \"yd\"}");
  char *args[] = {KILN_EXE, "inspect", "--train", path, NULL};
  run_result r = run_cmd(args, 60);
  cr_expect_eq(r.status, 2, "status %d: %s", r.status, r.err);
  cr_expect(strstr(r.err, "m.json: training.loss.terms[0].target.tensor: error: "), "%s", r.err);
  run_result_free(&r);
  rm_rf(dir);
  free(dir), free(path);
}
