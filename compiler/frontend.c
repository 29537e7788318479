// JSON model format v1 → graph IR. The format is docs/model-format.md; this file implements it
// strictly: every unknown field is an error and every problem is reported with its JSON path
// (`nodes[3].attrs.strides`), all of them in one run.
//
// Loading goes in phases; a phase only runs when the ones before it found no error, so that
// messages never cascade from an earlier mistake:
//   1. read the file, parse JSON (syntax errors with line and column)
//   2. `format` and `version` (nothing else is checked in a file that is not kiln-model v1)
//   3. schema: every field of the top level, inputs, params (+ init), nodes (ops, arity,
//      attributes), outputs; tensor and node name uniqueness; references between them; weights
//      from the .safetensors file. The graph is built along the way.
//   4. kiln_graph_toposort (cycles)
//   5. shape inference (kiln_infer_shapes), then declared output dtypes/shapes
#include "frontend.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../ir/resource_limits.h"
#include "../runtime/kiln_runtime.h"
#include "autodiff/train_mode.h"
#include "autodiff/training.h"
#include "initializers.h"
#include "onnx/onnx_import.h"
#include "ops/op.h"
#include "passes/pipeline.h"

enum { JSON_MAX_DEPTH = 32, PATH_MAX_LEN = 512 };

// ---- A string → int hash map (tensor and node names). Keys are borrowed. ----

typedef struct name_map {
  const char **keys;
  int *vals;
  size_t cap, count;
} name_map;

static uint64_t hash_str(const char *s) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
  return h;
}

static int map_get(const name_map *m, const char *key) {
  if (!m->cap) return -1;
  for (size_t i = hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (!m->keys[i]) return -1;
    if (strcmp(m->keys[i], key) == 0) return m->vals[i];
  }
}

static void map_put(name_map *m, const char *key, int val) {
  if ((m->count + 1) * 2 > m->cap) {
    name_map n = {0};
    n.cap = m->cap ? m->cap * 2 : 64;
    n.keys = kiln_xcalloc(n.cap, sizeof(*n.keys));
    n.vals = kiln_xcalloc(n.cap, sizeof(*n.vals));
    for (size_t i = 0; i < m->cap; i++)
      if (m->keys[i]) map_put(&n, m->keys[i], m->vals[i]);
    free(m->keys);
    free(m->vals);
    *m = n;
  }
  size_t i = hash_str(key) & (m->cap - 1);
  while (m->keys[i] && strcmp(m->keys[i], key) != 0) i = (i + 1) & (m->cap - 1);
  if (!m->keys[i]) m->count++;
  m->keys[i] = key;
  m->vals[i] = val;
}

static void map_free(name_map *m) {
  free(m->keys);
  free(m->vals);
  memset(m, 0, sizeof(*m));
}

// ---- Loader state ----

typedef struct node_info {
  const kiln_op_def *def;  // NULL: unsupported op or no valid `op`
  int op_id;
  const char *name;  // explicit or default, pool-allocated
  bool ok;           // fields, arity and attributes all valid
} node_info;

typedef struct output_decl {
  int tensor;  // -1 if the name did not resolve
  bool has_dtype, has_shape;
  kiln_dtype dtype;
  kiln_shape shape;
} output_decl;

typedef struct loader {
  kiln_diag *d;
  const char *path;
  kiln_graph *g;
  name_map tensors;                     // tensor name → tensor index
  name_map node_names;                  // node name → JSON node index
  const kiln_safetensors *mem_weights;  // params without init come from here if set (ONNX)
  bool weights_override;    // --weights: params in mem_weights are taken from it even with `init`
  kiln_training *training;  // out (may be NULL): the checked `training` section
  bool shapes_overridden;   // --shape changed an input: declared output shapes no longer apply
} loader;

// Errors are written "PATH: message"; kiln_fe_error makes PATH the diagnostic's `where`.
#define ERR(L, ...) kiln_fe_error((L)->d, __VA_ARGS__)

static const char *describe(json_object *v, char *buf) { return kiln_json_describe(v, buf, 96); }

// ---- Reading and parsing ----

static char *read_file(const char *path, size_t *len, kiln_diag *d) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    kiln_diag_error(d, NULL, "cannot open model file '%s': %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    kiln_diag_error(d, NULL, "model file '%s' is not a regular file", path);
    fclose(f);
    return NULL;
  }
  int64_t limit = kiln_limits_get()->model_bytes;
  if ((int64_t)st.st_size > limit) {
    char lim[32];
    kiln_diag_error(d, NULL,
                    "model file '%s' is %lld bytes; the limit is %s (KILN_LIMITS model-bytes)",
                    path, (long long)st.st_size, kiln_bytes_str(limit, lim, sizeof lim));
    fclose(f);
    return NULL;
  }
  size_t size = (size_t)st.st_size;
  char *text = kiln_xmalloc(size + 1);
  size_t got = fread(text, 1, size, f);
  bool failed = ferror(f) || got != size;
  fclose(f);
  if (failed) {
    kiln_diag_error(d, NULL, "cannot read model file '%s'", path);
    free(text);
    return NULL;
  }
  text[size] = 0;
  *len = size;
  return text;
}

// "line L, column C" of a byte offset; columns count UTF-8 characters from 1.
static void line_col(const char *text, size_t len, size_t off, char *buf, int size) {
  long line = 1, col = 1;
  if (off > len) off = len;
  for (size_t i = 0; i < off; i++) {
    if (text[i] == '\n') {
      line++;
      col = 1;
    } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
      col++;
    }
  }
  snprintf(buf, (size_t)size, "line %ld, column %ld", line, col);
}

static json_object *parse_json(const char *text, size_t len, kiln_diag *d) {
  char where[64];
  const char *nul = memchr(text, 0, len);
  if (nul) {
    line_col(text, len, (size_t)(nul - text), where, sizeof where);
    kiln_diag_error(d, where, "invalid JSON: the file contains a NUL byte");
    return NULL;
  }
  struct json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH);
  if (!tok) {
    kiln_diag_error(d, NULL, "internal error: cannot create a JSON parser");
    return NULL;
  }
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
  // Passing the terminating NUL too tells json-c the input ends here.
  json_object *root = json_tokener_parse_ex(tok, text, (int)(len + 1));
  enum json_tokener_error err = json_tokener_get_error(tok);
  if (!root || err != json_tokener_success) {
    size_t off = json_tokener_get_parse_end(tok);
    line_col(text, len, off, where, sizeof where);
    if (err == json_tokener_success || err == json_tokener_continue)
      kiln_diag_error(d, where, "invalid JSON: unexpected end of file");
    else if (err == json_tokener_error_depth)
      kiln_diag_error(d, where, "invalid JSON: nested more than %d levels deep", JSON_MAX_DEPTH);
    else
      kiln_diag_error(d, where, "invalid JSON: %s", json_tokener_error_desc(err));
    json_object_put(root);
    root = NULL;
  }
  json_tokener_free(tok);
  return root;
}

