"""InsightFace backend through InsightFace's REAL loader, on tiny generated model packs (CPU, offline)."""

from __future__ import annotations

import json
import hashlib
from pathlib import Path

import numpy as np
import pytest

from detectors.faces.align import align_face
from detectors.faces.factory import FacesConfig, build_face_pipeline
from detectors.faces.insight import (
    FacePackError,
    InsightFaceDetector,
    InsightFaceEmbedder,
    load_pack,
    validate_pack_dir,
)
from detectors.faces.types import FaceDetector, FaceEmbedder
from tests import onnx_models as om


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    return om.make_pack(tmp_path_factory.mktemp("packs") / "tinypack")


@pytest.fixture(scope="module")
def loaded(pack):
    return InsightFaceDetector.from_pack(pack, det_size=640, threshold=0.5)


def test_real_loader_routes_models(pack):
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.scrfd import SCRFD

    models = load_pack(pack)
    assert set(models) == {"detection", "recognition"}  # the genderage model is ignored
    assert isinstance(models["detection"], SCRFD) and models["detection"].use_kps
    assert isinstance(models["recognition"], ArcFaceONNX)
    assert models["detection"].session.get_providers() == ["CPUExecutionProvider"]
    assert models["recognition"].session.get_providers() == ["CPUExecutionProvider"]


def test_detector_finds_bright_square(loaded):
    det, emb = loaded
    assert isinstance(det, FaceDetector) and isinstance(emb, FaceEmbedder)
    img = om.bright_square_image(640, 480, x=256, y=192)
    faces = det.detect(img)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.9
    # SCRFD anchors sit on the cell's corner; our box is +-1 stride around it
    np.testing.assert_allclose(f.box, [224, 160, 288, 224], atol=1)
    np.testing.assert_allclose(f.kps, np.array([256, 192]) + om.KPS_OFFSETS * 32, atol=1)
    assert det.detect(np.zeros((480, 640, 3), np.uint8)) == []


def test_detector_maps_back_to_frame_coordinates(loaded):
    det, _ = loaded
    img = om.bright_square_image(1280, 960, x=512, y=384, side=64)  # letterboxed at 1/2
    faces = det.detect(img)
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].box, [448, 320, 576, 448], atol=2)


def test_embedder_batches_and_matches_insightface_get_feat(loaded):
    det, emb = loaded
    assert emb.crop_size == 112 and emb.crop_scale == 1.0
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (5, 112, 112, 3), dtype=np.uint8)
    e = emb.embed(crops)
    assert e.shape == (5, 512) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # InsightFace's own path takes BGR images and swaps to RGB itself: same numbers
    ref = emb.model.get_feat([c[:, :, ::-1] for c in crops])
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(e, ref, atol=1e-5)
    # batch of 5 equals 5 singles
    singles = np.concatenate([emb.embed(crops[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(e, singles, atol=1e-5)
    assert emb.embed(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 512)
    with pytest.raises(ValueError, match="112"):
        emb.embed(np.zeros((1, 256, 256, 3), np.uint8))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # skimage deprecation inside insightface
def test_our_arcface_crop_equals_insightface_norm_crop():
    from insightface.utils import face_align

    from detectors.faces.align import ARCFACE_TEMPLATE_112, crop_template

    np.testing.assert_allclose(crop_template(112, 1.0), ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(face_align.arcface_dst, ARCFACE_TEMPLATE_112, atol=1e-4)
    yy, xx = np.mgrid[0:480, 0:640]
    img = np.dstack([xx * 255 // 639, yy * 255 // 479, (xx + yy) % 256]).astype(np.uint8)
    kps = (ARCFACE_TEMPLATE_112 * 1.7 + [200, 120]).astype(np.float32)
    ours = align_face(img, kps, 112, 1.0)
    theirs = face_align.norm_crop(img, kps, image_size=112)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_pipeline_from_factory_embeds_every_face(pack):
    pipe = build_face_pipeline(FacesConfig(backend="insightface", pack_dir=pack, min_face_px=8, crop_size=128))
    img = om.bright_square_image(640, 480, x=256, y=192)
    img[64:96, 480:512] = 255  # a second "face"
    res = pipe.process_many([img, img[:, ::-1].copy()])
    assert [len(r) for r in res] == [2, 2]
    for r in res:
        for o in r:
            assert o.crop.shape == (128, 128, 3)
            assert o.face.embedding is not None and o.face.embedding.shape == (512,)
    no_emb = build_face_pipeline(FacesConfig(backend="insightface", pack_dir=pack, embed=False, min_face_px=8))
    assert no_emb.embedder is None and no_emb.process(img)[0].face.embedding is None


def test_manifest_package_loads_through_face_analysis(tmp_path):
    p = tmp_path / "manifestpack"
    om.make_scrfd(p / "det.onnx")
    om.make_arcface(p / "rec.onnx")
    sha = {n: hashlib.sha256((p / n).read_bytes()).hexdigest() for n in ("det.onnx", "rec.onnx")}
    pre = {"mean": 127.5, "std": 128.0}
    manifest = {
        "manifest_version": 2,
        "model_id": "tiny",
        "license": "MODEL.LICENSE",
        "tasks": {
            "detection": {"file": "det.onnx", "sha256": sha["det.onnx"], "preprocessing": pre},
            "recognition": {"file": "rec.onnx", "sha256": sha["rec.onnx"], "preprocessing": pre},
        },
    }
    (p / "manifest.json").write_text(json.dumps(manifest))
    try:
        models = load_pack(p)
    except FacePackError as e:  # the manifest schema is InsightFace's; show why if it changed
        pytest.fail(str(e))
    assert set(models) == {"detection", "recognition"}
    # a wrong hash is refused before any session is created
    manifest["tasks"]["detection"]["sha256"] = "0" * 64
    (p / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FacePackError, match="manifestpack"):
        load_pack(p)


# ---------------------------------------------------------------- clear errors, never a download


def test_missing_pack_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FacePackError, match="not found.*never downloaded"):
        load_pack(tmp_path / "buffalo_l")
    with pytest.raises(FacePackError, match="needs pack_dir"):
        validate_pack_dir(None)
    f = tmp_path / "file.onnx"
    f.write_bytes(b"x")
    with pytest.raises(FacePackError, match="must be a folder"):
        load_pack(f)


def test_empty_or_nested_pack_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FacePackError, match="no .onnx models"):
        load_pack(empty)
    om.make_pack(empty / "buffalo_l")
    with pytest.raises(FacePackError, match="sub-folder 'buffalo_l'"):
        load_pack(empty)


def test_pack_without_detector_is_a_clear_error(tmp_path):
    p = om.make_pack(tmp_path / "nodet", detector=False)
    with pytest.raises(FacePackError, match="no face detector"):
        load_pack(p)
    with pytest.raises(FacePackError, match="no face detector"):
        build_face_pipeline(FacesConfig(backend="insightface", pack_dir=p))


def test_garbage_onnx_is_a_clear_error(tmp_path):
    p = om.make_pack(tmp_path / "garbage")
    (p / "broken.onnx").write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(FacePackError, match=r"broken\.onnx: not a loadable ONNX model"):
        load_pack(p)


def test_pack_without_recognizer_gives_detector_only(tmp_path):
    p = om.make_pack(tmp_path / "detonly", recognizer=False, extra=False)
    det, emb = InsightFaceDetector.from_pack(p)
    assert emb is None and len(det.detect(om.bright_square_image())) == 1
    with pytest.raises(FacePackError, match="no recognition"):
        InsightFaceEmbedder.from_pack(p)
