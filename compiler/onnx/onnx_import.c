// ONNX ModelProto → Kiln JSON model (docs/onnx.md). Nodes map one to one onto Kiln nodes with the
// same op name, inputs and attributes; initializers and Constant nodes become params whose data is
// kept in memory (kiln_onnx_model.weights); graph inputs that are also initializers are params.
//
// What cannot be imported is collected, not reported one by one: unsupported ops (with node
// names), opsets, dtypes, attribute types and dynamic dimensions all go into one message at the
// end. Malformed files (not protobuf, bad tensor data, missing fields) are reported as they are
// met, each naming the field: `graph.node[3] (conv1).attribute[0] (strides)`.
//
// Opset differences the ops cannot see are resolved here:
//   - opset 6 legacy attributes: `is_test` dropped, `broadcast` dropped where numpy broadcasting
//     means the same (no `axis`, or `axis` aligning B's dims with A's last ones)
//   - BatchNormalization `spatial` = 1 dropped (the only meaning Kiln has)
//   - Softmax, LogSoftmax, Hardmax before opset 13 (2-D coercion at `axis`, default 1): mapped when
//     `axis` is the input's last dimension, reported otherwise
//   - Resize-10 inputs (X, scales) become (X, "", scales) with its asymmetric/floor semantics
//   - Dropout before opset 12: the `ratio` attribute is dropped (no training mode: an identity)
// Everything else (attributes that later opsets turned into inputs) is passed on as it is; the ops
// accept both forms. An empty constant input (zero elements, e.g. Resize's roi) is an omitted
// optional input.
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../initializers.h"
#include "../ops/op.h"
#include "onnx_import.h"
#include "onnx_internal.h"

enum { MIN_OPSET = 6, MAX_OPSET = 18 };

// A growing text list: "a, b, c", with a count.
typedef struct issue_list {
  char *text;
  size_t len, cap;
  int count;
} issue_list;

typedef struct importer {
  const char *path;
  char *dir;  // the model's directory, for external data
  kiln_diag *d;
  const Onnx__GraphProto *gr;
  int64_t opset;
  kiln_onnx_model *out;
  const kiln_input_shape *shapes;
  int n_shapes;
  const kiln_frozen_input *frozen;  // --freeze-input: these graph inputs become constant params
  int n_frozen;
  json_object *param_index;  // name → index in out->arrays
  json_object *referenced;   // name → true, params some node reads
  json_object *roles;        // param name → "buffer" or "constant" (absent: a weight)
  json_object *ranks;        // name → rank, where known (inputs, params, value_info, outputs)
  json_object *node_names;   // node name → true
  json_object *defined;      // graph inputs and node outputs seen so far → true
  json_object *inputs, *outputs, *params, *nodes;
  issue_list ops, opsets, dtypes, attrs, shapes_issues, empty;
} importer;

static const char *str(const char *s) { return s ? s : ""; }

static void issue(issue_list *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void issue(issue_list *l, const char *fmt, ...) {
  char item[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(item, sizeof item, fmt, ap);
  va_end(ap);
  size_t n = strlen(item) + 2;
  if (l->len + n + 1 > l->cap) {
    l->cap = (l->len + n + 1) * 2;
    l->text = realloc(l->text, l->cap);
    if (!l->text) abort();
  }
  l->len += (size_t)sprintf(l->text + l->len, "%s%s", l->count ? ", " : "", item);
  l->count++;
}

static bool is_default_domain(const char *domain) {
  return !domain || !*domain || strcmp(domain, "ai.onnx") == 0;
}

// ---- Small maps on json-c objects (hash tables keyed by name) ----

static void map_set_int(json_object *m, const char *key, int64_t v) {
  json_object_object_add(m, key, json_object_new_int64(v));
}

static int64_t map_get_int(json_object *m, const char *key, int64_t dflt) {
  json_object *v;
  return json_object_object_get_ex(m, key, &v) ? json_object_get_int64(v) : dflt;
}

// Marks a graph input, param or node output as defined.
static void define(importer *im, const char *name) {
  json_object_object_add(im->defined, name, json_object_new_boolean(1));
}

// ---- Params ----

static json_object *shape_json(const int64_t *dims, int rank) {
  json_object *a = json_object_new_array();
  for (int i = 0; i < rank; i++) json_object_array_add(a, json_object_new_int64(dims[i]));
  return a;
}

// Takes ownership of arr.
static void add_param(importer *im, const char *name, kiln_array *arr) {
  kiln_onnx_model *m = im->out;
  if (m->count == m->cap) {
    m->cap = m->cap ? m->cap * 2 : 64;
    m->names = realloc(m->names, (size_t)m->cap * sizeof(*m->names));
    m->arrays = realloc(m->arrays, (size_t)m->cap * sizeof(*m->arrays));
    if (!m->names || !m->arrays) abort();
  }
  m->names[m->count] = strdup(name);
  m->arrays[m->count] = *arr;
  map_set_int(im->param_index, name, m->count);
  map_set_int(im->ranks, name, arr->rank);
  m->count++;
}

static const kiln_array *find_param(const importer *im, const char *name) {
  int64_t i = map_get_int(im->param_index, name, -1);
  return i >= 0 ? &im->out->arrays[i] : NULL;
}

static bool load_initializers(importer *im) {
  bool ok = true;
  for (size_t i = 0; i < im->gr->n_initializer; i++) {
    Onnx__TensorProto *t = im->gr->initializer[i];
    char where[300], err[600];
    snprintf(where, sizeof where, "graph.initializer[%zu] (%.200s)", i, str(t->name));
    if (!t->name || !*t->name) {
      kiln_diag_error(im->d, where, "an initializer needs a name");
      ok = false;
      continue;
    }
    if (find_param(im, t->name)) {
      kiln_diag_error(im->d, where, "initializer '%s' is defined twice", t->name);
      ok = false;
      continue;
    }
    kiln_array a;
    kiln_onnx_tensor_status st = kiln_onnx_tensor_to_array(t, im->dir, &a, err, sizeof err);
    if (st == KILN_ONNX_TENSOR_DTYPE) {
      issue(&im->dtypes, "initializer '%s': %s", t->name, err);
      define(im, t->name);  // reported; readers of it need no second error
    } else if (st == KILN_ONNX_TENSOR_BAD) {
      kiln_diag_error(im->d, where, "%s", err);
      ok = false;
    } else {
      add_param(im, t->name, &a);
    }
    // The data now lives in the array; release the protobuf copy early (large models).
    if (t->has_raw_data) {
      free(t->raw_data.data);
      t->raw_data.data = NULL;
      t->raw_data.len = 0;
      t->has_raw_data = false;
    }
  }
  if (im->gr->n_sparse_initializer)
    issue(&im->dtypes, "%zu sparse initializer(s) (sparse tensors are not supported)",
          im->gr->n_sparse_initializer);
  return ok;
}

// Tensors defined so far (graph inputs, params, earlier node outputs): ONNX nodes are in
// topological order, so an input not defined yet is missing from the file.
static bool is_defined(importer *im, const char *name) {
  return find_param(im, name) || json_object_object_get_ex(im->defined, name, NULL);
}

// ---- Attributes ----

static int attr_type(const Onnx__AttributeProto *a) {
  if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED) return a->type;
  // IR version 1 files do not set `type`: tell by the field that is present.
  if (a->has_f) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
  if (a->has_i) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  if (a->has_s) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
  if (a->t) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
  if (a->g) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
  if (a->n_floats) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
  if (a->n_ints) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  if (a->n_strings) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS;
  return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED;
}

static const char *attr_type_name(int type) {
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
      &onnx__attribute_proto__attribute_type__descriptor, type);
  return v ? v->name : "UNKNOWN";
}