// ---- Schema helpers ----

// Reports every field of obj not in `allowed` (NULL-terminated). `path` is the object's path
// ("" for the top level).
static bool check_fields(loader *L, json_object *obj, const char *path,
                         const char *const *allowed) {
  bool ok = true;
  json_object_object_foreach(obj, key, val) {
    (void)val;
    bool known = false;
    for (int i = 0; allowed[i]; i++) known |= strcmp(allowed[i], key) == 0;
    if (known) continue;
    char list[256] = "";
    for (int i = 0; allowed[i]; i++) {
      if (i) strcat(list, ", ");
      strcat(list, allowed[i]);
    }
    ERR(L, "%s%s%.100s: unknown field; expected one of %s", path, *path ? "." : "", key, list);
    ok = false;
  }
  return ok;
}

// Gets a required field of type `type`; `what` describes the expected value.
static json_object *need(loader *L, json_object *obj, const char *path, const char *key,
                         json_type type, const char *what) {
  json_object *v;
  if (!json_object_object_get_ex(obj, key, &v)) {
    ERR(L, "%s%smissing required field '%s' (%s)", path, *path ? ": " : "", key, what);
    return NULL;
  }
  if (!json_object_is_type(v, type)) {
    char got[96];
    ERR(L, "%s%s%s: expected %s, got %s", path, *path ? "." : "", key, what, describe(v, got));
    return NULL;
  }
  return v;
}

// Like need() for an optional field: NULL if absent; *bad set if present with the wrong type.
static json_object *want(loader *L, json_object *obj, const char *path, const char *key,
                         json_type type, const char *what, bool *bad) {
  json_object *v;
  if (!json_object_object_get_ex(obj, key, &v)) return NULL;
  if (!json_object_is_type(v, type)) {
    char got[96];
    ERR(L, "%s%s%s: expected %s, got %s", path, *path ? "." : "", key, what, describe(v, got));
    *bad = true;
    return NULL;
  }
  return v;
}

// A non-empty string without NUL characters; NULL (after reporting) otherwise.
static const char *need_name(loader *L, json_object *obj, const char *path, const char *key,
                             const char *what) {
  json_object *v = need(L, obj, path, key, json_type_string, what);
  if (!v) return NULL;
  const char *s = json_object_get_string(v);
  if (!*s || strlen(s) != (size_t)json_object_get_string_len(v)) {
    ERR(L, "%s.%s: expected %s, got %s", path, key, what,
        *s ? "a string containing a NUL character" : "\"\"");
    return NULL;
  }
  return s;
}

static bool is_c_identifier(const char *s) {
  if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return false;
  for (s++; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
          *s == '_'))
      return false;
  return true;
}

static bool parse_dtype(loader *L, json_object *v, const char *path, kiln_dtype *out) {
  char got[96];
  if (json_object_is_type(v, json_type_string) && kiln_dtype_parse(json_object_get_string(v), out))
    return true;
  ERR(L, "%s: unknown dtype %s; expected one of f32, f64, i8, u8, i32, i64, bool", path,
      describe(v, got));
  return false;
}

// Checks a shape array: rank <= 8, every dim an integer >= 1, total size <= 16 GiB (dtype size
// `elem`, 1 if the dtype is unknown).
static bool parse_shape(loader *L, json_object *v, const char *path, size_t elem, kiln_shape *out) {
  char got[96];
  memset(out, 0, sizeof(*out));
  if (!json_object_is_type(v, json_type_array)) {
    ERR(L, "%s: expected an array of integers >= 1, got %s", path, describe(v, got));
    return false;
  }
  size_t rank = json_object_array_length(v);
  if (rank > KILN_MAX_RANK) {
    ERR(L, "%s: rank %zu is more than the maximum %d", path, rank, KILN_MAX_RANK);
    return false;
  }
  bool ok = true, absurd = false;
  int64_t bytes = (int64_t)elem, limit = kiln_limits_get()->tensor_bytes;
  for (size_t i = 0; i < rank; i++) {
    json_object *e = json_object_array_get_idx(v, i);
    int64_t dim;
    if (!kiln_json_int64(e, &dim) || dim < 1) {
      ERR(L, "%s[%zu]: expected an integer >= 1, got %s", path, i, describe(e, got));
      ok = false;
      continue;
    }
    out->dim[i] = dim;
    if (!absurd && dim > limit / bytes) absurd = true;
    if (!absurd) bytes *= dim;
  }
  out->rank = (int)rank;
  if (ok && absurd) {
    char buf[256] = "(";
    for (size_t i = 0; i < rank; i++)
      snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%" PRId64, i ? ", " : "",
               out->dim[i]);
    strcat(buf, ")");
    char lim[32];
    ERR(L, "%s: absurd size: shape %s is more than %s of data (KILN_LIMITS tensor-bytes)", path,
        buf, kiln_bytes_str(limit, lim, sizeof lim));
    ok = false;
  }
  return ok;
}

static char *shape_str(const kiln_shape *s, char *buf, int size) {
  return kiln_shape_str(s, buf, size);
}

// Adds a tensor (after checking the name is new). Returns its index or -1.
static int add_tensor(loader *L, const char *name, kiln_tensor_kind kind, kiln_dtype dtype,
                      const kiln_shape *shape, const char *where) {
  int prev = map_get(&L->tensors, name);
  if (prev >= 0) {
    ERR(L, "%s: tensor '%s' is already defined at %s", where, name, L->g->tensors[prev].where);
    return -1;
  }
  int t = kiln_graph_add_tensor(L->g, name, kind, dtype, shape);
  L->g->tensors[t].where = kiln_pool_strdup(&L->g->pool, where);
  map_put(&L->tensors, L->g->tensors[t].name, t);  // the graph's copy of the name outlives JSON
  return t;
}

// ---- Top-level sections ----

// One entry of `inputs` or `params`: an object with a name, a dtype and a shape (and whatever
// else `fields` allows). Adds the tensor and returns its index, or -1; *valid says whether every
// field was right.
static int load_typed_decl(loader *L, json_object *v, const char *path, const char *const *fields,
                           const char *expect, kiln_tensor_kind kind, bool *valid) {
  char sub[80], got[96];
  *valid = false;
  if (!json_object_is_type(v, json_type_object)) {
    ERR(L, "%s: expected an object %s, got %s", path, expect, describe(v, got));
    return -1;
  }
  check_fields(L, v, path, fields);
  const char *name = need_name(L, v, path, "name", "a tensor name");
  json_object *jd = need(L, v, path, "dtype", json_type_string, "a dtype such as \"f32\"");
  json_object *js = need(L, v, path, "shape", json_type_array, "an array of integers >= 1");
  kiln_dtype dtype = KILN_F32;
  kiln_shape shape = {0};
  bool ok = name && jd && js;
  snprintf(sub, sizeof sub, "%s.dtype", path);
  if (jd) ok &= parse_dtype(L, jd, sub, &dtype);
  snprintf(sub, sizeof sub, "%s.shape", path);
  if (js) ok &= parse_shape(L, js, sub, kiln_dtype_size(dtype), &shape);
  *valid = ok;
  return name ? add_tensor(L, name, kind, dtype, &shape, path) : -1;
}

