// NonMaxSuppression (ONNX opset 11+): per batch n and class c, greedy selection of boxes by
// decreasing score, dropping every box whose IoU with an already selected box exceeds
// iou_threshold and every box whose score is not above score_threshold.
//   boxes: (N, B, 4) f32/f64   scores: (N, C, B), same dtype
//   max_output_boxes_per_class, iou_threshold, score_threshold: optional scalars (shape () or (1))
//   that must be constant params (with init): the first fixes the output's static shape
//   selected_indices: (N * C * K, 3) i64, K = max_output_boxes_per_class
// Static shapes: ONNX's output has a data-dependent number of rows; Kiln's has room for every
// (n, c) to select K boxes. Rows [(n * C + c) * K, (n * C + c + 1) * K) belong to (n, c): its
// selections [n, c, box] first, in selection order, then rows of -1 (all three columns). Dropping
// the -1 rows gives exactly ONNX's output, in ONNX's order (batch, then class, then score).
// center_point_box: 0 = boxes are [y1, x1, y2, x2] (any two opposite corners: flipped corners are
// normalized with min/max), 1 = [x_center, y_center, width, height].
// IoU as in onnxruntime: 0 when the boxes do not overlap (or have no area). Ties in score go to
// the lower box index. Kiln requires max_output_boxes_per_class >= 1 (ONNX's default, 0, means an
// empty output, which has no static shape).
#include <math.h>
#include <stdlib.h>

#include "../op_internal.h"

static const kiln_attr_spec attrs[] = {{"center_point_box", KILN_ATTR_INT, false}, {0}};

static const char *const scalar_names[] = {NULL, NULL, "max_output_boxes_per_class",
                                           "iou_threshold", "score_threshold"};

// Input i, when given, is a constant param holding one value of the expected kind.
static bool check_scalar(const kiln_graph *g, const kiln_node *n, kiln_diag *d, int i) {
  const kiln_tensor *t = kiln_in(g, n, i);
  if (!t) return true;
  bool want_int = i == 2;
  if (t->kind != KILN_TENSOR_PARAM || !t->data || kiln_shape_numel(&t->shape) != 1 ||
      (want_int ? t->dtype != KILN_I64 : !kiln_dtype_is_float(t->dtype))) {
    kiln_op_error(d, n,
                  "inputs[%d] (%s): %s must be a constant (a param with init) holding one %s "
                  "value; got %s %s %s",
                  i, t->name, scalar_names[i], want_int ? "i64" : "f32",
                  t->kind == KILN_TENSOR_PARAM ? "param" : "non-constant",
                  kiln_dtype_name(t->dtype), kiln_shape_text(&t->shape).text);
    return false;
  }
  return true;
}

static bool check_scalars(const kiln_graph *g, const kiln_node *n, kiln_diag *d) {
  for (int i = 2; i < 5; i++)
    if (!check_scalar(g, n, d, i)) return false;
  const kiln_tensor *k = kiln_in(g, n, 2), *iou = kiln_in(g, n, 3);
  if (!k || kiln_tensor_get(k, 0) < 1) {
    kiln_op_error(d, n,
                  "inputs[2]%s: max_output_boxes_per_class must be given as a constant >= 1 "
                  "(it fixes the static output shape)%s",
                  k ? "" : " (absent)", k ? "" : "; ONNX's default of 0 selects nothing");
    return false;
  }
  if (iou && !(kiln_tensor_get(iou, 0) >= 0 && kiln_tensor_get(iou, 0) <= 1)) {
    kiln_op_error(d, n, "inputs[3] (%s): iou_threshold must be in [0, 1], got %g", iou->name,
                  kiln_tensor_get(iou, 0));
    return false;
  }
  return true;
}

