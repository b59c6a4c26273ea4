"""TensorRT backend (optional extra: ``pip install fakewatch[tensorrt]``).

Nothing here imports ``tensorrt`` at module import time: :func:`tensorrt_available` and the
runtime import it lazily, so this module loads (and its pure helpers are tested) on machines
without TensorRT. See docs/gpu.md for what was and was not verified, and where.

Engines ("plans") are built from a bundle's ONNX file with one explicit optimisation profile
(min/opt/max batch), an optional FP16 precision, a persistent timing cache, and cached under the
bundle's ``plans/`` folder as ``<key>.plan`` + ``<key>.json``. The key hashes everything a plan is
tied to: the ONNX file's sha256, the TensorRT version, the GPU's compute capability and name, the
precision, the profile shapes and the builder optimisation level (:func:`plan_key`). A plan whose
key does not match this host is never loaded; when the daemon has to build one, it says so in the
log (including which stale plans it found and why they do not fit), never silently.

Execution uses the TensorRT 10+ named-tensor API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) with torch CUDA tensors as device memory (torch is a dependency already), on
torch's current CUDA stream.

TensorRT 11 note: the weak-typing precision flags (``BuilderFlag.FP16``) are gone in 11.x; networks
are strongly typed and FP16 must come from the ONNX graph itself. With ``precision="fp16"`` this
module sets the FP16 flag where it exists (TensorRT 10) and otherwise builds a strongly typed
network, so pass the bundle's ``frame.fp16.onnx`` on TensorRT 11.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.runtime.base import Runtime, RuntimeError_

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16")


def tensorrt_available() -> bool:
    """True when ``import tensorrt`` works and torch sees a CUDA device."""
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or a broken install raising OSError on its shared libraries
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


@dataclass(frozen=True)
class Profile:
    """Batch sizes of the one optimisation profile: min <= opt <= max."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise RuntimeError_(f"invalid TensorRT profile min={self.min} opt={self.opt} max={self.max}")


@dataclass(frozen=True)
class PlanKey:
    """Everything a serialised engine is tied to (ecosystem-notes §6)."""

    onnx_sha256: str
    trt_version: str
    compute_capability: str  # e.g. "8.9"
    gpu_name: str
    precision: str
    profile: tuple[int, int, int]  # min, opt, max batch
    opt_level: int = 3

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def filename(self) -> str:
        """``<onnx-hash-prefix>-trt<ver>-sm<cc>-<precision>-<digest>``: readable, and unique by the digest."""
        cc = self.compute_capability.replace(".", "")
        return f"{self.onnx_sha256[:12]}-trt{self.trt_version}-sm{cc}-{self.precision}-{self.digest()[:16]}"


def plan_key(
    onnx_sha256: str,
    trt_version: str,
    compute_capability: str,
    gpu_name: str = "",
    precision: str = "fp16",
    profile: Profile | tuple[int, int, int] = Profile(),
    opt_level: int = 3,
) -> PlanKey:
    """Build the cache key; pure (no TensorRT, no GPU needed), so it is unit-tested everywhere."""
    if precision not in PRECISIONS:
        raise RuntimeError_(f"unknown TensorRT precision {precision!r} (expected one of {PRECISIONS})")
    p = profile if isinstance(profile, Profile) else Profile(*profile)
    return PlanKey(onnx_sha256, str(trt_version), str(compute_capability), gpu_name, precision, (p.min, p.opt, p.max), int(opt_level))


def _sha256(path: Path) -> str:
    from detectors.bundle import sha256_file

    return sha256_file(path)


def host_identity() -> tuple[str, str, str]:
    """(TensorRT version, compute capability "major.minor", GPU name) of this host; needs TensorRT + CUDA."""
    import tensorrt as trt
    import torch

    dev = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(dev)
    return trt.__version__, f"{major}.{minor}", torch.cuda.get_device_name(dev)