static void load_inputs(loader *L, json_object *arr) {
  static const char *const fields[] = {"name", "dtype", "shape", NULL};
  size_t n = json_object_array_length(arr);
  for (size_t i = 0; i < n; i++) {
    char path[64];
    snprintf(path, sizeof path, "inputs[%zu]", i);
    bool ok;
    int t = load_typed_decl(L, json_object_array_get_idx(arr, i), path, fields,
                            "{\"name\", \"dtype\", \"shape\"}", KILN_TENSOR_INPUT, &ok);
    if (t >= 0 && ok) KILN_VEC_PUSH(L->g->inputs, L->g->n_inputs, L->g->cap_inputs, t);
  }
}

// `--shape NAME=DxD...`: compiles the model for another shape of input NAME (another batch size,
// image size, sequence length); every other shape is inferred from it as usual.
static void override_input_shape(loader *L, const kiln_input_shape *s) {
  kiln_graph *g = L->g;
  for (int i = 0; i < g->n_inputs; i++) {
    kiln_tensor *t = &g->tensors[g->inputs[i]];
    if (strcmp(t->name, s->name) != 0) continue;
    int64_t bytes = (int64_t)kiln_dtype_size(t->dtype), limit = kiln_limits_get()->tensor_bytes;
    for (int k = 0; k < s->shape.rank && bytes <= limit; k++)
      bytes = s->shape.dim[k] > limit / bytes ? limit + 1 : bytes * s->shape.dim[k];
    if (bytes > limit) {
      char lim[32];
      ERR(L, "--shape %s: absurd size: more than %s of data (KILN_LIMITS tensor-bytes)", s->name,
          kiln_bytes_str(limit, lim, sizeof lim));
      return;
    }
    t->shape = s->shape;
    L->shapes_overridden = true;
    return;
  }
  char names[256] = "";
  for (int i = 0; i < g->n_inputs; i++) {
    size_t used = strlen(names);
    snprintf(names + used, sizeof names - used, "%s'%s'", i ? ", " : "",
             g->tensors[g->inputs[i]].name);
  }
  ERR(L, "--shape: the model has no input named '%s' (its inputs: %s)", s->name,
      g->n_inputs ? names : "none");
}

typedef struct weight_req {
  int tensor;
  size_t index;  // in params
} weight_req;

// Copies each requested param's data from st (named `weights` in messages), checking dtype,
// shape and size.
static void take_weights(loader *L, const kiln_safetensors *st, const char *weights,
                         const weight_req *req, int n_req) {
  kiln_graph *g = L->g;
  for (int r = 0; r < n_req; r++) {
    kiln_tensor *t = &g->tensors[req[r].tensor];
    const kiln_st_entry *e = kiln_safetensors_find(st, t->name);
    if (!e) {
      ERR(L, "params[%zu] (%s): no tensor named '%s' in %s", req[r].index, t->name, t->name,
          weights);
      continue;
    }
    if (e->dtype != (int)t->dtype) {
      ERR(L, "params[%zu] (%s): dtype %s in %s, but the model declares %s", req[r].index, t->name,
          kiln_rt_dtype_name(e->dtype), weights, kiln_dtype_name(t->dtype));
      continue;
    }
    bool same = e->rank == t->shape.rank;
    for (int i = 0; same && i < e->rank; i++) same = e->shape[i] == t->shape.dim[i];
    if (!same) {
      kiln_shape es = {.rank = e->rank < 0 || e->rank > KILN_MAX_RANK ? 0 : e->rank};
      for (int i = 0; i < es.rank; i++) es.dim[i] = e->shape[i];
      char a[256], b[256];
      ERR(L, "params[%zu] (%s): shape %s in %s, but the model declares %s", req[r].index, t->name,
          shape_str(&es, a, sizeof a), weights, shape_str(&t->shape, b, sizeof b));
      continue;
    }
    size_t bytes = (size_t)kiln_shape_numel(&t->shape) * kiln_dtype_size(t->dtype);
    if (e->nbytes != bytes || (bytes && !e->data)) {
      ERR(L, "params[%zu] (%s): %zu bytes of data in %s, expected %zu", req[r].index, t->name,
          e->nbytes, weights, bytes);
      continue;
    }
    t->data = kiln_pool_alloc(&g->pool, bytes);
    if (bytes) memcpy(t->data, e->data, bytes);
  }
}

static void load_weights(loader *L, const char *weights, const weight_req *req, int n_req) {
  if (!n_req) return;
  kiln_graph *g = L->g;
  if (L->weights_override) {  // --weights: what the file lacks comes from the model's own file
    weight_req *found = kiln_xcalloc((size_t)n_req * 2, sizeof(*found)), *rest = found + n_req;
    int n_found = 0, n_rest = 0;
    for (int r = 0; r < n_req; r++) {
      if (kiln_safetensors_find(L->mem_weights, g->tensors[req[r].tensor].name))
        found[n_found++] = req[r];
      else
        rest[n_rest++] = req[r];
    }
    take_weights(L, L->mem_weights, "the --weights file", found, n_found);
    L->weights_override = false;
    L->mem_weights = NULL;
    load_weights(L, weights, rest, n_rest);
    free(found);
    return;
  }
  if (L->mem_weights) {
    take_weights(L, L->mem_weights, "the model's initializers", req, n_req);
    return;
  }
  if (!weights) {
    for (int r = 0; r < n_req; r++)
      ERR(L,
          "params[%zu] (%s): has no `init`, so it is read from the `weights` file, but the model "
          "names none",
          req[r].index, g->tensors[req[r].tensor].name);
    return;
  }
  // Relative to the model file's directory.
  const char *slash = strrchr(L->path, '/');
  char *file;
  if (weights[0] == '/' || !slash)
    file = kiln_pool_strdup(&g->pool, weights);
  else
    file = kiln_pool_printf(&g->pool, "%.*s/%s", (int)(slash - L->path), L->path, weights);
  kiln_safetensors st;
  memset(&st, 0, sizeof st);
  char err[512];
  if (kiln_safetensors_read(file, &st, err, sizeof err) != KILN_OK) {
    ERR(L, "weights: cannot load the weights of %d param%s without `init`: %s", n_req,
        n_req == 1 ? "" : "s", err);
    kiln_safetensors_free(&st);
    return;
  }
  take_weights(L, &st, weights, req, n_req);
  kiln_safetensors_free(&st);
}

