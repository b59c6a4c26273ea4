"""InsightFace backend: SCRFD detection + ArcFace recognition from a LOCAL model-pack folder.

The pack is a folder the user already has (e.g. an unzipped ``buffalo_l``: ``det_10g.onnx``,
``w600k_r50.onnx``, ...; or a "manifest V2" package with ``manifest.json``). We never pass a bare
pack name to InsightFace, because for a name that is not an existing folder InsightFace downloads
a zip from GitHub. The folder is validated first and every failure is a one-line
:class:`FacePackError`.

Loading uses InsightFace's own code path with explicit ONNX Runtime providers:
``model_zoo.get_model(<file>.onnx)`` for each file of a legacy pack (routing by ONNX signature:
>= 5 outputs -> SCRFD, square input >= 112 with one output -> ArcFace), or
``FaceAnalysis(name=<folder>, allowed_modules=["detection", "recognition"])`` for a manifest
package (which verifies declared sha256s). Only the detection and recognition models are kept.

Detection runs per frame through InsightFace's SCRFD (letterboxed to ``det_size`` x ``det_size``);
recognition is batched by us over all aligned crops (:class:`InsightFaceEmbedder`), whereas
``FaceAnalysis.get`` would run it face by face. Crops for ArcFace use the ArcFace convention:
``align_face(image, kps, size=112, scale=1.0)`` whose template equals InsightFace's ``norm_crop``.

Licence: InsightFace's code is MIT, but its pretrained packs (buffalo_*, antelopev2, ...) are for
non-commercial research only. fakewatch ships none of them.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from detectors.faces.types import Face

log = logging.getLogger(__name__)

ALLOWED_MODULES = ("detection", "recognition")


class FacePackError(RuntimeError):
    """A model pack that is missing, incomplete or unreadable."""


def providers_for(device: str) -> list[str]:
    """Explicit ONNX Runtime providers for ``device`` ("cpu" or "cuda"; CUDA falls back to CPU with a warning)."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning("insightface: device 'cuda' asked for, but onnxruntime has no CUDAExecutionProvider; using CPU")
        return ["CPUExecutionProvider"]
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


def validate_pack_dir(pack_dir: str | os.PathLike | None) -> Path:
    """Check that ``pack_dir`` is an existing folder with ONNX models (or a manifest); return it resolved."""
    if pack_dir is None or str(pack_dir).strip() == "":
        raise FacePackError(
            "the insightface backend needs pack_dir: a local model-pack folder (packs are never downloaded)"
        )
    p = Path(pack_dir).expanduser()
    if not p.exists():
        raise FacePackError(
            f"{p}: InsightFace model-pack folder not found (packs are never downloaded; unzip one there, "
            f"e.g. buffalo_l with det_10g.onnx and w600k_r50.onnx)"
        )
    if not p.is_dir():
        raise FacePackError(f"{p}: InsightFace pack_dir must be a folder holding .onnx files, not a file")
    if not (p / "manifest.json").is_file() and not glob.glob(str(p / "*.onnx")):
        nested = sorted(q.name for q in p.iterdir() if q.is_dir() and glob.glob(str(q / "*.onnx")))
        hint = f" (found .onnx files in sub-folder {nested[0]!r}: point pack_dir at it)" if nested else ""
        raise FacePackError(f"{p}: no .onnx models in this InsightFace model-pack folder{hint}")
    return p.resolve()


