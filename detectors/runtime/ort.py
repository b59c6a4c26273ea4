"""ONNX Runtime backend (CPU default, CUDA when onnxruntime-gpu is installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detectors.runtime.base import Runtime, RuntimeError_


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class OrtRuntime(Runtime):
    def __init__(self, onnx_path: str | Path, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise RuntimeError_(f"{self.path}: ONNX model not found")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        # Several sessions (detector, frame model, embedder) share few cores: busy-waiting worker
        # threads would steal CPU from each other, so let idle ORT threads sleep.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Always pass providers explicitly: ORT may list e.g. AzureExecutionProvider first.
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise RuntimeError_(f"{self.path}: ONNX Runtime cannot load this model ({e})") from e
        self.device = device
        self.name = f"onnxruntime-{device}"
        inp = self.session.get_inputs()
        out = self.session.get_outputs()
        if len(inp) != 1 or len(out) < 1:
            raise RuntimeError_(f"{self.path}: expected one input and at least one output, got {len(inp)}/{len(out)}")
        self.input_name = inp[0].name
        self.output_name = out[0].name
        self.input_shape = inp[0].shape
        self.input_type = inp[0].type

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise RuntimeError_(f"{self.path}: runtime is closed")
        if batch.ndim != 4:
            raise RuntimeError_(f"{self.path}: expected an NCHW batch, got shape {batch.shape}")
        x = batch.astype(np.float16 if self.input_type == "tensor(float16)" else np.float32, copy=False)
        y = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(y, dtype=np.float32)

    def close(self) -> None:
        """Release the ONNX Runtime session (its memory goes with it); :meth:`run` then raises."""
        self.session = None
