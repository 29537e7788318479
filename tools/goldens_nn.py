#!/usr/bin/python3
"""Golden cases for the nn and detect op families: tests/goldens/ops/nn_<case>/ holds

    model.json           a single-op Kiln model named op_nn_<case> (params inline)
    <input>.npy          one per model input (seeded from the case name)
    <output>.npy         one per node output, computed by the reference named below

and tests/goldens/ops/cases-nn.txt with one line `nn_<case> <op>` per case.

Semantics are ONNX (opset 13+; RoiAlign opset 16). References:
  ConvTranspose, GlobalAveragePool, GlobalMaxPool, LRN, BatchNormalization, LayerNormalization,
  Dropout: PyTorch (float32), each also checked against a literal numpy implementation of the ONNX
  definition. PyTorch's LocalResponseNorm puts the extra channel of an even-sized window before c,
  ONNX after it; the even-size cases therefore run torch on the channel-reversed input and reverse
  the result back (the numpy check confirms it). ConvTranspose's asymmetric pads and output_shape
  are cropped from torch's unpadded result.
  NonMaxSuppression: a numpy implementation of ONNX's greedy NMS (onnxruntime's IoU), padded to
  Kiln's static shape (see compiler/ops/detect/nonmaxsuppression.c), cross-checked per class with
  torchvision.ops.nms when torchvision is installed (Debian: python3-torchvision). The data keep
  every IoU at least 0.02 from the threshold and scores at least 1e-3 apart.
  MaxRoiPool and RoiAlign (avg): torchvision.ops.roi_pool / roi_align (aligned = half_pixel) when
  installed, else the numpy reference; both are always checked against each other. RoiAlign max
  mode (which torchvision lacks): numpy, following onnxruntime / the ONNX reference.

Run: /usr/bin/python3 tools/goldens_nn.py     (rewrites tests/goldens/ops/nn_*/ and cases-nn.txt)
"""

import glob
import math
import os
import shutil
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_io  # noqa: E402

try:
    import torchvision.ops as tvops
except Exception:  # noqa: BLE001 - any import failure means: not available
    tvops = None

PREFIX = "nn_"
CASES = []


class Case:
    def __init__(self, name, op, doc=None):
        name = PREFIX + name
        assert name.replace("_", "a").isalnum(), name
        self.name, self.op, self.doc = name, op, doc
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))
        self.inputs, self.params, self.node_inputs = [], [], []
        self.outputs = ["y"]
        self.attrs = {}
        self.fn = None
        self.check = None  # () -> list of arrays: the literal reference, compared with fn's
        self.check_tol = 1e-5
        CASES.append(self)

    def randn(self, *shape, scale=1.0):
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def uniform(self, lo, hi, *shape):
        return self.rng.uniform(lo, hi, shape).astype(np.float32)

    def input(self, name, arr):
        self.inputs.append((name, np.ascontiguousarray(arr)))
        self.node_inputs.append(name)
        return self

    def param(self, name, arr):
        self.params.append((name, np.ascontiguousarray(arr)))
        self.node_inputs.append(name)
        return self

    def skip(self):
        self.node_inputs.append("")
        return self

    def set(self, **attrs):
        self.attrs.update(attrs)
        return self

    def compute(self, fn, outputs=("y",)):
        """fn(*arrays in node-input order, None for skipped) -> one array or a tuple, torch or numpy."""
        self.fn, self.outputs = fn, list(outputs)
        return self

    def values(self):
        vals = dict(self.inputs + self.params)
        return [vals[n].copy() if n else None for n in self.node_inputs]

    def run(self):
        args = [torch.from_numpy(a) if a is not None else None for a in self.values()]
        with torch.no_grad():
            ys = self.fn(*args)
        ys = ys if isinstance(ys, tuple) else (ys,)
        out = []
        for y in ys:
            y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
            assert y.dtype in (np.float32, np.int64, np.bool_), (self.name, y.dtype)
            if y.dtype == np.float32:
                assert np.all(np.isfinite(y)), self.name
            out.append(np.ascontiguousarray(y))
        assert len(out) == len(self.outputs), self.name
        return out


def param_json(n, a):
    p = {"name": n, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape)}
    if a.dtype == np.float32:
        p["init"] = {"kind": "values", "values": kiln_io.f32_values(a)}
    else:
        p["init"] = {"kind": "values", "values": kiln_io.int_values(a)}
    return p


