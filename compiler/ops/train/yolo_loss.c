// YoloLoss and YoloLossGrad: the YOLOv1 detection loss (docs/models.md, "YOLO-style detection").
//   pred   (N, SH, SW, 5B + C): per grid cell B boxes [x, y, w, h, conf] then C class scores;
//          x, y: the box centre within the cell (0..1), w, h: its size over the image (0..1)
//   target (N, SH, SW, 5 + C):  per cell [x, y, w, h, obj, one-hot class]; obj = 1 where an
//          object's centre falls in the cell (at most one object a cell)
//   YoloLoss(pred, target) -> loss (N): the sum over the image's cells of
//     obj cells:   λ_coord [(x - x̂)² + (y - ŷ)² + (√w - √ŵ)² + (√h - √ĥ)²] + (conf - 1)²   for the
//                  responsible box r (the largest IoU with the object; the first on ties),
//                  λ_noobj conf² for the other boxes, Σ_c (p_c - p̂_c)² for the classes
//     other cells: λ_noobj Σ_j conf_j²
//   √w is √max(w, 1e-6) (its derivative 0 below). The choice of r is a constant of the step (no
//   gradient flows through the IoU). The confidence target is 1, not the IoU.
//   YoloLossGrad(pred, target, dloss (N)) -> dpred (N, SH, SW, 5B + C).
#include <math.h>

#include "../../autodiff/builder.h"
#include "train_internal.h"

static const double SQRT_FLOOR = 1e-6;

static const kiln_attr_spec attrs[] = {{"boxes", KILN_ATTR_INT, false},
                                       {"lambda_coord", KILN_ATTR_FLOAT, false},
                                       {"lambda_noobj", KILN_ATTR_FLOAT, false},
                                       {0}};

typedef struct yolo_dims {
  int64_t n, sh, sw;  // batch, grid rows, grid columns
  int64_t boxes, classes, pred_len, target_len;
  double lambda_coord, lambda_noobj;
} yolo_dims;

static yolo_dims dims_of(const kiln_node *n, const kiln_shape *pred, const kiln_shape *target) {
  yolo_dims v = {.n = pred->dim[0], .sh = pred->dim[1], .sw = pred->dim[2]};
  v.boxes = kiln_attr_int(n, "boxes", 2);
  v.pred_len = pred->dim[3], v.target_len = target->dim[3], v.classes = target->dim[3] - 5;
  v.lambda_coord = kiln_attr_float(n, "lambda_coord", 5.0);
  v.lambda_noobj = kiln_attr_float(n, "lambda_noobj", 0.5);
  return v;
}

// ---- Checks ----

static bool check_shapes(const kiln_node *n, kiln_diag *d, const kiln_shape *p, const kiln_shape *t,
                         int64_t boxes) {
  if (p->rank != 4 || t->rank != 4) {
    kiln_op_error(d, n, "inputs: expected pred (N, SH, SW, 5B + C) and target (N, SH, SW, 5 + C)");
    return false;
  }
  for (int i = 0; i < 3; i++)
    if (p->dim[i] != t->dim[i]) {
      kiln_op_error(d, n, "inputs[1] (target): dim %d is %lld, pred's is %lld", i,
                    (long long)t->dim[i], (long long)p->dim[i]);
      return false;
    }
  int64_t classes = t->dim[3] - 5;
  if (classes < 1 || p->dim[3] != 5 * boxes + classes) {
    kiln_op_error(d, n,
                  "inputs: pred's last dim %lld must be 5 * boxes (%lld) + the target's classes "
                  "(%lld, its last dim - 5, at least 1)",
                  (long long)p->dim[3], (long long)boxes, (long long)classes);
    return false;
  }
  return true;
}

