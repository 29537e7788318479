// `kiln prune`: the command line, loading the model (its graph and its JSON document), finding
// the prunable layers, and running the steps: prune (magnitude.c or filters.c), write (write.c),
// reload the result through the frontend (shape inference must pass), report (report.c).
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../autodiff/training.h"
#include "../cli.h"
#include "../frontend.h"
#include "../inspect.h"
#include "../onnx/onnx_import.h"
#include "../ops/op.h"
#include "prune_internal.h"

static const char usage_text[] =
    "usage: kiln prune MODEL --sparsity S -o OUT.json [--layerwise | --global]\n"
    "                  [--structured filters] [--weights W.safetensors] [--report FILE.md]\n"
    "                  [--no-mask]   (docs/pruning.md)\n";

static int bad_usage(const char *flag, const char *value, const char *expected) {
  fprintf(stderr, "kiln prune: %s%s%s: expected %s\n%s", flag, value ? " " : "", value ? value : "",
          expected, usage_text);
  return KILN_EXIT_BAD_INPUT;
}

static bool parse_sparsity(const char *v, double *out) {
  if (!v || !*v) return false;
  char *end;
  errno = 0;
  double s = strtod(v, &end);
  if (*end || errno || !(s >= 0 && s < 1)) return false;
  *out = s;
  return true;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n > m && strcmp(s + n - m, suffix) == 0;
}

// One flag at argv[*i] into o; returns an exit status (KILN_EXIT_OK to go on).
static int parse_flag(int argc, char **argv, int *i, kiln_prune_options *o, bool *scope_given) {
  const char *v = NULL;
  const char *a = argv[*i];
  if (strcmp(a, "--global") == 0 || strcmp(a, "--layerwise") == 0) {
    kiln_prune_scope s = a[2] == 'g' ? KILN_PRUNE_GLOBAL : KILN_PRUNE_LAYERWISE;
    if (*scope_given && s != o->scope) return bad_usage(a, NULL, "one of --global, --layerwise");
    o->scope = s;
    *scope_given = true;
  } else if (strcmp(a, "--no-mask") == 0) {
    o->mask = false;
  } else if (kiln_cli_value(argc, argv, i, "--sparsity", &v)) {
    if (!parse_sparsity(v, &o->sparsity)) return bad_usage("--sparsity", v, "a number in [0, 1)");
  } else if (kiln_cli_value(argc, argv, i, "--structured", &v)) {
    if (!v || strcmp(v, "filters") != 0) return bad_usage("--structured", v, "'filters'");
    o->structured = true;
  } else if (kiln_cli_value(argc, argv, i, "--weights", &v)) {
    if (!v || !ends_with(v, ".safetensors"))
      return bad_usage("--weights", v, "a .safetensors file");
    o->weights = v;
  } else if (kiln_cli_value(argc, argv, i, "--report", &v)) {
    if (!v || !*v) return bad_usage("--report", v, "a file name");
    o->report = v;
  } else if (kiln_cli_value(argc, argv, i, "-o", &v)) {
    if (!v || !ends_with(v, ".json")) return bad_usage("-o", v, "a .json file name");
    o->out = v;
  } else if (a[0] == '-' || o->model) {
    return bad_usage(a, NULL, "a known flag (unknown or repeated argument)");
  } else {
    o->model = a;
  }
  return KILN_EXIT_OK;
}

int kiln_prune_main(int argc, char **argv) {
  kiln_prune_options o = {.sparsity = -1, .scope = KILN_PRUNE_LAYERWISE, .mask = true};
  bool scope_given = false;
  for (int i = 1; i < argc; i++) {
    int rc = parse_flag(argc, argv, &i, &o, &scope_given);
    if (rc != KILN_EXIT_OK) return rc;
  }
  if (!o.model) return bad_usage("MODEL", NULL, "a model file");
  if (o.sparsity < 0) return bad_usage("--sparsity", NULL, "a number in [0, 1)");
  if (!o.out) return bad_usage("-o", NULL, "the output model OUT.json");
  if (o.structured && o.scope == KILN_PRUNE_GLOBAL)
    return bad_usage("--global", NULL,
                     "--layerwise with --structured filters (each layer loses its own fraction)");
  return kiln_prune(&o);
}

// ---- Finding the layers ----

