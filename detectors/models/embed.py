"""DiffFake embedder: backbone -> global average pool -> C-d embedding (methods.md §4.3).

``forward`` returns the embedding (N, C) and is what gets exported (``embed.onnx``). ``classify`` adds the
2-class head (index 1 = fake, project convention) used only by stage-1 training on pseudo-fakes.
"""

from __future__ import annotations

import torch
from torch import nn

from detectors.models.backbones import Backbone, create_backbone


class Embedder(nn.Module):
    def __init__(self, backbone: Backbone, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.cls = nn.Linear(backbone.channels, 2)

    @property
    def dim(self) -> int:
        return self.backbone.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(dim=(2, 3))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) -> (N,2) logits, class 1 = fake (training only)."""
        return self.cls(self.dropout(self(x)))


def build_embedder(backbone: str, dropout: float = 0.0, weights: str | None = None, pretrained: str | None = None, **kwargs) -> Embedder:
    return Embedder(create_backbone(backbone, weights=weights, pretrained=pretrained, **kwargs), dropout)
