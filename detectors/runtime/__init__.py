"""Inference runtimes behind one interface: ONNX Runtime (CPU, CUDA), torch via onnx2torch (CPU, CUDA) and
TensorRT plans (optional extra)."""

from detectors.runtime.base import Runtime, RuntimeError_
from detectors.runtime.select import RUNTIMES, select_runtime
from detectors.runtime.ort import OrtRuntime
from detectors.runtime.torchrt import TorchRuntime

__all__ = ["RUNTIMES", "OrtRuntime", "Runtime", "RuntimeError_", "TorchRuntime", "select_runtime"]
