"""detectors.runtime.tensorrt: cache keys everywhere; the engine path only where TensorRT + a GPU exist."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from detectors.runtime import RuntimeError_, select_runtime
from detectors.runtime import tensorrt as trtmod

BASE = dict(onnx_sha256="a" * 64, trt_version="10.13.3", compute_capability="8.9", gpu_name="NVIDIA L4",
            precision="fp16", profile=(1, 8, 32), opt_level=3)


def test_plan_key_deterministic_and_sensitive_to_every_component():
    k = trtmod.plan_key(**BASE)
    assert k.digest() == trtmod.plan_key(**BASE).digest()
    assert k.filename() == trtmod.plan_key(**BASE).filename()
    assert k.filename().startswith("aaaaaaaaaaaa-trt10.13.3-sm89-fp16-")
    changes = dict(onnx_sha256="b" * 64, trt_version="10.13.4", compute_capability="9.0", gpu_name="NVIDIA H100",
                   precision="fp32", profile=(1, 8, 64), opt_level=5)
    digests = {k.digest()}
    for field, value in changes.items():
        other = trtmod.plan_key(**{**BASE, field: value})
        assert other.digest() != k.digest(), field
        assert other.filename() != k.filename(), field
        digests.add(other.digest())
    assert len(digests) == 1 + len(changes)
    assert trtmod.plan_key(**{**BASE, "profile": trtmod.Profile(1, 8, 32)}) == k


def test_profile_and_precision_validation():
    with pytest.raises(RuntimeError_, match="invalid TensorRT profile"):
        trtmod.Profile(4, 2, 8)
    with pytest.raises(RuntimeError_, match="precision"):
        trtmod.plan_key(**{**BASE, "precision": "int8"})


def test_stale_plan_reasons(tmp_path):
    import json

    k = trtmod.plan_key(**BASE)
    old = dataclasses.replace(k, trt_version="10.0.1", compute_capability="8.6")
    meta = {**dataclasses.asdict(old), "profile": list(old.profile)}
    (tmp_path / f"{old.filename()}.json").write_text(json.dumps(meta))
    reasons = trtmod._stale_plans(tmp_path, k)
    assert len(reasons) == 1
    assert "trt_version='10.0.1'" in reasons[0] and "compute_capability='8.6'" in reasons[0]


def test_tensorrt_unavailable_here_gives_clear_error(tmp_path):
    if trtmod.tensorrt_available():
        pytest.skip("TensorRT is available on this host")
    assert trtmod.tensorrt_available() is False
    import torch

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    p = tmp_path / "m.onnx"
    torch.onnx.export(m, (torch.randn(1, 3, 16, 16),), str(p), input_names=["input"], output_names=["logit"],
                      dynamic_axes={"input": {0: "b"}}, dynamo=False)
    with pytest.raises(RuntimeError_, match="tensorrt"):
        select_runtime(p, prefer="tensorrt")
    rt = select_runtime(p, prefer="auto")  # falls back to ONNX Runtime
    assert rt.name.startswith("onnxruntime")


def test_tensorrt_engine_matches_onnxruntime(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except Exception:
        pytest.skip("TensorRT not installed")
    if not trtmod.tensorrt_available():
        pytest.skip("TensorRT installed but no CUDA GPU")
    import torch

    from detectors.runtime import OrtRuntime

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(8, 1)).eval()
    p = tmp_path / "frame.onnx"
    torch.onnx.export(m, (torch.randn(2, 3, 32, 32),), str(p), input_names=["input"], output_names=["logit"],
                      dynamic_axes={"input": {0: "batch"}, "logit": {0: "batch"}}, dynamo=False)
    rt = trtmod.TensorRTRuntime.from_onnx(p, plan_dir=tmp_path / "plans", precision="fp32", profile=(1, 4, 8))
    x = np.random.default_rng(0).normal(size=(11, 3, 32, 32)).astype(np.float32)  # > max batch: chunked
    np.testing.assert_allclose(rt.run(x), OrtRuntime(p).run(x), atol=1e-3)
    plans = list((tmp_path / "plans").glob("*.plan"))
    assert len(plans) == 1
    again = trtmod.TensorRTRuntime.from_onnx(p, plan_dir=tmp_path / "plans", precision="fp32", profile=(1, 4, 8),
                                             build=False)  # served from the cache
    np.testing.assert_allclose(again.run(x[:3]), rt.run(x[:3]), atol=1e-6)
