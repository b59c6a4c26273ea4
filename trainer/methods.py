"""The registry of training methods: what ``fakewatch-train fit --method NAME`` trains and how a checkpoint
of it becomes the module that is exported.

Every method is one :func:`register_method` call (the built-in ones in :func:`_builtins`)::

    register_method("anl", train=anl.train_anl, load=anl.load_anl, config=CONFIG_DIR / "anl.yaml", output="frame")

- ``train(cfg, dataset=None, val_dataset=None) -> checkpoint path`` runs :func:`trainer.train_loop.run_training`;
- ``load(checkpoint) -> torch module`` rebuilds the model without any training-only dependency (no diffusion
  folder); :func:`load_inference_model` takes its inference part (:func:`detectors.models.export_module`:
  training-only heads are dropped);
- ``config``: the default YAML every key of a run config must exist in (:func:`trainer.train_loop.load_config`);
- ``output``: ``frame`` (a logit per crop, the bundle's frame model) or ``embed`` (an embedding per crop, the
  bundle's DiffFake embedder).

The built-in methods (ANL, DiffusionFake, DiffFake) are imported and registered on the first lookup, so
commands that train nothing never import torch or diffusers, and the method modules know nothing of the
registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUTS = ("frame", "embed")


class MethodError(ValueError):
    """An unknown method name (the message lists the registered ones) or a checkpoint no registered method can
    read (the message names the file)."""


@dataclass(frozen=True)
class Method:
    name: str
    train: Callable[..., Path]
    load: Callable[[str | Path], Any]
    config: Path
    output: str = "frame"


_REGISTRY: dict[str, Method] = {}
_BUILTINS_DONE = False


def register_method(name: str, *, train: Callable[..., Path], load: Callable[[str | Path], Any],
                    config: str | Path, output: str = "frame") -> Method:
    """Add a method to the registry (a second registration of the same name is an error)."""
    if output not in OUTPUTS:
        raise ValueError(f"method {name!r}: output must be one of {OUTPUTS}, got {output!r}")
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered")
    m = Method(name, train, load, Path(config), output)
    _REGISTRY[name] = m
    return m


def _builtins() -> None:
    """Register ANL, DiffusionFake and DiffFake (once)."""
    global _BUILTINS_DONE
    if _BUILTINS_DONE:
        return
    from trainer import anl, difffake, diffusionfake
    from trainer.train_loop import CONFIG_DIR

    register_method("anl", train=anl.train_anl, load=anl.load_anl, config=CONFIG_DIR / "anl.yaml", output="frame")
    register_method("diffusionfake", train=diffusionfake.train_diffusionfake,
                    load=diffusionfake.load_diffusionfake_detector, config=CONFIG_DIR / "diffusionfake.yaml",
                    output="frame")
    register_method("difffake", train=difffake.train_difffake, load=difffake.load_embedder,
                    config=CONFIG_DIR / "difffake.yaml", output="embed")
    _BUILTINS_DONE = True


def method_names() -> list[str]:
    _builtins()
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    """The registered method ``name``; :class:`MethodError` names the registered ones otherwise."""
    _builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MethodError(f"unknown method {name!r} (registered: {', '.join(sorted(_REGISTRY))})") from None


def load_inference_model(checkpoint: str | Path) -> tuple[Method, dict[str, Any], Any]:
    """(method, run config, inference module in eval mode) of a checkpoint written by a registered method.

    Raises :class:`MethodError` naming the file when it is missing or not a fakewatch checkpoint, or naming
    the method when that is not registered.
    """
    from detectors.models import export_module
    from trainer import train_loop as tl

    p = Path(checkpoint)
    if not p.is_file():
        raise MethodError(f"{p}: checkpoint not found")
    try:
        ck = tl.load_checkpoint(p)
    except Exception as e:  # torch.load raises pickle/zip/runtime errors for foreign files
        raise MethodError(f"{p}: not a readable fakewatch checkpoint ({str(e).splitlines()[0][:200]})") from e
    try:
        method = get_method(str(ck.get("method")))
    except MethodError as e:
        raise MethodError(f"{p}: {e}") from None
    return method, dict(ck.get("config") or {}), export_module(method.load(p))


def model_geometry(cfg: dict[str, Any]) -> tuple[str, int]:
    """(backbone, input size) from a checkpoint's run config."""
    m = cfg.get("model") or {}
    try:
        return str(m["backbone"]), int(m["image_size"])
    except KeyError as e:
        raise MethodError(f"checkpoint config lacks model.{e.args[0]}") from None
