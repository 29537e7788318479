// `kiln inspect`: the compiled graph as text, as one JSON object, or as Graphviz dot.
#include "inspect.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <string.h>

#include "ops/op.h"

// Params and, in training graphs, the trainable weights and optimizer state (STATE).
static bool is_weight(const kiln_tensor *t) {
  return t->kind == KILN_TENSOR_PARAM || t->kind == KILN_TENSOR_STATE;
}

void kiln_graph_count_params(const kiln_graph *g, int64_t by_role[KILN_N_ROLES]) {
  for (int r = 0; r < KILN_N_ROLES; r++) by_role[r] = 0;
  for (int i = 0; i < g->n_tensors; i++) {
    const kiln_tensor *t = &g->tensors[i];
    if (is_weight(t) && (unsigned)t->role < KILN_N_ROLES)
      by_role[t->role] += kiln_shape_numel(&t->shape);
  }
}

static int64_t param_bytes(const kiln_graph *g) {
  int64_t n = 0;
  for (int i = 0; i < g->n_tensors; i++) {
    const kiln_tensor *t = &g->tensors[i];
    if (is_weight(t)) n += kiln_shape_numel(&t->shape) * (int64_t)kiln_dtype_size(t->dtype);
  }
  return n;
}

static int64_t node_flops(const kiln_graph *g, const kiln_node *n) {
  const kiln_op_def *def = kiln_op_get(n->op);
  return def->flops ? def->flops(g, n) : 0;
}

int64_t kiln_graph_flops(const kiln_graph *g) {
  int64_t f = 0;
  for (int i = 0; i < g->n_nodes; i++) f += node_flops(g, &g->nodes[i]);
  return f;
}

// ---- text ----

static void print_attr(const kiln_attr *a, FILE *out) {
  fprintf(out, "%s=", a->name);
  switch (a->type) {
    case KILN_ATTR_INT: fprintf(out, "%" PRId64, a->i); break;
    case KILN_ATTR_FLOAT: fprintf(out, "%g", a->f); break;
    case KILN_ATTR_STRING: fprintf(out, "\"%s\"", a->s); break;
    case KILN_ATTR_INTS:
    case KILN_ATTR_FLOATS:
      fputc('[', out);
      for (int i = 0; i < a->count; i++) {
        if (a->type == KILN_ATTR_INTS)
          fprintf(out, "%s%" PRId64, i ? "," : "", a->ints[i]);
        else
          fprintf(out, "%s%g", i ? "," : "", a->floats[i]);
      }
      fputc(']', out);
      break;
  }
}

static void print_tensor_type(const kiln_tensor *t, FILE *out) {
  char s[160];
  fprintf(out, "%s%s", kiln_dtype_name(t->dtype), kiln_shape_str(&t->shape, s, sizeof(s)));
}

void kiln_graph_print(const kiln_graph *g, FILE *out) {
  fprintf(out, "graph %s {\n", g->name);
  for (int i = 0; i < g->n_inputs; i++) {
    fprintf(out, "  input %%%s: ", g->tensors[g->inputs[i]].name);
    print_tensor_type(&g->tensors[g->inputs[i]], out);
    fputc('\n', out);
  }
  for (int i = 0; i < g->n_tensors; i++) {
    if (!is_weight(&g->tensors[i])) continue;
    fprintf(out, "  %s %%%s: ", g->tensors[i].kind == KILN_TENSOR_STATE ? "state" : "param",
            g->tensors[i].name);
    print_tensor_type(&g->tensors[i], out);
    fputc('\n', out);
  }
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    fputs("  ", out);
    for (int k = 0; k < n->n_outputs; k++) {
      fprintf(out, "%s%%%s: ", k ? ", " : "", kiln_out(g, n, k)->name);
      print_tensor_type(kiln_out(g, n, k), out);
    }
    fprintf(out, " = %s", kiln_op_get(n->op)->name);
    if (n->n_attrs) {
      fputc('[', out);
      for (int k = 0; k < n->n_attrs; k++) {
        if (k) fputs(", ", out);
        print_attr(&n->attrs[k], out);
      }
      fputc(']', out);
    }
    fputc('(', out);
    for (int k = 0; k < n->n_inputs; k++)
      fprintf(out, "%s%%%s", k ? ", " : "", kiln_in(g, n, k) ? kiln_in(g, n, k)->name : "");
    fprintf(out, ")  # %s\n", n->name);
  }
  fputs("  return", out);
  for (int i = 0; i < g->n_outputs; i++)
    fprintf(out, "%s %%%s", i ? "," : "", g->tensors[g->outputs[i]].name);
  fputs("\n}\n", out);
}