// A param's optional `role`: "weight" (the default), "buffer" or "constant" (docs/model-format.md).
static bool parse_role(loader *L, json_object *param, const char *path, kiln_param_role *role) {
  static const char *const names[] = {"weight", "buffer", "constant"};
  json_object *v;
  *role = KILN_ROLE_WEIGHT;
  if (!json_object_object_get_ex(param, "role", &v)) return true;
  const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
  for (int r = 0; s && r < 3; r++) {
    if (strcmp(s, names[r]) != 0) continue;
    *role = (kiln_param_role)r;
    return true;
  }
  char got[96];
  ERR(L, "%s.role: expected \"weight\", \"buffer\" or \"constant\", got %s", path,
      describe(v, got));
  return false;
}

static void load_params(loader *L, json_object *arr, const char *weights) {
  static const char *const fields[] = {"name", "dtype", "shape", "init", "role", NULL};
  size_t n = json_object_array_length(arr);
  weight_req *req = kiln_xcalloc(n ? n : 1, sizeof(*req));
  int n_req = 0;
  for (size_t i = 0; i < n; i++) {
    char path[64], sub[80];
    snprintf(path, sizeof path, "params[%zu]", i);
    json_object *v = json_object_array_get_idx(arr, i), *init = NULL;
    bool ok;
    int t = load_typed_decl(L, v, path, fields, "{\"name\", \"dtype\", \"shape\"[, \"init\"]}",
                            KILN_TENSOR_PARAM, &ok);
    kiln_param_role role;
    if (ok) ok = parse_role(L, v, path, &role);
    if (ok && t >= 0) L->g->tensors[t].role = role;
    bool has_init = ok && json_object_object_get_ex(v, "init", &init);
    if (has_init && t >= 0 && L->weights_override &&
        kiln_safetensors_find(L->mem_weights, L->g->tensors[t].name))
      has_init = false;  // --weights: the file's value wins
    kiln_dtype dtype = t >= 0 ? L->g->tensors[t].dtype : KILN_F32;
    kiln_shape shape = t >= 0 ? L->g->tensors[t].shape : (kiln_shape){0};
    if (!ok || t < 0) continue;
    if (!has_init) {
      req[n_req++] = (weight_req){t, i};
      continue;
    }
    kiln_init_spec spec;
    snprintf(sub, sizeof sub, "%s.init", path);
    if (!kiln_init_parse(init, sub, dtype, &shape, &spec, L->d)) continue;
    size_t bytes = (size_t)kiln_shape_numel(&shape) * kiln_dtype_size(dtype);
    void *data = kiln_pool_alloc(&L->g->pool, bytes);
    kiln_init_fill(&spec, dtype, &shape, data);
    L->g->tensors[t].data = data;
  }
  load_weights(L, weights, req, n_req);
  free(req);
}

// A BatchNormalization node with training_mode = 1 (expanded into graph ops after inference).
static bool has_training_batchnorm(const kiln_graph *g) {
  for (int i = 0; i < g->n_nodes; i++)
    if (strcmp(kiln_op_get(g->nodes[i].op)->name, "BatchNormalization") == 0 &&
        kiln_attr_int(&g->nodes[i], "training_mode", 0) == 1)
      return true;
  return false;
}

// ---- --freeze-input ----

static void dims_str(const int64_t *dim, int rank, char *buf, int size) {
  int n = snprintf(buf, (size_t)size, "(");
  for (int i = 0; i < rank && n < size; i++)
    n += snprintf(buf + n, (size_t)(size - n), "%s%" PRId64, i ? ", " : "", dim[i]);
  if (n < size) snprintf(buf + n, (size_t)(size - n), rank == 1 ? ",)" : ")");
}

bool kiln_frozen_input_read(const kiln_frozen_input *f, kiln_dtype dtype,
                            const kiln_shape *declared, kiln_array *out, kiln_diag *d) {
  char err[512], a[256], b[256];
  if (kiln_npy_read(f->file, out, err, sizeof err) != KILN_OK) {
    kiln_fe_error(d, "--freeze-input %s=%s: %s", f->name, f->file, err);
    return false;
  }
  if (declared->rank < 0) return true;  // no declared shape (ONNX): any
  bool same = out->rank == declared->rank;
  for (int i = 0; same && i < out->rank; i++)
    same = declared->dim[i] < 0 || declared->dim[i] == out->shape[i];
  if (out->dtype != (int)dtype || !same) {
    dims_str(out->shape, out->rank, a, sizeof a);
    dims_str(declared->dim, declared->rank, b, sizeof b);
    kiln_fe_error(d, "--freeze-input %s=%s: the file holds %s %s, but input '%s' is %s %s", f->name,
                  f->file, kiln_rt_dtype_name(out->dtype), a, f->name, kiln_dtype_name(dtype), b);
    kiln_array_free(out);
    return false;
  }
  return true;
}

// `--freeze-input NAME=FILE`: graph input NAME becomes a constant param holding FILE's array.
static void freeze_input(loader *L, const kiln_frozen_input *f) {
  kiln_graph *g = L->g;
  int at = -1;
  for (int i = 0; i < g->n_inputs && at < 0; i++)
    if (strcmp(g->tensors[g->inputs[i]].name, f->name) == 0) at = i;
  if (at < 0) {
    ERR(L, "--freeze-input %s=%s: the model has no input named '%s'", f->name, f->file, f->name);
    return;
  }
  kiln_tensor *t = &g->tensors[g->inputs[at]];
  kiln_array a;
  if (!kiln_frozen_input_read(f, t->dtype, &t->shape, &a, L->d)) return;
  t->kind = KILN_TENSOR_PARAM;
  t->role = KILN_ROLE_CONSTANT;
  t->data = kiln_pool_alloc(&g->pool, a.nbytes ? a.nbytes : 1);
  if (a.nbytes) memcpy(t->data, a.data, a.nbytes);
  kiln_array_free(&a);
  memmove(&g->inputs[at], &g->inputs[at + 1], sizeof(int) * (size_t)(g->n_inputs - at - 1));
  g->n_inputs--;
}

// ---- Nodes ----

static const char *attr_type_desc(kiln_attr_type t) {
  switch (t) {
    case KILN_ATTR_INT: return "an integer";
    case KILN_ATTR_FLOAT: return "a number";
    case KILN_ATTR_INTS: return "an array of integers";
    case KILN_ATTR_FLOATS: return "an array of numbers";
    case KILN_ATTR_STRING: return "a string";
  }
  return "?";
}

