"""Tiny ONNX graphs with InsightFace model signatures, built with ``onnx.helper`` only (no torch).

* :func:`make_scrfd` -- a dynamic-size "SCRFD" detector with 9 outputs (3 strides x score / bbox /
  keypoints, 2 anchors per cell, non-batched rank-2 outputs like buffalo_l's ``det_10g.onnx``).
  Only stride 32 fires: a cell's score is ``sigmoid(20 * (mean(cell) - 0.8))`` on the normalised
  input, so a bright square (one 32 px cell, aligned to the 32 grid) on a dark background gives detections centred on it,
  each a box of 2 x 32 px with 5 face-like keypoints.
* :func:`make_arcface` -- a "recognizer" 112x112 -> 512 (average pool 16 -> 7x7x3 -> fixed random
  linear map); the batch axis is dynamic, so it embeds a batch in one call.
* :func:`make_genderage` -- a 96x96 -> 3 "attribute" model (a pack module we must ignore).

Node names are neutral (not Sub*/Mul* in the first nodes) so InsightFace assumes mean/std 127.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
# Keypoint offsets (x, y) in units of the stride, relative to the anchor centre: eyes, nose, mouth.
KPS_OFFSETS = np.array([[-0.35, -0.25], [0.35, -0.25], [0.0, 0.05], [-0.3, 0.4], [0.3, 0.4]], dtype=np.float32)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_scrfd(path: str | Path) -> Path:
    """Write the tiny 9-output detector to ``path``."""
    path = Path(path)
    nodes, inits, outputs = [], [], []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    nodes.append(helper.make_node("ReduceMean", ["input.1"], ["gray"], keepdims=1, axes=[1], name="gray_mean"))
    const("gain", np.array(20.0, dtype=np.float32))
    const("zero", np.array(0.0, dtype=np.float32))
    const("one", np.array(1.0, dtype=np.float32))
    const("bbox_row", np.ones((1, 4), dtype=np.float32))  # distances l, t, r, b = 1 stride
    const("kps_row", KPS_OFFSETS.reshape(1, 10))
    scores, bboxes, kpss = [], [], []
    for s in (8, 16, 32):
        p = f"s{s}"
        nodes.append(helper.make_node("AveragePool", ["gray"], [f"{p}_pool"], kernel_shape=[s, s], strides=[s, s],
                                      name=f"{p}_avgpool"))
        # (1, 1, h, w) -> (1, h, w, 1) -> two anchors per cell -> (h * w * 2, 1)
        nodes.append(helper.make_node("Transpose", [f"{p}_pool"], [f"{p}_t"], perm=[0, 2, 3, 1], name=f"{p}_tr"))
        nodes.append(helper.make_node("Concat", [f"{p}_t", f"{p}_t"], [f"{p}_a"], axis=3, name=f"{p}_anchors"))
        const(f"{p}_shape", np.array([-1, 1], dtype=np.int64))
        nodes.append(helper.make_node("Reshape", [f"{p}_a", f"{p}_shape"], [f"{p}_cells"], name=f"{p}_flat"))
        if s == 32:
            nodes.append(helper.make_node("Add", [f"{p}_cells", "neg_thr"], [f"{p}_c"], name=f"{p}_shift"))
            nodes.append(helper.make_node("Mul", [f"{p}_c", "gain"], [f"{p}_g"], name=f"{p}_gain"))
            nodes.append(helper.make_node("Sigmoid", [f"{p}_g"], [f"score_{s}"], name=f"{p}_sigmoid"))
        else:
            nodes.append(helper.make_node("Mul", [f"{p}_cells", "zero"], [f"score_{s}"], name=f"{p}_off"))
        # constant rows broadcast to (n, 4) and (n, 10)
        nodes.append(helper.make_node("Mul", [f"{p}_cells", "zero"], [f"{p}_z"], name=f"{p}_z0"))
        nodes.append(helper.make_node("Add", [f"{p}_z", "one"], [f"{p}_ones"], name=f"{p}_ones1"))
        nodes.append(helper.make_node("Mul", [f"{p}_ones", "bbox_row"], [f"bbox_{s}"], name=f"{p}_bbox"))
        nodes.append(helper.make_node("Mul", [f"{p}_ones", "kps_row"], [f"kps_{s}"], name=f"{p}_kps"))
        scores.append(f"score_{s}")
        bboxes.append(f"bbox_{s}")
        kpss.append(f"kps_{s}")
    const("neg_thr", np.array(-0.8, dtype=np.float32))
    for names, ch in ((scores, 1), (bboxes, 4), (kpss, 10)):
        for n in names:
            outputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n_" + n, ch]))
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])
    graph = helper.make_graph(nodes, "tiny_scrfd", [inp], outputs, initializer=inits)
    return _save(graph, path)


def make_arcface(path: str | Path, dim: int = 512, seed: int = 0) -> Path:
    """Write the tiny 112x112 -> ``dim`` recognizer to ``path``."""
    path = Path(path)
    w = np.random.default_rng(seed).standard_normal((3 * 7 * 7, dim)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["data"], ["pool"], kernel_shape=[16, 16], strides=[16, 16], name="pool16"),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1, name="flatten"),
        helper.make_node("MatMul", ["flat", "fc_w"], ["fc1"], name="fc"),
    ]
    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["None", 3, 112, 112])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["None", dim])
    graph = helper.make_graph(nodes, "tiny_arcface", [inp], [out], initializer=[numpy_helper.from_array(w, "fc_w")])
    return _save(graph, path)


def make_genderage(path: str | Path) -> Path:
    """Write a tiny 96x96 -> 3 attribute model to ``path``."""
    path = Path(path)
    w = np.ones((3, 3), dtype=np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["pool"], name="gap"),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1, name="flatten"),
        helper.make_node("MatMul", ["flat", "w"], ["fc1"], name="fc"),
    ]
    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["None", 3, 96, 96])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["None", 3])
    graph = helper.make_graph(nodes, "tiny_genderage", [inp], [out], initializer=[numpy_helper.from_array(w, "w")])
    return _save(graph, path)


def make_pack(folder: str | Path, detector: bool = True, recognizer: bool = True, extra: bool = True) -> Path:
    """A legacy-layout model-pack folder with the tiny models (names like buffalo_l's)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if detector:
        make_scrfd(folder / "det_tiny.onnx")
    if recognizer:
        make_arcface(folder / "w_tiny.onnx")
    if extra:
        make_genderage(folder / "genderage.onnx")
    return folder


def bright_square_image(w: int = 640, h: int = 480, x: int = 256, y: int = 192, side: int = 32) -> np.ndarray:
    """RGB uint8 dark frame with one white ``side`` x ``side`` square at (x, y)."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[y : y + side, x : x + side] = 255
    return img