def write_case(root, c):
    d = os.path.join(root, c.name)
    ys = c.run()
    node = {"op": c.op, "name": c.op.lower(), "inputs": c.node_inputs, "outputs": c.outputs}
    if c.attrs:
        node["attrs"] = c.attrs
    model = {"format": "kiln-model", "version": 1, "name": f"op_{c.name}"}
    if c.doc:
        model["doc"] = c.doc
    model["inputs"] = [{"name": n, "dtype": kiln_io.KILN_DTYPES[a.dtype], "shape": list(a.shape)}
                       for n, a in c.inputs]
    model["outputs"] = [{"name": n, "dtype": kiln_io.KILN_DTYPES[y.dtype], "shape": list(y.shape)}
                        for n, y in zip(c.outputs, ys)]
    if c.params:
        model["params"] = [param_json(n, a) for n, a in c.params]
    model["nodes"] = [node]
    kiln_io.write_model(os.path.join(d, "model.json"), model)
    for n, a in c.inputs:
        kiln_io.save_npy(os.path.join(d, f"{n}.npy"), a)
    for n, y in zip(c.outputs, ys):
        kiln_io.save_npy(os.path.join(d, f"{n}.npy"), y)
    return ys


# ================================================================ ConvTranspose

def np_conv_transpose(x, w, b, strides, pads, dilations, out_pad, group):
    """The ONNX definition as a scatter, float64; pads may come from output_shape."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    N, C, H, W = x.shape
    _, MG, KH, KW = w.shape
    M, CG = MG * group, C // group
    full = [strides[a] * ((H, W)[a] - 1) + out_pad[a] + (((KH, KW)[a]) - 1) * dilations[a] + 1
            for a in range(2)]
    OH, OW = full[0] - pads[0] - pads[2], full[1] - pads[1] - pads[3]
    y = np.zeros((N, M, OH, OW))
    for ic in range(C):
        g = ic // CG
        for ih in range(H):
            for iw in range(W):
                for kh in range(KH):
                    for kw in range(KW):
                        oh = ih * strides[0] - pads[0] + kh * dilations[0]
                        ow = iw * strides[1] - pads[1] + kw * dilations[1]
                        if 0 <= oh < OH and 0 <= ow < OW:
                            y[:, g * MG:(g + 1) * MG, oh, ow] += x[:, ic, ih, iw][:, None] * w[ic, :, kh, kw]
    if b is not None:
        y += b.astype(np.float64)[None, :, None, None]
    return y


def convt_pads(x_hw, k_hw, strides, dilations, out_pad, output_shape, auto_pad):
    """Pads [top, left, bottom, right] for output_shape / SAME_*, as the ONNX spec derives them."""
    begin, end = [], []
    for a in range(2):
        natural = strides[a] * (x_hw[a] - 1) + out_pad[a] + (k_hw[a] - 1) * dilations[a] + 1
        want = output_shape[a] if output_shape else x_hw[a] * strides[a]
        total = natural - want
        first = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begin.append(first), end.append(total - first)
    return begin + end


def convt(name, x_shape, w_shape, group=1, bias=True, strides=(1, 1), pads=None, dilations=(1, 1),
          output_padding=(0, 0), output_shape=None, auto_pad=None, doc=None):
    c = Case(name, "ConvTranspose", doc)
    x = c.randn(*x_shape)
    w = c.randn(*w_shape, scale=1.0 / math.sqrt(w_shape[1] * w_shape[2] * w_shape[3]))
    b = c.randn(w_shape[1] * group) if bias else None
    c.input("x", x).param("w", w)
    if bias:
        c.param("b", b)
    c.set(kernel_shape=list(w_shape[2:]))
    for key, v, dflt in (("strides", strides, (1, 1)), ("dilations", dilations, (1, 1)),
                         ("output_padding", output_padding, (0, 0))):
        if tuple(v) != dflt:
            c.set(**{key: list(v)})
    if group != 1:
        c.set(group=group)
    if pads is not None:
        c.set(pads=list(pads))
    if output_shape is not None:
        c.set(output_shape=list(output_shape))
    if auto_pad is not None:
        c.set(auto_pad=auto_pad)
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = convt_pads(x_shape[2:], w_shape[2:], strides, dilations, output_padding, output_shape,
                          auto_pad)
    pads = list(pads or (0, 0, 0, 0))

    def torch_ref(x, w, b=None):
        y = F.conv_transpose2d(x, w, b, stride=tuple(strides), padding=0,
                               output_padding=tuple(output_padding), groups=group,
                               dilation=tuple(dilations))
        return y[:, :, pads[0]:y.shape[2] - pads[2], pads[1]:y.shape[3] - pads[3]].contiguous()

    c.check = lambda: [np_conv_transpose(x, w, b, strides, pads, dilations, output_padding, group)]
    c.compute(torch_ref)


def convt_cases():
    convt("convt_plain", (1, 3, 5, 5), (3, 4, 3, 3))
    convt("convt_s2_outpad", (1, 2, 4, 5), (2, 3, 3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
          output_padding=(1, 1), doc="stride 2, pads 1, output_padding 1: 8x10, as nn.ConvTranspose2d")
    convt("convt_group2", (2, 4, 4, 4), (4, 3, 3, 3), group=2, strides=(2, 2),
          doc="groups: 2 input channels feed 3 output channels each")
    convt("convt_depthwise", (1, 3, 4, 4), (3, 1, 2, 2), group=3, strides=(2, 2), bias=False)
    convt("convt_dilation2", (1, 2, 4, 4), (2, 3, 3, 3), dilations=(2, 2), pads=(1, 2, 1, 2))
    convt("convt_pads_asym", (1, 2, 5, 4), (2, 2, 3, 3), strides=(2, 1), pads=(1, 0, 0, 2),
          doc="pads [top=1, left=0, bottom=0, right=2], strides (2, 1)")
    convt("convt_output_shape", (1, 2, 5, 5), (2, 2, 3, 3), strides=(2, 2), output_shape=(10, 9),
          doc="natural 11x11: total pads 1 and 2, split begin = total - total / 2")
    convt("convt_same_upper", (1, 2, 4, 3), (2, 2, 3, 3), strides=(2, 2), auto_pad="SAME_UPPER",
          doc="output = input * stride; odd total padding goes at the end")
    convt("convt_same_lower", (1, 2, 4, 3), (2, 2, 3, 3), strides=(2, 2), auto_pad="SAME_LOWER",
          doc="odd total padding goes at the beginning")
    convt("convt_rect_nobias", (2, 3, 3, 4), (3, 2, 2, 3), strides=(2, 1), bias=False,
          output_padding=(1, 0), doc="kernel 2x3, strides (2, 1): catches H/W mix-ups")


# ================================================================ pools, LRN, normalization

def global_pool_cases():
    for rank_shape, tag in (((2, 3, 5, 4), "4d"), ((2, 3, 7), "3d"), ((1, 2, 3, 4, 2), "5d")):
        c = Case(f"globalavgpool_{tag}", "GlobalAveragePool")
        x = c.randn(*rank_shape)
        dims = tuple(range(2, len(rank_shape)))
        c.input("x", x).compute(lambda x, dims=dims: x.mean(dim=dims, keepdim=True))
        c.check = lambda x=x, dims=dims: [x.astype(np.float64).mean(axis=dims, keepdims=True)]
        c = Case(f"globalmaxpool_{tag}", "GlobalMaxPool")
        x = c.randn(*rank_shape)
        c.input("x", x).compute(lambda x, dims=dims: x.amax(dim=dims, keepdim=True))
        c.check = lambda x=x, dims=dims: [x.max(axis=dims, keepdims=True)]


def np_lrn(x, size, alpha, beta, bias):
    x = x.astype(np.float64)
    C = x.shape[1]
    y = np.empty_like(x)
    lo_off, hi_off = (size - 1) // 2, math.ceil((size - 1) / 2)
    for c in range(C):
        lo, hi = max(0, c - lo_off), min(C - 1, c + hi_off)
        sq = (x[:, lo:hi + 1] ** 2).sum(axis=1)
        y[:, c] = x[:, c] / (bias + alpha / size * sq) ** beta
    return y


def torch_lrn(size, alpha, beta, bias):
    def f(x):
        if size % 2:
            return F.local_response_norm(x, size, alpha, beta, bias)
        flipped = torch.flip(x, [1])  # torch's even window is [c - size/2, c + size/2 - 1]
        return torch.flip(F.local_response_norm(flipped, size, alpha, beta, bias), [1])
    return f


def lrn_cases():
    for name, shape, size, alpha, beta, bias, doc in (
            ("lrn_size3", (2, 6, 4, 4), 3, 1e-4, 0.75, 1.0, "defaults except size"),
            ("lrn_size5", (1, 7, 3, 5), 5, 0.5, 0.6, 2.0, "large alpha: the normalization matters"),
            ("lrn_size4_even", (2, 7, 3, 3), 4, 0.8, 0.75, 1.0,
             "even size: window [c-1, c+2] (ONNX), not torch's [c-2, c+1]"),
            ("lrn_size2_rank3", (2, 5, 6), 2, 1.0, 0.5, 0.5, "even size on a 3-D input")):
        c = Case(name, "LRN", doc)
        x = c.randn(*shape, scale=2.0)
        c.input("x", x).set(size=size, alpha=alpha, beta=beta, bias=bias)
        c.compute(torch_lrn(size, alpha, beta, bias))
        c.check = lambda x=x, a=(size, alpha, beta, bias): [np_lrn(x, *a)]


def batchnorm(name, shape, eps=None, doc=None):
    c = Case(name, "BatchNormalization", doc)
    C = shape[1]
    x = c.randn(*shape, scale=2.0)
    scale, b, mean = c.randn(C), c.randn(C), c.randn(C)
    var = c.uniform(0.01, 2.0, C)
    c.input("x", x).param("scale", scale).param("b", b).param("mean", mean).param("var", var)
    e = 1e-5 if eps is None else eps
    if eps is not None:
        c.set(epsilon=eps)
    c.compute(lambda x, s, b, m, v: F.batch_norm(x, m, v, s, b, training=False, eps=e))

    def check():
        bshape = (1, C) + (1,) * (len(shape) - 2)
        r = lambda a: a.astype(np.float64).reshape(bshape)  # noqa: E731
        return [(x - r(mean)) / np.sqrt(r(var) + np.float32(e)) * r(scale) + r(b)]
    c.check = check


def batchnorm_cases():
    batchnorm("batchnorm_4d", (2, 3, 4, 4))
    batchnorm("batchnorm_eps", (2, 4, 3, 3), eps=0.1, doc="epsilon 0.1 with variances down to 0.01")
    batchnorm("batchnorm_2d", (5, 6), doc="(N, C): no spatial dims")
    batchnorm("batchnorm_3d", (2, 3, 7))


def layernorm(name, shape, axis=None, affine=(True, True), eps=None, doc=None):
    c = Case(name, "LayerNormalization", doc)
    ax = -1 if axis is None else axis
    ax = ax + len(shape) if ax < 0 else ax
    norm = tuple(shape[ax:])
    x = c.randn(*shape, scale=2.0) + 1.0
    c.input("x", x)
    scale = c.randn(*norm) if affine[0] else None
    b = c.randn(*norm) if affine[1] else None
    if scale is not None:
        c.param("scale", scale)
    elif b is not None:
        c.skip()
    if b is not None:
        c.param("b", b)
    if axis is not None:
        c.set(axis=axis)
    e = 1e-5 if eps is None else eps
    if eps is not None:
        c.set(epsilon=eps)

    def torch_ref(x, s=None, bb=None):
        return F.layer_norm(x, norm, s, bb, e)

    def check():
        xd = x.astype(np.float64)
        dims = tuple(range(ax, len(shape)))
        m = xd.mean(axis=dims, keepdims=True)
        v = ((xd - m) ** 2).mean(axis=dims, keepdims=True)
        y = (xd - m) / np.sqrt(v + np.float32(e))
        if scale is not None:
            y = y * scale
        if b is not None:
            y = y + b
        return [y]
    c.check = check
    c.compute(torch_ref)


def layernorm_cases():
    layernorm("layernorm_last", (2, 3, 8))
    layernorm("layernorm_axis_neg2", (2, 4, 5), axis=-2, doc="normalizes over the last two dims")
    layernorm("layernorm_axis1", (2, 3, 4, 2), axis=1, eps=1e-3)
    layernorm("layernorm_no_affine", (3, 6), affine=(False, False), doc="no Scale, no B")
    layernorm("layernorm_bias_only", (4, 5), affine=(False, True), doc="Scale skipped with \"\"")


def dropout_cases():
    c = Case("dropout_plain", "Dropout", "inference: identity")
    x = c.randn(2, 3, 4)
    c.input("x", x).compute(lambda x: x.clone())
    c.check = lambda x=x: [x]
    c = Case("dropout_mask", "Dropout", "ratio and training_mode=false given; mask output all true")
    x = c.randn(3, 5)
    c.input("x", x).param("ratio", np.array([0.3], np.float32))
    c.param("training_mode", np.array([False]))
    c.set(seed=7)
    c.compute(lambda x, r, t: (x.clone(), torch.ones(x.shape, dtype=torch.bool)), outputs=("y", "mask"))
    c.check = lambda x=x: [x, np.ones(x.shape, bool)]


# ================================================================ detection

def corners(box, center):
    """ONNX box -> (x1, y1, x2, y2) with x1 <= x2, y1 <= y2."""
    if center:
        xc, yc, w, h = [float(v) for v in box]
        return xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2
    y1, x1, y2, x2 = [float(v) for v in box]
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def iou(a, b):
    """onnxruntime's IoU (0 when the boxes do not overlap)."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def np_nms_class(boxes, scores, K, iou_thr, score_thr, center):
    """ONNX greedy NMS for one (n, c): box indices in selection order."""
    cand = [j for j in range(len(scores)) if score_thr is None or scores[j] > score_thr]
    cand.sort(key=lambda j: (-scores[j], j))
    picked = []
    for j in cand:
        if len(picked) == K:
            break
        if all(iou(corners(boxes[k], center), corners(boxes[j], center)) <= iou_thr for k in picked):
            picked.append(j)
    return picked


