"""Types shared by every face backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Face:
    """One detected face in one frame, in the frame's pixel coordinates.

    box: (x1, y1, x2, y2) float32; score: detector confidence in [0, 1];
    kps: (5, 2) float32 landmarks in the order left eye, right eye, nose tip, left mouth
    corner, right mouth corner (image left/right, InsightFace/ArcFace order);
    embedding: optional L2-normalised identity vector (ArcFace or the bundle's own model).
    """

    box: np.ndarray
    score: float
    kps: np.ndarray
    embedding: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


@runtime_checkable
class FaceDetector(Protocol):
    """Detects faces with 5-point landmarks on an RGB uint8 HxWx3 image."""

    name: str

    def detect(self, image: np.ndarray) -> list[Face]: ...


@runtime_checkable
class FaceEmbedder(Protocol):
    """Maps a batch of aligned RGB uint8 crops (N, S, S, 3) to L2-normalised embeddings (N, D)."""

    name: str

    def embed(self, crops: np.ndarray) -> np.ndarray: ...