// Checks attribute value v against spec; with dst, also stores it (pool memory of g).
static bool convert_attr(loader *L, json_object *v, const kiln_attr_spec *spec, const char *path,
                         kiln_attr *dst) {
  char got[96];
  int64_t i;
  double f;
  switch (spec->type) {
    case KILN_ATTR_INT:
      if (!kiln_json_int64(v, &i)) break;
      if (dst) dst->i = i;
      return true;
    case KILN_ATTR_FLOAT:
      if (!kiln_json_number(v, &f)) break;
      if (dst) dst->f = f;
      return true;
    case KILN_ATTR_STRING:
      if (!json_object_is_type(v, json_type_string)) break;
      if (dst) dst->s = kiln_pool_strdup(&L->g->pool, json_object_get_string(v));
      return true;
    case KILN_ATTR_INTS:
    case KILN_ATTR_FLOATS: {
      if (!json_object_is_type(v, json_type_array)) break;
      size_t n = json_object_array_length(v);
      bool ints = spec->type == KILN_ATTR_INTS;
      if (dst) {
        dst->count = (int)n;
        if (ints)
          dst->ints = kiln_pool_alloc(&L->g->pool, (n ? n : 1) * sizeof(int64_t));
        else
          dst->floats = kiln_pool_alloc(&L->g->pool, (n ? n : 1) * sizeof(double));
      }
      for (size_t k = 0; k < n; k++) {
        json_object *e = json_object_array_get_idx(v, k);
        bool good = ints ? kiln_json_int64(e, &i) : kiln_json_number(e, &f);
        if (!good) {
          ERR(L, "%s[%zu]: expected %s, got %s", path, k, ints ? "an integer" : "a finite number",
              describe(e, got));
          return false;
        }
        if (dst && ints) dst->ints[k] = i;
        if (dst && !ints) dst->floats[k] = f;
      }
      return true;
    }
  }
  ERR(L, "%s: expected %s, got %s", path, attr_type_desc(spec->type), describe(v, got));
  return false;
}

static const kiln_attr_spec *find_attr_spec(const kiln_op_def *def, const char *name) {
  for (const kiln_attr_spec *s = def->attrs; s && s->name; s++)
    if (strcmp(s->name, name) == 0) return s;
  return NULL;
}

static bool check_attrs(loader *L, json_object *attrs, const kiln_op_def *def, const char *path) {
  bool ok = true;
  char sub[PATH_MAX_LEN];
  if (attrs) {
    json_object_object_foreach(attrs, key, val) {
      snprintf(sub, sizeof sub, "%s.attrs.%.100s", path, key);
      const kiln_attr_spec *spec = find_attr_spec(def, key);
      if (!spec) {
        char list[512] = "";
        for (const kiln_attr_spec *s = def->attrs; s && s->name; s++) {
          if (strlen(list) + strlen(s->name) + 3 >= sizeof list) break;
          if (*list) strcat(list, ", ");
          strcat(list, s->name);
        }
        if (*list)
          ERR(L, "%s: unknown attribute of %s; expected one of %s", sub, def->name, list);
        else
          ERR(L, "%s: unknown attribute; %s takes no attributes", sub, def->name);
        ok = false;
        continue;
      }
      ok &= convert_attr(L, val, spec, sub, NULL);
    }
  }
  for (const kiln_attr_spec *s = def->attrs; s && s->name; s++) {
    json_object *v;
    if (s->required && !(attrs && json_object_object_get_ex(attrs, s->name, &v))) {
      ERR(L, "%s.attrs: %s needs attribute '%s' (%s)", path, def->name, s->name,
          attr_type_desc(s->type));
      ok = false;
    }
  }
  return ok;
}

static void arity_error(loader *L, const char *path, const char *what, const kiln_op_def *def,
                        int lo, int hi, size_t got) {
  if (lo == hi)
    ERR(L, "%s.%ss: %s takes %d %s%s, got %zu", path, what, def->name, lo, what, lo == 1 ? "" : "s",
        got);
  else
    ERR(L, "%s.%ss: %s takes %d to %d %ss, got %zu", path, what, def->name, lo, hi, what, got);
}

static int op_id_of(const kiln_op_def *def) {
  for (int id = 0; id < KILN_OP_COUNT; id++)
    if (kiln_op_get(id) == def) return id;
  return -1;
}

// Appends to a growing heap string.
static void append(char **s, size_t *len, size_t *cap, const char *text) {
  size_t n = strlen(text);
  if (*len + n + 1 > *cap) {
    *cap = (*len + n + 1) * 2;
    char *r = realloc(*s, *cap);
    if (!r) {
      fprintf(stderr, "kiln: internal error: out of memory\n");
      exit(KILN_EXIT_INTERNAL);
    }
    *s = r;
  }
  memcpy(*s + *len, text, n + 1);
  *len += n;
}

// Pass A: fields, op, arity, attributes, node names; defines every node output tensor.
static void check_nodes(loader *L, json_object *arr, node_info *info) {
  static const char *const fields[] = {"op", "name", "inputs", "outputs", "attrs", NULL};
  kiln_graph *g = L->g;
  size_t n = json_object_array_length(arr);
  char *summary = NULL;
  size_t s_len = 0, s_cap = 0;
  int unsupported = 0;
  for (size_t i = 0; i < n; i++) {
    char path[64], sub[PATH_MAX_LEN], got[96];
    snprintf(path, sizeof path, "nodes[%zu]", i);
    json_object *v = json_object_array_get_idx(arr, i);
    info[i] = (node_info){.op_id = -1};
    if (!json_object_is_type(v, json_type_object)) {
      ERR(L,
          "%s: expected an object {\"op\", \"inputs\", \"outputs\"[, \"name\", \"attrs\"]}, got %s",
          path, describe(v, got));
      continue;
    }
    bool ok = check_fields(L, v, path, fields);
    const char *op = need_name(L, v, path, "op", "an op name such as \"Conv\"");
    const kiln_op_def *def = op ? kiln_op_find(op) : NULL;
    if (op && !def) {
      ERR(L, "%s.op: unsupported op '%s'", path, op);
      char item[PATH_MAX_LEN];
      snprintf(item, sizeof item, "%s%.100s (%s)", unsupported ? ", " : "", op, path);
      append(&summary, &s_len, &s_cap, item);
      unsupported++;
    }
    ok &= def != NULL;
    info[i].def = def;
    info[i].op_id = def ? op_id_of(def) : -1;

    // Name: explicit or "<op>_<index>"; unique among nodes.
    json_object *jn = NULL;
    const char *name = NULL;
    bool explicit_name = json_object_object_get_ex(v, "name", &jn);
    if (explicit_name) {
      name = need_name(L, v, path, "name", "a node name");
      ok &= name != NULL;
    } else if (op) {
      name = kiln_pool_printf(&g->pool, "%s_%zu", op, i);
    }
    if (name) {
      int prev = map_get(&L->node_names, name);
      if (prev >= 0) {
        ERR(L, "%s: node name '%s' is already used by nodes[%d]%s", path, name, prev,
            explicit_name ? "" : " (it is this node's default name; give the node a `name`)");
        ok = false;
      } else {
        info[i].name = kiln_pool_strdup(&g->pool, name);
        map_put(&L->node_names, info[i].name, (int)i);
      }
    }

    json_object *ins = need(L, v, path, "inputs", json_type_array, "an array of tensor names");
    json_object *outs = need(L, v, path, "outputs", json_type_array, "an array of tensor names");
    bool bad_attrs = false;
    json_object *attrs = want(L, v, path, "attrs", json_type_object, "an object", &bad_attrs);
    ok &= ins && outs && !bad_attrs;
    if (ins) {
      size_t k = json_object_array_length(ins);
      for (size_t j = 0; j < k; j++) {
        json_object *e = json_object_array_get_idx(ins, j);
        if (!json_object_is_type(e, json_type_string)) {
          ERR(L, "%s.inputs[%zu]: expected a tensor name (\"\" skips an optional input), got %s",
              path, j, describe(e, got));
          ok = false;
        }
      }
      if (def && ((int64_t)k < def->min_inputs || (int64_t)k > def->max_inputs)) {
        arity_error(L, path, "input", def, def->min_inputs, def->max_inputs, k);
        ok = false;
      }
    }
    if (outs) {
      size_t k = json_object_array_length(outs);
      if (def && ((int64_t)k < def->min_outputs || (int64_t)k > def->max_outputs)) {
        arity_error(L, path, "output", def, def->min_outputs, def->max_outputs, k);
        ok = false;
      }
      for (size_t j = 0; j < k; j++) {
        json_object *e = json_object_array_get_idx(outs, j);
        snprintf(sub, sizeof sub, "%s.outputs[%zu]", path, j);
        bool is_str = json_object_is_type(e, json_type_string);
        const char *s = is_str ? json_object_get_string(e) : "";
        if (!is_str || !*s || strlen(s) != (size_t)json_object_get_string_len(e)) {
          ERR(L, "%s: expected a non-empty tensor name, got %s", sub, describe(e, got));
          ok = false;
          continue;
        }
        kiln_shape none = {0};
        if (add_tensor(L, s, KILN_TENSOR_VALUE, KILN_F32, &none, sub) < 0) ok = false;
      }
    }
    if (def && !bad_attrs) ok &= check_attrs(L, attrs, def, path);
    info[i].ok = ok;
  }
  if (unsupported) {
    char *supported = NULL;
    size_t sl = 0, sc = 0;
    for (int id = 0; id < KILN_OP_COUNT; id++) {
      if (id) append(&supported, &sl, &sc, ", ");
      append(&supported, &sl, &sc, kiln_op_get(id)->name);
    }
    kiln_diag_error(L->d, NULL, "%d unsupported op%s: %s (Kiln supports %s)", unsupported,
                    unsupported == 1 ? "" : "s", summary, supported ? supported : "none");
    free(supported);
  }
  free(summary);
}

