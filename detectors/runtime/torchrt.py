"""torch backend: a bundle's ONNX file converted to a torch module with ``onnx2torch``, on CPU or CUDA.

The bundle format stays ONNX-only; this runtime converts the graph at load time (well under a
second for the shipped models), so it runs wherever torch runs — notably on NVIDIA hosts where
neither TensorRT nor ``onnxruntime-gpu`` is installed (``bundle.runtime: torch-cuda``, or ``auto``
after TensorRT and ONNX Runtime CUDA). See docs/gpu.md for what was verified on which device.

* **Precision**: ``fp32`` (default), or ``fp16`` / ``bf16`` through ``torch.autocast``. Autocast
  is only kept where parity allows: before use, the autocast output is compared with the fp32
  output of the same module on a batch (the first real batch for models with dynamic spatial
  dims, a fixed pseudo-random one otherwise); when the error exceeds ``parity_tol`` (relative to
  ``max(1, max |fp32 output|)``) the runtime logs a warning and stays in fp32. The measured error
  is kept in ``autocast_error``.
* **Static shapes per batch bucket**: with ``buckets`` (default on CUDA: 1, 2, 4, ..., 64) a batch
  of N is zero-padded to the smallest bucket >= N and the padding rows are dropped from the
  result; batches above the largest bucket are split. Every forward pass then has one of a few
  shapes, which is what cuDNN autotuning (``cudnn.benchmark``) and CUDA graphs need. On CPU the
  default is no padding (padding would cost real compute there).
* **CUDA graphs** (``cuda_graphs=True``, CUDA only, needs buckets): one graph captured per
  (bucket, C, H, W) shape and replayed. UNVERIFIED: this code path has never run on a GPU (no GPU
  in the sessions that wrote it); a capture failure falls back to eager with a warning. Asked for on
  CPU it is ignored with a log line.

``onnx2torch`` 1.5.15 has no converters for the opset-18 reductions (``ReduceMean`` & co. take
their axes as an input from opset 18 on, and the default bundle's exports use opset 18): this
module registers them (constant axes only) unless the installed onnx2torch already has them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detectors.runtime.base import Runtime, RuntimeError_

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_CUDA_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_PARITY_TOL = 1e-2

_OPSET18_REDUCTIONS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                       "ReduceMin", "ReduceProd", "ReduceSumSquare")
_registered = False


def onnx2torch_available() -> bool:
    try:
        import onnx2torch  # noqa: F401
    except Exception:  # ImportError, or a broken torch/torchvision underneath
        return False
    return True


def torch_cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def register_opset18_reductions() -> list[str]:
    """Register onnx2torch converters for the opset-18 reductions it lacks; returns the ops added."""
    global _registered
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    added: list[str] = []
    if _registered:
        return added

    def convert_reduce(node, graph):
        import torch

        keepdims = int(node.attributes.get("keepdims", 1))
        noop = int(node.attributes.get("noop_with_empty_axes", 0))
        axes = None
        if len(node.input_values) > 1 and node.input_values[1]:
            try:
                axes = get_const_value(node.input_values[1], graph)
            except KeyError as e:
                raise NotImplementedError(f"{node.operation_type} (opset 18) with non-constant axes") from e
            axes = [int(a) for a in (axes.tolist() if isinstance(axes, torch.Tensor) else list(axes))]
        mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
        if not axes and noop:
            return OperationConverterResult(torch_module=torch.nn.Identity(), onnx_mapping=mapping)
        return OperationConverterResult(
            torch_module=OnnxReduceStaticAxes(operation_type=node.operation_type, axes=axes or None,
                                              keepdims=keepdims),
            onnx_mapping=mapping,
        )

    for op in _OPSET18_REDUCTIONS:
        if OperationDescription(domain="", operation_type=op, version=18) not in _CONVERTER_REGISTRY:
            add_converter(operation_type=op, version=18)(convert_reduce)
            added.append(op)
    _registered = True
    if added:
        log.debug("onnx2torch: registered opset-18 converters for %s", ", ".join(added))
    return added


def _load_onnx(model: str | Path | bytes):
    import onnx

    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model)), "<onnx bytes>"
    p = Path(model)
    if not p.is_file():
        raise RuntimeError_(f"{p}: ONNX model not found")
    try:
        return onnx.load(str(p)), str(p)
    except Exception as e:  # onnx raises DecodeError & co.
        raise RuntimeError_(f"{p}: not a readable ONNX model ({e})") from e


def _bucket(n: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if b >= n:
            return b
    return buckets[-1]


class TorchRuntime(Runtime):
    """The ONNX graph as a torch module (onnx2torch); same interface as :class:`OrtRuntime`.

    ``model``: an ONNX file or serialised ONNX bytes (e.g. CenterFace's fixed graph).
    ``device``: ``cpu`` | ``cuda`` | ``cuda:N``. ``precision``: ``fp32`` | ``fp16`` | ``bf16``
    (autocast, checked against fp32, see the module docstring). ``threads``: torch intra-op threads
    (process-wide in torch: the last runtime created sets it). ``buckets``: batch sizes to pad to,
    ``None`` = the device default, ``()`` = no padding. ``run`` returns the first output,
    ``run_all`` every output.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        buckets: Sequence[int] | None = None,
        cuda_graphs: bool = False,
        parity_tol: float = DEFAULT_PARITY_TOL,
    ):
        import torch

        if precision not in PRECISIONS:
            raise RuntimeError_(f"unknown torch precision {precision!r} (expected one of {', '.join(PRECISIONS)})")
        try:
            from onnx2torch import convert
        except Exception as e:
            raise RuntimeError_(f"the torch runtime needs onnx2torch (pip install onnx2torch): {e}") from e
        self._torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError_(f"torch runtime on {device!r} requested but torch sees no CUDA device")
        if self.device.type not in ("cpu", "cuda"):
            raise RuntimeError_(f"torch runtime: unsupported device {device!r} (expected cpu or cuda)")
        proto, self.source = _load_onnx(model)
        register_opset18_reductions()
        t0 = time.perf_counter()
        try:
            module = convert(proto)
        except NotImplementedError as e:
            raise RuntimeError_(f"{self.source}: onnx2torch cannot convert this model ({e})") from e
        except Exception as e:  # noqa: BLE001 - onnx2torch raises plain exceptions on odd graphs
            raise RuntimeError_(f"{self.source}: onnx2torch failed on this model ({type(e).__name__}: {e})") from e
        self.convert_s = time.perf_counter() - t0
        self.module = module.eval().to(self.device)
        for p in self.module.parameters():
            p.requires_grad_(False)
        init_names = {t.name for t in proto.graph.initializer}
        inputs = [i for i in proto.graph.input if i.name not in init_names]
        if len(inputs) != 1 or len(proto.graph.output) < 1:
            raise RuntimeError_(f"{self.source}: expected one input and at least one output, "
                                f"got {len(inputs)}/{len(proto.graph.output)}")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in proto.graph.output]
        dims = inputs[0].type.tensor_type.shape.dim
        # (C, H, W) when fixed in the graph (bundle models), else None (CenterFace: dynamic H, W)
        chw = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in list(dims)[1:])
        self.input_chw = chw if len(chw) == 3 and all(d > 0 for d in chw) else None
        if threads:
            torch.set_num_threads(int(threads))
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True  # static bucket shapes: autotune once per shape
        self.buckets: tuple[int, ...] = tuple(sorted(set(buckets))) if buckets is not None else (
            DEFAULT_CUDA_BUCKETS if cuda else ())
        if any(b < 1 for b in self.buckets):
            raise RuntimeError_(f"torch runtime: batch buckets must be >= 1, got {self.buckets}")
        self.max_batch = self.buckets[-1] if self.buckets else None
        self.cuda_graphs = bool(cuda_graphs)
        if self.cuda_graphs and not cuda:
            log.info("torch runtime %s: cuda_graphs ignored on %s (CUDA only)", Path(self.source).name, self.device)
            self.cuda_graphs = False
        if self.cuda_graphs and not self.buckets:
            log.warning("torch runtime %s: cuda_graphs need batch buckets (static shapes); disabled",
                        Path(self.source).name)
            self.cuda_graphs = False
        self._graphs: dict[tuple[int, ...], Any] = {}
        self.parity_tol = float(parity_tol)
        self.requested_precision = precision
        self.precision = precision
        self.autocast_error: float | None = None
        self._autocast_checked = precision == "fp32"
        if precision != "fp32" and self.input_chw is not None:
            x = np.random.default_rng(0).uniform(-1.0, 1.0, size=(4, *self.input_chw)).astype(np.float32)
            self._check_autocast(x)
        self._set_name()

    def _set_name(self) -> None:
        dev = "cuda" if self.device.type == "cuda" else "cpu"
        self.name = f"torch-{dev}" + ("" if self.precision == "fp32" else f"-{self.precision}")

    # -------------------------------------------------------------------------------- precision
    def _dtype(self):
        torch = self._torch
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)

    def _forward(self, x) -> list:
        torch = self._torch
        dtype = self._dtype()
        with torch.inference_mode():
            if dtype is None:
                y = self.module(x)
            else:
                with torch.autocast(self.device.type, dtype=dtype, cache_enabled=False):
                    y = self.module(x)
        return list(y) if isinstance(y, (tuple, list)) else [y]

    def _check_autocast(self, x: np.ndarray) -> None:
        """Compare autocast with fp32 on ``x``; keep autocast only within ``parity_tol``."""
        torch = self._torch
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        wanted = self.precision
        self.precision = "fp32"
        ref = [y.float().cpu().numpy() for y in self._forward(t)]
        self.precision = wanted
        try:
            got = [y.float().cpu().numpy() for y in self._forward(t)]
            err = max(float(np.max(np.abs(a - b))) / max(1.0, float(np.max(np.abs(b))))
                      for a, b in zip(got, ref, strict=True))
        except Exception as e:  # noqa: BLE001 - an op without a low-precision kernel on this device
            err = float("inf")
            log.warning("torch runtime %s: %s autocast failed on %s (%s: %s)", Path(self.source).name, wanted,
                        self.device, type(e).__name__, e)
        self.autocast_error = err
        self._autocast_checked = True
        if not np.isfinite(err) or err > self.parity_tol:
            log.warning("torch runtime %s: %s autocast differs from fp32 by %.3g (relative max abs error, "
                        "tolerance %.3g): staying in fp32", Path(self.source).name, wanted, err, self.parity_tol)
            self.precision = "fp32"
        else:
            log.info("torch runtime %s: %s autocast within tolerance (relative max abs error %.3g <= %.3g)",
                     Path(self.source).name, wanted, err, self.parity_tol)
        self._set_name()

    # -------------------------------------------------------------------------------- execution
    def _graph_forward(self, x):
        """Replay (capturing on first use) a CUDA graph for this static shape. UNVERIFIED on a GPU."""
        torch = self._torch
        key = tuple(x.shape)
        entry = self._graphs.get(key)
        if entry is None:
            try:
                static_in = torch.empty_like(x)
                static_in.copy_(x)
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    for _ in range(3):  # warm-up (cuDNN autotuning, lazy init) outside the capture
                        self._forward(static_in)
                torch.cuda.current_stream(self.device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = self._forward(static_in)
                entry = self._graphs[key] = (graph, static_in, static_out)
                log.info("torch runtime %s: CUDA graph captured for input %s", Path(self.source).name, key)
            except Exception as e:  # noqa: BLE001
                log.warning("torch runtime %s: CUDA graph capture failed for %s (%s: %s); running eager from now on",
                            Path(self.source).name, key, type(e).__name__, e)
                self.cuda_graphs = False
                self._graphs.clear()
                return self._forward(x)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return [y.clone() for y in static_out]

    def _run_chunk(self, chunk: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        n = chunk.shape[0]
        if self.buckets:
            b = _bucket(n, self.buckets)
            if b > n:
                chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), np.float32)])
        x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        ys = self._graph_forward(x) if self.cuda_graphs else self._forward(x)
        return [y[:n].float().cpu().numpy() for y in ys]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """(N, C, H, W) -> every output of the graph, float32, N rows each."""
        if batch.ndim != 4:
            raise RuntimeError_(f"{self.source}: expected an NCHW batch, got shape {batch.shape}")
        if self.input_chw is not None and tuple(batch.shape[1:]) != self.input_chw:
            raise RuntimeError_(f"{self.source}: expected input (N, {', '.join(map(str, self.input_chw))}), "
                                f"got {batch.shape}")
        if len(batch) == 0:
            return [np.zeros((0,), np.float32) for _ in self.output_names]
        if not self._autocast_checked:  # dynamic input shape: check autocast on the first real batch
            self._check_autocast(batch[:4])
        mb = self.max_batch
        if not mb or len(batch) <= mb:
            return self._run_chunk(batch)
        parts = [self._run_chunk(batch[i:i + mb]) for i in range(0, len(batch), mb)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_all(batch)[0]

    def close(self) -> None:
        self._graphs.clear()
