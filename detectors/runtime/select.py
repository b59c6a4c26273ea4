"""Which runtime runs a model: :func:`select_runtime` (TensorRT -> ONNX Runtime CUDA -> torch CUDA -> ONNX Runtime CPU).

Kept apart from :mod:`detectors.runtime.base` (the interface the backends implement), so the backends
import the interface and this module imports the backends, never the other way round.
"""

from __future__ import annotations

import logging
from pathlib import Path

from detectors.runtime.base import Runtime, RuntimeError_
from detectors.runtime.ort import OrtRuntime, available_providers

log = logging.getLogger(__name__)


RUNTIMES = ("auto", "cpu", "cuda", "tensorrt", "torch", "torch-cuda")


def select_runtime(
    onnx_path: str | Path,
    prefer: str = "auto",
    threads: int | None = None,
    plan_dir: str | Path | None = None,
    torch_precision: str = "fp32",
    cuda_graphs: bool = False,
) -> Runtime:
    """Pick a runtime: TensorRT plan for this GPU -> ONNX Runtime CUDA -> torch CUDA -> ONNX Runtime CPU.

    ``prefer``: ``auto`` | ``tensorrt`` | ``cuda`` (ONNX Runtime CUDA) | ``torch-cuda`` | ``torch``
    (torch on CPU) | ``cpu`` (ONNX Runtime CPU). An explicit choice that cannot be honoured raises
    :class:`RuntimeError_`; ``auto`` falls back and logs which runtime it took and why.
    ``auto`` never picks torch on CPU: it was slower than ONNX Runtime there (docs/gpu.md).
    ``torch_precision`` (``fp32`` | ``fp16`` | ``bf16``) and ``cuda_graphs`` apply to the torch runtime only.
    """
    onnx_path = Path(onnx_path)
    if prefer not in RUNTIMES:
        raise RuntimeError_(f"unknown runtime {prefer!r} (expected one of {', '.join(RUNTIMES)})")
    why: list[str] = []  # why auto passed over each better runtime

    def took(rt: Runtime, reason: str) -> Runtime:
        if prefer == "auto":
            log.info("runtime auto for %s: %s (%s)", onnx_path.name, rt.name, "; ".join([*why, reason]))
        return rt

    if prefer in ("auto", "tensorrt"):
        try:
            from detectors.runtime.tensorrt import TensorRTRuntime, tensorrt_available

            if tensorrt_available():
                return took(TensorRTRuntime.from_onnx(onnx_path, plan_dir=plan_dir), "TensorRT and a CUDA GPU found")
            if prefer == "tensorrt":
                raise RuntimeError_("runtime 'tensorrt' requested but TensorRT or a CUDA GPU is not available")
            why.append("no TensorRT (or no CUDA GPU)")
        except ImportError as e:
            if prefer == "tensorrt":
                raise RuntimeError_(f"runtime 'tensorrt' requested but not importable: {e}") from e
            why.append(f"TensorRT not importable ({e})")
    if prefer in ("auto", "cuda"):
        if "CUDAExecutionProvider" in available_providers():
            return took(OrtRuntime(onnx_path, device="cuda", threads=threads), "onnxruntime has CUDAExecutionProvider")
        if prefer == "cuda":
            raise RuntimeError_("runtime 'cuda' requested but onnxruntime has no CUDAExecutionProvider")
        why.append("onnxruntime has no CUDAExecutionProvider")
    if prefer in ("auto", "torch-cuda", "torch"):
        from detectors.runtime.torchrt import TorchRuntime, onnx2torch_available, torch_cuda_available

        if prefer == "torch":
            return TorchRuntime(onnx_path, device="cpu", precision=torch_precision, threads=threads,
                                cuda_graphs=cuda_graphs)
        if torch_cuda_available() and onnx2torch_available():
            try:
                return took(TorchRuntime(onnx_path, device="cuda", precision=torch_precision, threads=threads,
                                         cuda_graphs=cuda_graphs), "torch sees a CUDA device")
            except RuntimeError_ as e:
                if prefer == "torch-cuda":
                    raise
                why.append(f"torch CUDA runtime failed to load ({e})")
        else:
            reason = "torch sees no CUDA device" if not torch_cuda_available() else "onnx2torch not installed"
            if prefer == "torch-cuda":
                raise RuntimeError_(f"runtime 'torch-cuda' requested but {reason}")
            why.append(reason)
    return took(OrtRuntime(onnx_path, device="cpu", threads=threads),
                "auto does not pick torch on CPU: slower than ONNX Runtime there, docs/gpu.md")
