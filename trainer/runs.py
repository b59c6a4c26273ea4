"""Run folders: the one place a trainer command or a training run writes its record.

A :class:`RunFolder` is ``<root>/<name>`` (``<name>-<UTC timestamp>`` with ``stamp=True``; a suffix
``-1``, ``-2``, ... when that folder exists and is not empty) holding

- ``config.yaml``   the resolved configuration (written at creation),
- ``log.txt``       the log of the run (after :meth:`RunFolder.capture_log`),
- ``machine.json``  what ran it (after :meth:`RunFolder.capture_log`; :func:`machine_record`),
- ``metrics.jsonl`` one JSON object per logged training step (:meth:`RunFolder.log`),
- ``metrics.json``  the result (:meth:`RunFolder.finish`),

plus whatever the command or method writes beside them (checkpoints, exports, plots).
``fakewatch-train`` makes one per command (``<runs>/<command or method>-<stamp>/``); a training method
makes its own inside it (``.../fit/`` with ``checkpoint.pt`` and ``metrics.jsonl``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("fakewatch.trainer")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def plain(v: Any) -> Any:
    """JSON/YAML-safe copy: paths to str, tuples to lists, numpy scalars to Python, NaN to None."""
    if isinstance(v, Mapping):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


class RunFolder:
    """One run's folder (see the module docstring). ``step_log``: open ``metrics.jsonl`` now (training runs)."""

    def __init__(self, root: str | Path, name: str | None = None, config: Mapping | None = None, *,
                 stamp: bool = False, step_log: bool = False):
        import yaml

        ts = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        if not name:
            name = ts
        elif stamp:
            name = f"{name}-{ts}"
        base = Path(root) / name
        path, i = base, 1
        while path.exists() and any(path.iterdir()):
            path = base.with_name(f"{base.name}-{i}")
            i += 1
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        if config is not None:
            (path / "config.yaml").write_text(yaml.safe_dump(plain(config), sort_keys=False))
        self._metrics = open(path / "metrics.jsonl", "a", buffering=1) if step_log else None
        self._handler: logging.Handler | None = None

    def capture_log(self) -> RunFolder:
        """Copy every log record to ``log.txt`` until :meth:`close`."""
        self._handler = logging.FileHandler(self.path / "log.txt")
        self._handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(self._handler)
        (self.path / "machine.json").write_text(json.dumps(machine_record(), indent=1) + "\n")
        log.info("run folder %s", self.path)
        return self

    def log(self, step: int, **values: Any) -> None:
        """Append ``{"step", "time", **values}`` to ``metrics.jsonl`` (numbers and tensors as floats)."""
        if self._metrics is None:
            self._metrics = open(self.path / "metrics.jsonl", "a", buffering=1)
        rec = {"step": int(step), "time": round(time.time(), 3)}
        rec.update({k: (float(v) if _is_number(v) else v) for k, v in values.items()})
        self._metrics.write(json.dumps(rec) + "\n")

    def finish(self, result: Mapping[str, Any]) -> None:
        """Write ``metrics.json`` and close."""
        (self.path / "metrics.json").write_text(json.dumps(plain(result), indent=2) + "\n")
        log.info("done: %s", self.path / "metrics.json")
        self.close()

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")


def machine_record() -> dict[str, Any]:
    """The machine and libraries a run ran on, for telling whether two runs of one command can agree.

    Training with the same command, data and seed gave the same network on one CPU machine and another network
    on a different one (docs/default-bundle.md, "The four-seed round"): float reductions depend on the CPU's
    vector unit, the thread count and the library builds, so these are recorded with every run.
    """
    from importlib import metadata

    cpu, info = platform.processor() or None, {}
    try:
        with open("/proc/cpuinfo") as f:  # the first processor's block
            for ln in f:
                if not ln.strip():
                    break
                k, _, v = ln.partition(":")
                info[k.strip()] = v.strip()
    except OSError:
        pass
    cpu = info.get("model name", cpu)
    if "cpu family" in info:  # "AMD EPYC" alone does not tell the generations apart
        cpu = f"{cpu} (family {info['cpu family']}, model {info.get('model')}, stepping {info.get('stepping')})"
    rec: dict[str, Any] = {
        "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(), "env": {k: os.environ[k] for k in THREAD_VARS if k in os.environ},
        "packages": {},
    }
    for pkg in ("torch", "torchvision", "numpy", "onnxruntime", "timm", "opencv-python"):
        try:
            rec["packages"][pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        import torch
    except ImportError:
        return rec
    rec["torch"] = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return rec


def _is_number(v: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor can only be here when torch is loaded
    return isinstance(v, (int, float, np.floating)) or (torch is not None and isinstance(v, torch.Tensor))


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl``."""
    p = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
