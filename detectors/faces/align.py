"""5-point similarity alignment: the single crop function of training and serving.

Geometry follows DeepfakeBench (methods.md §1): the ArcFace 112x112 5-point template is rescaled
to the output size and shrunk by ``scale`` (1.3 by default) about the crop centre, so the face
fills 1/scale of the crop with a border for blending artefacts and context. A least-squares
similarity transform (rotation, uniform scale, translation; Umeyama) maps the detected points onto
that template and the frame is warped with bilinear interpolation.
"""

from __future__ import annotations

import cv2
import numpy as np

# ArcFace template for a 112x112 crop (left eye, right eye, nose, left mouth, right mouth).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def crop_template(size: int, scale: float = 1.3) -> np.ndarray:
    """The 5 destination points for a ``size`` x ``size`` crop where the face fills 1/``scale``."""
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    if scale < 1.0:
        raise ValueError(f"crop scale must be >= 1.0, got {scale}")
    pts = ARCFACE_TEMPLATE_112 * (size / 112.0)
    return (pts + (scale - 1.0) / 2.0 * size) / scale


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) mapping ``src`` points onto ``dst``.

    Returns a 2x3 float64 matrix usable with ``cv2.warpAffine``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    n = len(src)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c**2).sum() / n
    if var_s <= 1e-12:
        raise ValueError("degenerate landmarks: all points coincide")
    cov = d_c.T @ s_c / n
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    c = (sig * d).sum() / var_s
    t = mu_d - c * rot @ mu_s
    m = np.zeros((2, 3), dtype=np.float64)
    m[:, :2] = c * rot
    m[:, 2] = t
    return m


def align_face(
    image: np.ndarray,
    kps: np.ndarray,
    size: int = 256,
    scale: float = 1.3,
    border_mode: int = cv2.BORDER_CONSTANT,
) -> np.ndarray:
    """Warp ``image`` (H, W, C uint8) so the 5 landmarks ``kps`` land on the crop template.

    Returns a ``size`` x ``size`` crop of the same dtype and channel count.
    """
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected an HxW(xC) image, got shape {image.shape}")
    kps = np.asarray(kps, dtype=np.float64).reshape(-1, 2)
    if kps.shape[0] != 5:
        raise ValueError(f"expected 5 landmarks, got {kps.shape[0]}")
    m = similarity_transform(kps, crop_template(size, scale))
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border_mode, borderValue=0)


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]