// Pass B: resolves node inputs and builds the nodes that passed pass A.
static void build_nodes(loader *L, json_object *arr, node_info *info) {
  kiln_graph *g = L->g;
  size_t n = json_object_array_length(arr);
  int *in = NULL, *out = NULL;
  int in_cap = 0, out_cap = 0;
  for (size_t i = 0; i < n; i++) {
    char path[64], sub[PATH_MAX_LEN];
    snprintf(path, sizeof path, "nodes[%zu]", i);
    json_object *v = json_object_array_get_idx(arr, i), *ins, *outs, *attrs = NULL;
    if (!json_object_is_type(v, json_type_object) ||
        !json_object_object_get_ex(v, "inputs", &ins) || !json_object_is_type(ins, json_type_array))
      continue;
    bool ok = info[i].ok;
    size_t k = json_object_array_length(ins);
    in = kiln_grow(in, &in_cap, (int)k + 1, sizeof(*in));
    for (size_t j = 0; j < k; j++) {
      json_object *e = json_object_array_get_idx(ins, j);
      if (!json_object_is_type(e, json_type_string)) continue;  // reported in pass A
      const char *s = json_object_get_string(e);
      snprintf(sub, sizeof sub, "%s.inputs[%zu]", path, j);
      if (!*s) {
        in[j] = -1;
        if (info[i].def && (int64_t)j < info[i].def->min_inputs) {
          ERR(L, "%s: input %zu of %s is required; \"\" only skips optional inputs", sub, j,
              info[i].def->name);
          ok = false;
        }
        continue;
      }
      in[j] = map_get(&L->tensors, s);
      if (in[j] < 0 || strlen(s) != (size_t)json_object_get_string_len(e)) {
        ERR(L, "%s: no tensor named '%s' (not an input, param or node output)", sub, s);
        ok = false;
      }
    }
    if (!ok) continue;
    json_object_object_get_ex(v, "outputs", &outs);
    size_t m = json_object_array_length(outs);
    out = kiln_grow(out, &out_cap, (int)m + 1, sizeof(*out));
    for (size_t j = 0; j < m; j++)
      out[j] = map_get(&L->tensors, json_object_get_string(json_object_array_get_idx(outs, j)));
    int id = kiln_graph_add_node(g, info[i].op_id, info[i].name, (int)k, in, (int)m, out);
    g->nodes[id].where = kiln_pool_strdup(&g->pool, path);
    if (json_object_object_get_ex(v, "attrs", &attrs)) {
      json_object_object_foreach(attrs, key, val) {
        const kiln_attr_spec *spec = find_attr_spec(info[i].def, key);
        kiln_attr *a = kiln_node_add_attr(g, &g->nodes[id], spec->name, spec->type);
        snprintf(sub, sizeof sub, "%s.attrs.%.100s", path, key);
        convert_attr(L, val, spec, sub, a);
      }
    }
  }
  free(in);
  free(out);
}

// ---- Outputs ----

static output_decl *load_outputs(loader *L, json_object *arr) {
  static const char *const fields[] = {"name", "dtype", "shape", NULL};
  kiln_graph *g = L->g;
  size_t n = json_object_array_length(arr);
  output_decl *decl = kiln_xcalloc(n ? n : 1, sizeof(*decl));
  name_map seen = {0};
  if (n == 0) ERR(L, "outputs: a model needs at least one output");
  for (size_t i = 0; i < n; i++) {
    char path[64], sub[80], got[96];
    snprintf(path, sizeof path, "outputs[%zu]", i);
    decl[i].tensor = -1;
    json_object *v = json_object_array_get_idx(arr, i);
    if (!json_object_is_type(v, json_type_object)) {
      ERR(L, "%s: expected an object {\"name\"[, \"dtype\", \"shape\"]}, got %s", path,
          describe(v, got));
      continue;
    }
    check_fields(L, v, path, fields);
    const char *name = need_name(L, v, path, "name", "a tensor name");
    json_object *jd, *js;
    if (json_object_object_get_ex(v, "dtype", &jd)) {
      snprintf(sub, sizeof sub, "%s.dtype", path);
      decl[i].has_dtype = parse_dtype(L, jd, sub, &decl[i].dtype);
    }
    if (json_object_object_get_ex(v, "shape", &js)) {
      snprintf(sub, sizeof sub, "%s.shape", path);
      decl[i].has_shape = parse_shape(
          L, js, sub, decl[i].has_dtype ? kiln_dtype_size(decl[i].dtype) : 1, &decl[i].shape);
    }
    if (!name) continue;
    int prev = map_get(&seen, name);
    if (prev >= 0) {
      ERR(L, "%s: tensor '%s' is already listed at outputs[%d]", path, name, prev);
      continue;
    }
    map_put(&seen, name, (int)i);
    int t = map_get(&L->tensors, name);
    if (t < 0) {
      ERR(L, "%s: no node produces a tensor named '%s'", path, name);
      continue;
    }
    if (g->tensors[t].kind != KILN_TENSOR_VALUE) {
      ERR(L, "%s: '%s' is a model %s (%s); outputs must be produced by a node", path, name,
          g->tensors[t].kind == KILN_TENSOR_INPUT ? "input" : "param", g->tensors[t].where);
      continue;
    }
    decl[i].tensor = t;
    g->tensors[t].is_output = true;
    KILN_VEC_PUSH(g->outputs, g->n_outputs, g->cap_outputs, t);
  }
  map_free(&seen);
  return decl;
}

