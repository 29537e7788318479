// Post-processing of a YOLOv1-style detector's output (docs/models.md, "YOLO-style detection"):
// decoding the grid into boxes, non-maximum suppression, average precision at an IoU threshold
// (mAP@0.5) and drawing detections on the images. Used by tools/kiln-detect.c and its tests.
#ifndef KILN_DETECT_H
#define KILN_DETECT_H

#include <stdbool.h>
#include <stdint.h>

// A detection (or a ground-truth box, score unused): pixels, x2 and y2 exclusive.
typedef struct kiln_det {
  int64_t image;
  int cls;
  float score;
  float x1, y1, x2, y2;
} kiln_det;

// A growable list of detections.
typedef struct kiln_det_list {
  kiln_det *v;
  int64_t n, cap;
} kiln_det_list;

bool kiln_det_push(kiln_det_list *l, kiln_det d);  // false when out of memory
void kiln_det_list_free(kiln_det_list *l);

// The grid layout of a prediction (N, grid, grid, 5 boxes + classes).
typedef struct kiln_yolo_layout {
  int grid, boxes, classes, image_size;
} kiln_yolo_layout;

// Every box of every cell of pred (N, grid, grid, 5 boxes + classes; x, y within the cell, w, h
// and the confidence over the image, class scores) whose score conf * max class score is at least
// min_score, appended to out with the best class. False when out of memory.
bool kiln_yolo_decode(const float *pred, int64_t n_images, const kiln_yolo_layout *l,
                      float min_score, kiln_det_list *out);

double kiln_box_iou(const kiln_det *a, const kiln_det *b);

// Non-maximum suppression within each image and class: sorts l by image then descending score,
// keeps a box unless a kept box of the same image and class overlaps it with IoU > threshold.
// Removes the others from l.
void kiln_nms(kiln_det_list *l, double iou_threshold);

// Average precision of class cls (all-point interpolated, as Pascal VOC since 2010): detections
// sorted by score, each a true positive when it overlaps an unmatched ground-truth box of its image
// and class with IoU >= iou_threshold (the best such), else a false positive. -1 if the class has
// no ground truth. Sorts dets.
double kiln_average_precision(kiln_det *dets, int64_t n, const kiln_det *truth, int64_t n_truth,
                              int cls, double iou_threshold);
// The mean of the classes' APs over the classes with ground truth (0 if none has any).
double kiln_mean_ap(kiln_det *dets, int64_t n, const kiln_det *truth, int64_t n_truth, int classes,
                    double iou_threshold, double *per_class);

// A grid of RGB images with their detections drawn as rectangles.
typedef struct kiln_det_canvas {
  int width, height;
  uint8_t *rgb;  // width * height * 3
} kiln_det_canvas;

// Tiles n images (3, size, size; values in [0, 1]) `cols` to a row, each scaled by `scale`, with a
// 2-pixel black border, and draws the detections of image i (dets[].image == i) in their class's
// colour. False when out of memory. The caller frees canvas->rgb.
bool kiln_draw_detections(const float *images, int64_t n, int size, int cols, int scale,
                          const kiln_det *dets, int64_t n_dets, kiln_det_canvas *canvas);

#endif