def np_nms(boxes, scores, K, iou_thr, score_thr, center):
    """Kiln's static-shape output: (N * C * K, 3) i64, each (n, c) block padded with -1 rows."""
    N, C, _ = scores.shape
    out = -np.ones((N * C * K, 3), np.int64)
    for n in range(N):
        for c in range(C):
            for r, j in enumerate(np_nms_class(boxes[n], scores[n, c], K, iou_thr, score_thr, center)):
                out[(n * C + c) * K + r] = (n, c, j)
    return out


def tv_nms(boxes, scores, K, iou_thr, score_thr, center):
    """The same through torchvision.ops.nms, per class."""
    N, C, _ = scores.shape
    out = -np.ones((N * C * K, 3), np.int64)
    for n in range(N):
        xyxy = torch.tensor([corners(b, center) for b in boxes[n]], dtype=torch.float64)
        for c in range(C):
            s = torch.from_numpy(scores[n, c].astype(np.float64))
            idx = torch.arange(len(s))
            if score_thr is not None:
                idx = idx[s > score_thr]
            keep = idx[tvops.nms(xyxy[idx], s[idx], iou_thr)][:K]
            for r, j in enumerate(keep.tolist()):
                out[(n * C + c) * K + r] = (n, c, j)
    return out


def check_nms_margins(name, boxes, scores, iou_thr, score_thr, center):
    """f32 and double must take the same decisions: no IoU near the threshold, no near-ties."""
    for n in range(boxes.shape[0]):
        cs = [corners(b, center) for b in boxes[n]]
        for i in range(len(cs)):
            for j in range(i):
                v = iou(cs[i], cs[j])
                assert v == 0 or abs(v - iou_thr) > 0.02, (name, n, i, j, v)
        for c in range(scores.shape[1]):
            s = np.sort(scores[n, c])
            assert np.all(np.diff(s) > 1e-3), (name, "score tie")
            if score_thr is not None:
                assert np.all(np.abs(s - score_thr) > 1e-3), (name, "score at the threshold")