static void print_io_rows(const kiln_graph *g, const int *ts, int n, FILE *out) {
  for (int i = 0; i < n; i++) {
    fprintf(out, "  %-24s ", g->tensors[ts[i]].name);
    print_tensor_type(&g->tensors[ts[i]], out);
    fputc('\n', out);
  }
}

void kiln_inspect_text(const kiln_compilation *c, FILE *out) {
  const kiln_graph *g = c->g;
  fprintf(out, "model %s (%s)\ninputs:\n", g->name, g->source_file);
  print_io_rows(g, g->inputs, g->n_inputs, out);
  fputs("outputs:\n", out);
  print_io_rows(g, g->outputs, g->n_outputs, out);
  fprintf(out, "nodes:\n  %-4s %-20s %-16s %-28s %14s\n", "#", "name", "op", "output", "flops");
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    char s[160];
    char type[200] = "(updates state)";  // an optimizer update has no outputs
    if (n->n_outputs) {
      const kiln_tensor *t = kiln_out(g, n, 0);
      snprintf(type, sizeof(type), "%s%s", kiln_dtype_name(t->dtype),
               kiln_shape_str(&t->shape, s, sizeof(s)));
    }
    fprintf(out, "  %-4d %-20s %-16s %-28s %14" PRId64 "\n", i, n->name, kiln_op_get(n->op)->name,
            type, node_flops(g, n));
  }
  const int64_t *n = c->declared_params;
  fprintf(out, "params: %" PRId64 " (learned weights, as PyTorch's parameters() counts them)\n",
          n[KILN_ROLE_WEIGHT]);
  fprintf(out, "buffers: %" PRId64 "\nconstants: %" PRId64 "\n", n[KILN_ROLE_BUFFER],
          n[KILN_ROLE_CONSTANT]);
  fprintf(out, "param_bytes: %" PRId64 " (every param, after the passes)\n", param_bytes(g));
  fprintf(out, "flops: %" PRId64 "\n", kiln_graph_flops(g));
  if (c->prog || c->weights) {
    fprintf(out, "arena_bytes: %" PRId64 "\n", c->arena_bytes);
    fprintf(out, "weights_bytes: %" PRId64 "\n", c->weights_bytes);
  } else {
    fputs("arena_bytes: (not planned before this pass)\n", out);
  }
}

// ---- JSON ----

static json_object *json_shape(const kiln_shape *s) {
  json_object *a = json_object_new_array();
  for (int i = 0; i < s->rank; i++) json_object_array_add(a, json_object_new_int64(s->dim[i]));
  return a;
}

static json_object *json_tensor(const kiln_tensor *t) {
  json_object *o = json_object_new_object();
  json_object_object_add(o, "name", json_object_new_string(t->name));
  json_object_object_add(o, "shape", json_shape(&t->shape));
  json_object_object_add(o, "dtype", json_object_new_string(kiln_dtype_name(t->dtype)));
  return o;
}

static json_object *json_tensor_list(const kiln_graph *g, const int *ts, int n) {
  json_object *a = json_object_new_array();
  for (int i = 0; i < n; i++)
    json_object_array_add(a, ts[i] >= 0 ? json_tensor(&g->tensors[ts[i]]) : json_object_new_null());
  return a;
}

static json_object *json_node(const kiln_graph *g, const kiln_node *n) {
  json_object *o = json_object_new_object();
  json_object_object_add(o, "name", json_object_new_string(n->name));
  json_object_object_add(o, "op", json_object_new_string(kiln_op_get(n->op)->name));
  json_object_object_add(o, "inputs", json_tensor_list(g, n->inputs, n->n_inputs));
  json_object_object_add(o, "outputs", json_tensor_list(g, n->outputs, n->n_outputs));
  json_object_object_add(o, "flops", json_object_new_int64(node_flops(g, n)));
  const kiln_tensor *t = n->n_outputs ? kiln_out(g, n, 0) : NULL;
  json_object_object_add(o, "arena_offset",
                         t && t->offset >= 0 && t->kind == KILN_TENSOR_VALUE && !t->is_output
                             ? json_object_new_int64(t->offset)
                             : json_object_new_null());
  return o;
}

