"""The bundle's models as batch functions: frame fake probability and DiffFake embeddings.

This is the one inference path of a bundle: the daemon serves with it and the trainer evaluates and
calibrates with it (``fakewatch-train eval`` / ``bundle``), so "calibrated with the serving path" holds
literally.

Both scorers take aligned crops (N, S, S, 3) uint8 RGB as cut by the face pipeline (``align_face``, the
bundle's crop geometry), resize them to the model's input size when it differs, normalise them with the
bundle's own :class:`~detectors.bundle.Normalisation` (:func:`prepare`) and run them on the runtime
:func:`detectors.runtime.select_runtime` picks, in chunks of at most the runtime's ``max_batch`` (a
TensorRT profile), so any batch size works. They are synchronous (the daemon calls them through a
``MicroBatcher`` on a dedicated thread per model) and hold a runtime: ``close()`` them, or use them as
context managers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detectors.bundle import Bundle, BundleError, Normalisation
from detectors.preprocess import model_input
from detectors.runtime import Runtime, select_runtime

log = logging.getLogger(__name__)


def prepare(crops: Sequence[np.ndarray] | np.ndarray, size: int, norm: Normalisation) -> np.ndarray:
    """(N, S, S, 3) uint8 crops -> (N, 3, size, size) float32 model input (same code as training)."""
    return model_input(crops, size, norm)


def run_chunked(rt: Runtime, x: np.ndarray) -> np.ndarray:
    """``rt.run(x)`` in chunks of at most ``rt.max_batch`` rows (TensorRT engines have a fixed profile)."""
    mb = rt.max_batch
    if not mb or len(x) <= mb:
        return rt.run(x)
    return np.concatenate([rt.run(x[i : i + mb]) for i in range(0, len(x), mb)])


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class BundleModel:
    """One ONNX model of the bundle on a runtime: ``spec`` (file, input size, normalisation, version
    fields), ``runtime``, ``name`` and ``version`` for logs/events; subclasses shape the output."""

    def __init__(self, bundle: Bundle, spec, name: str, what: str, runtime_prefer: str, threads: int | None,
                 plan_dir: Path | None = None, runtime_options: dict | None = None):
        if spec is None:
            raise BundleError(f"{bundle.root}: bundle has no {what}")
        self.spec = spec
        self.size = spec.input_size
        self.runtime = select_runtime(
            bundle.path(spec.file), runtime_prefer, threads, plan_dir=plan_dir or bundle.path("plans"),
            **(runtime_options or {}),
        )
        self.name = name
        self.version = f"{bundle.manifest.name}/{spec.method}-{spec.backbone}@{spec.version}"
        self.closed = False
        log.info("%s %s on %s", what, self.version, self.runtime.name)

    def _run(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Non-empty crops -> the model output with one row per crop."""
        y = run_chunked(self.runtime, prepare(crops, self.size, self.spec.normalisation))
        return np.asarray(y).reshape(len(crops), -1)

    def close(self) -> None:
        """Release the runtime (idempotent)."""
        if not self.closed:
            self.closed = True
            self.runtime.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameScorer(BundleModel):
    """The bundle's frame detector: crops -> fake probability ``sigmoid(logit)`` per crop."""

    def __init__(self, bundle: Bundle, runtime_prefer: str = "auto", threads: int | None = None,
                 plan_dir: Path | None = None, runtime_options: dict | None = None):
        super().__init__(bundle, bundle.manifest.frame, "frame", "frame model", runtime_prefer, threads, plan_dir,
                         runtime_options)

    def probabilities(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) float64 fake probabilities."""
        if len(crops) == 0:
            return np.zeros(0, np.float64)
        return sigmoid(self._run(crops).astype(np.float64)[:, 0])

    def __call__(self, crops: Sequence[np.ndarray]) -> list[float]:
        """Batch function for the micro-batcher: one probability per crop."""
        return [float(v) for v in self.probabilities(crops)]


class Embedder(BundleModel):
    """The bundle's DiffFake embedding model: crops -> raw embeddings (N, D) float32.

    Also usable as the tracker's identity embedding (``embed`` returns L2-normalised rows, the
    :class:`~detectors.faces.types.FaceEmbedder` contract) when the face backend has no ArcFace.
    """

    def __init__(self, bundle: Bundle, runtime_prefer: str = "auto", threads: int | None = None,
                 plan_dir: Path | None = None, runtime_options: dict | None = None):
        super().__init__(bundle, bundle.manifest.temporal, "embed", "temporal (embedding) model",
                         runtime_prefer, threads, plan_dir, runtime_options)

    def embed_raw(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, 0), np.float32)
        return self._run(crops).astype(np.float32)

    def __call__(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Batch function for the micro-batcher: one raw embedding per crop."""
        return list(self.embed_raw(crops))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return l2_normalise(self.embed_raw(crops))
