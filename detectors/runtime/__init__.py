"""Inference runtimes behind one interface: ONNX Runtime (CPU, CUDA) and TensorRT plans (optional extra)."""

from detectors.runtime.base import Runtime, RuntimeError_, select_runtime
from detectors.runtime.ort import OrtRuntime

__all__ = ["OrtRuntime", "Runtime", "RuntimeError_", "select_runtime"]