def load_pack(pack_dir: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """Load the detection (and, if present, recognition) models of a pack with InsightFace's loader.

    Returns ``{"detection": SCRFD, "recognition": ArcFaceONNX}`` (recognition may be absent).
    """
    p = validate_pack_dir(pack_dir)
    providers = providers_for(device)
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    from insightface.model_zoo import model_zoo

    models: dict[str, Any] = {}
    if (p / "manifest.json").is_file():
        from insightface.app import FaceAnalysis

        try:
            app = FaceAnalysis(name=str(p), allowed_modules=list(ALLOWED_MODULES), providers=providers)
        except AssertionError as e:
            raise FacePackError(f"{p}: the model-pack manifest declares no detection task") from e
        except Exception as e:  # InsightFace/ORT raise many types; report them on one line
            raise FacePackError(f"{p}: cannot load InsightFace model package ({type(e).__name__}: {e})") from e
        models = {k: v for k, v in app.models.items() if k in ALLOWED_MODULES}
    else:
        for f in sorted(glob.glob(str(p / "*.onnx"))):
            try:
                m = model_zoo.get_model(f, providers=providers)
            except Exception as e:
                raise FacePackError(f"{f}: not a loadable ONNX model ({type(e).__name__}: {e})") from e
            task = getattr(m, "taskname", None)
            if m is None or task not in ALLOWED_MODULES:
                log.debug("insightface pack: ignoring %s (task %s)", f, task)
                continue
            if task in models:
                log.warning("insightface pack %s: second %s model %s ignored", p, task, os.path.basename(f))
                continue
            models[task] = m
    if "detection" not in models:
        raise FacePackError(
            f"{p}: no face detector in this model pack (expected an SCRFD .onnx with >= 5 outputs, e.g. det_10g.onnx)"
        )
    ctx_id = -1 if device == "cpu" else 0
    for task, m in models.items():
        if task == "recognition":
            m.prepare(ctx_id)
    return models


class InsightFaceDetector:
    """SCRFD from an InsightFace pack; implements :class:`detectors.faces.types.FaceDetector`.

    ``det_size``: side of the square letterboxed network input (rounded up to a multiple of 32);
    ``threshold``: detection score threshold; ``nms_iou``: NMS IoU threshold.
    Use :meth:`from_pack` to also get the pack's :class:`InsightFaceEmbedder`.
    """

    name = "insightface-scrfd"

    def __init__(self, scrfd: Any, det_size: int = 640, threshold: float = 0.5, nms_iou: float = 0.4,
                 device: str = "cpu"):
        if getattr(scrfd, "taskname", None) != "detection":
            raise FacePackError(f"{getattr(scrfd, 'model_file', scrfd)}: not an InsightFace detection model")
        if not getattr(scrfd, "use_kps", True):
            raise FacePackError(f"{scrfd.model_file}: this SCRFD model has no keypoint outputs (need 5 landmarks)")
        side = int(np.ceil(max(32, int(det_size)) / 32) * 32)
        self.model = scrfd
        self.det_size = (side, side)
        self.threshold = float(threshold)
        scrfd.prepare(-1 if device == "cpu" else 0, input_size=self.det_size, det_thresh=self.threshold,
                      nms_thresh=float(nms_iou))

    @classmethod
    def from_pack(cls, pack_dir: str | os.PathLike, det_size: int = 640, threshold: float = 0.5,
                  device: str = "cpu") -> tuple[InsightFaceDetector, InsightFaceEmbedder | None]:
        models = load_pack(pack_dir, device=device)
        det = cls(models["detection"], det_size=det_size, threshold=threshold, device=device)
        rec = models.get("recognition")
        return det, (InsightFaceEmbedder(rec) if rec is not None else None)

    def detect(self, image: np.ndarray) -> list[Face]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # InsightFace takes OpenCV BGR and swaps to RGB itself
        dets, kpss = self.model.detect(bgr, input_size=self.det_size, det_thresh=self.threshold)
        faces = []
        h, w = image.shape[:2]
        for i in range(dets.shape[0]):
            box = dets[i, :4].astype(np.float32).copy()
            box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
            box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
            faces.append(Face(box=box, score=float(dets[i, 4]), kps=np.asarray(kpss[i], dtype=np.float32).reshape(5, 2)))
        return faces


class InsightFaceEmbedder:
    """ArcFace recognition from an InsightFace pack, batched; implements ``FaceEmbedder``.

    Expects RGB uint8 crops aligned with the ArcFace convention: ``crop_size`` x ``crop_size``
    (the model's input side, 112 for the usual packs) at ``crop_scale`` 1.0; the face pipeline
    reads these two attributes to cut the right crops. Returns L2-normalised float32 embeddings.
    """

    name = "insightface-arcface"
    crop_scale = 1.0

    def __init__(self, arcface: Any):
        if getattr(arcface, "taskname", None) != "recognition":
            raise FacePackError(f"{getattr(arcface, 'model_file', arcface)}: not an InsightFace recognition model")
        self.model = arcface
        self.crop_size = int(arcface.input_size[0])
        self.session = arcface.session
        self.input_name = arcface.input_name
        self.output_name = arcface.output_names[0]
        self.mean = float(arcface.input_mean)
        self.std = float(arcface.input_std)
        self.dtype = getattr(arcface, "input_dtype", np.float32)
        batch_dim = arcface.input_shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        out = arcface.output_shape
        self.dim = int(out[1]) if len(out) > 1 and isinstance(out[1], int) else None

    @classmethod
    def from_pack(cls, pack_dir: str | os.PathLike, device: str = "cpu") -> InsightFaceEmbedder:
        models = load_pack(pack_dir, device=device)
        if "recognition" not in models:
            raise FacePackError(f"{pack_dir}: no recognition (ArcFace) model in this model pack")
        return cls(models["recognition"])

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        s = self.crop_size
        if crops.ndim != 4 or crops.shape[1:] != (s, s, 3):
            raise ValueError(f"expected RGB crops of shape (N, {s}, {s}, 3), got {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        # The model takes RGB NCHW ((x - mean) / std); InsightFace's get_feat gets there from BGR via swapRB.
        blob = crops.transpose(0, 3, 1, 2).astype(np.float32)
        if self.mean != 0.0 or self.std != 1.0:
            blob = (blob - self.mean) / self.std
        blob = np.ascontiguousarray(blob, dtype=self.dtype)
        if self.fixed_batch == 1:
            feats = np.concatenate(
                [self.session.run([self.output_name], {self.input_name: blob[i : i + 1]})[0] for i in range(len(blob))]
            )
        else:
            feats = self.session.run([self.output_name], {self.input_name: blob})[0]
        feats = np.asarray(feats, dtype=np.float32).reshape(len(crops), -1)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