// ConstantOfShape's `value` (a one-element TENSOR) → [v], with the node's `dtype` attribute set to
// the tensor's dtype (the op's JSON form). NULL if the tensor is not one element of a Kiln dtype.
static json_object *fill_value_json(importer *im, const Onnx__AttributeProto *a,
                                    json_object *attrs) {
  kiln_array v;
  char err[600];
  if (kiln_onnx_tensor_to_array(a->t, im->dir, &v, err, sizeof err) != KILN_ONNX_TENSOR_OK)
    return NULL;
  json_object *out = NULL;
  if (kiln_array_numel(&v) == 1) {
    out = json_object_new_array();
    json_object_array_add(out, json_object_new_double(kiln_element_get(v.data, v.dtype, 0)));
    json_object_object_add(attrs, "dtype",
                           json_object_new_string(kiln_dtype_name((kiln_dtype)v.dtype)));
  }
  kiln_array_free(&v);
  return out;
}

// Converts one attribute to JSON; NULL (after recording an issue) for types Kiln has no form for.
static json_object *attr_json(importer *im, const Onnx__AttributeProto *a, const char *node) {
  int type = attr_type(a);
  switch (type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return json_object_new_double(a->f);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return json_object_new_int64(a->i);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING:
      if (a->s.len && memchr(a->s.data, 0, a->s.len)) break;
      return json_object_new_string_len(a->s.len ? (const char *)a->s.data : "", (int)a->s.len);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS: {
      json_object *arr = json_object_new_array();
      for (size_t k = 0; k < a->n_floats; k++)
        json_object_array_add(arr, json_object_new_double(a->floats[k]));
      return arr;
    }
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return shape_json(a->ints, (int)a->n_ints);
    default: break;
  }
  issue(&im->attrs, "node '%s' attribute '%s' of type %s", node, str(a->name),
        attr_type_name(type));
  return NULL;
}

// ---- Constant nodes → params ----

// A 0-D (scalar) or 1-D array from attribute values.
static kiln_array small_array(kiln_dtype dtype, int rank, int64_t n) {
  kiln_array a = {.dtype = (int)dtype, .rank = rank, .shape = {n}};
  a.nbytes = (size_t)n * kiln_dtype_size(dtype);
  a.data = kiln_aligned_alloc(a.nbytes ? a.nbytes : 1);
  if (!a.data) abort();
  return a;
}

static bool constant_value(importer *im, const Onnx__AttributeProto *a, const char *where,
                           const char *node, kiln_array *out) {
  const char *name = str(a->name);
  char err[600];
  if (strcmp(name, "value") == 0 && a->t) {
    kiln_onnx_tensor_status st = kiln_onnx_tensor_to_array(a->t, im->dir, out, err, sizeof err);
    if (st == KILN_ONNX_TENSOR_DTYPE) issue(&im->dtypes, "Constant node '%s': %s", node, err);
    if (st == KILN_ONNX_TENSOR_BAD) kiln_diag_error(im->d, where, "value: %s", err);
    return st == KILN_ONNX_TENSOR_OK;
  }
  if (strcmp(name, "value_float") == 0 || strcmp(name, "value_floats") == 0) {
    bool one = name[11] == 0;
    *out = small_array(KILN_F32, one ? 0 : 1, one ? 1 : (int64_t)a->n_floats);
    for (int64_t k = 0; k < (one ? 1 : (int64_t)a->n_floats); k++)
      ((float *)out->data)[k] = one ? a->f : a->floats[k];
    return true;
  }
  if (strcmp(name, "value_int") == 0 || strcmp(name, "value_ints") == 0) {
    bool one = name[9] == 0;
    *out = small_array(KILN_I64, one ? 0 : 1, one ? 1 : (int64_t)a->n_ints);
    for (int64_t k = 0; k < (one ? 1 : (int64_t)a->n_ints); k++)
      ((int64_t *)out->data)[k] = one ? a->i : a->ints[k];
    return true;
  }
  issue(&im->attrs,
        "Constant node '%s' attribute '%s' (only value, value_float(s) and "
        "value_int(s) are supported)",
        node, name);
  return false;
}