static bool check_shapes(const kiln_graph *g, const kiln_node *n, kiln_diag *d) {
  const kiln_tensor *boxes = kiln_in(g, n, 0), *scores = kiln_in(g, n, 1);
  if (boxes->shape.rank != 3 || boxes->shape.dim[2] != 4) {
    kiln_op_error(d, n, "inputs[0] (%s): expected boxes of shape (N, B, 4), got %s", boxes->name,
                  kiln_shape_text(&boxes->shape).text);
    return false;
  }
  const int64_t *bd = boxes->shape.dim;
  if (scores->shape.rank != 3 || scores->shape.dim[0] != bd[0] || scores->shape.dim[2] != bd[1]) {
    kiln_op_error(d, n, "inputs[1] (%s): expected scores of shape (%lld, C, %lld), got %s",
                  scores->name, (long long)bd[0], (long long)bd[1],
                  kiln_shape_text(&scores->shape).text);
    return false;
  }
  return true;
}

static bool infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  int64_t center;
  if (!kiln_op_check_float_inputs(g, n, 2, d) || !check_shapes(g, n, d) ||
      !check_scalars(g, n, d) || !kiln_op_read_int(n, d, "center_point_box", 0, 0, 1, &center))
    return false;
  const kiln_tensor *scores = kiln_in(g, n, 1);
  int64_t K = (int64_t)kiln_tensor_get(kiln_in(g, n, 2), 0);
  // out: (N * C * K, 3)
  kiln_shape out = {.rank = 2, .dim = {scores->shape.dim[0] * scores->shape.dim[1] * K, 3}};
  kiln_op_set_output(g, n, 0, KILN_I64, &out);
  return true;
}

// ---- Reference ----

typedef struct box {
  double x1, y1, x2, y2;  // x1 <= x2, y1 <= y2
} box;

static box box_at(const double *p, bool center) {
  if (center) return (box){p[0] - p[2] / 2, p[1] - p[3] / 2, p[0] + p[2] / 2, p[1] + p[3] / 2};
  return (box){fmin(p[1], p[3]), fmin(p[0], p[2]), fmax(p[1], p[3]), fmax(p[0], p[2])};
}

// Whether b is suppressed by a (onnxruntime's SuppressByIOU).
static bool suppresses(box a, box b, double iou_threshold) {
  double ix1 = fmax(a.x1, b.x1), iy1 = fmax(a.y1, b.y1);
  double ix2 = fmin(a.x2, b.x2), iy2 = fmin(a.y2, b.y2);
  if (ix2 <= ix1 || iy2 <= iy1) return false;
  double inter = (ix2 - ix1) * (iy2 - iy1);
  double area_a = (a.x2 - a.x1) * (a.y2 - a.y1), area_b = (b.x2 - b.x1) * (b.y2 - b.y1);
  double uni = area_a + area_b - inter;
  if (inter <= 0 || area_a <= 0 || area_b <= 0 || uni <= 0) return false;
  return inter / uni > iou_threshold;
}

typedef struct nms_params {
  int64_t K;
  double iou_threshold, score_threshold;
  bool has_score_threshold, center;
} nms_params;

static nms_params params_of(const kiln_node *n, const kiln_eval_tensor *in) {
  return (nms_params){
      .K = (int64_t)in[2].data[0],
      .iou_threshold = kiln_has_input(n, 3) ? in[3].data[0] : 0,
      .score_threshold = kiln_has_input(n, 4) ? in[4].data[0] : 0,
      .has_score_threshold = kiln_has_input(n, 4),
      .center = kiln_attr_int(n, "center_point_box", 0) != 0,
  };
}

// Greedy selection for one (n, c): each round takes the highest-scoring box that is above the
// score threshold, not selected yet and not suppressed by a selected box. Returns the count.
static int64_t select_boxes(const double *boxes, const double *scores, int64_t B,
                            const nms_params *p, int64_t *selected) {
  int64_t count = 0;
  while (count < p->K) {
    int64_t best = -1;
    for (int64_t j = 0; j < B; j++) {
      if (p->has_score_threshold && !(scores[j] > p->score_threshold)) continue;
      bool alive = true;
      for (int64_t k = 0; k < count && alive; k++)
        alive = selected[k] != j && !suppresses(box_at(boxes + 4 * selected[k], p->center),
                                                box_at(boxes + 4 * j, p->center), p->iou_threshold);
      if (alive && (best < 0 || scores[j] > scores[best])) best = j;
    }
    if (best < 0) break;
    selected[count++] = best;
  }
  return count;
}

