"""Aligned crop -> model input: the one resize + normalisation used by training, evaluation and serving."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from detectors.bundle import Normalisation


def resize_crop(img: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (size, size, 3): INTER_AREA down, bilinear up, unchanged at that size."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB crop, got {img.shape} {img.dtype}")
    if img.shape[:2] == (size, size):
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def model_input(crops: Sequence[np.ndarray] | np.ndarray, size: int, norm: Normalisation) -> np.ndarray:
    """(N, S, S, 3) uint8 crops -> (N, 3, size, size) float32, normalised as the bundle says."""
    return norm.apply(np.stack([resize_crop(np.asarray(c), size) for c in crops]))
