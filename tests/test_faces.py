"""CenterFace backend, shared FacePipeline and the factory, on real photos (no mocks)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from detectors import samples
from detectors.faces.align import crop_template
from detectors.faces.centerface import CenterFaceDetector, default_model_path, load_fixed_model, nms
from detectors.faces.factory import FacesConfig, build_face_pipeline
from detectors.faces.pipeline import FaceObservation, FacePipeline, face_quality
from detectors.faces.types import Face, FaceDetector


@pytest.fixture(scope="module")
def centerface() -> CenterFaceDetector:
    return CenterFaceDetector(det_max_side=640)


def test_centerface_is_a_face_detector(centerface):
    assert isinstance(centerface, FaceDetector)


def test_fixed_graph_has_no_initializer_inputs_and_file_is_untouched():
    import onnx

    path = default_model_path()
    before = path.stat().st_mtime_ns, path.stat().st_size
    m = onnx.load_from_string(load_fixed_model(path))
    assert [i.name for i in m.graph.input] == ["input.1"]
    assert (path.stat().st_mtime_ns, path.stat().st_size) == before
    assert len(onnx.load(str(path)).graph.input) > 100  # the shipped file still lists its weights


def test_astronaut_one_face_at_known_box(centerface):
    img = cv2.resize(samples.astronaut(), (640, 480))
    faces = centerface.detect(img)
    assert len(faces) == 1
    f = faces[0]
    np.testing.assert_allclose(f.box, [229, 47, 335, 172], atol=4)
    assert f.score > 0.8
    assert f.kps.shape == (5, 2) and f.kps.dtype == np.float32


def test_landmark_order_matches_arcface_template(centerface):
    """left eye, right eye, nose, left mouth, right mouth (image-left first), like the template."""
    for img in (cv2.resize(samples.astronaut(), (640, 480)), samples.group_photo()):
        for f in centerface.detect(img):
            k = f.kps
            assert k[0, 0] < k[1, 0] and k[3, 0] < k[4, 0]  # left points have smaller x
            assert max(k[0, 1], k[1, 1]) < k[2, 1] < min(k[3, 1], k[4, 1])  # eyes above nose above mouth
            assert k[0, 0] < k[2, 0] < k[1, 0]
            # the points lie inside the face box
            assert (k[:, 0] > f.box[0]).all() and (k[:, 0] < f.box[2]).all()
    # and the same ordering as the ArcFace template itself
    t = crop_template(112, 1.0)
    assert t[0, 0] < t[1, 0] and t[3, 0] < t[4, 0] and t[1, 1] < t[2, 1] < t[3, 1]


def test_group_photo_six_faces(centerface):
    faces = centerface.detect(samples.group_photo())
    assert len(faces) == 6
    assert all(f.score >= 0.5 for f in faces)
    boxes = np.stack([f.box for f in faces])
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes[:, 2].max() <= 1280 and boxes[:, 3].max() <= 886


def test_resize_is_consistent_across_input_sizes(centerface):
    """Boxes come back in frame coordinates whatever the frame size."""
    img = samples.astronaut()  # 512x512: no downscale
    big = cv2.resize(img, (1024, 1024))  # downscaled to 640
    a, b = centerface.detect(img), centerface.detect(big)
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(b[0].box / 2, a[0].box, atol=6)
    assert centerface.input_size(1280, 720) == (0.5, 640, 384)


def test_blank_frame_has_no_faces_and_bad_input_is_refused(centerface):
    assert centerface.detect(np.zeros((360, 640, 3), np.uint8)) == []
    with pytest.raises(ValueError, match="RGB uint8"):
        centerface.detect(np.zeros((360, 640), np.uint8))


def test_nms_suppresses_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.3)
    assert keep.tolist() == [0, 2]


def test_centerface_bad_arguments(tmp_path):
    bad = tmp_path / "centerface.onnx"
    bad.write_bytes(b"not an onnx file" * 8)
    with pytest.raises(RuntimeError, match="cannot load CenterFace model"):
        CenterFaceDetector(onnx_path=bad)
    from tests.onnx_models import make_arcface

    other = make_arcface(tmp_path / "other.onnx")
    with pytest.raises(RuntimeError, match="not a CenterFace graph"):
        CenterFaceDetector(onnx_path=other)
    with pytest.raises(ValueError, match="det_max_side"):
        CenterFaceDetector(det_max_side=8)
    with pytest.raises(RuntimeError, match="not found"):
        CenterFaceDetector(onnx_path="no/such/centerface.onnx")


# ---------------------------------------------------------------- pipeline


class _ColourEmbedder:
    """A real (if trivial) embedder: mean colour of the crop's centre, L2-normalised."""

    name = "mean-colour"

    def __init__(self):
        self.calls: list[int] = []

    def embed(self, crops: np.ndarray) -> np.ndarray:
        self.calls.append(len(crops))
        s = crops.shape[1]
        v = crops[:, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4].reshape(len(crops), -1, 3).mean(1) + 1.0
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_pipeline_crops_quality_and_embeddings(centerface):
    emb = _ColourEmbedder()
    pipe = FacePipeline(centerface, emb, crop_size=256, crop_scale=1.3)
    obs = pipe.process(cv2.resize(samples.astronaut(), (640, 480)))
    assert len(obs) == 1 and isinstance(obs[0], FaceObservation)
    o = obs[0]
    assert o.crop.shape == (256, 256, 3) and o.crop.dtype == np.uint8
    assert o.quality == pytest.approx(min(min(o.face.width, o.face.height) / 100, 1) * o.face.score)
    assert o.face.embedding is not None and o.face.embedding.shape == (3,)
    # the aligned crop is a face: CenterFace finds one face in it, centred
    again = centerface.detect(o.crop)
    assert len(again) == 1
    cx, cy = (again[0].box[:2] + again[0].box[2:]) / 2
    assert abs(cx - 128) < 20 and abs(cy - 128) < 30


