import json

import numpy as np
import pytest

from detectors.bundle import BundleError, FrameModelSpec, Manifest, load_bundle, write_bundle
from detectors.faces.align import align_face, crop_template, similarity_transform, transform_points


def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    ang, s, t = 0.3, 1.7, np.array([12.0, -4.0])
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = s * src @ r.T + t
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(transform_points(m, src), dst, atol=1e-9)


def test_align_face_puts_landmarks_on_template():
    img = np.zeros((400, 600, 3), np.uint8)
    tpl = crop_template(256, 1.3)
    # place five bright dots at a rotated/scaled copy of the template in the frame
    m_inv = similarity_transform(tpl, tpl * 1.4 + [150, 60])
    kps = transform_points(m_inv, tpl)
    for x, y in kps:
        img[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2] = 255
    crop = align_face(img, kps, 256, 1.3)
    assert crop.shape == (256, 256, 3)
    for x, y in tpl:
        assert crop[int(round(y)), int(round(x))].max() > 100


def test_align_rejects_bad_landmarks():
    with pytest.raises(ValueError):
        align_face(np.zeros((10, 10, 3), np.uint8), np.zeros((5, 2)))
    with pytest.raises(ValueError):
        align_face(np.zeros((10, 10, 3), np.uint8), np.zeros((4, 2)))


def test_bundle_roundtrip_and_corruption(tmp_path):
    m = Manifest(name="t", version="1", frame=FrameModelSpec(method="plain", backbone="tiny"))
    b = write_bundle(tmp_path / "b", m, {"frame.onnx": b"not really onnx"})
    assert b.manifest.frame.backbone == "tiny"
    assert len(b.manifest.files["frame.onnx"]) == 64
    (tmp_path / "b" / "frame.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        load_bundle(tmp_path / "b")
    (tmp_path / "b" / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path / "b")
    (tmp_path / "b" / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(BundleError, match="format_version"):
        load_bundle(tmp_path / "b")
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")