static bool import_constant(importer *im, const Onnx__NodeProto *n, const char *where,
                            const char *node) {
  if (n->n_output != 1 || !n->output[0] || !*n->output[0] || n->n_attribute != 1) {
    kiln_diag_error(im->d, where, "a Constant node needs exactly one output and one attribute");
    return false;
  }
  if (find_param(im, n->output[0])) {
    kiln_diag_error(im->d, where, "output '%s' is already defined", n->output[0]);
    return false;
  }
  define(im, n->output[0]);  // even if its value cannot be taken: that is reported once
  kiln_array a;
  char sub[440];
  snprintf(sub, sizeof sub, "%s.attribute[0]", where);
  if (!constant_value(im, n->attribute[0], sub, node, &a)) return false;
  add_param(im, n->output[0], &a);
  json_object_object_add(im->roles, n->output[0], json_object_new_string("constant"));
  return true;
}

// ---- Types, inputs and outputs ----

// Rank, dims and dtype of a tensor type. dims[i] = -1 for a dynamic dimension. False if the type
// is not a tensor (sequence, map, ...) or has no shape.
typedef struct type_info {
  bool is_tensor, has_shape, has_dtype;
  int elem_type;
  int rank;
  int64_t dims[KILN_MAX_RANK];
  const char *dim_param[KILN_MAX_RANK];
} type_info;

static type_info read_type(const Onnx__TypeProto *tp) {
  type_info ti = {0};
  if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type) return ti;
  ti.is_tensor = true;
  const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
  ti.has_dtype = tt->has_elem_type;
  ti.elem_type = tt->elem_type;
  if (!tt->shape || tt->shape->n_dim > KILN_MAX_RANK) return ti;
  ti.has_shape = true;
  ti.rank = (int)tt->shape->n_dim;
  for (int i = 0; i < ti.rank; i++) {
    const Onnx__TensorShapeProto__Dimension *dim = tt->shape->dim[i];
    bool fixed = dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    ti.dims[i] = fixed ? dim->dim_value : -1;
    bool named = dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
    ti.dim_param[i] = named ? str(dim->dim_param) : NULL;
  }
  return ti;
}

static const char *type_kind(const Onnx__TypeProto *tp) {
  if (!tp) return "no type";
  switch (tp->value_case) {
    case ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE: return "a sequence";
    case ONNX__TYPE_PROTO__VALUE_MAP_TYPE: return "a map";
    case ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE: return "an optional";
    case ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE: return "a sparse tensor";
    default: return "no tensor type";
  }
}

static const kiln_input_shape *shape_override(const importer *im, const char *name) {
  for (int i = 0; i < im->n_shapes; i++)
    if (strcmp(im->shapes[i].name, name) == 0) return &im->shapes[i];
  return NULL;
}

static void import_input(importer *im, const Onnx__ValueInfoProto *v, size_t i) {
  const char *name = str(v->name);
  char where[300], tb[32];
  snprintf(where, sizeof where, "graph.input[%zu] (%.200s)", i, name);
  type_info ti = read_type(v->type);
  kiln_dtype dtype = KILN_F32;
  define(im, name);
  if (!ti.is_tensor) {
    issue(&im->dtypes, "input '%s' is %s", name, type_kind(v->type));
    return;
  }
  if (!ti.has_dtype || !kiln_onnx_dtype(ti.elem_type, &dtype))
    issue(&im->dtypes, "input '%s' has dtype %s", name,
          ti.has_dtype ? kiln_onnx_dtype_name(ti.elem_type, tb) : "(none)");
  const kiln_input_shape *o = shape_override(im, name);
  kiln_shape s = {.rank = ti.rank};
  if (o) {
    s = o->shape;
  } else if (!ti.has_shape) {
    issue(&im->shapes_issues, "input '%s' has no shape", name);
  } else {
    for (int k = 0; k < ti.rank; k++) {
      s.dim[k] = ti.dims[k];
      if (ti.dims[k] == 0)
        issue(&im->empty, "input '%s' dimension %d is 0", name, k);
      else if (ti.dims[k] < 0)
        issue(&im->shapes_issues, "input '%s' dimension %d%s%s%s is dynamic", name, k,
              ti.dim_param[k] ? " ('" : "", ti.dim_param[k] ? ti.dim_param[k] : "",
              ti.dim_param[k] ? "')" : "");
    }
  }
  json_object *in = json_object_new_object();
  json_object_object_add(in, "name", json_object_new_string(name));
  json_object_object_add(in, "dtype", json_object_new_string(kiln_dtype_name(dtype)));
  json_object_object_add(in, "shape", shape_json(s.dim, s.rank));
  json_object_array_add(im->inputs, in);
  map_set_int(im->ranks, name, s.rank);
}

// --freeze-input NAME=FILE: the graph input NAME becomes a constant param holding FILE's array
// (checked against the input's dtype and static dimensions). A frozen array with no elements is
// then an omitted optional input, like any empty constant (e.g. ReduceSum's empty axes).
static bool freeze_input(importer *im, const kiln_frozen_input *f) {
  const Onnx__ValueInfoProto *v = NULL;
  for (size_t i = 0; i < im->gr->n_input && !v; i++)
    if (strcmp(str(im->gr->input[i]->name), f->name) == 0 && !find_param(im, f->name))
      v = im->gr->input[i];
  if (!v) {
    kiln_diag_error(im->d, NULL, "--freeze-input %s=%s: the model has no input named '%s'", f->name,
                    f->file, f->name);
    return false;
  }
  type_info ti = read_type(v->type);
  kiln_dtype dtype;
  if (!ti.is_tensor || !ti.has_dtype || !kiln_onnx_dtype(ti.elem_type, &dtype)) return true;
  kiln_shape declared = {.rank = ti.rank};
  for (int k = 0; k < ti.rank; k++) declared.dim[k] = ti.dims[k];
  const kiln_input_shape *o = shape_override(im, f->name);
  if (o) declared = o->shape;
  if (!ti.has_shape && !o) declared.rank = -1;
  kiln_array a;
  if (!kiln_frozen_input_read(f, dtype, &declared, &a, im->d)) return false;
  add_param(im, f->name, &a);
  json_object_object_add(im->roles, f->name, json_object_new_string("constant"));
  return true;
}

