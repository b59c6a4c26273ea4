"""MediaPipe face-mesh landmarks for the pseudo-fake masks (trainer only): table, derivation, loader, bad input.

The face-mesh model itself is not in the project (it is taken out of the mediapipe==0.10.21 wheel by
`fakewatch-train landmark-model`); the tests that run it look for it at $FAKEWATCH_FACE_MESH or
data-cache/models/face_landmark.tflite and skip when it is absent.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from detectors import samples
from trainer.landmarks import (
    FACE_MESH_MEMBER,
    JAW,
    LandmarkError,
    MediaPipeLandmarker,
    TemplateLandmarker,
    build_landmarker,
    derive_mesh_to_68,
    extract_face_mesh,
    mesh_to_68,
)

ROOT = Path(__file__).resolve().parents[1]
MESH_FILE = Path(os.environ.get("FAKEWATCH_FACE_MESH", ROOT / "data-cache" / "models" / "face_landmark.tflite"))

# dlib 68-point order under a horizontal flip: point i of the mirrored face is point MIRROR[i] of the face
MIRROR = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
          + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
          + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])


def test_shipped_table_is_68_mesh_vertices():
    idx = mesh_to_68()
    assert idx.shape == (68,) and idx.min() >= 0 and idx.max() < 468
    assert len(set(idx[JAW].tolist())) == 17  # the jaw contour uses 17 distinct outline vertices
    d = json.loads((ROOT / "trainer" / "landmarks_mesh68.json").read_text())
    held = d["provenance"]["held_out_distance_to_dlib_px"]
    assert set(held) == {"mesh68", "template"}


def test_bad_table_names_the_file(tmp_path):
    bad = tmp_path / "table.json"
    bad.write_text(json.dumps({"index68": list(range(60))}))
    with pytest.raises(LandmarkError, match="table.json: index68 must hold 68"):
        mesh_to_68(bad)


def test_derive_recovers_the_vertices_and_keeps_the_jaw_on_the_outline():
    rng = np.random.default_rng(0)
    n = 40
    base = rng.uniform(60, 200, (468, 2))
    # put a ring of outline vertices around the cloud, so the convex hull is known
    ring = np.arange(400, 468)
    ang = np.linspace(0, 2 * np.pi, len(ring), endpoint=False)
    base[ring] = 128 + 110 * np.stack([np.cos(ang), np.sin(ang)], 1)
    truth = rng.choice(400, 68, replace=False)
    truth[JAW] = ring[:17]
    meshes = base[None] + rng.normal(0, 1.0, (n, 468, 2))
    shapes = meshes[:, truth] + rng.normal(0, 0.5, (n, 68, 2))
    # the jaw reference sits 8 px inside the outline: the nearest vertex overall would be an interior one
    centre = meshes.mean(1, keepdims=True)
    shapes[:, JAW] = centre + (shapes[:, JAW] - centre) * (102 / 110)
    inner = rng.choice(np.setdiff1d(np.arange(400), truth), 17, replace=False)
    meshes[:, inner] = shapes[:, JAW] + rng.normal(0, 0.3, (n, 17, 2))
    table = derive_mesh_to_68(meshes, shapes)
    got = np.asarray(table["index68"])
    assert (got[17:] == truth[17:]).all()
    assert (got[JAW] == truth[JAW]).all()  # the interior decoys are closer, the outline rule still wins
    assert table["n_faces"] == n and len(table["mean_px"]) == 68
    with pytest.raises(LandmarkError, match="expected"):
        derive_mesh_to_68(meshes[:, :400], shapes)


def test_missing_model_names_the_file_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.tflite.*landmark-model --wheel"):
        MediaPipeLandmarker(tmp_path / "nope.tflite")
    with pytest.raises(ValueError, match="needs model_path"):
        build_landmarker({"name": "mediapipe"})
    with pytest.raises(ValueError, match="unknown landmarker 'mesh'"):
        build_landmarker("mesh")


def test_a_file_that_is_not_the_face_mesh_is_refused(tmp_path):
    pytest.importorskip("ai_edge_litert")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00not a flatbuffer" * 64)
    with pytest.raises(LandmarkError, match=r"junk\.tflite: not a loadable TFLite model.*face_landmark\.tflite"):
        MediaPipeLandmarker(junk)


def test_extract_checks_the_wheel(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip download mediapipe==0.10.21"):
        extract_face_mesh(tmp_path / "missing.whl", tmp_path / "out.tflite")
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("pkg/__init__.py", "")
    with pytest.raises(LandmarkError, match=f"other.whl: no {FACE_MESH_MEMBER}"):
        extract_face_mesh(other, tmp_path / "out.tflite")
    tampered = tmp_path / "tampered.whl"
    with zipfile.ZipFile(tampered, "w") as z:
        z.writestr(FACE_MESH_MEMBER, b"something else")
    with pytest.raises(LandmarkError, match="has sha256 .* expected"):
        extract_face_mesh(tampered, tmp_path / "out.tflite")
    assert not (tmp_path / "out.tflite").exists()


@pytest.fixture(scope="module")
def mesh() -> MediaPipeLandmarker:
    pytest.importorskip("ai_edge_litert")
    if not MESH_FILE.is_file():
        pytest.skip(f"{MESH_FILE} absent (fakewatch-train landmark-model --wheel <mediapipe-0.10.21 wheel> --out it)")
    return MediaPipeLandmarker(MESH_FILE)


@pytest.fixture(scope="module")
def face_crop() -> np.ndarray:
    from detectors.faces.factory import FacesConfig, build_face_pipeline

    obs = build_face_pipeline(FacesConfig(embed=False)).process(samples.astronaut())
    return obs[0].crop


def test_mesh_landmarks_on_a_real_face_follow_the_face(mesh, face_crop):
    pts, score = mesh.mesh(face_crop)
    assert pts.shape == (468, 2) and score > 0.9
    lm = mesh.landmarks(face_crop)
    assert lm.shape == (68, 2)
    assert np.abs(lm - TemplateLandmarker().landmarks(face_crop)).mean() < 8  # an aligned frontal face
    assert lm[8, 1] > lm[57, 1] > lm[33, 1] > lm[27, 1] > lm[19, 1]
    # the mirror image gives the mirrored shape (the table is not symmetric by construction: a real check)
    flipped = mesh.landmarks(np.ascontiguousarray(face_crop[:, ::-1]))
    flipped[:, 0] = face_crop.shape[1] - flipped[:, 0]
    assert np.linalg.norm(flipped[MIRROR] - lm, axis=1).mean() < 4
    # pose is followed (the template would not move without 5 points): a face turned in the crop turns its
    # eye line, one moved sideways moves its landmarks
    def eye_line_deg(points: np.ndarray) -> float:
        d = points[42:48].mean(0) - points[36:42].mean(0)
        return float(np.degrees(np.arctan2(d[1], d[0])))

    for deg in (-12, 12):
        m = cv2.getRotationMatrix2D((128, 128), deg, 1.0)  # counter-clockwise on screen for deg > 0
        turned = mesh.landmarks(cv2.warpAffine(face_crop, m, (256, 256), borderMode=cv2.BORDER_REFLECT))
        assert abs(eye_line_deg(turned) - eye_line_deg(lm) + deg) < 4
    m = np.float32([[1, 0, -10], [0, 1, 0]])
    moved = mesh.landmarks(cv2.warpAffine(face_crop, m, (256, 256), borderMode=cv2.BORDER_REFLECT))
    assert np.abs((moved - lm)[27:48].mean(0) - [-10, 0]).max() < 2


def test_no_face_falls_back_to_the_template(mesh):
    before = mesh.fallbacks
    gray = np.full((256, 256, 3), 128, np.uint8)
    assert np.allclose(mesh.landmarks(gray), TemplateLandmarker().landmarks(gray))
    assert mesh.fallbacks == before + 1
    with pytest.raises(LandmarkError, match="square RGB"):
        mesh.landmarks(np.zeros((256, 200, 3), np.uint8))


def test_pair_dataset_takes_a_mesh_spec(mesh, face_crop, tmp_path):
    from trainer.torchdata import CropItem, PseudoFakePairs

    p = tmp_path / "a.png"
    cv2.imwrite(str(p), cv2.cvtColor(face_crop, cv2.COLOR_RGB2BGR))
    items = [CropItem(path=p, identity=f"id{i}", video_uid=f"v{i}") for i in range(2)]
    ds = PseudoFakePairs(items, size=128, kind="sbi", landmarker={"name": "mediapipe", "model_path": str(MESH_FILE)})
    ds[0]
    assert isinstance(ds.landmarker, MediaPipeLandmarker) and ds.landmarker.calls >= 1


def test_landmark_model_command_reports_bad_input(tmp_path, capsys):
    from trainer.cli import main

    runs = tmp_path / "runs"
    assert main(["--runs", str(runs), "landmark-model", "--wheel", str(tmp_path / "mediapipe.whl"),
                 "--out", str(tmp_path / "m.tflite")]) == 2
    assert "mediapipe.whl: wheel not found" in capsys.readouterr().err
    tampered = tmp_path / "tampered.whl"
    with zipfile.ZipFile(tampered, "w") as z:
        z.writestr(FACE_MESH_MEMBER, b"x")
    assert main(["--runs", str(runs), "landmark-model", "--wheel", str(tampered), "--out", str(tmp_path / "m.tflite")]) == 2
    assert "tampered.whl: " + FACE_MESH_MEMBER + " has sha256" in capsys.readouterr().err
    assert not (tmp_path / "m.tflite").exists()