// The weight input of a Conv (input 1), Gemm (B) or MatMul (either operand): a float param the
// model declares (not one constant folding made) whose role is `weight`; -1 if there is none.
static int layer_weight(const kiln_graph *g, const kiln_node *n, const char *op) {
  int first = strcmp(op, "MatMul") == 0 ? 0 : 1;
  for (int j = first; j <= 1 && j < n->n_inputs; j++) {
    const kiln_tensor *t = kiln_in(g, n, j);
    if (t && t->kind == KILN_TENSOR_PARAM && t->role == KILN_ROLE_WEIGHT &&
        kiln_dtype_is_float(t->dtype) && t->shape.rank >= 2 && t->where &&
        strncmp(t->where, "params[", 7) == 0)
      return n->inputs[j];
  }
  return -1;
}

static int64_t node_flops(const kiln_graph *g, const kiln_node *n) {
  const kiln_op_def *def = kiln_op_get(n->op);
  return def->flops ? def->flops(g, n) : 0;
}

static void find_layers(prune_ctx *c) {
  kiln_graph *g = c->g;
  c->layers = kiln_xcalloc((size_t)g->n_nodes + 1, sizeof(prune_layer));
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    const char *op = kiln_op_get(n->op)->name;
    if (n->dead || (strcmp(op, "Conv") && strcmp(op, "Gemm") && strcmp(op, "MatMul"))) continue;
    int w = layer_weight(g, n, op);
    if (w < 0) continue;
    int64_t numel = kiln_shape_numel(&g->tensors[w].shape);
    c->layers[c->n_layers++] = (prune_layer){.node = i,
                                             .name = n->name,
                                             .op = op,
                                             .weight = w,
                                             .numel_before = numel,
                                             .numel_after = numel};
  }
}

static int64_t count_nonzero(const kiln_tensor *t) {
  int64_t n = kiln_shape_numel(&t->shape), nz = 0;
  for (int64_t i = 0; i < n; i++) nz += kiln_tensor_get(t, i) != 0;
  return nz;
}

void prune_count_weights(prune_ctx *c, bool after) {
  int64_t params = 0, nonzero = 0;
  for (int t = 0; t < c->g->n_tensors; t++) {
    const kiln_tensor *w = &c->g->tensors[t];
    if (w->kind != KILN_TENSOR_PARAM || w->role != KILN_ROLE_WEIGHT || !w->data) continue;
    params += kiln_shape_numel(&w->shape);
    nonzero += count_nonzero(w);
  }
  if (after)
    c->after.params = params, c->after.nonzero = nonzero;
  else
    c->before.params = params, c->before.nonzero = nonzero;
}

static int64_t flops_of(const kiln_graph *g, const char *node) {
  for (int k = 0; k < g->n_nodes; k++)
    if (!g->nodes[k].dead && strcmp(g->nodes[k].name, node) == 0)
      return node_flops(g, &g->nodes[k]);
  return 0;
}

void prune_measure(prune_ctx *c, const kiln_graph *original, const kiln_graph *pruned) {
  for (int i = 0; i < c->n_layers; i++) {
    prune_layer *l = &c->layers[i];
    const kiln_tensor *w = &c->g->tensors[l->weight];
    l->numel_after = kiln_shape_numel(&w->shape);
    l->nonzero_after = count_nonzero(w);
    l->flops_before = flops_of(original, l->name);
    l->flops_after = flops_of(pruned, l->name);
  }
  c->before.flops = kiln_graph_flops(original);
  c->after.flops = kiln_graph_flops(pruned);
  prune_count_weights(c, true);
}

// ---- The model document and its weights ----

typedef struct model_doc {
  json_object *json;
  kiln_onnx_model onnx;  // an .onnx model's document and weights
  bool is_onnx;
  kiln_safetensors own, override;  // the JSON model's weights file; --weights
} model_doc;

static void read_safetensors(const char *path, kiln_safetensors *st, kiln_diag *d) {
  char err[600];
  if (kiln_safetensors_read(path, st, err, sizeof err) != KILN_OK)
    kiln_diag_error(d, NULL, "%s", err);
}

// The document of a model the frontend has already checked, and its weights files.
static bool load_doc(const kiln_prune_options *o, model_doc *m, kiln_diag *d) {
  if (o->weights) read_safetensors(o->weights, &m->override, d);
  if (ends_with(o->model, ".onnx")) {
    m->is_onnx = kiln_onnx_import_ex(o->model, NULL, d, &m->onnx);
    m->json = m->is_onnx ? m->onnx.json : NULL;
    return m->json && d->errors == 0;
  }
  m->json = json_object_from_file(o->model);
  json_object *w;
  if (m->json && json_object_object_get_ex(m->json, "weights", &w)) {
    const char *slash = strrchr(o->model, '/');
    char *path = NULL;
    if (asprintf(&path, "%.*s%s", slash ? (int)(slash - o->model + 1) : 0, o->model,
                 json_object_get_string(w)) < 0)
      abort();
    read_safetensors(path, &m->own, d);
    free(path);
  }
  if (!m->json) kiln_diag_error(d, NULL, "cannot read the model document");
  return m->json && d->errors == 0;
}