static bool import_inputs(importer *im) {
  for (int k = 0; k < im->n_frozen; k++)
    if (!freeze_input(im, &im->frozen[k])) return false;
  for (size_t i = 0; i < im->gr->n_input; i++) {
    const Onnx__ValueInfoProto *v = im->gr->input[i];
    if (!v->name || !*v->name) {
      kiln_diag_error(im->d, NULL, "graph.input[%zu]: an input needs a name", i);
      return false;
    }
    if (find_param(im, v->name)) continue;  // an initializer: a param, not an input
    import_input(im, v, i);
  }
  for (int k = 0; k < im->n_shapes; k++) {
    const char *name = im->shapes[k].name;
    bool found = false;
    for (size_t i = 0; i < im->gr->n_input; i++)
      found |= strcmp(str(im->gr->input[i]->name), name) == 0 && !find_param(im, name);
    if (!found) {
      kiln_diag_error(im->d, NULL, "--shape %s: the model has no input named '%s'", name, name);
      return false;
    }
  }
  return true;
}

// A graph output that is a param or a graph input is not produced by any node, which Kiln requires:
// the param or input gets a private name and an Identity node produces the output.
static void output_through_identity(importer *im, const char *name) {
  char renamed[600];
  snprintf(renamed, sizeof renamed, "%s:source", name);
  int64_t p = map_get_int(im->param_index, name, -1);
  if (p >= 0) {
    free(im->out->names[p]);
    im->out->names[p] = strdup(renamed);
    map_set_int(im->param_index, renamed, p);
    json_object_object_add(im->referenced, renamed, json_object_new_boolean(1));
  } else {
    for (size_t i = 0; i < json_object_array_length(im->inputs); i++) {
      json_object *in = json_object_array_get_idx(im->inputs, i), *n;
      if (json_object_object_get_ex(in, "name", &n) && strcmp(json_object_get_string(n), name) == 0)
        json_object_object_add(in, "name", json_object_new_string(renamed));
    }
  }
  const char *in[1] = {renamed}, *out[1] = {name};
  json_object_array_add(im->nodes, kiln_json_node("Identity", renamed, kiln_json_strings(1, in),
                                                  kiln_json_strings(1, out)));
}

static void produce_unproduced_outputs(importer *im) {
  for (size_t i = 0; i < im->gr->n_output; i++) {
    const char *name = str(im->gr->output[i]->name);
    bool is_input = false;
    for (size_t k = 0; k < json_object_array_length(im->inputs); k++) {
      json_object *n;
      json_object_object_get_ex(json_object_array_get_idx(im->inputs, k), "name", &n);
      is_input |= strcmp(json_object_get_string(n), name) == 0;
    }
    if ((is_input || find_param(im, name)) && kiln_op_find("Identity"))
      output_through_identity(im, name);
  }
}

static void import_outputs(importer *im) {
  for (size_t i = 0; i < im->gr->n_output; i++) {
    const Onnx__ValueInfoProto *v = im->gr->output[i];
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(str(v->name)));
    type_info ti = read_type(v->type);
    kiln_dtype dtype;
    if (ti.is_tensor && ti.has_dtype && kiln_onnx_dtype(ti.elem_type, &dtype))
      json_object_object_add(o, "dtype", json_object_new_string(kiln_dtype_name(dtype)));
    bool fixed = ti.has_shape && im->n_shapes == 0;
    for (int k = 0; fixed && k < ti.rank; k++) fixed = ti.dims[k] > 0;
    if (fixed) json_object_object_add(o, "shape", shape_json(ti.dims, ti.rank));
    if (ti.has_shape) map_set_int(im->ranks, str(v->name), ti.rank);
    json_object_array_add(im->outputs, o);
  }
}

static void record_value_info_ranks(importer *im) {
  for (size_t i = 0; i < im->gr->n_value_info; i++) {
    type_info ti = read_type(im->gr->value_info[i]->type);
    if (ti.has_shape) map_set_int(im->ranks, str(im->gr->value_info[i]->name), ti.rank);
  }
}

// ---- Opset differences ----

static json_object *attr_get(json_object *attrs, const char *name) {
  json_object *v;
  return json_object_object_get_ex(attrs, name, &v) ? v : NULL;
}

static bool is_binary_broadcast_op(const char *op) {
  static const char *const ops[] = {"Add", "Sub",   "Mul",     "Div",  "Pow",   "And", "Or",
                                    "Xor", "Equal", "Greater", "Less", "PRelu", NULL};
  for (int i = 0; ops[i]; i++)
    if (strcmp(op, ops[i]) == 0) return true;
  return false;
}

// Opset 6's `broadcast` (+ `axis`) on binary ops: same as numpy broadcasting unless `axis` puts B
// somewhere other than A's last dimensions.
static void legacy_broadcast(importer *im, const char *op, const char *node, json_object *attrs,
                             json_object *inputs) {
  json_object *axis = attr_get(attrs, "axis");
  if (!attr_get(attrs, "broadcast") || strcmp(op, "Gemm") == 0) {
    json_object_object_del(attrs, "broadcast");
    return;
  }
  if (axis) {
    const char *a = json_object_get_string(json_object_array_get_idx(inputs, 0));
    const char *b = json_object_get_string(json_object_array_get_idx(inputs, 1));
    int64_t ra = map_get_int(im->ranks, a ? a : "", -1),
            rb = map_get_int(im->ranks, b ? b : "", -1);
    int64_t ax = json_object_get_int64(axis);
    if (ra < 0 || rb < 0 || (ax < 0 ? ax + ra : ax) + rb != ra) {
      issue(&im->opsets,
            "%s node '%s' (opset %lld) broadcasts with axis=%lld, which numpy "
            "broadcasting cannot express",
            op, node, (long long)im->opset, (long long)ax);
      return;
    }
    json_object_object_del(attrs, "axis");
  }
  json_object_object_del(attrs, "broadcast");
}

