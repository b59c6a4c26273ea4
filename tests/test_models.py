"""Exportable modules: backbones by name, FrameDetector, Embedder, local weights, ONNX round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors.models import (Embedder, FrameDetector, build_embedder, build_frame_detector, create_backbone,
                              export_module)

torch.set_num_threads(1)


@pytest.mark.parametrize("name,channels", [("tiny_cnn", 64), ("resnet18", 512), ("mobilenetv3_large_100", 960),
                                           ("efficientnet_b0", 1280)])
def test_backbones_give_feature_maps(name, channels):
    bb = create_backbone(name)
    f = bb(torch.zeros(1, 3, 64, 64))
    assert bb.channels == channels and f.shape[:2] == (1, channels)
    assert f.shape[-1] == 64 // bb.stride


def test_vit_tokens_become_a_square_map():
    bb = create_backbone("vit_tiny_patch16_224", img_size=64)
    assert bb(torch.zeros(1, 3, 64, 64)).shape == (1, 192, 4, 4)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone 'no_such_net'"):
        create_backbone("no_such_net")


def test_frame_detector_and_embedder_shapes():
    det = build_frame_detector("tiny_cnn", dropout=0.2).eval()
    x = torch.randn(4, 3, 32, 32)
    assert det(x).shape == (4, 1)
    assert torch.allclose(det(x), det.head(det.features(x)))
    emb = build_embedder("tiny_cnn").eval()
    assert emb(x).shape == (4, 64) and emb.classify(x).shape == (4, 2)
    assert export_module(det) is det and export_module(emb) is emb
    with pytest.raises(TypeError):
        export_module(object())


def test_local_weights_round_trip(tmp_path):
    a = create_backbone("resnet18")
    torch.save(a.net.state_dict(), tmp_path / "w.pth")
    b = create_backbone("resnet18", weights=tmp_path / "w.pth")
    a.eval(), b.eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(a(x), b(x))
    with pytest.raises(ValueError, match="do not fit"):
        create_backbone("tiny_cnn", weights=tmp_path / "w.pth")
    with pytest.raises(FileNotFoundError):
        create_backbone("resnet18", weights=tmp_path / "missing.pth")


@pytest.mark.parametrize("kind", ["frame", "embed"])
def test_onnx_export_matches_torch(tmp_path, kind):
    import onnxruntime as ort

    torch.manual_seed(0)
    model: torch.nn.Module = FrameDetector(create_backbone("tiny_cnn")) if kind == "frame" else Embedder(
        create_backbone("tiny_cnn"))
    model = export_module(model)
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / f"{kind}.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["out"],
                      dynamic_axes={"input": {0: "n"}, "out": {0: "n"}}, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x3 = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    got = sess.run(None, {"input": x3})[0]
    want = model(torch.from_numpy(x3)).detach().numpy()
    assert got.shape == want.shape == ((3, 1) if kind == "frame" else (3, 64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