static void check_outputs(loader *L, json_object *arr, const output_decl *decl, const bool *valid) {
  size_t n = json_object_array_length(arr);
  for (size_t i = 0; i < n; i++) {
    int t = decl[i].tensor;
    if (t < 0 || !valid[t]) continue;
    const kiln_tensor *x = &L->g->tensors[t];
    if (decl[i].has_dtype && decl[i].dtype != x->dtype)
      ERR(L, "outputs[%zu] (%s): declared dtype %s, inferred %s", i, x->name,
          kiln_dtype_name(decl[i].dtype), kiln_dtype_name(x->dtype));
    if (decl[i].has_shape && !L->shapes_overridden &&
        !kiln_shape_equal(&decl[i].shape, &x->shape)) {
      char a[256], b[256];
      ERR(L, "outputs[%zu] (%s): declared shape %s, inferred %s", i, x->name,
          shape_str(&decl[i].shape, a, sizeof a), shape_str(&x->shape, b, sizeof b));
    }
  }
}

// ---- Shape inference ----

// valid[t] (g->n_tensors entries) ends true for every tensor whose dtype and shape are known.
// Infers every node's outputs in order, folding constant subgraphs as it goes (kiln_fold_node), so
// that a shape computed from constants is a constant when the node that needs it is inferred.
// Whether node n reads a float param the model declares (a weight a training build may train).
static bool reads_weight(const kiln_graph *g, const kiln_node *n) {
  for (int j = 0; j < n->n_inputs; j++) {
    const kiln_tensor *t = kiln_in(g, n, j);
    if (t && t->kind == KILN_TENSOR_PARAM && t->role == KILN_ROLE_WEIGHT &&
        kiln_dtype_is_float(t->dtype) && t->where && strncmp(t->where, "params[", 7) == 0)
      return true;
  }
  return false;
}

// keep_weights: a training build differentiates through nodes reading weights; do not fold them.
// A tensor's size in bytes, saturating at INT64_MAX (inferred shapes are not bounded yet).
static int64_t tensor_bytes(const kiln_tensor *t) {
  int64_t bytes = (int64_t)kiln_dtype_size(t->dtype);
  for (int i = 0; i < t->shape.rank; i++) {
    int64_t dim = t->shape.dim[i];
    if (dim > 0 && bytes > INT64_MAX / dim) return INT64_MAX;
    bytes *= dim > 0 ? dim : 1;
  }
  return bytes;
}

// Refuses a node whose inferred outputs are absurdly large (KILN_LIMITS tensor-bytes), or that
// take the graph's running total of tensor bytes past total-bytes, before anything allocates them
// (constant folding would).
static bool outputs_within_limits(kiln_graph *g, const kiln_node *n, kiln_diag *d, int64_t *total) {
  const kiln_limits *lim = kiln_limits_get();
  char a[32], b[32];
  for (int j = 0; j < n->n_outputs; j++) {
    if (n->outputs[j] < 0) continue;
    const kiln_tensor *t = &g->tensors[n->outputs[j]];
    int64_t bytes = tensor_bytes(t);
    if (bytes > lim->tensor_bytes) {
      kiln_op_error(d, n, "output '%s' would be %s; the limit is %s (KILN_LIMITS tensor-bytes)",
                    t->name, bytes == INT64_MAX ? "more than 8 EiB" : kiln_bytes_str(bytes, a, 32),
                    kiln_bytes_str(lim->tensor_bytes, b, 32));
      return false;
    }
    *total += bytes;
    if (*total > lim->total_bytes) {
      kiln_op_error(d, n,
                    "the graph's tensors pass %s in all at output '%s' (KILN_LIMITS "
                    "total-bytes)",
                    kiln_bytes_str(lim->total_bytes, b, 32), t->name);
      return false;
    }
  }
  return true;
}

static bool infer_shapes(kiln_graph *g, kiln_diag *d, bool *valid, bool keep_weights) {
  int errors_before = d->errors, folded = 0;
  int64_t total_bytes = 0;  // inputs and params, then each node's outputs as they are inferred
  bool ok = true;
  for (int t = 0; t < g->n_tensors; t++) {
    valid[t] = g->tensors[t].kind != KILN_TENSOR_VALUE;
    if (valid[t]) total_bytes += tensor_bytes(&g->tensors[t]);
  }
  for (int i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    bool inputs_ok = true;
    for (int j = 0; j < n->n_inputs; j++)
      if (n->inputs[j] >= 0 && !valid[n->inputs[j]]) inputs_ok = false;
    if (!inputs_ok) {  // an earlier node failed; its error explains this one
      ok = false;
      continue;
    }
    const kiln_op_def *def = kiln_op_get(n->op);
    int before = d->errors;
    bool r = def->infer(g, n, d);
    if (!r && d->errors == before) kiln_op_error(d, n, "%s: shape inference failed", def->name);
    if (r && d->errors != before) r = false;
    if (!r) {
      ok = false;
      continue;
    }
    if (!outputs_within_limits(g, n, d, &total_bytes)) {
      ok = false;
      continue;
    }
    for (int j = 0; j < n->n_outputs; j++) valid[n->outputs[j]] = true;
    folded += ok && !(keep_weights && reads_weight(g, n)) && kiln_fold_node(g, n);
  }
  if (folded) kiln_graph_compact(g);
  if (!ok && d->errors == errors_before)
    kiln_diag_error(d, NULL, "shape inference failed: a node reads a tensor nothing produces");
  return ok;
}

bool kiln_infer_shapes(kiln_graph *g, kiln_diag *d) {
  bool *valid = kiln_xcalloc((size_t)g->n_tensors + 1, sizeof(bool));
  bool ok = infer_shapes(g, d, valid, false);
  free(valid);
  return ok;
}

// ---- Entry point ----