static void free_doc(model_doc *m) {
  if (m->is_onnx)
    kiln_onnx_model_free(&m->onnx);
  else
    json_object_put(m->json);
  kiln_safetensors_free(&m->own);
  kiln_safetensors_free(&m->override);
}

// ---- The steps ----

static bool prune_graph(prune_ctx *c) {
  find_layers(c);
  if (c->n_layers == 0) {
    kiln_diag_error(c->d, NULL,
                    "nothing to prune: no Conv, Gemm or MatMul node reads a float weight param "
                    "(role \"weight\", rank >= 2)");
    return false;
  }
  size_t n = (size_t)c->g->n_tensors + 1;
  c->changed = kiln_xcalloc(n, sizeof(bool));
  c->mask = kiln_xcalloc(n, sizeof(float *));
  return c->o->structured ? prune_filters(c) : prune_magnitude(c);
}

static bool write_report(const prune_ctx *c) {
  prune_report(c, stdout, false);
  if (!c->o->report) return true;
  FILE *f = fopen(c->o->report, "w");
  if (f) prune_report(c, f, true);
  if (!f || fclose(f) != 0) {
    kiln_diag_error(c->d, NULL, "--report: cannot write '%s': %s", c->o->report, strerror(errno));
    return false;
  }
  return true;
}

// The written model goes through the frontend again: it must load and pass shape inference. Both
// models are loaded as inference builds load them, for their FLOPs.
static int reload_and_report(prune_ctx *c) {
  kiln_diag d;
  kiln_diag_init(&d, c->o->out);
  kiln_graph *pruned = kiln_load_model(c->o->out, &d);
  if (!pruned) {
    fprintf(stderr, "kiln prune: the pruned model does not load (a bug in kiln prune)\n");
    return KILN_EXIT_INTERNAL;
  }
  kiln_diag_init(&d, c->o->model);
  kiln_load_options lo = {.weights_file = c->o->weights};
  kiln_graph *original = kiln_load_model_ex(c->o->model, &lo, &d);
  if (original) prune_measure(c, original, pruned);
  kiln_graph_free(original);
  kiln_graph_free(pruned);
  if (!original) return KILN_EXIT_INTERNAL;
  return write_report(c) ? KILN_EXIT_OK : KILN_EXIT_BAD_INPUT;
}

// The model's graph, a JSON model's loaded "for training" so that nodes reading weights stay
// unfolded, an ONNX model's from its imported document; and the document.
static kiln_graph *load_model(const kiln_prune_options *o, model_doc *m, kiln_diag *d) {
  if (ends_with(o->model, ".onnx")) {
    if (o->weights) {
      kiln_diag_error(d, NULL, "--weights takes a JSON model (kiln import it first)");
      return NULL;
    }
    return load_doc(o, m, d) ? kiln_load_model_json(m->json, o->model, &m->onnx.weights, d) : NULL;
  }
  kiln_training training;
  kiln_load_options lo = {.weights_file = o->weights, .training = &training};
  kiln_graph *g = kiln_load_model_ex(o->model, &lo, d);
  if (g && !load_doc(o, m, d)) {
    kiln_graph_free(g);
    return NULL;
  }
  return g;
}

int kiln_prune(const kiln_prune_options *o) {
  kiln_diag d;
  kiln_diag_init(&d, o->model);
  model_doc m = {0};
  kiln_graph *g = load_model(o, &m, &d);
  prune_ctx c = {.o = o, .g = g, .d = &d};
  int rc = KILN_EXIT_BAD_INPUT;
  if (g) prune_count_weights(&c, false);
  if (g && prune_graph(&c)) {
    prune_sources src = {.override = o->weights ? &m.override : NULL,
                         .model = m.is_onnx ? &m.onnx.weights : &m.own};
    if (prune_write(&c, m.json, &src)) rc = reload_and_report(&c);
  }
  for (int t = 0; c.mask && t < g->n_tensors; t++) free(c.mask[t]);
  free(c.mask);
  free(c.changed);
  free(c.layers);
  free_doc(&m);
  if (g) kiln_graph_free(g);
  return rc;
}
