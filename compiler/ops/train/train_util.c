// Shared checks of the training ops (train_internal.h).
#include <string.h>

#include "train_internal.h"

const char *const kiln_train_reductions[3] = {"mean", "sum", "batchmean"};

bool kiln_train_check_shape(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                            const kiln_shape *want, const char *like) {
  const kiln_tensor *t = kiln_in(g, n, i);
  if (t && kiln_shape_equal(&t->shape, want)) return true;
  kiln_op_error(d, n, "inputs[%d] (%s): expected shape %s like %s, got %s", i,
                t ? t->name : "missing", kiln_shape_text(want).text, like,
                t ? kiln_shape_text(&t->shape).text : "nothing");
  return false;
}

bool kiln_train_check_scalar(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i,
                             kiln_dtype t, const char *what) {
  const kiln_tensor *x = kiln_in(g, n, i);
  kiln_shape one = kiln_train_scalar_shape();
  if (x && x->dtype == t && kiln_shape_equal(&x->shape, &one)) return true;
  kiln_op_error(d, n, "inputs[%d] (%s): expected the %s, a %s tensor of shape (1), got %s%s%s", i,
                x ? x->name : "missing", what, kiln_dtype_name(t),
                x ? kiln_dtype_name(x->dtype) : "", x ? " " : "nothing",
                x ? kiln_shape_text(&x->shape).text : "");
  return false;
}

int kiln_train_read_choice(const kiln_node *n, kiln_diag *d, const char *attr,
                           const char *const *names, int count, int dflt) {
  const char *s = kiln_attr_string(n, attr, NULL);
  if (!s) return dflt;
  for (int i = 0; i < count; i++)
    if (strcmp(s, names[i]) == 0) return i;
  kiln_op_error(d, n, "attrs.%s: unknown value \"%.60s\"", attr, s);
  return -1;
}

double kiln_train_reduction_scale(const kiln_node *n, const kiln_shape *pred) {
  int r = kiln_train_read_choice(n, NULL, "reduction", kiln_train_reductions, 3, 0);
  if (r == 1) return 1.0;
  if (r == 2) return 1.0 / (double)pred->dim[0];
  return 1.0 / (double)kiln_shape_numel(pred);
}
