// FusedElementwise: a chain of elementwise ops computed as one kernel (fused_elementwise.h has the
// attribute format; compiler/passes/fuse_elementwise.c builds it). Nothing is re-implemented: the
// reference kernel runs each member's own `eval` on the whole tensor and rounds it to the dtype,
// exactly as the interpreter does between unfused nodes (so results are bit-identical to the
// unfused graph's), and the lowering composes the members' own per-element expressions
// (kiln_op_def.elementwise) in one loop nest, each intermediate in a scalar local of the dtype (the
// same rounding as a store to an unfused buffer), with no intermediate tensor in memory.
#include "fused_elementwise.h"

#include <stdlib.h>
#include <string.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {
    {"ops", KILN_ATTR_STRING, true}, {"operands", KILN_ATTR_INTS, true}, {0}};

typedef struct member {
  int op;
  int arity;
  int64_t operand[KILN_FUSED_MAX_ARITY];  // >= 0: node input; -(j + 1): member j's result
} member;

typedef struct program {
  int n;
  member m[KILN_FUSED_MAX_MEMBERS];
} program;

bool kiln_fused_member_op(int op) {
  const kiln_op_def *def = kiln_op_get(op);
  return def->elementwise && def->min_inputs == def->max_inputs &&
         def->min_inputs <= KILN_FUSED_MAX_ARITY && def->min_outputs == 1;
}

// Reports through d (when not NULL) and returns false.
static bool fail(kiln_diag *d, const kiln_node *n, const char *what, const char *detail) {
  if (d) kiln_op_error(d, n, "%s: %s", what, detail);
  return false;
}

// "Mul Add Sigmoid" -> member ops; false on an unknown or unfusable name.
static bool parse_ops(const kiln_node *n, kiln_diag *d, program *p) {
  const char *s = kiln_attr_string(n, "ops", "");
  char name[64], msg[160];
  p->n = 0;
  for (s += strspn(s, " "); *s; s += strspn(s, " ")) {
    size_t len = strcspn(s, " ");
    if (len >= sizeof name) return fail(d, n, "attrs.ops", "an op name is too long");
    memcpy(name, s, len);
    name[len] = 0;
    s += len;
    int op = kiln_op_lookup(name);
    if (op < 0 || !kiln_fused_member_op(op)) {
      snprintf(msg, sizeof msg, "'%s' is not an elementwise op that can be fused", name);
      return fail(d, n, "attrs.ops", msg);
    }
    if (p->n == KILN_FUSED_MAX_MEMBERS) return fail(d, n, "attrs.ops", "more than 32 ops");
    p->m[p->n++] = (member){.op = op, .arity = kiln_op_get(op)->min_inputs};
  }
  return p->n > 0 || fail(d, n, "attrs.ops", "expected at least one op name");
}

// Fills each member's operands from attrs.operands and checks the references.
static bool parse_operands(const kiln_node *n, kiln_diag *d, program *p) {
  const kiln_attr *a = kiln_node_attr(n, "operands");
  int want = 0, at = 0;
  char msg[160];
  for (int k = 0; k < p->n; k++) want += p->m[k].arity;
  if (!a || a->type != KILN_ATTR_INTS || a->count != want) {
    snprintf(msg, sizeof msg, "expected %d operand references for ops \"%s\", got %d", want,
             kiln_attr_string(n, "ops", ""), a && a->type == KILN_ATTR_INTS ? a->count : 0);
    return fail(d, n, "attrs.operands", msg);
  }
  for (int k = 0; k < p->n; k++)
    for (int j = 0; j < p->m[k].arity; j++, at++) {
      int64_t r = a->ints[at];
      if ((r >= 0 && r < n->n_inputs) || (r < 0 && -r - 1 < k)) {
        p->m[k].operand[j] = r;
        continue;
      }
      snprintf(msg, sizeof msg, "%lld refers to %s %lld, which op %d (%s) cannot read",
               (long long)r, r >= 0 ? "input" : "the result of op",
               (long long)(r >= 0 ? r : -r - 1), k, kiln_op_get(p->m[k].op)->name);
      return fail(d, n, "attrs.operands", msg);
    }
  return true;
}

static bool parse(const kiln_node *n, kiln_diag *d, program *p) {
  return parse_ops(n, d, p) && parse_operands(n, d, p);
}

// Every input present, of one float dtype.
static bool check_inputs(const kiln_graph *g, const kiln_node *n, kiln_diag *d) {
  if (n->n_inputs > KILN_FUSED_MAX_INPUTS) {
    kiln_op_error(d, n, "inputs: at most %d, got %d", KILN_FUSED_MAX_INPUTS, n->n_inputs);
    return false;
  }
  return kiln_op_check_float_inputs(g, n, n->n_inputs, d);
}