static bool check(kiln_graph *g, kiln_node *n, kiln_diag *d, int n_float) {
  if (!kiln_op_check_float_inputs(g, n, n_float, d)) return false;
  int64_t boxes;
  if (!kiln_op_read_int(n, d, "boxes", 2, 1, 16, &boxes)) return false;
  if (kiln_attr_float(n, "lambda_coord", 5.0) < 0 || kiln_attr_float(n, "lambda_noobj", 0.5) < 0) {
    kiln_op_error(d, n, "attrs.lambda_coord and attrs.lambda_noobj: expected numbers >= 0");
    return false;
  }
  return check_shapes(n, d, &kiln_in(g, n, 0)->shape, &kiln_in(g, n, 1)->shape, boxes);
}

static bool loss_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!check(g, n, d, 2)) return false;
  const kiln_tensor *p = kiln_in(g, n, 0);
  kiln_shape per_image = {.rank = 1, .dim = {p->shape.dim[0]}};
  kiln_op_set_output(g, n, 0, p->dtype, &per_image);  // out: (N)
  return true;
}

static bool grad_infer(kiln_graph *g, kiln_node *n, kiln_diag *d) {
  if (!check(g, n, d, 3)) return false;
  const kiln_tensor *p = kiln_in(g, n, 0);
  kiln_shape per_image = {.rank = 1, .dim = {p->shape.dim[0]}};
  if (!kiln_train_check_shape(g, n, d, 2, &per_image, "the per-image loss")) return false;
  kiln_op_set_output(g, n, 0, p->dtype, &p->shape);  // out: (N, SH, SW, 5B + C)
  return true;
}

// ---- Reference ----

static double sqrt_floor(double w) { return sqrt(fmax(w, SQRT_FLOOR)); }

// IoU of a predicted box and the target box of the same cell, in cell units (both centres are
// offsets in the cell, so the cell's position cancels); sizes scale by the grid.
static double cell_iou(const yolo_dims *v, const double *p, const double *t) {
  double pw = p[2] * (double)v->sw, ph = p[3] * (double)v->sh;
  double tw = t[2] * (double)v->sw, th = t[3] * (double)v->sh;
  double iw = fmin(p[0] + pw / 2, t[0] + tw / 2) - fmax(p[0] - pw / 2, t[0] - tw / 2);
  double ih = fmin(p[1] + ph / 2, t[1] + th / 2) - fmax(p[1] - ph / 2, t[1] - th / 2);
  double inter = fmax(iw, 0) * fmax(ih, 0), uni = pw * ph + tw * th - inter;
  return uni > 0 ? inter / uni : 0;
}

// The responsible box of an object cell: the largest IoU, the first on ties; -1 without object.
static int responsible(const yolo_dims *v, const double *p, const double *t) {
  if (!(t[4] > 0.5)) return -1;
  int r = 0;
  double best = cell_iou(v, p, t);
  for (int j = 1; j < v->boxes; j++) {
    double iou = cell_iou(v, p + 5 * j, t);
    if (iou > best) best = iou, r = j;
  }
  return r;
}

static double sq(double x) { return x * x; }

static double cell_loss(const yolo_dims *v, const double *p, const double *t) {
  int r = responsible(v, p, t);
  double sum = 0;
  for (int j = 0; j < v->boxes; j++) {
    const double *bx = p + 5 * j;
    if (j != r) {
      sum += v->lambda_noobj * sq(bx[4]);
      continue;
    }
    double coord = sq(bx[0] - t[0]) + sq(bx[1] - t[1]) + sq(sqrt_floor(bx[2]) - sqrt(t[2])) +
                   sq(sqrt_floor(bx[3]) - sqrt(t[3]));
    sum += v->lambda_coord * coord + sq(bx[4] - 1);
  }
  for (int64_t c = 0; r >= 0 && c < v->classes; c++) sum += sq(p[5 * v->boxes + c] - t[5 + c]);
  return sum;
}

