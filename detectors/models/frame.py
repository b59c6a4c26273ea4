"""Frame detector = backbone -> global average pool -> dropout -> Linear(C -> 1): a fake logit per crop.

This is the whole inference graph of the ANL, DiffusionFake and plain frame bundles (methods.md §2.3, §3.3):
input (N, 3, S, S) normalised crops, output (N, 1) logit (higher = more fake). No data-dependent control
flow, so it exports to ONNX as is.
"""

from __future__ import annotations

import torch
from torch import nn

from detectors.models.backbones import Backbone, create_backbone


class FrameDetector(nn.Module):
    def __init__(self, backbone: Backbone, dropout: float = 0.2):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.channels, 1)

    @property
    def channels(self) -> int:
        return self.backbone.channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) -> backbone feature map (N,C,h,w)."""
        return self.backbone(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """Feature map (N,C,h,w) -> logit (N,1) through GAP, dropout and the linear layer."""
        return self.fc(self.dropout(f.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_frame_detector(backbone: str, dropout: float = 0.2, weights: str | None = None, pretrained: str | None = None, **kwargs) -> FrameDetector:
    return FrameDetector(create_backbone(backbone, weights=weights, pretrained=pretrained, **kwargs), dropout)
