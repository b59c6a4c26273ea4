"""Face photos that ship inside installed packages (no download, no user files).

Used by the daemon's embedded demo, the benchmarks and the tests: scikit-image's ``astronaut``
(public domain, NASA) and InsightFace's sample images (``t1.jpg``, a group photo with 6 faces;
``Tom_Hanks_54745.png``, a 112x112 aligned face).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np


def _insightface_image(name: str) -> np.ndarray:
    import insightface

    p = Path(os.path.dirname(insightface.__file__)) / "data" / "images" / name
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{p}: sample image missing from the insightface package")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def astronaut() -> np.ndarray:
    """512x512 RGB portrait, one face."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def group_photo() -> np.ndarray:
    """1280x886 RGB group photo, six faces."""
    return _insightface_image("t1.jpg")


def hanks() -> np.ndarray:
    """112x112 RGB aligned face."""
    return _insightface_image("Tom_Hanks_54745.png")


def moving_frames(
    image: np.ndarray,
    n: int,
    size: tuple[int, int] = (640, 360),
    zoom: float = 1.15,
    seed: int = 0,
):
    """Yield ``n`` RGB frames of ``size`` (w, h): a slow pan/zoom over ``image`` (a talking-head-like clip)."""
    w, h = size
    ih, iw = image.shape[:2]
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi)
    for i in range(n):
        t = i / max(1, n - 1)
        z = 1.0 + (zoom - 1.0) * (0.5 + 0.5 * np.sin(2 * np.pi * t + phase))
        cw, ch = iw / z, ih / z
        cx = iw / 2 + 0.05 * iw * np.sin(2 * np.pi * t)
        cy = ih / 2 + 0.03 * ih * np.cos(2 * np.pi * t)
        x0, y0 = max(0.0, cx - cw / 2), max(0.0, cy - ch / 2)
        src = np.float32([[x0, y0], [x0 + cw, y0], [x0, y0 + ch]])
        dst = np.float32([[0, 0], [w, 0], [0, h]])
        m = cv2.getAffineTransform(src, dst)
        yield cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def write_video(path: str | Path, frames, fps: float = 25.0, codec: str = "libx264", pix_fmt: str = "yuv420p",
                options: dict | None = None) -> Path:
    """Encode RGB frames to ``path`` with PyAV (container chosen by the file extension)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as out:
        stream = None
        for img in frames:
            if stream is None:
                from fractions import Fraction

                stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
                stream.width = img.shape[1] - img.shape[1] % 2
                stream.height = img.shape[0] - img.shape[0] % 2
                stream.pix_fmt = pix_fmt
                if options:
                    stream.options = dict(options)
            img = np.ascontiguousarray(img[: stream.height, : stream.width])
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for pkt in stream.encode(frame):
                out.mux(pkt)
        if stream is not None:
            for pkt in stream.encode():
                out.mux(pkt)
    return path
