// The op registry. One op lives in one file, compiler/ops/<op>.c, which defines a
// `const kiln_op_def kiln_op_<Name>` with everything the compiler knows about it:
//   schema      arity and attributes (names, types, whether required)
//   infer       attribute checks and output shape/dtype inference, errors through kiln_diag
//   eval        the reference kernel used by `kiln run` and the tests: naive, obviously correct
//   lower       the loop IR the backends render
//   flops       the work it does, for `kiln inspect`
// ops.def lists every op once; see docs/adding-an-op.md.
#ifndef KILN_OPS_OP_H
#define KILN_OPS_OP_H

#include "../../ir/graph.h"
#include "../../ir/loop.h"
#include "../tune/tuning.h"

typedef enum {
#define KILN_OP(Name) KILN_OP_##Name,
#include "ops.def"
#undef KILN_OP
  KILN_OP_COUNT
} kiln_op_id;

// How an op combines with its neighbours (TVM's pattern kinds); fusion passes consult it.
typedef enum {
  KILN_FUSE_ELEMENTWISE,
  KILN_FUSE_BROADCAST,
  KILN_FUSE_INJECTIVE,  // reshapes, transposes: each output element reads one input element
  KILN_FUSE_REDUCTION,
  KILN_FUSE_OUT_FUSABLE,  // conv, gemm: can take an elementwise epilogue
  KILN_FUSE_OPAQUE,
} kiln_fuse_kind;

typedef struct kiln_attr_spec {
  const char *name;
  kiln_attr_type type;
  bool required;
} kiln_attr_spec;

// Tensor data handed to reference kernels: every element as a double, whatever the dtype
// (the interpreter rounds results back to the output dtype).
typedef struct kiln_eval_tensor {
  const kiln_shape *shape;
  kiln_dtype dtype;
  double *data;
} kiln_eval_tensor;

// What a lowering needs: the graph, the node, and where each tensor lives in the loop program.
typedef struct kiln_lower_ctx {
  const kiln_graph *g;
  const kiln_node *node;
  kiln_lb *b;
  const int *tensor_buf;      // graph tensor index -> loop program buffer index
  int f32_lanes;              // the target's f32 vector width: 16, 8 or 4 (compiler/target.h)
  bool amx;                   // the integer GEMMs may use AMX tiles (LS_TILEDOT; compiler/target.h)
  const kiln_tuning *tuning;  // tiles chosen by kiln build --tune (NULL: the analytical ones)
  int64_t *scratch_used;      // bytes of scratch this kernel took so far (kiln_lower_scratch)
} kiln_lower_ctx;

static inline int kiln_in_buf(const kiln_lower_ctx *c, int i) {
  return c->tensor_buf[c->node->inputs[i]];
}
static inline int kiln_out_buf(const kiln_lower_ctx *c, int i) {
  return c->tensor_buf[c->node->outputs[i]];
}

// What a gradient rule gets (docs/training.md): the forward node (a copy: adding nodes moves
// g->nodes), the gradient flowing into each of its outputs, and which inputs need one. The rule
// appends nodes with the builder (compiler/autodiff/builder.h) and sets dx[i] to the tensor
// holding input i's gradient (same shape and dtype as the input), or -1 for none.
typedef struct kiln_grad_ctx {
  kiln_graph *g;
  kiln_node node;    // the forward node
  const int *dy;     // per output: gradient tensor, or -1 where no gradient flows
  const bool *need;  // per input: whether its gradient is wanted
  int *dx;           // per input: set by the rule
  kiln_diag *d;
  int counter;  // for unique names of the nodes and tensors the rule adds
} kiln_grad_ctx;

// How far the reference kernel and the generated code may stray from an f32 reference computed by
// PyTorch, per element: |got - want| <= atol + rtol * |want|. The tests hold every op to its own.
typedef struct kiln_tolerance {
  double atol, rtol;
} kiln_tolerance;

