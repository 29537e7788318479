// The reference interpreter. Every tensor is held as doubles, rounded to its dtype after the node
// that produces it, and every node runs its op's naive reference kernel. STATE tensors (training)
// start from their data, side-effect nodes write them, and the run stores them back (rounded to
// their dtype) into the graph, so each run of a training graph is one training step.
#include "interp.h"

#include <stdlib.h>
#include <string.h>

#include "ops/op.h"

static bool check_input(const kiln_graph *g, int i, const kiln_array *a, kiln_diag *d) {
  const kiln_tensor *t = &g->tensors[g->inputs[i]];
  kiln_shape s = {.rank = a->rank};
  memcpy(s.dim, a->shape, sizeof(int64_t) * (size_t)a->rank);
  char want[128], got[128];
  if ((int)t->dtype != a->dtype) {
    kiln_diag_error(d, t->name, "input has dtype %s, the model expects %s",
                    kiln_rt_dtype_name(a->dtype), kiln_dtype_name(t->dtype));
    return false;
  }
  if (!kiln_shape_equal(&s, &t->shape)) {
    kiln_diag_error(d, t->name, "input has shape %s, the model expects %s",
                    kiln_shape_str(&s, got, 128), kiln_shape_str(&t->shape, want, 128));
    return false;
  }
  return true;
}

static double *tensor_values(const kiln_tensor *t) {
  int64_t n = kiln_shape_numel(&t->shape);
  double *v = kiln_xmalloc(sizeof(double) * (size_t)(n ? n : 1));
  if (t->kind == KILN_TENSOR_PARAM || t->kind == KILN_TENSOR_STATE)
    for (int64_t i = 0; i < n; i++) v[i] = kiln_tensor_get(t, i);
  return v;
}

static void run_node(const kiln_graph *g, const kiln_node *n, double **values) {
  kiln_eval_tensor in[16] = {0}, out[16] = {0};
  for (int k = 0; k < n->n_inputs && k < 16; k++) {
    const kiln_tensor *t = kiln_in(g, n, k);
    if (!t) continue;  // an omitted optional input: data stays NULL
    in[k] = (kiln_eval_tensor){&t->shape, t->dtype, values[n->inputs[k]]};
  }
  for (int k = 0; k < n->n_outputs && k < 16; k++) {
    const kiln_tensor *t = kiln_out(g, n, k);
    values[n->outputs[k]] = tensor_values(t);
    out[k] = (kiln_eval_tensor){&t->shape, t->dtype, values[n->outputs[k]]};
  }
  kiln_op_get(n->op)->eval(n, in, out);
  for (int k = 0; k < n->n_outputs && k < 16; k++) {
    int64_t count = kiln_shape_numel(out[k].shape);
    for (int64_t i = 0; i < count; i++)
      out[k].data[i] = kiln_dtype_round(out[k].dtype, out[k].data[i]);
  }
}

void kiln_array_like(const kiln_tensor *t, kiln_array *a) {
  memset(a, 0, sizeof(*a));
  a->dtype = (int)t->dtype;
  a->rank = t->shape.rank;
  memcpy(a->shape, t->shape.dim, sizeof(int64_t) * (size_t)t->shape.rank);
  a->nbytes = (size_t)kiln_shape_numel(&t->shape) * kiln_dtype_size(t->dtype);
  a->data = kiln_aligned_alloc(a->nbytes ? a->nbytes : 1);
  if (!a->data) abort();
  memset(a->data, 0, a->nbytes);
}

static void make_output(const kiln_tensor *t, const double *v, kiln_array *a) {
  kiln_array_like(t, a);
  int64_t n = kiln_shape_numel(&t->shape);
  for (int64_t i = 0; i < n; i++) kiln_element_set(a->data, a->dtype, i, v[i]);
}

bool kiln_interp_run(const kiln_graph *g, const kiln_array *inputs, kiln_array *outputs,
                     kiln_diag *d) {
  return kiln_interp_run_observed(g, inputs, outputs, d, NULL, NULL);
}

bool kiln_interp_run_observed(const kiln_graph *g, const kiln_array *inputs, kiln_array *outputs,
                              kiln_diag *d, kiln_interp_observer observe, void *ctx) {
  bool ok = true;
  for (int i = 0; i < g->n_inputs; i++) ok = check_input(g, i, &inputs[i], d) && ok;
  if (!ok) return false;
  double **values = kiln_xcalloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof(double *));
  for (int t = 0; t < g->n_tensors; t++)
    if (g->tensors[t].kind == KILN_TENSOR_PARAM || g->tensors[t].kind == KILN_TENSOR_STATE)
      values[t] = tensor_values(&g->tensors[t]);
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_tensor *t = &g->tensors[g->inputs[i]];
    values[g->inputs[i]] = tensor_values(t);
    for (int64_t k = 0; k < kiln_shape_numel(&t->shape); k++)
      values[g->inputs[i]][k] = kiln_element_get(inputs[i].data, inputs[i].dtype, k);
    if (observe) observe(g, g->inputs[i], values[g->inputs[i]], ctx);
  }
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    run_node(g, n, values);
    for (int k = 0; observe && k < n->n_outputs; k++)
      observe(g, n->outputs[k], values[n->outputs[k]], ctx);
  }
  for (int t = 0; t < g->n_tensors; t++) {  // the step's writes persist
    const kiln_tensor *x = &g->tensors[t];
    if (x->kind == KILN_TENSOR_STATE)
      for (int64_t k = 0; k < kiln_shape_numel(&x->shape); k++)
        kiln_element_set(x->data, (int)x->dtype, k, values[t][k]);
  }
  for (int i = 0; i < g->n_outputs; i++)
    make_output(&g->tensors[g->outputs[i]], values[g->outputs[i]], &outputs[i]);
  for (int t = 0; t < g->n_tensors; t++) free(values[t]);
  free(values);
  return true;
}