// d cell_loss / d p into dp[pred_len], times s.
static void cell_grad(const yolo_dims *v, const double *p, const double *t, double s, double *dp) {
  int r = responsible(v, p, t);
  for (int j = 0; j < v->boxes; j++) {
    const double *bx = p + 5 * j;
    double *g = dp + 5 * j;
    g[0] = g[1] = g[2] = g[3] = 0;
    g[4] = s * 2 * v->lambda_noobj * bx[4];
    if (j != r) continue;
    g[0] = s * 2 * v->lambda_coord * (bx[0] - t[0]);
    g[1] = s * 2 * v->lambda_coord * (bx[1] - t[1]);
    for (int k = 2; k < 4; k++)  // d/dw (√w - √ŵ)² = (√w - √ŵ) / √w above the floor
      g[k] =
          bx[k] > SQRT_FLOOR ? s * v->lambda_coord * (sqrt(bx[k]) - sqrt(t[k])) / sqrt(bx[k]) : 0;
    g[4] = s * 2 * (bx[4] - 1);
  }
  for (int64_t c = 0; c < v->classes; c++)
    dp[5 * v->boxes + c] = r >= 0 ? s * 2 * (p[5 * v->boxes + c] - t[5 + c]) : 0;
}

static void loss_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  yolo_dims v = dims_of(n, in[0].shape, in[1].shape);
  int64_t cells = v.sh * v.sw;
  for (int64_t i = 0; i < v.n; i++) {
    double sum = 0;
    for (int64_t k = 0; k < cells; k++)
      sum += cell_loss(&v, in[0].data + (i * cells + k) * v.pred_len,
                       in[1].data + (i * cells + k) * v.target_len);
    out->data[i] = sum;
  }
}

static void grad_eval(const kiln_node *n, const kiln_eval_tensor *in, kiln_eval_tensor *out) {
  yolo_dims v = dims_of(n, in[0].shape, in[1].shape);
  int64_t cells = v.sh * v.sw;
  for (int64_t i = 0; i < v.n; i++)
    for (int64_t k = 0; k < cells; k++) {
      int64_t cell = i * cells + k;
      cell_grad(&v, in[0].data + cell * v.pred_len, in[1].data + cell * v.target_len, in[2].data[i],
                out->data + cell * v.pred_len);
    }
}

// ---- Lowering: loops over images (i) and their cells (k); boxes and classes unrolled ----

typedef struct cell_lower {
  const kiln_lower_ctx *c;
  yolo_dims v;
  kiln_dtype t;
  int i, k;       // loop variables
  int obj, resp;  // locals: the cell has an object (1/0); the responsible box (as a float)
} cell_lower;

static kiln_lexpr *num(const cell_lower *L, double x) { return lx_float(L->c->b, L->t, x); }
static kiln_lexpr *bin(const cell_lower *L, kiln_lbin op, kiln_lexpr *x, kiln_lexpr *y) {
  return lx_bin(L->c->b, op, x, y);
}
static kiln_lexpr *square(const cell_lower *L, kiln_lexpr *x) {
  return bin(L, LB_MUL, x, kiln_lx_clone(L->c->b, x));
}

// Flat index of element `off` of the cell in a tensor with `len` values a cell.
static kiln_lexpr *at(const cell_lower *L, int64_t len, int64_t off) {
  kiln_lb *b = L->c->b;
  int64_t cells = L->v.sh * L->v.sw;
  return lx_madd(b, lx_var(b, L->i), cells * len, lx_madd(b, lx_var(b, L->k), len, lx_int(b, off)));
}
static kiln_lexpr *P(const cell_lower *L, int64_t off) {  // pred value
  return lx_load(L->c->b, kiln_in_buf(L->c, 0), at(L, L->v.pred_len, off));
}
static kiln_lexpr *T(const cell_lower *L, int64_t off) {  // target value
  return lx_load(L->c->b, kiln_in_buf(L->c, 1), at(L, L->v.target_len, off));
}