def _trt_logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def build_engine(
    onnx_path: str | Path,
    profile: Profile,
    precision: str = "fp16",
    timing_cache: str | Path | None = None,
    opt_level: int = 3,
    workspace_bytes: int = 2 << 30,
) -> bytes:
    """Parse ``onnx_path`` and build a serialised engine with one optimisation profile on the batch axis."""
    import tensorrt as trt

    onnx_path = Path(onnx_path)
    logger = _trt_logger()
    builder = trt.Builder(logger)
    flags = 0
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    if precision == "fp16" and not has_fp16_flag:  # TensorRT 11: strongly typed only
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError_(f"{onnx_path}: TensorRT cannot parse this ONNX model ({errors})")
    if network.num_inputs != 1:
        raise RuntimeError_(f"{onnx_path}: expected one input, TensorRT sees {network.num_inputs}")
    inp = network.get_input(0)
    chw = tuple(int(inp.shape[i]) for i in range(1, len(inp.shape)))  # trt.Dims: index, don't slice
    if any(d < 0 for d in chw):
        raise RuntimeError_(f"{onnx_path}: only the batch axis may be dynamic, input shape is {tuple(inp.shape)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.builder_optimization_level = opt_level
    if precision == "fp16" and has_fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    prof = builder.create_optimization_profile()
    prof.set_shape(inp.name, (profile.min, *chw), (profile.opt, *chw), (profile.max, *chw))
    config.add_optimization_profile(prof)

    cache = None
    if timing_cache is not None:
        tc = Path(timing_cache)
        cache = config.create_timing_cache(tc.read_bytes() if tc.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError_(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    log.info("built TensorRT engine for %s (%s, batch %d/%d/%d) in %.1f s",
             onnx_path.name, precision, profile.min, profile.opt, profile.max, time.perf_counter() - t0)
    if cache is not None:
        _atomic_write(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _stale_plans(plan_dir: Path, key: PlanKey) -> list[str]:
    """Human-readable reasons why other cached plans for the same ONNX file do not fit this host."""
    out = []
    for meta in sorted(plan_dir.glob(f"{key.onnx_sha256[:12]}-*.json")):
        try:
            other = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        diffs = [f"{k}={other.get(k)!r} (here {v!r})" for k, v in asdict(key).items()
                 if k != "onnx_sha256" and other.get(k) != (list(v) if isinstance(v, tuple) else v)]
        if diffs:
            out.append(f"{meta.with_suffix('.plan').name}: " + ", ".join(diffs))
    return out


class TensorRTRuntime(Runtime):
    """Runs a deserialised TensorRT engine with one input and one output, same interface as OrtRuntime."""

    name = "tensorrt"

    def __init__(self, plan: bytes, source: str = "<plan>", device: int | None = None):
        import tensorrt as trt
        import torch

        self._torch = torch
        self.device = torch.device("cuda", torch.cuda.current_device() if device is None else device)
        self.source = source
        self._runtime = trt.Runtime(_trt_logger())
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise RuntimeError_(f"{source}: TensorRT could not deserialise this plan "
                                "(built by another TensorRT version or for another GPU?)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError_(f"{source}: TensorRT could not create an execution context")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise RuntimeError_(f"{source}: expected one input and one output tensor, got {ins} / {outs}")
        self.input_name, self.output_name = ins[0], outs[0]
        dt = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        try:
            self._in_dtype = dt[self.engine.get_tensor_dtype(self.input_name)]
            self._out_dtype = dt[self.engine.get_tensor_dtype(self.output_name)]
        except KeyError as e:
            raise RuntimeError_(f"{source}: unsupported IO tensor type {e}") from e
        _, _, mx = self.engine.get_tensor_profile_shape(self.input_name, 0)  # min, opt, max of profile 0
        self.max_batch = int(mx[0])

    @classmethod
    def from_onnx(
        cls,
        onnx_path: str | Path,
        plan_dir: str | Path | None = None,
        precision: str = "fp16",
        profile: Profile | tuple[int, int, int] = Profile(),
        opt_level: int = 3,
        build: bool = True,
    ) -> TensorRTRuntime:
        """Load the cached plan for this ONNX file on this host, or build (and cache) one.

        ``plan_dir`` defaults to ``<onnx folder>/plans``. ``build=False`` refuses to build and raises
        when no matching plan exists. Every build is announced in the log with the reason.
        """
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise RuntimeError_(f"{onnx_path}: ONNX model not found")
        plan_dir = Path(plan_dir) if plan_dir is not None else onnx_path.parent / "plans"
        prof = profile if isinstance(profile, Profile) else Profile(*profile)
        trt_version, cc, gpu = host_identity()
        key = plan_key(_sha256(onnx_path), trt_version, cc, gpu, precision, prof, opt_level)
        plan_path = plan_dir / f"{key.filename()}.plan"
        if plan_path.is_file():
            try:
                rt = cls(plan_path.read_bytes(), source=str(plan_path))
                log.info("TensorRT plan %s loaded", plan_path)
                return rt
            except RuntimeError_ as e:
                if not build:
                    raise
                log.warning("cached TensorRT plan %s is unusable (%s): REBUILDING it from %s", plan_path, e, onnx_path)
        else:
            stale = _stale_plans(plan_dir, key) if plan_dir.is_dir() else []
            why = ("cached plans do not match this host: " + "; ".join(stale)) if stale else "no cached plan"
            if not build:
                raise RuntimeError_(f"{plan_dir}: no TensorRT plan for {onnx_path.name} on this host ({why}); "
                                    "build one with build=True or use ONNX Runtime")
            log.warning("TensorRT: %s for %s (TensorRT %s, sm %s, %s, %s): BUILDING %s (may take minutes)",
                        why, onnx_path.name, trt_version, cc, gpu, precision, plan_path.name)
        timing = plan_dir / f"timing-trt{trt_version}-sm{cc.replace('.', '')}.cache"
        plan = build_engine(onnx_path, prof, precision, timing_cache=timing, opt_level=opt_level)
        _atomic_write(plan_path, plan)
        meta: dict[str, Any] = {**asdict(key), "profile": list(key.profile), "onnx": onnx_path.name,
                                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _atomic_write(plan_path.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
        return cls(plan, source=str(plan_path))

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        if batch.ndim != 4:
            raise RuntimeError_(f"{self.source}: expected an NCHW batch, got shape {batch.shape}")
        outs = []
        for start in range(0, batch.shape[0], self.max_batch):
            chunk = np.ascontiguousarray(batch[start:start + self.max_batch])
            x = torch.from_numpy(chunk).to(self.device, dtype=self._in_dtype, non_blocking=False).contiguous()
            if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
                raise RuntimeError_(f"{self.source}: input shape {tuple(x.shape)} is outside the engine's profile")
            shape = tuple(self.context.get_tensor_shape(self.output_name))
            y = torch.empty(shape, dtype=self._out_dtype, device=self.device)
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            self.context.set_tensor_address(self.output_name, y.data_ptr())
            stream = torch.cuda.current_stream(self.device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError_(f"{self.source}: TensorRT execution failed")
            stream.synchronize()
            outs.append(y.float().cpu().numpy())
        return np.concatenate(outs, axis=0) if len(outs) > 1 else outs[0]

    def close(self) -> None:
        self.context = None
        self.engine = None
