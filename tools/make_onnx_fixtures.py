"""Writes tests/onnx/fixtures/: small ONNX files for the importer's tests (tests/onnx/test_onnx.c).

    /usr/bin/python3 tools/make_onnx_fixtures.py

Good models, with PyTorch goldens:
    tiny_conv.onnx      a small conv net (Conv, Relu, MaxPool, Flatten, Gemm) exported by
                        torch.onnx.export at opset 13, random seeded weights; x.npy -> y.npy
    tiny_conv_op7.onnx  the same net exported at opset 7 (same goldens)
    tiny_conv_dyn.onnx  the same net with a dynamic batch dimension `N` (needs --shape x=2x3x8x8)
    external.onnx       Conv whose weight lives in external.bin (offset 64) and whose bias is a
                        Constant node; raw_data, typed fields and external data together;
                        ext_x.npy -> ext_y.npy computed with PyTorch
Bad models (each must be rejected with a clear error, exit status 2):
    truncated.onnx, not_protobuf.onnx, empty.onnx, wrong_wire_type.onnx (the graph field encoded
    as an integer), wrong_attr_type.onnx (kernel_shape as a float), missing_initializer.onnx,
    unknown_ops.onnx (three unsupported ops, one in another domain), float16.onnx (an initializer of
    a dtype Kiln lacks), escape.onnx (external data outside the model's directory), bad_raw.onnx
    (raw_data of the wrong length)
"""

import os
import shutil

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "onnx", "fixtures")


class TinyConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):  # x: (N, 3, 8, 8)
        y = self.pool(torch.relu(self.conv(x)))  # (N, 4, 4, 4)
        return self.fc(torch.flatten(y, 1))  # (N, 5)


def export(model, x, name, opset, dynamic=False):
    path = os.path.join(OUT, name)
    axes = {"x": {0: "N"}, "y": {0: "N"}} if dynamic else None
    torch.onnx.export(model, x, path, input_names=["x"], output_names=["y"], opset_version=opset,
                      dynamic_axes=axes, do_constant_folding=True)
    onnx.checker.check_model(onnx.load(path))


def save(name, a):
    np.save(os.path.join(OUT, name), np.ascontiguousarray(a))


def write(name, model_or_bytes):
    with open(os.path.join(OUT, name), "wb") as f:
        if isinstance(model_or_bytes, bytes):
            f.write(model_or_bytes)
        else:
            f.write(model_or_bytes.SerializeToString())


def conv_graph(nodes, initializers, inputs=None, opset=13):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", inputs, [out], initializer=initializers)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def external_model(rng):
    """Conv with W in external.bin at offset 64, bias from a Constant node (value_floats)."""
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    with open(os.path.join(OUT, "external.bin"), "wb") as f:
        f.write(b"\0" * 64 + w.tobytes())
    wt = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=w.shape)
    wt.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "external.bin"), ("offset", "64"), ("length", str(w.nbytes))):
        e = wt.external_data.add()
        e.key, e.value = k, v
    nodes = [
        helper.make_node("Constant", [], ["B"], value_floats=b.tolist()),
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    m = conv_graph(nodes, [wt])
    write("external.onnx", m)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    y = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                              torch.from_numpy(b), padding=1))
    save("ext_x.npy", x)
    save("ext_y.npy", y.numpy())
    # The same model pointing outside its directory.
    m.graph.initializer[0].external_data[0].value = "../fixtures/external.bin"
    write("escape.onnx", m)


def bad_models(good_bytes, rng):
    write("truncated.onnx", good_bytes[: len(good_bytes) * 3 // 5])
    write("not_protobuf.onnx", b"this is not an ONNX model, just text\n")
    write("empty.onnx", b"")
    # ModelProto: ir_version = 8 (field 1, varint), graph (field 7) encoded as a varint.
    write("wrong_wire_type.onnx", bytes([0x08, 0x08, 0x38, 0x05]))
    w = numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "W")
    conv = helper.make_node("Conv", ["x", "W"], ["y"], name="conv1")
    conv.attribute.append(helper.make_attribute("kernel_shape", 3.0))
    write("wrong_attr_type.onnx", conv_graph([conv], [w]))
    write("missing_initializer.onnx",
          conv_graph([helper.make_node("Conv", ["x", "W_missing"], ["y"], name="conv1")], []))
    nodes = [
        helper.make_node("FooOp", ["x"], ["a"], name="foo1"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("BarOp", ["b"], ["c"], name="bar1"),
        helper.make_node("Baz", ["c"], ["y"], name="baz1", domain="com.example"),
    ]
    write("unknown_ops.onnx", conv_graph(nodes, []))
    h = numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float16), "W_half")
    write("float16.onnx",
          conv_graph([helper.make_node("Conv", ["x", "W_half"], ["y"], name="conv1")], [h]))
    bad = numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "W")
    bad.raw_data = bad.raw_data[:-4]
    write("bad_raw.onnx", conv_graph([helper.make_node("Conv", ["x", "W"], ["y"], name="c")], [bad]))


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = TinyConv().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        y = net(x)
    export(net, x, "tiny_conv.onnx", 13)
    export(net, x, "tiny_conv_op7.onnx", 7)
    export(net, x, "tiny_conv_dyn.onnx", 13, dynamic=True)
    save("x.npy", x.numpy())
    save("y.npy", y.numpy())
    external_model(rng)
    with open(os.path.join(OUT, "tiny_conv.onnx"), "rb") as f:
        bad_models(f.read(), rng)
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