// Softmax-family before opset 13 coerces the input to 2-D at `axis` (default 1).
static void legacy_softmax(importer *im, const char *op, const char *node, json_object *attrs,
                           json_object *inputs, json_object *outputs) {
  json_object *axis = attr_get(attrs, "axis");
  int64_t ax = axis ? json_object_get_int64(axis) : 1;
  const char *x = json_object_get_string(json_object_array_get_idx(inputs, 0));
  const char *y = json_object_get_string(json_object_array_get_idx(outputs, 0));
  int64_t r = map_get_int(im->ranks, x ? x : "", -1);
  if (r < 0) r = map_get_int(im->ranks, y ? y : "", -1);
  if (r > 0 && (ax < 0 ? ax + r : ax) == r - 1) {
    json_object_object_add(attrs, "axis", json_object_new_int64(-1));
    return;
  }
  issue(&im->opsets,
        "%s node '%s' (opset %lld) with axis=%lld over a %s input (before opset 13 "
        "it flattens to 2-D; only the last axis is supported)",
        op, node, (long long)im->opset, (long long)ax, r < 0 ? "rank-unknown" : "multi-axis");
}

// PRelu before opset 7 applies a 1-D slope of C values per channel (axis 1); numpy broadcasting
// needs it shaped (C, 1, ..., 1). The param is reshaped in place (same data).
static void legacy_prelu_slope(importer *im, const char *node, json_object *inputs) {
  const char *x = json_object_get_string(json_object_array_get_idx(inputs, 0));
  const char *s = json_object_get_string(json_object_array_get_idx(inputs, 1));
  int64_t i = s ? map_get_int(im->param_index, s, -1) : -1,
          r = map_get_int(im->ranks, x ? x : "", -1);
  if (i < 0 || r < 0) {
    issue(&im->opsets, "PRelu node '%s' (opset %lld): slope or input rank unknown", node,
          (long long)im->opset);
    return;
  }
  kiln_array *a = &im->out->arrays[i];
  if (a->rank != 1 || a->shape[0] == 1 || r < 3) return;  // same meaning under numpy rules
  for (int k = 1; k < r - 1; k++) a->shape[k] = 1;
  a->rank = (int)r - 1;
}

static void apply_opset_rules(importer *im, const char *op, const char *node, json_object *attrs,
                              json_object *inputs, json_object *outputs) {
  if (im->opset <= 6 && strcmp(op, "PRelu") == 0) legacy_prelu_slope(im, node, inputs);
  if (im->opset <= 6) json_object_object_del(attrs, "is_test");
  if (im->opset < 12 && strcmp(op, "Dropout") == 0)  // an inference-mode identity: ratio unused
    json_object_object_del(attrs, "ratio");
  if (im->opset <= 6 && (is_binary_broadcast_op(op) || strcmp(op, "Gemm") == 0))
    legacy_broadcast(im, op, node, attrs, inputs);
  if (strcmp(op, "BatchNormalization") == 0 && attr_get(attrs, "spatial")) {
    if (json_object_get_int64(attr_get(attrs, "spatial")) == 1)
      json_object_object_del(attrs, "spatial");
    else
      issue(&im->opsets, "BatchNormalization node '%s' with spatial=0", node);
  }
  bool softmax =
      strcmp(op, "Softmax") == 0 || strcmp(op, "LogSoftmax") == 0 || strcmp(op, "Hardmax") == 0;
  if (softmax && im->opset < 13) legacy_softmax(im, op, node, attrs, inputs, outputs);
  if (strcmp(op, "Resize") == 0 && im->opset == 10) {
    if (json_object_array_length(inputs) == 2)  // (X, scales) → (X, roi, scales)
      json_object_array_put_idx(inputs, 2, json_object_get(json_object_array_get_idx(inputs, 1)));
    json_object_array_put_idx(inputs, 1, json_object_new_string(""));
    json_object_object_add(attrs, "coordinate_transformation_mode",
                           json_object_new_string("asymmetric"));
    json_object *mode = attr_get(attrs, "mode");
    if (!mode || strcmp(json_object_get_string(mode), "nearest") == 0)
      json_object_object_add(attrs, "nearest_mode", json_object_new_string("floor"));
  }
}

// ---- Batch-major RNN, GRU and LSTM (layout = 1) ----
// Kiln's recurrent ops are sequence-major (layout 0). With layout 1, X (B, T, I) and initial_h/c
// (B, D, H) go through a Transpose to (T, B, I) and (D, B, H); Y (T, D, B, H) is transposed to
// (B, T, D, H) and Y_h/Y_c (D, B, H) to (B, D, H) under their ONNX names.

// {"op": "Transpose", "name": NODE:layout:IN, "inputs": [in], "outputs": [out], "attrs": {perm}}
static json_object *transpose_node(const char *node, const char *in, const char *out,
                                   const int64_t *perm, int rank) {
  char name[700];
  snprintf(name, sizeof name, "%s:layout:%s", node, in);
  json_object *t = json_object_new_object(), *attrs = json_object_new_object();
  json_object_object_add(t, "op", json_object_new_string("Transpose"));
  json_object_object_add(t, "name", json_object_new_string(name));
  json_object *ins = json_object_new_array(), *outs = json_object_new_array();
  json_object_array_add(ins, json_object_new_string(in));
  json_object_array_add(outs, json_object_new_string(out));
  json_object_object_add(t, "inputs", ins);
  json_object_object_add(t, "outputs", outs);
  json_object_object_add(attrs, "perm", shape_json(perm, rank));
  json_object_object_add(t, "attrs", attrs);
  return t;
}

// Renames names[i] to NODE:layout0:NAME; returns the new name (owned by names).
static const char *rename_entry(json_object *names, size_t i, const char *node) {
  char buf[700];
  snprintf(buf, sizeof buf, "%s:layout0:%s", node,
           json_object_get_string(json_object_array_get_idx(names, i)));
  json_object_array_put_idx(names, i, json_object_new_string(buf));
  return json_object_get_string(json_object_array_get_idx(names, i));
}