static kiln_graph *load(json_object *root, const char *path, const kiln_safetensors *mem,
                        const kiln_load_options *o, kiln_diag *d) {
  static const char *const top_fields[] = {"format",  "version",  "name",    "doc",
                                           "weights", "inputs",   "outputs", "params",
                                           "nodes",   "training", NULL};
  loader L0 = {.d = d,
               .path = path,
               .mem_weights = mem,
               .weights_override = o && o->weights_file,
               .training = o ? o->training : NULL},
         *L = &L0;
  char got[96];
  if (!json_object_is_type(root, json_type_object)) {
    kiln_diag_error(d, NULL, "expected a JSON object at the top level, got %s",
                    describe(root, got));
    return NULL;
  }

  // `format` and `version` first: nothing else means anything in another format.
  int errors0 = d->errors;
  json_object *fmt = need(L, root, "", "format", json_type_string, "\"kiln-model\"");
  if (fmt && strcmp(json_object_get_string(fmt), "kiln-model") != 0)
    ERR(L, "format: expected \"kiln-model\", got %s", describe(fmt, got));
  json_object *ver;
  if (!json_object_object_get_ex(root, "version", &ver)) {
    ERR(L, "missing required field 'version' (1)");
  } else {
    int64_t vi;
    if (!kiln_json_int64(ver, &vi))
      ERR(L, "version: expected the integer 1, got %s", describe(ver, got));
    else if (vi != 1)
      ERR(L, "version: unsupported version %" PRId64 "; this Kiln reads version 1", vi);
  }
  if (d->errors != errors0) return NULL;

  check_fields(L, root, "", top_fields);
  json_object *jname = need(L, root, "", "name", json_type_string, "a C identifier");
  const char *name = jname ? json_object_get_string(jname) : NULL;
  if (name &&
      (!is_c_identifier(name) || strlen(name) != (size_t)json_object_get_string_len(jname))) {
    ERR(L, "name: %s is not a C identifier ([A-Za-z_][A-Za-z0-9_]*); it prefixes generated symbols",
        describe(jname, got));
    name = NULL;
  }
  bool bad = false;
  want(L, root, "", "doc", json_type_string, "a string", &bad);
  json_object *jw = want(L, root, "", "weights", json_type_string, "a file name", &bad);
  const char *weights = jw ? json_object_get_string(jw) : NULL;
  if (weights && (!*weights || strlen(weights) != (size_t)json_object_get_string_len(jw))) {
    ERR(L, "weights: expected a file name, got %s", describe(jw, got));
    weights = NULL;
  }
  json_object *tr = want(L, root, "", "training", json_type_object, "an object", &bad);
  json_object *inputs = need(L, root, "", "inputs", json_type_array, "an array of inputs");
  json_object *outputs = need(L, root, "", "outputs", json_type_array, "an array of outputs");
  json_object *params = want(L, root, "", "params", json_type_array, "an array of params", &bad);
  json_object *nodes = need(L, root, "", "nodes", json_type_array, "an array of nodes");

  L->g = kiln_graph_new(name ? name : "model", path);
  kiln_graph *g = L->g;
  size_t n_nodes = nodes ? json_object_array_length(nodes) : 0;
  node_info *info = NULL;
  output_decl *decl = NULL;
  bool *valid = NULL;
  if ((int64_t)n_nodes > kiln_limits_get()->nodes) {
    ERR(L, "nodes: %zu nodes; the limit is %" PRId64 " (KILN_LIMITS nodes)", n_nodes,
        kiln_limits_get()->nodes);
    goto fail;
  }
  info = kiln_xcalloc(n_nodes ? n_nodes : 1, sizeof(*info));

  if (inputs) load_inputs(L, inputs);
  for (int i = 0; o && i < o->n_shapes; i++) override_input_shape(L, &o->shapes[i]);
  for (int i = 0; o && i < o->n_frozen; i++) freeze_input(L, &o->frozen[i]);
  if (params) load_params(L, params, weights);
  if (nodes) check_nodes(L, nodes, info);
  if (nodes) build_nodes(L, nodes, info);
  if (outputs) decl = load_outputs(L, outputs);
  if (d->errors != errors0) goto fail;

  if (!kiln_graph_toposort(g, d) || d->errors != errors0) goto fail;
  valid = kiln_xcalloc((size_t)g->n_tensors + 1, sizeof(bool));
  infer_shapes(g, d, valid, L->training != NULL);
  check_outputs(L, outputs, decl, valid);
  if (d->errors != errors0) goto fail;
  if (has_training_batchnorm(g) && !kiln_batchnorm_training_expand(g, d)) goto fail;
  kiln_training training_section;
  if (!kiln_training_parse(tr, g, L->training ? L->training : &training_section, d)) goto fail;

  free(valid);
  free(decl);
  free(info);
  map_free(&L->tensors);
  map_free(&L->node_names);
  return g;

fail:
  free(valid);
  free(decl);
  free(info);
  map_free(&L->tensors);
  map_free(&L->node_names);
  kiln_graph_free(g);
  return NULL;
}

kiln_graph *kiln_load_model_json(json_object *root, const char *path,
                                 const kiln_safetensors *weights, kiln_diag *d) {
  int errors_before = d->errors;
  kiln_graph *g = load(root, path, weights, NULL, d);
  if (g && d->errors != errors_before) {  // never hand out a graph with errors
    kiln_graph_free(g);
    g = NULL;
  }
  return g;
}

static bool is_onnx_path(const char *path) {
  size_t n = strlen(path);
  return n >= 5 && strcmp(path + n - 5, ".onnx") == 0;
}

// A JSON model file; with o->weights_file, params come from that .safetensors file.
static kiln_graph *load_json_file(const char *path, const kiln_load_options *o, kiln_diag *d) {
  kiln_safetensors st;
  memset(&st, 0, sizeof st);
  const char *wf = o ? o->weights_file : NULL;
  char err[512];
  if (wf && kiln_safetensors_read(wf, &st, err, sizeof err) != KILN_OK) {
    kiln_diag_error(d, NULL, "--weights: %s", err);
    return NULL;
  }
  size_t len;
  char *text = read_file(path, &len, d);
  json_object *root = text ? parse_json(text, len, d) : NULL;
  free(text);
  kiln_graph *g = NULL;
  if (root) {
    int errors_before = d->errors;
    g = load(root, path, wf ? &st : NULL, o, d);
    if (g && d->errors != errors_before) {
      kiln_graph_free(g);
      g = NULL;
    }
  }
  json_object_put(root);
  kiln_safetensors_free(&st);
  return g;
}

kiln_graph *kiln_load_model_ex(const char *path, const kiln_load_options *o, kiln_diag *d) {
  if (is_onnx_path(path) && o && (o->weights_file || o->training)) {
    kiln_diag_error(d, NULL, "--weights and --train take a JSON model (kiln import it first)");
    return NULL;
  }
  if (is_onnx_path(path)) {
    kiln_onnx_model m;
    if (!kiln_onnx_import_ex(path, o, d, &m)) return NULL;
    kiln_graph *g = kiln_load_model_json(m.json, path, &m.weights, d);
    kiln_onnx_model_free(&m);
    return g;
  }
  return load_json_file(path, o, d);
}

kiln_graph *kiln_load_model(const char *path, kiln_diag *d) {
  if (is_onnx_path(path)) return kiln_load_model_ex(path, NULL, d);
  return load_json_file(path, NULL, d);
}
