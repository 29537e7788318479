// Reshape (ONNX, allowzero = 0): x -> a shape given by input 1, which must be a constant: an i64
// param with data. In the shape, 0 copies the input's dimension at that position and -1 (at most
// once) takes whatever makes the element counts agree. The data does not move: a copy loop,
// which later passes may alias.
#include "../../autodiff/builder.h"
#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"allowzero", KILN_ATTR_INT, false}, {0}};

// Checks the shape input is a constant 1-D i64 tensor of at most KILN_MAX_RANK values.
static bool check_shape_input(const kiln_node *n, kiln_diag *d, const kiln_tensor *s) {
  if (!s || s->kind != KILN_TENSOR_PARAM || !s->data || s->dtype != KILN_I64) {
    kiln_op_error(d, n,
                  "inputs[1]%s%s%s: Reshape needs a constant shape (a param with init, dtype i64)",
                  s ? " (" : "", s ? s->name : "", s ? ")" : "");
    return false;
  }
  if (s->shape.rank != 1 || s->shape.dim[0] > KILN_MAX_RANK) {
    kiln_op_error(d, n, "inputs[1] (%s): expected a 1-D shape of at most %d values, got %s",
                  s->name, KILN_MAX_RANK, kiln_shape_text(&s->shape).text);
    return false;
  }
  return true;
}

// Resolves 0 and -1 in the requested shape; reports what does not fit.
static bool resolve(const kiln_node *n, kiln_diag *d, const kiln_tensor *x, const kiln_tensor *s,
                    kiln_shape *out) {
  char req[256];
  int64_t want[KILN_MAX_RANK], known = 1;
  int rank = (int)s->shape.dim[0], infer_at = -1;
  for (int i = 0; i < rank; i++) want[i] = (int64_t)kiln_tensor_get(s, i);
  kiln_ints_str(want, rank, req, sizeof req);
  *out = (kiln_shape){.rank = rank};
  for (int i = 0; i < rank; i++) {
    int64_t v = want[i];
    if (v == 0 && i >= x->shape.rank) {
      kiln_op_error(d, n, "inputs[1] (%s): shape %s copies dimension %d (0) but %s has rank %d",
                    s->name, req, i, kiln_describe(x).text, x->shape.rank);
      return false;
    }
    if (v < -1 || (v == -1 && infer_at >= 0)) {
      kiln_op_error(d, n,
                    "inputs[1] (%s): expected dimensions >= 0 and at most one -1, got shape %s",
                    s->name, req);
      return false;
    }
    if (v == -1) infer_at = i;
    out->dim[i] = v == 0 ? x->shape.dim[i] : v;
    if (v != -1) known *= out->dim[i];
  }
  int64_t numel = kiln_shape_numel(&x->shape);
  if (infer_at >= 0 && known > 0 && numel % known == 0) out->dim[infer_at] = numel / known;
  if ((infer_at >= 0 && (known == 0 || numel % known != 0)) || kiln_shape_numel(out) != numel) {
    kiln_op_error(d, n, "inputs[1] (%s): shape %s does not fit the %lld elements of %s", s->name,
                  req, (long long)numel, kiln_describe(x).text);
    return false;
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  const kiln_tensor *x = kiln_in(g, n, 0), *s = kiln_in(g, n, 1);
  int64_t allowzero;
  if (!x) {
    kiln_op_error(d, n, "inputs[0]: missing");
    return false;
  }
  if (!kiln_op_read_int(n, d, "allowzero", 0, 0, 0, &allowzero)) return false;
  kiln_shape out;
  if (!check_shape_input(n, d, s) || !resolve(n, d, x, s, &out)) return false;
  kiln_op_set_output(g, n, 0, x->dtype, &out);
  return true;
}

// Gradient (docs/training.md): the same elements, back in x's shape.
static bool grad(kiln_grad_ctx *c) {
  c->dx[0] = kiln_gb_reshape(c, c->dy[0], &c->g->tensors[c->node.inputs[0]].shape);
  return c->dx[0] >= 0;
}

const kiln_op_def kiln_op_Reshape = {
    .name = "Reshape",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_INJECTIVE,
    .infer = infer,
    .eval = kiln_copy_eval,
    .lower = kiln_copy_lower,
    .flops = kiln_no_flops,
    .tol = {0, 0},
    .grad = grad,
};