// The overlap of box j and the target along `axis` (0: x, 1: y) in cell units, `cells` the grid
// size on that axis: max(min(p + pw/2, t + tw/2) - max(p - pw/2, t - tw/2), 0).
static kiln_lexpr *overlap(const cell_lower *L, int j, int axis, double cells) {
  kiln_lexpr *ph = bin(L, LB_MUL, P(L, 5 * j + 2 + axis), num(L, cells / 2));
  kiln_lexpr *th = bin(L, LB_MUL, T(L, 2 + axis), num(L, cells / 2));
  kiln_lexpr *hi =
      bin(L, LB_MIN, bin(L, LB_ADD, P(L, 5 * j + axis), ph), bin(L, LB_ADD, T(L, axis), th));
  kiln_lexpr *lo = bin(L, LB_MAX, bin(L, LB_SUB, P(L, 5 * j + axis), kiln_lx_clone(L->c->b, ph)),
                       bin(L, LB_SUB, T(L, axis), kiln_lx_clone(L->c->b, th)));
  return bin(L, LB_MAX, bin(L, LB_SUB, hi, lo), num(L, 0));
}

// The IoU of box j with the target (cell_iou), into a fresh local.
static int lower_iou(const cell_lower *L, int j) {
  kiln_lb *b = L->c->b;
  double sw = (double)L->v.sw, sh = (double)L->v.sh;
  int inter =
      kiln_lb_decl(b, "inter", L->t, bin(L, LB_MUL, overlap(L, j, 0, sw), overlap(L, j, 1, sh)));
  kiln_lexpr *pa =
      bin(L, LB_MUL, bin(L, LB_MUL, P(L, 5 * j + 2), P(L, 5 * j + 3)), num(L, sw * sh));
  kiln_lexpr *ta = bin(L, LB_MUL, bin(L, LB_MUL, T(L, 2), T(L, 3)), num(L, sw * sh));
  int uni = kiln_lb_decl(b, "uni", L->t, bin(L, LB_SUB, bin(L, LB_ADD, pa, ta), lx_var(b, inter)));
  kiln_lexpr *iou = lx_select(b, bin(L, LB_LT, num(L, 0), lx_var(b, uni)),
                              bin(L, LB_DIV, lx_var(b, inter), lx_var(b, uni)), num(L, 0));
  return kiln_lb_decl(b, "iou", L->t, iou);
}

// Declares obj and resp for the current cell (responsible()).
static void lower_responsible(cell_lower *L) {
  kiln_lb *b = L->c->b;
  L->obj = kiln_lb_decl(b, "obj", L->t,
                        lx_select(b, bin(L, LB_LT, num(L, 0.5), T(L, 4)), num(L, 1), num(L, 0)));
  int best = kiln_lb_decl(b, "best", L->t, lx_var(b, lower_iou(L, 0)));
  L->resp = kiln_lb_decl(b, "resp", L->t, num(L, 0));
  for (int j = 1; j < L->v.boxes; j++) {
    int iou = lower_iou(L, j);
    kiln_lexpr *better = bin(L, LB_LT, lx_var(b, best), lx_var(b, iou));
    kiln_lb_assign(b, L->resp, lx_select(b, better, num(L, j), lx_var(b, L->resp)));
    kiln_lb_assign(b, best, lx_bin(b, LB_MAX, lx_var(b, best), lx_var(b, iou)));
  }
}

static kiln_lexpr *has_obj(const cell_lower *L) {
  return bin(L, LB_LT, num(L, 0.5), lx_var(L->c->b, L->obj));
}
static kiln_lexpr *is_resp(const cell_lower *L, int j) {
  return bin(L, LB_AND, has_obj(L), bin(L, LB_EQ, lx_var(L->c->b, L->resp), num(L, j)));
}
static kiln_lexpr *sqrt_lx(const cell_lower *L, kiln_lexpr *w) {
  return lx_unary(L->c->b, LU_SQRT, bin(L, LB_MAX, w, num(L, SQRT_FLOOR)));
}

