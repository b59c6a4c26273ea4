"""The runtime interface every inference backend implements (selection: :mod:`detectors.runtime.select`)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class RuntimeError_(RuntimeError):
    """A model could not be loaded or run by a runtime."""


class Runtime(ABC):
    """Runs one single-input, single-output model on float32 NCHW batches.

    ``name`` says which backend and device runs it (``onnxruntime-cpu``, ``onnxruntime-cuda``,
    ``tensorrt``, ``torch-cpu``, ``torch-cuda``) for logs and the ``fakewatch_bundle_info`` metric.
    ``max_batch``: the largest batch :meth:`run` accepts (a TensorRT profile), None = any.
    A runtime is a context manager: leaving the ``with`` block calls :meth:`close` (sessions, engines, GPU memory).
    """

    name: str = "abstract"
    max_batch: int | None = None

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 -> (N, ...) float32."""

    def close(self) -> None:  # pragma: no cover - default no-op
        pass

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