// For RNN/GRU/LSTM with layout = 1: adds the input Transposes, drops `layout` and returns the
// output Transposes to add after the node (NULL when there is nothing to do).
static json_object *batch_major_recurrent(importer *im, const char *op, const char *node,
                                          json_object *attrs, json_object *ins, json_object *outs) {
  static const int64_t swap01[] = {1, 0, 2}, y_perm[] = {2, 0, 1, 3};
  bool recurrent = strcmp(op, "RNN") == 0 || strcmp(op, "GRU") == 0 || strcmp(op, "LSTM") == 0;
  json_object *layout = attr_get(attrs, "layout");
  if (!recurrent || !layout || json_object_get_int64(layout) != 1) return NULL;
  json_object_object_del(attrs, "layout");
  static const size_t state_inputs[] = {0, 5, 6};  // X, initial_h, initial_c
  for (size_t k = 0; k < 3; k++) {
    size_t i = state_inputs[k];
    if (i >= json_object_array_length(ins)) continue;
    const char *orig = json_object_get_string(json_object_array_get_idx(ins, i));
    if (!*orig) continue;
    char *keep = strdup(orig);
    const char *renamed = rename_entry(ins, i, node);
    json_object_array_add(im->nodes, transpose_node(node, keep, renamed, swap01, 3));
    free(keep);
  }
  json_object *after = json_object_new_array();
  for (size_t i = 0; i < json_object_array_length(outs) && i < 3; i++) {
    char *orig = strdup(json_object_get_string(json_object_array_get_idx(outs, i)));
    const char *renamed = rename_entry(outs, i, node);
    json_object_array_add(after,
                          transpose_node(node, renamed, orig, i ? swap01 : y_perm, i ? 3 : 4));
    free(orig);
  }
  return after;
}

// ---- Nodes ----

static const char *node_name(importer *im, const Onnx__NodeProto *n, size_t i, char *buf,
                             size_t size) {
  if (n->name && *n->name && !attr_get(im->node_names, n->name))
    snprintf(buf, size, "%s", n->name);
  else if (n->name && *n->name)
    snprintf(buf, size, "%s_%zu", n->name, i);  // ONNX does not enforce unique node names
  else
    snprintf(buf, size, "%s_%zu", str(n->op_type), i);
  json_object_object_add(im->node_names, buf, json_object_new_boolean(1));
  return buf;
}

// A constant with no elements passed as an input means "not given" (e.g. Resize's empty roi).
static bool is_empty_constant(const importer *im, const char *name) {
  const kiln_array *a = find_param(im, name);
  return a && kiln_array_numel(a) == 0;
}

static json_object *node_inputs(importer *im, const Onnx__NodeProto *n, const char *where) {
  size_t count = n->n_input;
  while (count > 0 && (!n->input[count - 1] || !*n->input[count - 1] ||
                       is_empty_constant(im, n->input[count - 1])))
    count--;  // trailing omitted inputs
  json_object *ins = json_object_new_array();
  for (size_t j = 0; j < count; j++) {
    const char *s = str(n->input[j]);
    if (is_empty_constant(im, s)) s = "";
    if (*s && !is_defined(im, s))
      kiln_diag_error(im->d, where,
                      "input[%zu]: no tensor named '%s' (not a graph input, initializer, Constant "
                      "or output of an earlier node)",
                      j, s);
    if (*s && find_param(im, s))
      json_object_object_add(im->referenced, s, json_object_new_boolean(1));
    bool running_stat = (j == 3 || j == 4) && strcmp(str(n->op_type), "BatchNormalization") == 0;
    if (*s && running_stat && find_param(im, s) && !attr_get(im->roles, s))
      json_object_object_add(im->roles, s, json_object_new_string("buffer"));
    json_object_array_add(ins, json_object_new_string(s));
  }
  return ins;
}

static json_object *node_outputs(const Onnx__NodeProto *n, const char *node) {
  size_t count = n->n_output;
  while (count > 0 && (!n->output[count - 1] || !*n->output[count - 1])) count--;
  json_object *outs = json_object_new_array();
  for (size_t j = 0; j < count; j++) {
    const char *s = str(n->output[j]);
    char unused[400];
    if (!*s) {  // an omitted output before a used one still needs a (private) name
      snprintf(unused, sizeof unused, "%s:unused%zu", node, j);
      s = unused;
    }
    json_object_array_add(outs, json_object_new_string(s));
  }
  return outs;
}

// ONNX attribute type → the Kiln attribute type it can be stored as (-1: none).
static int kiln_attr_type_of(int onnx_type) {
  switch (onnx_type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return KILN_ATTR_FLOAT;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return KILN_ATTR_INT;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: return KILN_ATTR_STRING;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS: return KILN_ATTR_FLOATS;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return KILN_ATTR_INTS;
    default: return -1;
  }
}

// An attribute the op knows, stored with a type it does not take (an INT where a FLOAT is expected
// is fine: integers are numbers).
static bool attr_type_matches(const kiln_op_def *def, const Onnx__AttributeProto *a, int *want) {
  for (const kiln_attr_spec *s = def ? def->attrs : NULL; s && s->name; s++) {
    if (strcmp(s->name, a->name) != 0) continue;
    int have = kiln_attr_type_of(attr_type(a));
    *want = (int)s->type;
    return have < 0 || have == (int)s->type ||
           (have == KILN_ATTR_INT && s->type == KILN_ATTR_FLOAT) ||
           (have == KILN_ATTR_INTS && s->type == KILN_ATTR_FLOATS);
  }
  return true;  // unknown attributes are the frontend's to report, with the list of known ones
}

static const char *onnx_name_of_kiln_attr_type(int t) {
  static const char *const names[] = {"INT", "FLOAT", "INTS", "FLOATS", "STRING"};
  return t >= 0 && t < 5 ? names[t] : "?";
}