// Shape of each member's result: the broadcast of its operands'; all must be the last one's.
static bool infer_shapes(const kiln_graph *g, const kiln_node *n, const program *p, kiln_diag *d,
                         kiln_shape *out) {
  kiln_shape shapes[KILN_FUSED_MAX_MEMBERS];
  for (int k = 0; k < p->n; k++) {
    for (int j = 0; j < p->m[k].arity; j++) {
      int64_t r = p->m[k].operand[j];
      const kiln_shape *s = r >= 0 ? &kiln_in(g, n, (int)r)->shape : &shapes[-r - 1];
      if (j == 0) shapes[k] = *s;
      if (j > 0 && !kiln_broadcast_shapes(&shapes[k], s, &shapes[k])) {
        kiln_op_error(d, n, "op %d (%s): operand shapes do not broadcast", k,
                      kiln_op_get(p->m[k].op)->name);
        return false;
      }
    }
  }
  *out = shapes[p->n - 1];
  for (int k = 0; k < p->n; k++)
    if (!kiln_shape_equal(&shapes[k], out)) {
      kiln_op_error(d, n, "op %d (%s): result %s differs from the output's shape %s", k,
                    kiln_op_get(p->m[k].op)->name, kiln_shape_text(&shapes[k]).text,
                    kiln_shape_text(out).text);
      return false;
    }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  program p;
  kiln_shape out;
  if (!parse(n, d, &p) || !check_inputs(g, n, d) || !infer_shapes(g, n, &p, d, &out)) return false;
  kiln_op_set_output(g, n, 0, kiln_in(g, n, 0)->dtype, &out);
  return true;
}

// The node a member's eval and elementwise hook see: its op and arity, no attributes.
static kiln_node member_node(const kiln_node *fused, const member *m) {
  static int no_tensors[KILN_FUSED_MAX_ARITY] = {-1, -1, -1, -1};
  return (kiln_node){.op = m->op,
                     .name = fused->name,
                     .n_inputs = m->arity,
                     .n_outputs = 1,
                     .inputs = no_tensors,
                     .outputs = no_tensors,
                     .where = fused->where};
}

// out: every member's eval in turn over whole tensors; intermediates rounded to the dtype.
static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  program p;
  parse(n, NULL, &p);
  int64_t numel = kiln_shape_numel(out->shape);
  double *results[KILN_FUSED_MAX_MEMBERS];
  for (int k = 0; k < p.n; k++) {
    const member *m = &p.m[k];
    kiln_eval_tensor args[KILN_FUSED_MAX_ARITY];
    for (int j = 0; j < m->arity; j++) {
      int64_t r = m->operand[j];
      args[j] = r >= 0 ? in[r] : (kiln_eval_tensor){out->shape, out->dtype, results[-r - 1]};
    }
    bool last = k == p.n - 1;
    results[k] = last ? out->data : kiln_xmalloc(sizeof(double) * (size_t)(numel ? numel : 1));
    kiln_eval_tensor result = {out->shape, out->dtype, results[k]};
    kiln_node node = member_node(n, m);
    kiln_op_get(m->op)->eval(&node, args, &result);
    if (!last)  // the interpreter rounds the last one
      for (int64_t i = 0; i < numel; i++)
        results[k][i] = kiln_dtype_round(out->dtype, results[k][i]);
  }
  for (int k = 0; k < p.n - 1; k++) free(results[k]);
}

// One loop nest over the output: each member's expression, its result in a local.
static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  program p;
  parse(c->node, NULL, &p);
  const kiln_tensor *y = kiln_lower_out(c, 0);
  kiln_lb_comment(b, "FusedElementwise %s: %s, %d inputs -> %s %s", c->node->name,
                  kiln_attr_string(c->node, "ops", ""), c->node->n_inputs, kiln_describe(y).text,
                  kiln_dtype_name(y->dtype));
  kiln_bcast_nest nest;
  kiln_bcast_open(c, &nest);
  int locals[KILN_FUSED_MAX_MEMBERS];
  kiln_lexpr *value = NULL;
  for (int k = 0; k < p.n; k++) {
    const member *m = &p.m[k];
    kiln_lexpr *v[KILN_FUSED_MAX_ARITY];
    for (int j = 0; j < m->arity; j++) {
      int64_t r = m->operand[j];
      v[j] = r >= 0 ? kiln_bcast_load(c, &nest, (int)r) : lx_var(b, locals[-r - 1]);
    }
    kiln_node node = member_node(c->node, m);
    value = kiln_op_get(m->op)->elementwise(b, &node, y->dtype, v, m->arity);
    if (k < p.n - 1) locals[k] = kiln_lb_decl(b, "e", y->dtype, value);
  }
  kiln_bcast_store_close(c, &nest, value);
}

// One operation per member per element (the members are one-flop ops or close to it).
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  program p;
  if (!parse(n, NULL, &p)) return 0;
  return p.n * kiln_shape_numel(&kiln_out(g, n, 0)->shape);
}

const kiln_op_def kiln_op_FusedElementwise = {
    .name = "FusedElementwise",
    .min_inputs = 1,
    .max_inputs = KILN_FUSED_MAX_INPUTS,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_BROADCAST,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // The members' own errors, added up: each intermediate is rounded to the dtype as in the
    // unfused graph, so the generated code computes what the unfused generated code does.
    .tol = {1e-6, 2e-6},
};