def random_box(c, anchor, center, flipped):
    xc, yc = anchor + c.uniform(-1.0, 1.0, 2)
    w, h = c.uniform(1.5, 4.0, 2)
    if center:
        return np.array((xc, yc, w, h), np.float32)
    y1, x1, y2, x2 = yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2
    return np.array((y2, x2, y1, x1) if flipped else (y1, x1, y2, x2), np.float32)


def random_boxes(c, N, B, center, iou_thr, flip=False, size=10.0):
    """Clustered boxes (so that suppression happens) in the ONNX layout; a box whose IoU with an
    earlier one lies within 0.02 of the threshold is drawn again."""
    out = np.zeros((N, B, 4), np.float32)
    for n in range(N):
        anchors = c.uniform(0, size, 3, 2)
        for j in range(B):
            for _ in range(1000):
                out[n, j] = random_box(c, anchors[j % 3], center, flip and j % 2)
                new = corners(out[n, j], center)
                ious = [iou(new, corners(out[n, k], center)) for k in range(j)]
                if all(v == 0 or abs(v - iou_thr) > 0.02 for v in ious):
                    break
            else:
                raise AssertionError("no box clear of the IoU threshold")
    return out


def distinct_scores(c, *shape):
    """Scores a multiple of 1/512 apart: no ties in f32 or double."""
    n = int(np.prod(shape))
    per = shape[-1]
    rows = [c.rng.permutation(np.arange(1, 500))[:per] for _ in range(n // per)]
    return (np.array(rows, np.float32) / 512.0).reshape(shape).astype(np.float32)


def nms(name, N, C, B, K, iou_thr=0.5, score_thr=None, center=0, flip=False, boxes=None,
        scores=None, doc=None):
    c = Case(name, "NonMaxSuppression", doc)
    boxes = random_boxes(c, N, B, center, iou_thr, flip) if boxes is None else boxes
    scores = distinct_scores(c, N, C, B) if scores is None else scores
    check_nms_margins(c.name, boxes, scores, iou_thr, score_thr, center)
    c.input("boxes", boxes).input("scores", scores)
    c.param("max_output_boxes_per_class", np.array([K], np.int64))
    c.param("iou_threshold", np.array([iou_thr], np.float32))
    if score_thr is not None:
        c.param("score_threshold", np.array([score_thr], np.float32))
    if center:
        c.set(center_point_box=1)
    thr = float(np.float32(iou_thr))
    sthr = None if score_thr is None else float(np.float32(score_thr))
    ref = np_nms(boxes, scores, K, thr, sthr, center)
    c.compute(lambda *args: ref.copy(), outputs=("selected_indices",))
    if tvops is not None:
        c.check = lambda: [tv_nms(boxes, scores, K, thr, sthr, center)]
    return c


def nms_cases():
    # [y1, x1, y2, x2]: two clusters of three unit boxes shifted by 0.1 along x (IoU 0.82 with
    # their neighbour, 0.67 between the outer two) and one box far away. By score: 3 is taken and
    # suppresses 4; 0 is taken and suppresses 1 and 2; 5 is taken.
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, -0.1, 1, 0.9],
                       [0, 10, 1, 11], [0, 10.1, 1, 11.1], [0, 100, 1, 101]]], np.float32)
    scores = np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3]]], np.float32)
    nms("nms_suite", 1, 1, 6, 3, iou_thr=0.5, boxes=boxes, scores=scores,
        doc="hand-checkable: picks 3, 0, 5")
    nms("nms_padded", 1, 1, 6, 5, iou_thr=0.5, boxes=boxes, scores=scores,
        doc="K = 5 > the 3 survivors: two rows of -1")
    nms("nms_classes", 2, 3, 10, 4, iou_thr=0.4, doc="N = 2, C = 3, random clustered boxes")
    nms("nms_center", 1, 2, 9, 4, iou_thr=0.3, center=1, doc="center_point_box = 1")
    nms("nms_score_threshold", 2, 2, 8, 5, iou_thr=0.5, score_thr=230.5 / 512,
        doc="boxes scoring <= 0.45 are never selected")
    nms("nms_flipped", 1, 2, 8, 4, iou_thr=0.35, flip=True,
        doc="odd boxes given as (y2, x2, y1, x1): corners are normalized")
    nms("nms_cap", 1, 1, 12, 2, iou_thr=0.7, doc="max_output_boxes_per_class = 2 cuts the list")