static void eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  nms_params p = params_of(n, in);
  int64_t N = in[1].shape->dim[0], C = in[1].shape->dim[1], B = in[1].shape->dim[2];
  int64_t *selected = kiln_xmalloc(sizeof(int64_t) * (size_t)p.K);
  for (int64_t i = 0; i < N * C * p.K * 3; i++) out->data[i] = -1;
  for (int64_t b = 0; b < N; b++)
    for (int64_t c = 0; c < C; c++) {
      int64_t count =
          select_boxes(in[0].data + b * B * 4, in[1].data + (b * C + c) * B, B, &p, selected);
      for (int64_t k = 0; k < count; k++) {
        double *row = out->data + ((b * C + c) * p.K + k) * 3;
        row[0] = (double)b, row[1] = (double)c, row[2] = (double)selected[k];
      }
    }
  free(selected);
}

// ---- Lowering ----

typedef struct nms_lower {
  const kiln_lower_ctx *c;
  kiln_dtype t;
  int64_t C, B, K;
  bool center;
  int n, ch;  // loop variables
} nms_lower;

// boxes[n][box][k]
static kiln_lexpr *coord(const nms_lower *L, int box_var, int k) {
  kiln_lb *b = L->c->b;
  kiln_lexpr *i =
      lx_madd(b, lx_madd(b, lx_var(b, L->n), L->B, lx_var(b, box_var)), 4, lx_int(b, k));
  return lx_load(b, kiln_in_buf(L->c, 0), i);
}

// Declares the normalized corners of box `box_var` as locals v[0..4) = x1, y1, x2, y2.
static void declare_box(const nms_lower *L, int box_var, const char *prefix, int v[4]) {
  kiln_lb *b = L->c->b;
  static const char *const names[] = {"x1", "y1", "x2", "y2"};
  kiln_lexpr *e[4];
  if (L->center) {                 // [xc, yc, w, h]
    for (int k = 0; k < 4; k++) {  // x1 = xc - w / 2, y1 = yc - h / 2, x2 = xc + w / 2, ...
      kiln_lexpr *half = lx_bin(b, LB_MUL, coord(L, box_var, 2 + k % 2), lx_float(b, L->t, 0.5));
      e[k] = lx_bin(b, k < 2 ? LB_SUB : LB_ADD, coord(L, box_var, k % 2), half);
    }
  } else {  // [y1, x1, y2, x2], corners in either order
    for (int k = 0; k < 4; k++)
      e[k] = lx_bin(b, k < 2 ? LB_MIN : LB_MAX, coord(L, box_var, k % 2 ? 0 : 1),
                    coord(L, box_var, k % 2 ? 2 : 3));
  }
  for (int k = 0; k < 4; k++) {
    char name[32];
    snprintf(name, sizeof name, "%s_%s", prefix, names[k]);
    v[k] = kiln_lb_decl(b, name, L->t, e[k]);
  }
}

// The overlap of boxes a and b along axis (0 = x, 1 = y): min(a2, b2) - max(a1, b1).
static kiln_lexpr *overlap(kiln_lb *b, const int a[4], const int o[4], int axis) {
  return lx_bin(b, LB_SUB, lx_bin(b, LB_MIN, lx_var(b, a[2 + axis]), lx_var(b, o[2 + axis])),
                lx_bin(b, LB_MAX, lx_var(b, a[axis]), lx_var(b, o[axis])));
}

static kiln_lexpr *area(kiln_lb *b, const int v[4]) {
  return lx_bin(b, LB_MUL, lx_bin(b, LB_SUB, lx_var(b, v[2]), lx_var(b, v[0])),
                lx_bin(b, LB_SUB, lx_var(b, v[3]), lx_var(b, v[1])));
}