typedef struct kiln_op_def {
  const char *name;  // ONNX op name
  int min_inputs, max_inputs;
  int min_outputs, max_outputs;
  const kiln_attr_spec *attrs;  // terminated by {0}
  kiln_fuse_kind fuse;
  // Checks attribute values and input shapes/dtypes, then sets every output's dtype and shape.
  // Errors go to d with the node's `where`; return false after reporting.
  bool (*infer)(kiln_graph *g, kiln_node *n, kiln_diag *d);
  void (*eval)(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out);
  // Emits the kernel body into c->b (a kernel is already open).
  void (*lower)(const kiln_lower_ctx *c);
  int64_t (*flops)(const kiln_graph *g, const kiln_node *n);
  kiln_tolerance tol;
  // eval reads only its inputs' shapes, never their data (Shape): constant folding may evaluate
  // it even when its inputs are computed at run time.
  bool shape_only;
  // The gradient rule (training), or NULL: not differentiable (an error if a gradient must flow
  // through it). Returns false after reporting through c->d.
  bool (*grad)(kiln_grad_ctx *c);
  // Side-effect ops (optimizer updates): bit i set = the op writes input i (a STATE tensor) in
  // place. Such nodes may have no outputs; DCE keeps them and no pass reorders them.
  unsigned writes_inputs;
  // Auto-tuning (kiln build --tune), or NULL: nothing to tune. Given a lowering context without a
  // builder, writes the kernel's tuning key (tuning.h) and up to max candidate tiles, the
  // analytical choice first; returns how many (0: this node's kernel has no tile to tune).
  int (*tune_space)(const kiln_lower_ctx *c, char *key, size_t key_size, kiln_tile_choice *cands,
                    int max);
  // Elementwise ops fuse-elementwise may merge (compiler/passes/fuse_elementwise.c), or NULL: the
  // expression of one output element of dtype t from its operands' elements v[0..count) (fresh
  // expressions it consumes), exactly what `lower` stores. Such an op's `eval` must broadcast its
  // inputs to its output like numpy (the fused node evaluates its members with their own evals).
  kiln_lexpr *(*elementwise)(kiln_lb *b, const kiln_node *n, kiln_dtype t, kiln_lexpr **v,
                             int count);
} kiln_op_def;

#define KILN_OP(Name) extern const kiln_op_def kiln_op_##Name;
#include "ops.def"
#undef KILN_OP

const kiln_op_def *kiln_op_get(int op);
const kiln_op_def *kiln_op_find(const char *name);  // NULL if unsupported
int kiln_op_lookup(const char *name);               // -1 if unsupported
bool kiln_gemm_activation_ok(int op);  // FusedGemm may take op as its activation (gemm.c)

// ---- Helpers shared by op files (compiler/ops/common.c) ----

// Reports an error about node n: "nodes[3] (conv1): <msg>".
void kiln_op_error(kiln_diag *d, const kiln_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
// Checks inputs [0, count) are present, have a float dtype equal to input 0's; reports otherwise.
bool kiln_op_check_float_inputs(const kiln_graph *g, const kiln_node *n, int count, kiln_diag *d);
// Sets output i's dtype and shape.
void kiln_op_set_output(kiln_graph *g, const kiln_node *n, int i, kiln_dtype t,
                        const kiln_shape *s);
// Numpy broadcasting of two shapes; false if incompatible.
bool kiln_broadcast_shapes(const kiln_shape *a, const kiln_shape *b, kiln_shape *out);
// Row-major strides of `s` aligned to `out` for broadcasting: stride 0 where s has size 1 or
// lacks the dimension. strides has out->rank entries.
void kiln_broadcast_strides(const kiln_shape *s, const kiln_shape *out, int64_t *strides);
// Row-major contiguous strides.
void kiln_contiguous_strides(const kiln_shape *s, int64_t *strides);
// For a loop nest over `s` with loop variables vars[0..rank), the flat index expression
// sum(vars[i] * strides[i]).
kiln_lexpr *kiln_lower_index(kiln_lb *b, int rank, const int *vars, const int64_t *strides);
// Opens one loop per dimension of s (names d0, d1, ...); vars receives the loop variables.
// Close with kiln_lower_end_nest.
void kiln_lower_begin_nest(kiln_lb *b, const kiln_shape *s, int *vars);
void kiln_lower_end_nest(kiln_lb *b, const kiln_shape *s);

#endif