static json_object *node_attrs(importer *im, const Onnx__NodeProto *n, const char *node,
                               const char *where) {
  const kiln_op_def *def = is_default_domain(n->domain) ? kiln_op_find(str(n->op_type)) : NULL;
  json_object *attrs = json_object_new_object();
  for (size_t k = 0; k < n->n_attribute; k++) {
    const Onnx__AttributeProto *a = n->attribute[k];
    if (!a->name || !*a->name) {
      kiln_diag_error(im->d, where, "attribute[%zu]: an attribute needs a name", k);
      continue;
    }
    if (a->ref_attr_name && *a->ref_attr_name) {
      issue(&im->attrs, "node '%s' attribute '%s' refers to a function attribute", node, a->name);
      continue;
    }
    int want;
    if (!attr_type_matches(def, a, &want)) {
      kiln_diag_error(im->d, where, "attribute[%zu] (%s): %s expects %s, got %s", k, a->name,
                      def->name, onnx_name_of_kiln_attr_type(want), attr_type_name(attr_type(a)));
      continue;
    }
    bool fill = strcmp(str(n->op_type), "ConstantOfShape") == 0 && strcmp(a->name, "value") == 0 &&
                attr_type(a) == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR && a->t;
    json_object *v = fill ? fill_value_json(im, a, attrs) : NULL;
    if (!v) v = attr_json(im, a, node);
    if (v) json_object_object_add(attrs, a->name, v);
  }
  return attrs;
}

// Ops whose definition has not changed since opset 1 in anything Kiln reads: a model of opset 1-5
// that uses only these means what it would at opset 7.
static bool unchanged_since_opset1(const char *op) {
  static const char *const ops[] = {"GlobalAveragePool", "GlobalMaxPool", "Not", "Softplus",
                                    "Softsign",          "Identity",      NULL};
  for (int i = 0; ops[i]; i++)
    if (strcmp(op, ops[i]) == 0) return true;
  return false;
}

// Before opset 6 only the ops above are read; anything else is reported by name.
static void check_old_opset(importer *im, const char *op, const char *node) {
  if (im->opset < 1 || im->opset >= MIN_OPSET || unchanged_since_opset1(op)) return;
  issue(&im->opsets,
        "opset %lld, node '%s' (%s) (Kiln reads opsets 7 to 18, 6 where it means the same, and "
        "1-5 only for ops unchanged since)",
        (long long)im->opset, node, op);
}

static void import_node(importer *im, const Onnx__NodeProto *n, size_t i) {
  char where[400], name[300];
  const char *op = str(n->op_type);
  node_name(im, n, i, name, sizeof name);
  snprintf(where, sizeof where, "graph.node[%zu] (%.300s)", i, name);
  if (!*op) {
    kiln_diag_error(im->d, where, "op_type is missing");
    return;
  }
  bool ours = is_default_domain(n->domain);
  if (ours && strcmp(op, "Constant") == 0) {
    import_constant(im, n, where, name);
    return;
  }
  if (!ours)
    issue(&im->ops, "%s.%s (node '%s')", n->domain, op, name);
  else if (!kiln_op_find(op))
    issue(&im->ops, "%s (node '%s')", op, name);
  if (ours && im->opset < 0 && !im->opsets.count)
    issue(&im->opsets, "no opset_import for the default ONNX domain, used by node '%s'", name);
  if (ours) check_old_opset(im, op, name);
  json_object *ins = node_inputs(im, n, where), *outs = node_outputs(n, name);
  for (size_t j = 0; j < n->n_output; j++)
    if (n->output[j] && *n->output[j]) define(im, n->output[j]);
  json_object *attrs = node_attrs(im, n, name, where);
  apply_opset_rules(im, op, name, attrs, ins, outs);
  json_object *after = batch_major_recurrent(im, op, name, attrs, ins, outs);
  json_object *node = kiln_json_node(op, name, ins, outs);
  json_object_object_add(node, "attrs", attrs);  // dropped below if still empty
  json_object_array_add(im->nodes, node);
  if (!json_object_object_length(attrs)) json_object_object_del(node, "attrs");
  for (size_t k = 0; after && k < json_object_array_length(after); k++)
    json_object_array_add(im->nodes, json_object_get(json_object_array_get_idx(after, k)));
  json_object_put(after);
}

// ---- Assembly ----

// A param's `role`: BatchNormalization's mean and var are buffers, Constant nodes and integer
// initializers (shapes, indices: never learned) constants; the rest are weights (no field).
static void add_role(importer *im, json_object *param, const char *name, kiln_dtype dtype) {
  json_object *role = attr_get(im->roles, name);
  const char *s = role ? json_object_get_string(role) : NULL;
  if (!s && !kiln_dtype_is_float(dtype)) s = "constant";
  if (s) json_object_object_add(param, "role", json_object_new_string(s));
}

// Keeps only the params some node reads, in definition order, and lists them in the JSON.
static void emit_params(importer *im) {
  kiln_onnx_model *m = im->out;
  int kept = 0;
  for (int i = 0; i < m->count; i++) {
    if (!attr_get(im->referenced, m->names[i])) {
      free(m->names[i]);
      kiln_array_free(&m->arrays[i]);
      continue;
    }
    m->names[kept] = m->names[i];
    m->arrays[kept] = m->arrays[i];
    kiln_dtype dtype = (kiln_dtype)m->arrays[kept].dtype;
    json_object *p = json_object_new_object();
    json_object_object_add(p, "name", json_object_new_string(m->names[kept]));
    json_object_object_add(p, "dtype", json_object_new_string(kiln_dtype_name(dtype)));
    json_object_object_add(p, "shape", shape_json(m->arrays[kept].shape, m->arrays[kept].rank));
    add_role(im, p, m->names[kept], dtype);
    json_object_array_add(im->params, p);
    kept++;
  }
  m->count = kept;
  m->weights.count = kept;
  m->weights.entries = calloc((size_t)kept + 1, sizeof(kiln_st_entry));
  if (!m->weights.entries) abort();
  for (int i = 0; i < kept; i++) {
    kiln_st_entry *e = &m->weights.entries[i];
    e->name = strdup(m->names[i]);
    e->dtype = m->arrays[i].dtype;
    e->rank = m->arrays[i].rank;
    memcpy(e->shape, m->arrays[i].shape, sizeof e->shape);
    e->data = m->arrays[i].data;
    e->nbytes = m->arrays[i].nbytes;
  }
}

// The model name prefixes generated C symbols: the file's stem as a C identifier.
static char *model_name(const char *path) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  size_t len = strlen(base);
  if (len > 5 && strcmp(base + len - 5, ".onnx") == 0) len -= 5;
  char *name = malloc(len + 2), *p = name;
  if (!name) abort();
  if (len == 0 || isdigit((unsigned char)base[0])) *p++ = '_';
  for (size_t i = 0; i < len; i++) *p++ = isalnum((unsigned char)base[i]) ? base[i] : '_';
  *p = 0;
  return name;
}