// cell_loss of the current cell.
static kiln_lexpr *cell_loss_lx(const cell_lower *L) {
  kiln_lb *b = L->c->b;
  kiln_lexpr *sum = num(L, 0);
  for (int j = 0; j < L->v.boxes; j++) {
    kiln_lexpr *coord = bin(
        L, LB_ADD,
        bin(L, LB_ADD, square(L, bin(L, LB_SUB, P(L, 5 * j), T(L, 0))),
            square(L, bin(L, LB_SUB, P(L, 5 * j + 1), T(L, 1)))),
        bin(L, LB_ADD,
            square(L, bin(L, LB_SUB, sqrt_lx(L, P(L, 5 * j + 2)), lx_unary(b, LU_SQRT, T(L, 2)))),
            square(L, bin(L, LB_SUB, sqrt_lx(L, P(L, 5 * j + 3)), lx_unary(b, LU_SQRT, T(L, 3))))));
    kiln_lexpr *resp = bin(L, LB_ADD, bin(L, LB_MUL, num(L, L->v.lambda_coord), coord),
                           square(L, bin(L, LB_SUB, P(L, 5 * j + 4), num(L, 1))));
    kiln_lexpr *noobj = bin(L, LB_MUL, num(L, L->v.lambda_noobj), square(L, P(L, 5 * j + 4)));
    sum = bin(L, LB_ADD, sum, lx_select(b, is_resp(L, j), resp, noobj));
  }
  kiln_lexpr *cls = num(L, 0);
  for (int64_t c = 0; c < L->v.classes; c++)
    cls = bin(L, LB_ADD, cls, square(L, bin(L, LB_SUB, P(L, 5 * L->v.boxes + c), T(L, 5 + c))));
  return bin(L, LB_ADD, sum, bin(L, LB_MUL, lx_var(b, L->obj), cls));
}

static cell_lower open_cells(const kiln_lower_ctx *c, const char *what) {
  const kiln_tensor *p = kiln_lower_in(c, 0);
  cell_lower L = {
      .c = c, .v = dims_of(c->node, &p->shape, &kiln_lower_in(c, 1)->shape), .t = p->dtype};
  kiln_lb_comment(c->b, "%s %s: %s, %lld boxes a cell", what, c->node->name, kiln_describe(p).text,
                  (long long)L.v.boxes);
  return L;
}

static void loss_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  cell_lower L = open_cells(c, "YoloLoss");
  L.i = kiln_lb_for_n(b, "i", L.v.n);
  int acc = kiln_lb_decl(b, "acc", L.t, num(&L, 0));
  L.k = kiln_lb_for_n(b, "k", L.v.sh * L.v.sw);
  lower_responsible(&L);
  kiln_lb_assign(b, acc, bin(&L, LB_ADD, lx_var(b, acc), cell_loss_lx(&L)));
  kiln_lb_end_for(b);
  kiln_lb_store(b, kiln_out_buf(c, 0), lx_var(b, L.i), lx_var(b, acc));
  kiln_lb_end_for(b);
}

// Stores s * value into dpred at the cell's element off.
static void store_grad(const cell_lower *L, int s, int64_t off, kiln_lexpr *value) {
  kiln_lb *b = L->c->b;
  kiln_lb_store(b, kiln_out_buf(L->c, 0), at(L, L->v.pred_len, off),
                bin(L, LB_MUL, lx_var(b, s), value));
}