def test_pipeline_process_many_embeds_in_one_batch(centerface):
    emb = _ColourEmbedder()
    pipe = FacePipeline(centerface, emb)
    imgs = [cv2.resize(samples.astronaut(), (640, 480)), samples.group_photo(), np.zeros((64, 64, 3), np.uint8)]
    res = pipe.process_many(imgs)
    assert [len(r) for r in res] == [1, 6, 0]
    assert emb.calls == [7]
    q = [o.quality for o in res[1]]
    assert q == sorted(q, reverse=True)


def test_pipeline_filters_by_size_score_and_count(centerface):
    img = samples.group_photo()
    faces = centerface.detect(img)
    smallest = min(min(f.width, f.height) for f in faces)
    assert len(FacePipeline(centerface, max_faces=2).process(img)) == 2
    assert len(FacePipeline(centerface, min_face_px=int(smallest) + 1).process(img)) < 6
    assert FacePipeline(centerface, min_score=0.99).process(img) == []


def test_pipeline_uses_embedder_crop_geometry():
    """An ArcFace-like embedder gets its own 112/1.0 crops, the classifier crop stays 256/1.3."""

    class Fixed:
        name = "fixed"

        def detect(self, image):
            t = crop_template(112, 1.0) * 2 + 100  # a face at 2x ArcFace scale
            return [Face(box=np.array([100, 100, 324, 324], np.float32), score=0.9, kps=t.astype(np.float32))]

    class Arc:
        name = "arc"
        crop_size, crop_scale = 112, 1.0

        def __init__(self):
            self.crops = []

        def embed(self, crops):
            self.crops.append(crops)
            return np.ones((len(crops), 4), np.float32) / 2

    arc = Arc()
    yy, xx = np.mgrid[0:480, 0:640]
    img = np.dstack([xx * 255 // 639, yy * 255 // 479, np.full_like(xx, 128)]).astype(np.uint8)  # smooth ramps
    obs = FacePipeline(Fixed(), arc).process(img)
    assert [c.shape for c in arc.crops] == [(1, 112, 112, 3)]
    assert obs[0].crop.shape == (256, 256, 3)
    # at size 112, scale 1.0 the template is the ArcFace one: crop pixel p samples frame pixel 2p + 100
    expected = img[100:324:2, 100:324:2]
    assert np.abs(arc.crops[0][0].astype(int) - expected.astype(int)).max() <= 2


def test_face_quality_formula():
    f = Face(box=np.array([0, 0, 50, 80], np.float32), score=0.8, kps=np.zeros((5, 2), np.float32))
    assert face_quality(f) == pytest.approx(0.4)
    f.box = np.array([0, 0, 300, 300], np.float32)
    assert face_quality(f) == pytest.approx(0.8)


# ---------------------------------------------------------------- factory


def test_factory_builds_centerface_pipeline():
    pipe = build_face_pipeline(FacesConfig(det_max_side=320, crop_size=128, threads=1))
    assert isinstance(pipe.detector, CenterFaceDetector) and pipe.embedder is None
    obs = pipe.process(samples.astronaut())
    assert len(obs) == 1 and obs[0].crop.shape == (128, 128, 3)


def test_faces_config_is_strict():
    with pytest.raises(ValidationError):
        FacesConfig(bogus=1)
    with pytest.raises(ValidationError, match="pack_dir"):
        FacesConfig(backend="insightface")
    with pytest.raises(ValidationError):
        FacesConfig(backend="mtcnn")
    with pytest.raises(ValidationError):
        FacesConfig(crop_scale=0.9)


def test_cuda_request_without_cuda_provider_runs_on_cpu(caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    d = CenterFaceDetector(det_max_side=320, device="cuda")
    assert d.session.get_providers() == ["CPUExecutionProvider"]
    assert "using CPU" in caplog.text
    assert len(d.detect(samples.astronaut())) == 1
