"""The bundle's models as batch functions: frame fake probability and DiffFake embeddings.

Both take aligned crops (N, S, S, 3) uint8 RGB as cut by the face pipeline (``align_face``, the
bundle's crop geometry), resize them to the model's input size when it differs, normalise them
with the bundle's own :class:`~detectors.bundle.Normalisation` and run them on the best runtime
available (:func:`detectors.runtime.select_runtime`). They are synchronous; the daemon calls them
through a :class:`~daemon.batcher.MicroBatcher` on a dedicated thread per model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from detectors.bundle import Bundle, BundleError, Normalisation
from detectors.preprocess import model_input
from detectors.runtime import Runtime, select_runtime

log = logging.getLogger(__name__)


def prepare(crops: Sequence[np.ndarray] | np.ndarray, size: int, norm: Normalisation) -> np.ndarray:
    """(N, S, S, 3) uint8 crops -> (N, 3, size, size) float32 model input (same code as training)."""
    return model_input(crops, size, norm)


def _run_chunked(rt: Runtime, x: np.ndarray) -> np.ndarray:
    """Run in chunks of ``rt.max_batch`` (TensorRT engines have a fixed profile)."""
    mb = rt.max_batch
    if not mb or len(x) <= mb:
        return rt.run(x)
    return np.concatenate([rt.run(x[i : i + mb]) for i in range(0, len(x), mb)])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


class FrameScorer:
    """The bundle's frame detector: crops -> fake probability ``sigmoid(logit)`` per crop."""

    def __init__(self, bundle: Bundle, runtime_prefer: str = "auto", threads: int | None = None):
        spec = bundle.manifest.frame
        if spec is None:
            raise BundleError(f"{bundle.root}: bundle has no frame model")
        self.spec = spec
        self.size = spec.input_size
        self.runtime = select_runtime(bundle.path(spec.file), runtime_prefer, threads, plan_dir=bundle.path("plans"))
        self.name = "frame"
        self.version = f"{bundle.manifest.name}/{spec.method}-{spec.backbone}@{spec.version}"
        log.info("frame model %s on %s", self.version, self.runtime.name)

    def __call__(self, crops: Sequence[np.ndarray]) -> list[float]:
        if len(crops) == 0:
            return []
        y = _run_chunked(self.runtime, prepare(crops, self.size, self.spec.normalisation))
        y = np.asarray(y, dtype=np.float64).reshape(len(crops), -1)[:, 0]
        return [float(v) for v in _sigmoid(y)]

    def close(self) -> None:
        self.runtime.close()


class Embedder:
    """The bundle's DiffFake embedding model: crops -> raw embeddings (N, D) float32.

    Also usable as the tracker's identity embedding (``embed`` returns L2-normalised rows, the
    :class:`~detectors.faces.types.FaceEmbedder` contract) when the face backend has no ArcFace.
    """

    def __init__(self, bundle: Bundle, runtime_prefer: str = "auto", threads: int | None = None):
        spec = bundle.manifest.temporal
        if spec is None:
            raise BundleError(f"{bundle.root}: bundle has no temporal (embedding) model")
        self.spec = spec
        self.size = spec.input_size
        self.runtime = select_runtime(bundle.path(spec.file), runtime_prefer, threads, plan_dir=bundle.path("plans"))
        self.name = "embed"
        self.version = f"{bundle.manifest.name}/{spec.method}-{spec.backbone}@{spec.version}"
        log.info("embedding model %s on %s", self.version, self.runtime.name)

    def embed_raw(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, 0), np.float32)
        y = _run_chunked(self.runtime, prepare(crops, self.size, self.spec.normalisation))
        return np.asarray(y, dtype=np.float32).reshape(len(crops), -1)

    def __call__(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Batch function for the micro-batcher: one raw embedding per crop."""
        return list(self.embed_raw(crops))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return l2_normalise(self.embed_raw(crops))

    def close(self) -> None:
        self.runtime.close()


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