// Declares `keep`: candidate j survives selected box s, i.e. not (overlapping and
// inter > iou_threshold * union). Positive overlaps imply positive areas, so union > 0.
static kiln_lexpr *survives(const nms_lower *L, const int cand[4], const int sel[4], double iou) {
  kiln_lb *b = L->c->b;
  kiln_dtype t = L->t;
  int iw = kiln_lb_decl(b, "iw", t, overlap(b, cand, sel, 0));
  int ih = kiln_lb_decl(b, "ih", t, overlap(b, cand, sel, 1));
  int inter = kiln_lb_decl(b, "inter", t, lx_bin(b, LB_MUL, lx_var(b, iw), lx_var(b, ih)));
  kiln_lexpr *uni =
      lx_bin(b, LB_SUB, lx_bin(b, LB_ADD, area(b, cand), area(b, sel)), lx_var(b, inter));
  kiln_lexpr *small =
      lx_bin(b, LB_LE, lx_var(b, inter), lx_bin(b, LB_MUL, lx_float(b, t, iou), uni));
  kiln_lexpr *apart = lx_bin(b, LB_OR, lx_bin(b, LB_LE, lx_var(b, iw), lx_float(b, t, 0)),
                             lx_bin(b, LB_LE, lx_var(b, ih), lx_float(b, t, 0)));
  return lx_bin(b, LB_OR, apart, small);
}

// Flat index of column col of row `row` (an expression) of block (n, c).
static kiln_lexpr *out_index(const nms_lower *L, kiln_lexpr *row, int col) {
  kiln_lb *b = L->c->b;
  kiln_lexpr *block = lx_madd(b, lx_var(b, L->n), L->C, lx_var(b, L->ch));
  return lx_madd(b, lx_madd(b, block, L->K, row), 3, lx_int(b, col));
}

static double param_value(const kiln_lower_ctx *c, int i, double dflt) {
  const kiln_tensor *t = kiln_in(c->g, c->node, i);
  return t ? kiln_tensor_get(t, 0) : dflt;
}

// One round: best = the highest-scoring surviving candidate (or -1).
static int pick_best(const nms_lower *L, int count) {
  const kiln_lower_ctx *c = L->c;
  kiln_lb *b = c->b;
  kiln_dtype t = L->t;
  double iou = param_value(c, 3, 0);
  int best = kiln_lb_decl(b, "best", KILN_I64, lx_int(b, -1));
  int best_score = kiln_lb_decl(b, "best_score", t, lx_float(b, t, -INFINITY));
  int j = kiln_lb_for_n(b, "j", L->B);
  kiln_lexpr *si =
      lx_madd(b, lx_madd(b, lx_var(b, L->n), L->C, lx_var(b, L->ch)), L->B, lx_var(b, j));
  int score = kiln_lb_decl(b, "score", t, lx_load(b, kiln_in_buf(c, 1), si));
  kiln_lexpr *alive0 = lx_cast(b, KILN_BOOL, lx_int(b, 1));
  if (kiln_has_input(c->node, 4))
    alive0 = lx_bin(b, LB_LT, lx_float(b, t, param_value(c, 4, 0)), lx_var(b, score));
  int alive = kiln_lb_decl(b, "alive", KILN_BOOL, alive0);
  int cand[4], sel[4];
  declare_box(L, j, "cand", cand);
  int k = kiln_lb_for(b, "k", lx_int(b, 0), lx_var(b, count));
  int s = kiln_lb_decl(b, "sel", KILN_I64,
                       lx_load(b, kiln_out_buf(c, 0), out_index(L, lx_var(b, k), 2)));
  declare_box(L, s, "sel", sel);
  kiln_lexpr *keep =
      lx_bin(b, LB_AND, lx_bin(b, LB_NE, lx_var(b, s), lx_var(b, j)), survives(L, cand, sel, iou));
  kiln_lb_assign(b, alive, lx_bin(b, LB_AND, lx_var(b, alive), keep));
  kiln_lb_end_for(b);  // k
  // The first survivor, then strictly greater scores only: ties go to the lower index.
  kiln_lexpr *better = lx_bin(b, LB_OR, lx_bin(b, LB_LT, lx_var(b, best), lx_int(b, 0)),
                              lx_bin(b, LB_LT, lx_var(b, best_score), lx_var(b, score)));
  int take = kiln_lb_decl(b, "take", KILN_BOOL, lx_bin(b, LB_AND, lx_var(b, alive), better));
  kiln_lb_assign(b, best, lx_select(b, lx_var(b, take), lx_var(b, j), lx_var(b, best)));
  kiln_lb_assign(b, best_score,
                 lx_select(b, lx_var(b, take), lx_var(b, score), lx_var(b, best_score)));
  kiln_lb_end_for(b);  // j
  return best;
}

