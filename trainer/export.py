"""ONNX export, parity checks, FP16 variants and bundle assembly.

- :func:`export_onnx` exports the inference-only module (:func:`detectors.models.export_module`) with
  one input ``input`` (N,3,S,S) float32 and one output (``logit`` for frame detectors, ``embedding``
  for DiffFake embedders), a dynamic batch axis, opset 18. It uses the dynamo exporter (onnxscript)
  and falls back to the TorchScript exporter (``dynamo=False``) if that fails; which one ran is
  returned and logged. The file is checked with ``onnx.checker`` and loaded by ONNX Runtime (graph
  check) before it is accepted.
- :func:`parity` runs torch and ONNX Runtime (the daemon's :class:`OrtRuntime`) on random batches of
  several sizes and fails above a tolerance.
- :func:`fp16_variant` converts weights/activations to float16 with
  ``onnxruntime.transformers.float16`` (ships inside onnxruntime; onnxconverter-common is not
  needed), keeping the graph IO float32 so callers feed the same arrays.
- :func:`build_bundle` writes a bundle with :func:`detectors.bundle.write_bundle`, recording file
  hashes and library versions.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.bundle import Bundle, CropSpec, FrameModelSpec, Manifest, TemporalModelSpec, write_bundle

log = logging.getLogger(__name__)

OPSET = 18
FP32_TOL = 1e-4
FP16_TOL = 5e-2  # absolute, on logits / embeddings of order 1; measured values are reported, not assumed


class ExportError(RuntimeError):
    """Export produced no usable ONNX model, or the model disagrees with PyTorch."""


def export_onnx(
    model,
    path: str | Path,
    input_size: int,
    output_name: str = "logit",
    opset: int = OPSET,
    dynamo: bool = True,
) -> dict[str, Any]:
    """Export ``model`` to ``path``; returns ``{"path", "exporter", "opset", "seconds"}``."""
    import time

    import torch

    from detectors.models import export_module

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mod = export_module(model)
    x = torch.randn(2, 3, input_size, input_size)  # batch 2: avoid 0/1 specialisation of the batch dim
    t0 = time.perf_counter()
    exporter = "dynamo"
    err: Exception | None = None
    if dynamo:
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            with torch.no_grad():
                torch.onnx.export(
                    mod, (x,), str(path), input_names=["input"], output_names=[output_name],
                    dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, external_data=False,
                    verbose=False,
                )
        except Exception as e:  # the dynamo exporter raises many types; the fallback handles all
            err = e
            log.warning("dynamo ONNX export failed (%s); falling back to dynamo=False", str(e).splitlines()[0][:200])
    if not dynamo or err is not None:
        exporter = "torchscript"
        with torch.no_grad():
            torch.onnx.export(
                mod, (x,), str(path), input_names=["input"], output_names=[output_name],
                dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}}, opset_version=opset, dynamo=False,
            )
    seconds = time.perf_counter() - t0
    strip_debug_metadata(path)
    check_onnx(path, output_name)
    log.info("exported %s with the %s exporter (opset %d) in %.1f s", path, exporter, opset, seconds)
    return {"path": str(path), "exporter": exporter, "opset": opset, "seconds": round(seconds, 2)}


def strip_debug_metadata(path: str | Path) -> int:
    """Remove the exporter's per-node debug metadata (Python stack traces with the build machine's
    file paths) from an ONNX file in place; returns how many entries were removed. Weights and
    graph are untouched."""
    import onnx

    m = onnx.load(str(path))
    removed = 0

    def walk(graph) -> None:
        nonlocal removed
        for node in graph.node:
            removed += len(node.metadata_props)
            del node.metadata_props[:]
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(m.graph)
    if removed:
        onnx.save(m, str(path))
    return removed


def check_onnx(path: str | Path, output_name: str | None = None) -> None:
    """onnx.checker + IO names + an ONNX Runtime session (the graph check); raises ExportError naming the file."""
    import onnx

    path = Path(path)
    try:
        m = onnx.load(str(path))
        onnx.checker.check_model(m)
    except Exception as e:
        raise ExportError(f"{path}: not a valid ONNX model ({e})") from e
    ins = [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
    outs = [o.name for o in m.graph.output]
    if ins != ["input"]:
        raise ExportError(f"{path}: expected one graph input 'input', got {ins}")
    if output_name is not None and outs[:1] != [output_name]:
        raise ExportError(f"{path}: expected output {output_name!r}, got {outs}")
    dim0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    if not dim0.dim_param:
        raise ExportError(f"{path}: batch axis is not dynamic (dim 0 = {dim0.dim_value})")
    from detectors.runtime.ort import OrtRuntime

    OrtRuntime(path, device="cpu")  # raises RuntimeError_ naming the file if ORT cannot load it


def parity(
    model,
    onnx_path: str | Path,
    input_size: int,
    batch_sizes: tuple[int, ...] = (1, 3, 8),
    tol: float | None = FP32_TOL,
    seed: int = 0,
) -> float:
    """Max |torch - ONNX Runtime| over random batches of ``batch_sizes``; raises ExportError above ``tol``."""
    import torch

    from detectors.models import export_module
    from detectors.runtime.ort import OrtRuntime

    mod = export_module(model)
    rt = OrtRuntime(onnx_path, device="cpu")
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batch_sizes:
        x = torch.randn(b, 3, input_size, input_size, generator=g)
        with torch.no_grad():
            ref = mod(x).float().numpy()
        got = rt.run(x.numpy())
        if got.shape != ref.shape:
            raise ExportError(f"{onnx_path}: output shape {got.shape} != torch {ref.shape} at batch {b}")
        worst = max(worst, float(np.max(np.abs(got - ref))))
    log.info("parity %s: max abs error %.3g over batches %s", Path(onnx_path).name, worst, batch_sizes)
    print(f"parity {Path(onnx_path).name}: max abs error {worst:.3g} (batches {list(batch_sizes)})")
    if tol is not None and not worst <= tol:
        raise ExportError(f"{onnx_path}: max abs error vs PyTorch {worst:.3g} exceeds tolerance {tol:g}")
    return worst


def fp16_variant(onnx_path: str | Path, out_path: str | Path) -> Path:
    """Float16 copy of an ONNX model with float32 graph IO (onnxruntime.transformers.float16)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out_path = Path(out_path)
    m = onnx.load(str(onnx_path))
    try:
        m16 = convert_float_to_float16(m, keep_io_types=True)
    except Exception as e:
        raise ExportError(f"{onnx_path}: float16 conversion failed ({e})") from e
    _toposort(m16.graph)  # the converter appends its IO Cast nodes at the end of the node list
    onnx.save(m16, str(out_path))
    check_onnx(out_path, m.graph.output[0].name)
    return out_path