static void report_issues(importer *im) {
  struct {
    const char *label;
    issue_list *l;
  } sections[] = {
      {"unsupported ops", &im->ops},          {"unsupported opsets", &im->opsets},
      {"unsupported dtypes", &im->dtypes},    {"unsupported attributes", &im->attrs},
      {"dynamic shapes", &im->shapes_issues}, {"empty tensors (a dimension of 0)", &im->empty}};
  char *msg = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&msg, &len);
  if (!f) abort();
  int total = 0;
  for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
    if (!sections[i].l->count) continue;
    fprintf(f, "\n  %s (%d): %s", sections[i].label, sections[i].l->count, sections[i].l->text);
    total += sections[i].l->count;
  }
  if (im->shapes_issues.count)
    fputs("\n  (fix input shapes with --shape NAME=DIMxDIMx..., e.g. --shape x=1x3x224x224)", f);
  fclose(f);
  if (total) kiln_diag_error(im->d, NULL, "cannot import this model:%s", msg);
  free(msg);
}

static bool read_opset(importer *im, const Onnx__ModelProto *mp) {
  im->opset = -1;
  for (size_t i = 0; i < mp->n_opset_import; i++)
    if (is_default_domain(mp->opset_import[i]->domain) && mp->opset_import[i]->has_version)
      im->opset = mp->opset_import[i]->version;
  if (im->opset < 0) return true;  // fine while no node of the default domain needs one
  // Opsets 1-5 are checked node by node (unchanged_since_opset1).
  if (im->opset < 1 || im->opset > MAX_OPSET)
    issue(&im->opsets, "opset %lld (Kiln reads opsets 7 to 18, and 6 where it means the same)",
          (long long)im->opset);
  return true;
}

static void convert(importer *im, const Onnx__ModelProto *mp) {
  im->gr = mp->graph;
  if (!im->gr) {
    kiln_diag_error(im->d, "graph", "the model has no graph");
    return;
  }
  if (!read_opset(im, mp) || !load_initializers(im) || !import_inputs(im)) return;
  import_outputs(im);
  record_value_info_ranks(im);
  for (size_t i = 0; i < im->gr->n_node; i++) import_node(im, im->gr->node[i], i);
  produce_unproduced_outputs(im);
  if (im->d->errors) return;
  emit_params(im);
  report_issues(im);
}

static json_object *new_document(importer *im) {
  json_object *doc = json_object_new_object();
  char *name = model_name(im->path);
  json_object_object_add(doc, "format", json_object_new_string("kiln-model"));
  json_object_object_add(doc, "version", json_object_new_int(1));
  json_object_object_add(doc, "name", json_object_new_string(name));
  free(name);
  json_object_object_add(doc, "inputs", im->inputs = json_object_new_array());
  json_object_object_add(doc, "outputs", im->outputs = json_object_new_array());
  json_object_object_add(doc, "params", im->params = json_object_new_array());
  json_object_object_add(doc, "nodes", im->nodes = json_object_new_array());
  return doc;
}

static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return strdup(".");
  if (slash == path) return strdup("/");
  return strndup(path, (size_t)(slash - path));
}

static void importer_free(importer *im) {
  free(im->dir);
  json_object_put(im->param_index);
  json_object_put(im->referenced);
  json_object_put(im->roles);
  json_object_put(im->ranks);
  json_object_put(im->node_names);
  json_object_put(im->defined);
  issue_list *lists[] = {&im->ops,   &im->opsets,        &im->dtypes,
                         &im->attrs, &im->shapes_issues, &im->empty};
  for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) free(lists[i]->text);
}

bool kiln_onnx_import(const char *path, const kiln_input_shape *shapes, int n_shapes, kiln_diag *d,
                      kiln_onnx_model *out) {
  kiln_load_options o = {.shapes = shapes, .n_shapes = n_shapes};
  return kiln_onnx_import_ex(path, &o, d, out);
}

bool kiln_onnx_import_ex(const char *path, const kiln_load_options *o, kiln_diag *d,
                         kiln_onnx_model *out) {
  memset(out, 0, sizeof *out);
  char err[600];
  size_t len;
  unsigned char *buf = kiln_onnx_read_file(path, KILN_ONNX_MAX_FILE_BYTES, &len, err, sizeof err);
  if (!buf) {
    kiln_diag_error(d, NULL, "%s", err);
    return false;
  }
  Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
  free(buf);
  if (!mp) {
    kiln_diag_error(d, NULL, "not a valid ONNX model: the protobuf data is malformed or truncated");
    return false;
  }
  int errors0 = d->errors;
  importer im = {.path = path,
                 .dir = dir_of(path),
                 .d = d,
                 .out = out,
                 .shapes = o ? o->shapes : NULL,
                 .n_shapes = o ? o->n_shapes : 0,
                 .frozen = o ? o->frozen : NULL,
                 .n_frozen = o ? o->n_frozen : 0};
  im.param_index = json_object_new_object();
  im.referenced = json_object_new_object();
  im.roles = json_object_new_object();
  im.ranks = json_object_new_object();
  im.node_names = json_object_new_object();
  im.defined = json_object_new_object();
  out->json = new_document(&im);
  convert(&im, mp);
  onnx__model_proto__free_unpacked(mp, NULL);
  importer_free(&im);
  if (d->errors != errors0) {
    kiln_onnx_model_free(out);
    return false;
  }
  return true;
}

void kiln_onnx_model_free(kiln_onnx_model *m) {
  json_object_put(m->json);
  for (int i = 0; i < m->count; i++) {
    free(m->names[i]);
    kiln_array_free(&m->arrays[i]);
  }
  free(m->names);
  free(m->arrays);
  for (int i = 0; i < m->weights.count; i++) free(m->weights.entries[i].name);
  free(m->weights.entries);
  memset(m, 0, sizeof *m);
}