// for n, c: fill the block with -1; then K rounds, each appending the round's pick (if any).
static void lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  const kiln_tensor *boxes = kiln_lower_in(c, 0), *scores = kiln_lower_in(c, 1);
  nms_lower L = {.c = c,
                 .t = boxes->dtype,
                 .C = scores->shape.dim[1],
                 .B = scores->shape.dim[2],
                 .K = (int64_t)param_value(c, 2, 1),
                 .center = kiln_attr_int(c->node, "center_point_box", 0) != 0};
  kiln_lb_comment(b, "NonMaxSuppression %s: %s, %s, up to %lld boxes per class -> %s",
                  c->node->name, kiln_describe(boxes).text, kiln_describe(scores).text,
                  (long long)L.K, kiln_describe(kiln_lower_out(c, 0)).text);
  L.n = kiln_lb_for_n(b, "n", scores->shape.dim[0]);
  L.ch = kiln_lb_for_n(b, "c", L.C);
  int r = kiln_lb_for_n(b, "r", L.K);
  for (int col = 0; col < 3; col++)
    kiln_lb_store(b, kiln_out_buf(c, 0), out_index(&L, lx_var(b, r), col), lx_int(b, -1));
  kiln_lb_end_for(b);  // r
  int count = kiln_lb_decl(b, "count", KILN_I64, lx_int(b, 0));
  kiln_lb_for_n(b, "round", L.K);
  int best = pick_best(&L, count);
  kiln_lb_if(b, lx_bin(b, LB_LE, lx_int(b, 0), lx_var(b, best)));
  kiln_lb_store(b, kiln_out_buf(c, 0), out_index(&L, lx_var(b, count), 0), lx_var(b, L.n));
  kiln_lb_store(b, kiln_out_buf(c, 0), out_index(&L, lx_var(b, count), 1), lx_var(b, L.ch));
  kiln_lb_store(b, kiln_out_buf(c, 0), out_index(&L, lx_var(b, count), 2), lx_var(b, best));
  kiln_lb_assign(b, count, lx_add(b, lx_var(b, count), lx_int(b, 1)));
  kiln_lb_end_if(b);
  for (int i = 0; i < 3; i++) kiln_lb_end_for(b);  // round, c, n
}

// Up to K rounds over B candidates, each checked against up to K selections (~20 ops per IoU).
static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  const kiln_shape *s = &kiln_in(g, n, 1)->shape;
  int64_t K = (int64_t)kiln_tensor_get(kiln_in(g, n, 2), 0);
  return 20 * kiln_shape_numel(s) * K * K;
}

const kiln_op_def kiln_op_NonMaxSuppression = {
    .name = "NonMaxSuppression",
    .min_inputs = 2,
    .max_inputs = 5,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = infer,
    .eval = eval,
    .lower = lower,
    .flops = flops,
    // Indices: exact. The golden cases keep every IoU away from the threshold, where f32 and
    // double could decide differently.
    .tol = {0, 0},
};
