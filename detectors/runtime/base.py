"""The runtime interface every inference backend implements."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class RuntimeError_(RuntimeError):
    """A model could not be loaded or run by a runtime."""


class Runtime(ABC):
    """Runs one single-input, single-output model on float32 NCHW batches.

    ``name`` says which backend and device runs it (``onnxruntime-cpu``, ``onnxruntime-cuda``,
    ``tensorrt``) for logs and the ``fakewatch_bundle_info`` metric.
    """

    name: str = "abstract"
    max_batch: int | None = None

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 -> (N, ...) float32."""

    def close(self) -> None:  # pragma: no cover - default no-op
        pass


def select_runtime(
    onnx_path: str | Path,
    prefer: str = "auto",
    threads: int | None = None,
    plan_dir: str | Path | None = None,
) -> Runtime:
    """Pick the best runtime available: TensorRT plan for this GPU -> ONNX Runtime CUDA -> CPU.

    ``prefer``: ``auto`` | ``tensorrt`` | ``cuda`` | ``cpu``. An explicit choice that cannot be
    honoured raises :class:`RuntimeError_`; ``auto`` falls back and logs why.
    """
    from detectors.runtime.ort import OrtRuntime, available_providers

    onnx_path = Path(onnx_path)
    if prefer not in ("auto", "tensorrt", "cuda", "cpu"):
        raise RuntimeError_(f"unknown runtime {prefer!r} (expected auto, tensorrt, cuda or cpu)")
    if prefer in ("auto", "tensorrt"):
        try:
            from detectors.runtime.tensorrt import TensorRTRuntime, tensorrt_available

            if tensorrt_available():
                return TensorRTRuntime.from_onnx(onnx_path, plan_dir=plan_dir)
            if prefer == "tensorrt":
                raise RuntimeError_("runtime 'tensorrt' requested but TensorRT or a CUDA GPU is not available")
        except ImportError as e:
            if prefer == "tensorrt":
                raise RuntimeError_(f"runtime 'tensorrt' requested but not importable: {e}") from e
    if prefer in ("auto", "cuda") and "CUDAExecutionProvider" in available_providers():
        return OrtRuntime(onnx_path, device="cuda", threads=threads)
    if prefer == "cuda":
        raise RuntimeError_("runtime 'cuda' requested but onnxruntime has no CUDAExecutionProvider")
    return OrtRuntime(onnx_path, device="cpu", threads=threads)