static void lower_box_grad(const cell_lower *L, int s, int j) {
  kiln_lb *b = L->c->b;
  double lc = L->v.lambda_coord;
  for (int k = 0; k < 2; k++)
    store_grad(L, s, 5 * j + k,
               lx_select(b, is_resp(L, j),
                         bin(L, LB_MUL, num(L, 2 * lc), bin(L, LB_SUB, P(L, 5 * j + k), T(L, k))),
                         num(L, 0)));
  for (int k = 2; k < 4; k++) {
    kiln_lexpr *d =
        bin(L, LB_DIV, bin(L, LB_SUB, sqrt_lx(L, P(L, 5 * j + k)), lx_unary(b, LU_SQRT, T(L, k))),
            sqrt_lx(L, P(L, 5 * j + k)));
    kiln_lexpr *live =
        bin(L, LB_AND, is_resp(L, j), bin(L, LB_LT, num(L, SQRT_FLOOR), P(L, 5 * j + k)));
    store_grad(L, s, 5 * j + k, lx_select(b, live, bin(L, LB_MUL, num(L, lc), d), num(L, 0)));
  }
  kiln_lexpr *conf_resp = bin(L, LB_MUL, num(L, 2), bin(L, LB_SUB, P(L, 5 * j + 4), num(L, 1)));
  kiln_lexpr *conf_noobj = bin(L, LB_MUL, num(L, 2 * L->v.lambda_noobj), P(L, 5 * j + 4));
  store_grad(L, s, 5 * j + 4, lx_select(b, is_resp(L, j), conf_resp, conf_noobj));
}

static void grad_lower(const kiln_lower_ctx *c) {
  kiln_lb *b = c->b;
  cell_lower L = open_cells(c, "YoloLossGrad");
  L.i = kiln_lb_for_n(b, "i", L.v.n);
  int s = kiln_lb_decl(b, "s", L.t, lx_load(b, kiln_in_buf(c, 2), lx_var(b, L.i)));
  L.k = kiln_lb_for_n(b, "k", L.v.sh * L.v.sw);
  lower_responsible(&L);
  for (int j = 0; j < L.v.boxes; j++) lower_box_grad(&L, s, j);
  for (int64_t k = 0; k < L.v.classes; k++) {
    int64_t off = 5 * L.v.boxes + k;
    kiln_lexpr *d = bin(&L, LB_MUL, num(&L, 2), bin(&L, LB_SUB, P(&L, off), T(&L, 5 + k)));
    store_grad(&L, s, off, bin(&L, LB_MUL, lx_var(b, L.obj), d));
  }
  kiln_lb_end_for(b);
  kiln_lb_end_for(b);
}

// ---- Gradient rule: dpred = YoloLossGrad(pred, target, dloss); the target gets none ----

static bool grad(kiln_grad_ctx *c) {
  if (c->need[0]) {
    kiln_gb_attr a[4];
    kiln_gb_forward_attrs(c, NULL, a, 4);
    int in[3] = {c->node.inputs[0], c->node.inputs[1], c->dy[0]};
    c->dx[0] = kiln_gb_op(c, "YoloLossGrad", in, 3, a, 1);
    if (c->dx[0] < 0) return false;
  }
  c->dx[1] = -1;
  return true;
}

static int64_t flops(const kiln_graph *g, const kiln_node *n) {
  return 12 * kiln_shape_numel(&kiln_in(g, n, 0)->shape);
}

const kiln_op_def kiln_op_YoloLoss = {
    .name = "YoloLoss",
    .min_inputs = 2,
    .max_inputs = 2,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = loss_infer,
    .eval = loss_eval,
    .lower = loss_lower,
    .flops = flops,
    // An f32 sum over up to a few hundred cells of squares and square roots: a few ulp of it.
    .tol = {1e-6, 1e-5},
    .grad = grad,
};

const kiln_op_def kiln_op_YoloLossGrad = {
    .name = "YoloLossGrad",
    .min_inputs = 3,
    .max_inputs = 3,
    .min_outputs = 1,
    .max_outputs = 1,
    .attrs = attrs,
    .fuse = KILN_FUSE_OPAQUE,
    .infer = grad_infer,
    .eval = grad_eval,
    .lower = grad_lower,
    .flops = flops,
    // A few roundings per element (a square root and a division for w and h).
    .tol = {1e-6, 1e-5},
};
