"""The bundle's models as the daemon uses them: the ``bundle`` config section, loading, and the
tracking-embedding decision.

:func:`load_models` turns a loaded :class:`~detectors.bundle.Bundle` and the ``bundle`` section
(:class:`BundleConfig`: runtime, threads, plan cache, torch options) into :class:`Models`: the frame
scorer, the DiffFake embedder and temporal model (each only when the bundle has it and something
needs it) and which identity embedding the tracker gets (:func:`tracking_embedding`), and makes the
face pipeline cut the bundle's crop geometry. This module is the one place the daemon imports the
scorers (``FrameScorer``, ``Embedder``, ``l2_normalise`` from :mod:`detectors.inference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from daemon.config_base import StrictModel
from daemon.temporal import TemporalModel
from detectors.bundle import Bundle
from detectors.faces.pipeline import FacePipeline, use_bundle_crop
from detectors.inference import Embedder, FrameScorer, l2_normalise

if TYPE_CHECKING:
    from daemon.pipeline import PipelineConfig

TrackEmbed = Literal["face", "bundle", "none"]


class BundleConfig(StrictModel):
    """The ``bundle`` section: which bundle, on which runtime, with how many threads."""

    path: Path | None = Field(
        None, validate_default=True, description="model bundle folder; default: the bundle shipped in detectors/bundles/default"
    )
    runtime: Literal["auto", "cpu", "cuda", "tensorrt", "torch", "torch-cuda"] = Field(
        "auto", description="auto: TensorRT plan > ONNX Runtime CUDA > torch CUDA > ONNX Runtime CPU; cpu/cuda: ONNX Runtime; "
        "torch/torch-cuda: onnx2torch on CPU/CUDA; an explicit choice that cannot be honoured fails at start"
    )
    torch_precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="torch runtime only: autocast precision, kept only within tolerance of fp32 (docs/gpu.md)"
    )
    cuda_graphs: bool = Field(False, description="torch runtime on CUDA only: replay CUDA graphs per batch bucket (unverified)")
    threads: int | None = Field(
        None, ge=1, le=256, description="intra-op threads per bundle model (ONNX Runtime; torch: process-wide)"
    )
    verify: bool = Field(True, description="check every file's sha256 against the manifest at load")
    plan_dir: Path | None = Field(
        None, description="writable TensorRT engine cache; default <bundle>/plans (mount bundles read-only and set this)"
    )

    @field_validator("path")
    @classmethod
    def _bundle_exists(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is not None:
            v = Path(v).expanduser()
        if bool((info.context or {}).get("check_paths", True)):
            from detectors.bundle import MANIFEST, default_bundle_path

            p = v if v is not None else default_bundle_path()
            if not p.is_dir():
                hint = "" if v is not None else " (the default bundle is not installed; set bundle.path)"
                raise ValueError(f"bundle folder not found: {p}{hint}")
            if not (p / MANIFEST).is_file():
                raise ValueError(f"{p} is not a model bundle (no {MANIFEST})")
        return v

    def resolved_path(self) -> Path:
        from detectors.bundle import default_bundle_path

        return self.path if self.path is not None else default_bundle_path()

    def runtime_options(self) -> dict[str, Any]:
        """Extra :func:`detectors.runtime.select_runtime` keywords."""
        return {"torch_precision": self.torch_precision, "cuda_graphs": self.cuda_graphs}

    @classmethod
    def defaults(cls, **settings: Any) -> BundleConfig:
        """The section with these settings (validated, the filesystem not checked): for a Daemon
        built without a config file (tests, tools)."""
        return cls.model_validate(settings, context={"check_paths": False})


def tracking_embedding(mode: str, has_face_embedder: bool, has_bundle_embedder: bool) -> TrackEmbed:
    """Which identity embedding the tracker gets (``pipeline.tracking_embedding``).

    ``auto``: the face backend's (ArcFace) when it has one, else the bundle's embedding model;
    ``bundle``: the bundle's (falls back to the face backend's when the bundle has none);
    ``none``: boxes only. Without any embedder: ``none``.
    """
    if mode == "none":
        return "none"
    if has_face_embedder and mode == "auto":
        return "face"
    if has_bundle_embedder:
        return "bundle"
    return "face" if has_face_embedder else "none"


def wants_bundle_embedder(mode: str, has_face_embedder: bool, temporal_enabled: bool) -> bool:
    """Whether the bundle's embedding model is loaded: for DiffFake, or as the tracker's embedding."""
    return temporal_enabled or mode == "bundle" or (mode == "auto" and not has_face_embedder)


@dataclass
class Models:
    """The loaded bundle models; ``versions`` goes into every event (``models``), ``info`` into
    ``fakewatch_bundle_info``."""

    frame: FrameScorer | None = None
    embedder: Embedder | None = None
    temporal: TemporalModel | None = None
    track_embed: TrackEmbed = "none"
    versions: dict[str, str] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for m in (self.frame, self.embedder):
            if m is not None:
                m.close()


def load_models(bundle: Bundle, bundle_cfg: BundleConfig, pipeline_cfg: PipelineConfig, faces: FacePipeline) -> Models:
    """Load what the bundle has and the pipeline needs (slow: builds the runtimes)."""
    man = bundle.manifest
    rt, threads, plans, opts = bundle_cfg.runtime, bundle_cfg.threads, bundle_cfg.plan_dir, bundle_cfg.runtime_options()
    out = Models(info={"bundle": bundle.version_string})
    if man.frame is not None:
        out.frame = FrameScorer(bundle, rt, threads, plans, opts)
        out.versions["frame"] = f"{out.frame.version} ({out.frame.runtime.name})"
        out.info.update(frame_model=out.frame.version, frame_runtime=out.frame.runtime.name)
    has_face_embedder = faces.embedder is not None
    mode = pipeline_cfg.tracking_embedding
    temporal_on = man.temporal is not None and pipeline_cfg.temporal.enabled
    if man.temporal is not None and wants_bundle_embedder(mode, has_face_embedder, temporal_on):
        out.embedder = Embedder(bundle, rt, threads, plans, opts)
        out.info.update(embed_model=out.embedder.version, embed_runtime=out.embedder.runtime.name)
    if temporal_on:
        assert out.embedder is not None
        out.temporal = TemporalModel.from_bundle(bundle, pipeline_cfg.temporal)
        out.versions["temporal"] = f"{out.embedder.version} ({out.embedder.runtime.name})"
    out.track_embed = tracking_embedding(mode, has_face_embedder, out.embedder is not None)
    out.info["tracking_embedding"] = out.track_embed
    out.info["faces"] = faces.name
    use_bundle_crop(faces, man.crop)  # crops as the bundle was trained on (faces.crop_* override)
    return out


__all__ = ["BundleConfig", "Models", "load_models", "tracking_embedding", "wants_bundle_embedder",
           "l2_normalise"]