def np_roi_pool(x, rois, pooled, scale):
    """ONNX MaxRoiPool (onnxruntime / torchvision), bin bounds in exact integers."""
    N, C, H, W = x.shape
    PH, PW = pooled
    y = np.zeros((len(rois), C, PH, PW), np.float32)
    rnd = lambda v: int(math.floor(v + 0.5)) if v >= 0 else int(math.ceil(v - 0.5))  # noqa: E731
    for r, (bi, x1, y1, x2, y2) in enumerate(rois.astype(np.float64)):
        bi = min(max(int(bi), 0), N - 1)
        sw, sh = rnd(np.float32(x1 * np.float32(scale))), rnd(np.float32(y1 * np.float32(scale)))
        ew, eh = rnd(np.float32(x2 * np.float32(scale))), rnd(np.float32(y2 * np.float32(scale)))
        rh, rw = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        for ph in range(PH):
            h0 = min(max(ph * rh // PH + sh, 0), H)
            h1 = min(max(-(-(ph + 1) * rh // PH) + sh, 0), H)
            for pw in range(PW):
                w0 = min(max(pw * rw // PW + sw, 0), W)
                w1 = min(max(-(-(pw + 1) * rw // PW) + sw, 0), W)
                if h1 > h0 and w1 > w0:
                    y[r, :, ph, pw] = x[bi, :, h0:h1, w0:w1].max(axis=(1, 2))
    return y


def roipool(name, x_shape, rois, pooled, scale=None, doc=None):
    c = Case(name, "MaxRoiPool", doc)
    x = c.randn(*x_shape)
    rois = np.array(rois, np.float32)
    c.input("x", x).input("rois", rois).set(pooled_shape=list(pooled))
    s = 1.0 if scale is None else scale
    if scale is not None:
        c.set(spatial_scale=scale)
    ref = np_roi_pool(x, rois, pooled, s)
    if tvops is not None:
        c.compute(lambda x, r: tvops.roi_pool(x, r, tuple(pooled), s))
        c.check = lambda: [ref]
        c.check_tol = 0
    else:
        c.compute(lambda x, r: ref.copy())


def roipool_cases():
    roipool("maxroipool_basic", (2, 3, 10, 12),
            [[0, 1, 1, 8, 6], [1, 0, 2, 11, 9], [0, 3.3, 4.6, 6.2, 9.1], [1, 5, 5, 5, 5]], (3, 2),
            doc="includes a 1x1 RoI and fractional corners")
    roipool("maxroipool_scale", (1, 2, 8, 8),
            [[0, 2, 2, 12, 14], [0, 0, 0, 15, 15], [0, 9.2, 3.4, 14.8, 10.2]], (2, 3), scale=0.5,
            doc="spatial_scale 0.5 (rounding of x * scale half away from zero)")
    roipool("maxroipool_clipped", (1, 2, 6, 7),
            [[0, -3, -2, 4, 3], [0, 4, 3, 12, 11], [0, 9, 8, 13, 12]], (3, 3),
            doc="RoIs past the borders: bins clipped, empty bins give 0")


def np_roi_align(x, rois, bidx, out_hw, scale, sampling_ratio, half_pixel, mode):
    """ONNX RoiAlign (opset 16, onnxruntime's algorithm), float64."""
    N, C, H, W = x.shape
    OH, OW = out_hw
    x = x.astype(np.float64)
    y = np.zeros((len(rois), C, OH, OW))
    off = 0.5 if half_pixel else 0.0

    def terms(plane, yy, xx):
        if yy < -1.0 or yy > H or xx < -1.0 or xx > W:
            return np.zeros((4, C))
        yy, xx = max(yy, 0.0), max(xx, 0.0)
        y0, x0 = int(yy), int(xx)
        if y0 >= H - 1:
            y0 = y1 = H - 1
            yy = float(y0)
        else:
            y1 = y0 + 1
        if x0 >= W - 1:
            x0 = x1 = W - 1
            xx = float(x0)
        else:
            x1 = x0 + 1
        ly, lx = yy - y0, xx - x0
        hy, hx = 1 - ly, 1 - lx
        return np.array([hy * hx * plane[:, y0, x0], hy * lx * plane[:, y0, x1],
                         ly * hx * plane[:, y1, x0], ly * lx * plane[:, y1, x1]])

    for r in range(len(rois)):
        x1, y1, x2, y2 = [float(v) * scale - off for v in rois[r]]
        rw, rh = x2 - x1, y2 - y1
        if not half_pixel:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / OH, rw / OW
        gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rh / OH))
        gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rw / OW))
        plane = x[min(max(int(bidx[r]), 0), N - 1)]
        for ph in range(OH):
            for pw in range(OW):
                vals = []
                for iy in range(gh):
                    yy = y1 + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        xx = x1 + pw * bw + (ix + 0.5) * bw / gw
                        t = terms(plane, yy, xx)
                        vals.append(t.max(axis=0) if mode == "max" else t.sum(axis=0))
                if not vals:
                    continue
                if mode == "max":
                    y[r, :, ph, pw] = np.max(vals, axis=0)
                else:
                    y[r, :, ph, pw] = np.sum(vals, axis=0) / max(gh * gw, 1)
    return y


def roialign(name, x_shape, rois, bidx, out_hw, scale=1.0, sampling_ratio=0, ctm=None,
             mode=None, doc=None):
    c = Case(name, "RoiAlign", doc)
    x = c.randn(*x_shape)
    rois = np.array(rois, np.float32)
    bidx = np.array(bidx, np.int64)
    c.input("x", x).input("rois", rois).input("batch_indices", bidx)
    c.set(output_height=out_hw[0], output_width=out_hw[1])
    if scale != 1.0:
        c.set(spatial_scale=scale)
    if sampling_ratio:
        c.set(sampling_ratio=sampling_ratio)
    if ctm:
        c.set(coordinate_transformation_mode=ctm)
    if mode:
        c.set(mode=mode)
    half = (ctm or "half_pixel") == "half_pixel"
    ref = np_roi_align(x, rois, bidx, out_hw, float(np.float32(scale)), sampling_ratio, half,
                       mode or "avg").astype(np.float32)
    if tvops is not None and mode != "max":
        def tv(x, r, b):
            boxes = torch.cat([b.to(torch.float32)[:, None], r], dim=1)
            return tvops.roi_align(x, boxes, tuple(out_hw), float(np.float32(scale)), sampling_ratio, half)
        c.compute(tv)
        c.check = lambda: [ref]
    else:
        c.compute(lambda *a: ref.copy())


def roialign_cases():
    rois = [[1.2, 0.7, 7.9, 6.3], [0.3, 2.2, 10.6, 8.9], [3.1, 3.4, 5.2, 4.1], [5.5, 1.3, 11.4, 9.6]]
    roialign("roialign_s2", (2, 3, 10, 12), rois, [0, 1, 1, 0], (3, 4), sampling_ratio=2,
             doc="half_pixel, sampling_ratio 2")
    roialign("roialign_adaptive", (2, 3, 10, 12), rois, [1, 0, 1, 0], (2, 3),
             doc="sampling_ratio 0: ceil(roi size / output size) samples per bin")
    roialign("roialign_output_half_pixel", (1, 2, 9, 9),
             [[2.3, 1.4, 14.2, 12.6], [4.1, 4.3, 4.9, 5.2]], [0, 0], (3, 3), scale=0.5,
             ctm="output_half_pixel", doc="no half-pixel shift, RoI size at least 1; scale 0.5")
    roialign("roialign_border", (1, 2, 6, 7),
             [[-2.6, -1.7, 3.3, 2.9], [4.2, 3.1, 9.7, 8.4], [-5.3, 2.2, -1.4, 4.6]], [0, 0, 0], (2, 2),
             sampling_ratio=2, doc="samples beyond the border: clamped, or 0 past -1 / H")
    roialign("roialign_max", (1, 3, 8, 8), rois[:3], [0, 0, 0], (2, 3), sampling_ratio=2,
             mode="max", doc="max mode (onnxruntime's definition; numpy reference)")


# ================================================================ main

def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    repo = kiln_io.repo_root()
    root = os.path.join(repo, "tests", "goldens", "ops")
    convt_cases()
    global_pool_cases()
    lrn_cases()
    batchnorm_cases()
    layernorm_cases()
    dropout_cases()
    nms_cases()
    roipool_cases()
    roialign_cases()

    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for d in glob.glob(os.path.join(root, PREFIX + "*")):
        shutil.rmtree(d)
    worst = 0.0
    for c in CASES:
        ys = write_case(root, c)
        if c.check is None:
            continue
        for y, ref in zip(ys, c.check()):
            ref = np.asarray(ref)
            assert ref.shape == y.shape, (c.name, ref.shape, y.shape)
            err = float(np.max(np.abs(ref.astype(np.float64) - y.astype(np.float64)))) if y.size else 0.0
            assert err <= c.check_tol, (c.name, err)
            worst = max(worst, err)
    with open(os.path.join(root, "cases-nn.txt"), "w") as f:
        for c in CASES:
            f.write(f"{c.name} {c.op}\n")
    print(f"wrote {len(CASES)} cases to {os.path.relpath(root, repo)}/{PREFIX}* "
          f"(reference vs literal check: max |diff| {worst:.2e}; torchvision "
          f"{'used' if tvops is not None else 'not installed'})")


if __name__ == "__main__":
    main()