def _toposort(graph) -> None:
    """Reorder ``graph.node`` topologically in place (ONNX requires it; ORT would sort silently)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ExportError(f"graph has a cycle or undefined inputs near node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def export_model(
    model,
    out_dir: str | Path,
    input_size: int,
    kind: str = "frame",
    fp16: bool = True,
    tol: float = FP32_TOL,
    fp16_tol: float | None = FP16_TOL,
    batch_sizes: tuple[int, ...] = (1, 3, 8),
    dynamo: bool = True,
) -> dict[str, Any]:
    """Export + parity (+ FP16 variant and its parity). ``kind``: ``frame`` (logit) or ``embed`` (embedding).

    ``dynamo=False`` uses the TorchScript exporter directly (about 10x faster for tiny test models).
    """
    if kind not in ("frame", "embed"):
        raise ExportError(f"unknown export kind {kind!r} (expected frame or embed)")
    out_dir = Path(out_dir)
    name, output = ("frame", "logit") if kind == "frame" else ("embed", "embedding")
    info = export_onnx(model, out_dir / f"{name}.onnx", input_size, output, dynamo=dynamo)
    info["max_abs_err"] = parity(model, info["path"], input_size, batch_sizes, tol)
    if fp16:
        p16 = fp16_variant(info["path"], out_dir / f"{name}.fp16.onnx")
        info["fp16_path"] = str(p16)
        info["fp16_max_abs_err"] = parity(model, p16, input_size, batch_sizes, fp16_tol)
    return info


# --------------------------------------------------------------------------------------------
# bundle


def collect_versions() -> dict[str, str]:
    """Versions of the libraries that shape a bundle's numbers."""
    out = {}
    for pkg in ("fakewatch", "torch", "timm", "onnx", "onnxruntime", "onnxscript", "diffusers", "numpy", "scikit-learn"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class FrameArtifact:
    """A frame detector ready for a bundle: its ONNX file(s) and spec (file names are set by build_bundle)."""

    onnx: Path
    spec: FrameModelSpec
    fp16: Path | None = None


@dataclass
class TemporalArtifact:
    """A DiffFake embedder + GMM: ``gmm`` is a path to an .npz or the arrays themselves."""

    onnx: Path
    spec: TemporalModelSpec
    gmm: Path | dict[str, np.ndarray] = field(default_factory=dict)


def build_bundle(
    out_dir: str | Path,
    frame: FrameArtifact | None = None,
    temporal: TemporalArtifact | None = None,
    name: str = "fakewatch",
    version: str = "0",
    provenance: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
    fusion: dict[str, Any] | None = None,
    crop: CropSpec | None = None,
) -> Bundle:
    """Assemble a bundle folder (manifest + ONNX files + GMM) and return it loaded and hash-verified.

    ``crop``: the face-crop geometry the models were trained on (default: :class:`CropSpec`'s 256 px / 1.3)."""
    import io

    if frame is None and temporal is None:
        raise ExportError("build_bundle needs a frame model, a temporal model or both")
    files: dict[str, Path | bytes] = {}
    if frame is not None:
        frame.spec.file = "frame.onnx"
        files["frame.onnx"] = Path(frame.onnx)
        if frame.fp16 is not None:
            frame.spec.fp16_file = "frame.fp16.onnx"
            files["frame.fp16.onnx"] = Path(frame.fp16)
        else:
            frame.spec.fp16_file = None
    if temporal is not None:
        temporal.spec.file = "embed.onnx"
        temporal.spec.gmm_file = "gmm.npz"
        files["embed.onnx"] = Path(temporal.onnx)
        if isinstance(temporal.gmm, dict):
            need = {"weights", "means", "precisions_cholesky"}
            if not need <= set(temporal.gmm):
                raise ExportError(f"GMM arrays need {sorted(need)}, got {sorted(temporal.gmm)}")
            buf = io.BytesIO()
            np.savez(buf, **{k: np.asarray(temporal.gmm[k], np.float64) for k in sorted(need)})
            files["gmm.npz"] = buf.getvalue()
        else:
            files["gmm.npz"] = Path(temporal.gmm)
    for rel, src in files.items():
        if isinstance(src, Path) and not src.is_file():
            raise ExportError(f"{src}: missing (needed for {rel} of the bundle)")
    manifest = Manifest(
        name=name,
        version=version,
        crop=crop or CropSpec(),
        frame=frame.spec if frame else None,
        temporal=temporal.spec if temporal else None,
        provenance=dict(provenance or {}),
        metrics=dict(metrics or {}),
        fusion=dict(fusion or {}),
        versions={**collect_versions(), **(versions or {})},
    )
    return write_bundle(out_dir, manifest, files)