void kiln_inspect_json(const kiln_compilation *c, FILE *out) {
  const kiln_graph *g = c->g;
  bool planned = c->prog || c->weights;
  json_object *o = json_object_new_object();
  json_object_object_add(o, "name", json_object_new_string(g->name));
  json_object_object_add(o, "inputs", json_tensor_list(g, g->inputs, g->n_inputs));
  json_object_object_add(o, "outputs", json_tensor_list(g, g->outputs, g->n_outputs));
  json_object_object_add(o, "params", json_object_new_int64(c->declared_params[KILN_ROLE_WEIGHT]));
  json_object_object_add(o, "buffers", json_object_new_int64(c->declared_params[KILN_ROLE_BUFFER]));
  json_object_object_add(o, "constants",
                         json_object_new_int64(c->declared_params[KILN_ROLE_CONSTANT]));
  json_object_object_add(o, "param_bytes", json_object_new_int64(param_bytes(g)));
  json_object_object_add(o, "flops", json_object_new_int64(kiln_graph_flops(g)));
  json_object_object_add(o, "arena_bytes",
                         planned ? json_object_new_int64(c->arena_bytes) : json_object_new_null());
  json_object_object_add(
      o, "weights_bytes",
      planned ? json_object_new_int64(c->weights_bytes) : json_object_new_null());
  json_object *nodes = json_object_new_array();
  for (int i = 0; i < g->n_nodes; i++) json_object_array_add(nodes, json_node(g, &g->nodes[i]));
  json_object_object_add(o, "nodes", nodes);
  fprintf(
      out, "%s\n",
      json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
  json_object_put(o);
}

// ---- Graphviz ----

static void dot_escape(const char *s, FILE *out) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', out);
    fputc(*s, out);
  }
}

static void dot_edge_label(const kiln_tensor *t, FILE *out) {
  fputs(" [label=\"", out);
  for (int i = 0; i < t->shape.rank; i++) fprintf(out, "%s%" PRId64, i ? "×" : "", t->shape.dim[i]);
  fputs("\"]", out);
}

void kiln_inspect_dot(const kiln_compilation *c, FILE *out) {
  const kiln_graph *g = c->g;
  fputs("digraph \"", out);
  dot_escape(g->name, out);
  fputs(
      "\" {\n  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];\n"
      "  edge [fontname=\"Helvetica\", fontsize=9];\n",
      out);
  for (int t = 0; t < g->n_tensors; t++) {
    const kiln_tensor *x = &g->tensors[t];
    if (x->kind == KILN_TENSOR_VALUE && !x->is_output) continue;
    fprintf(out, "  t%d [shape=%s, label=\"", t, x->kind == KILN_TENSOR_PARAM ? "note" : "ellipse");
    dot_escape(x->name, out);
    char s[160];
    fprintf(out, "\\n%s%s\"%s];\n", kiln_dtype_name(x->dtype),
            kiln_shape_str(&x->shape, s, sizeof(s)),
            x->kind == KILN_TENSOR_PARAM ? ", style=filled, fillcolor=\"#eeeeee\"" : "");
  }
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    fprintf(out, "  n%d [shape=box, style=\"rounded,filled\", fillcolor=\"#ffe9c7\", label=\"%s\\n",
            i, kiln_op_get(n->op)->name);
    dot_escape(n->name, out);
    fputs("\"];\n", out);
    for (int k = 0; k < n->n_inputs; k++) {
      const kiln_tensor *t = kiln_in(g, n, k);
      if (!t) continue;
      if (t->producer >= 0)
        fprintf(out, "  n%d -> n%d", t->producer, i);
      else
        fprintf(out, "  t%d -> n%d", n->inputs[k], i);
      dot_edge_label(t, out);
      fputs(";\n", out);
    }
    for (int k = 0; k < n->n_outputs; k++) {
      const kiln_tensor *t = kiln_out(g, n, k);
      if (!t->is_output) continue;
      fprintf(out, "  n%d -> t%d", i, n->outputs[k]);
      dot_edge_label(t, out);
      fputs(";\n", out);
    }
  }
  fputs("}\n", out);
}
