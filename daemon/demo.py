"""The embedded demo: a real sample clip and its face-swapped twin, scanned by the daemon.

Everything comes from packages that are already installed (no download, no user files):

* the real clip is a slow pan/zoom over scikit-image's ``astronaut`` portrait
  (:func:`detectors.samples.moving_frames`);
* the fake twin is the same clip with the face replaced, frame by frame, by a DIFFERENT identity
  (InsightFace's aligned ``Tom_Hanks_54745.png`` sample) with a classic FaceSwap-style
  manipulation (:func:`swap_face`): detect the target's 5 landmarks, warp the donor face onto them
  with a least-squares similarity transform, match colours (mean/std per channel in LAB inside the
  face region), and blend with a feathered convex-hull mask of a face-outline template.

The clips are cached in the user cache folder (``$XDG_CACHE_HOME/fakewatch`` or
``~/.cache/fakewatch``); ``fakewatch demo`` then runs the daemon on both with the default bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detectors.faces.align import ARCFACE_TEMPLATE_112, similarity_transform, transform_points
from detectors.faces.types import Face

DEMO_VERSION = 1

# A face outline (forehead, temples, cheeks, jaw, chin) in the ArcFace 112x112 frame: the region
# that gets replaced. Its convex hull, mapped through the landmark transform, is the blend mask.
FACE_HULL_112 = np.array(
    [
        [30, 28], [56, 22], [82, 28],  # brows / lower forehead
        [94, 45], [97, 68], [90, 92],  # right temple, cheek, jaw
        [74, 107], [56, 111], [38, 107],  # chin
        [22, 92], [15, 68], [18, 45],  # left jaw, cheek, temple
    ],
    dtype=np.float64,
)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fakewatch`` or ``~/.cache/fakewatch`` (created)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    d = base / "fakewatch"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _lab_stats(lab: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    px = lab[mask]
    return px.mean(0), px.std(0) + 1e-3


def swap_face(
    frame: np.ndarray,
    target_kps: np.ndarray,
    donor: np.ndarray,
    donor_kps: np.ndarray,
    feather: float = 0.08,
) -> np.ndarray:
    """Replace the face at ``target_kps`` in ``frame`` by the donor face (both RGB uint8).

    ``target_kps``/``donor_kps``: (5, 2) landmarks (ArcFace order) in their images' pixels.
    ``feather``: blur radius of the mask edge as a fraction of the face width.
    """
    h, w = frame.shape[:2]
    target_kps = np.asarray(target_kps, np.float64).reshape(5, 2)
    # donor -> target: warp the donor image into the frame
    m = similarity_transform(np.asarray(donor_kps, np.float64).reshape(5, 2), target_kps)
    warped = cv2.warpAffine(donor, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # mask: convex hull of the outline template mapped by template -> target
    hull = transform_points(similarity_transform(ARCFACE_TEMPLATE_112, target_kps), FACE_HULL_112)
    # keep the mask inside what the donor image actually covers
    dh, dw = donor.shape[:2]
    cover = cv2.warpAffine(np.full((dh, dw), 255, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(hull).astype(np.int32)), 255)
    mask = cv2.bitwise_and(mask, cover)
    inside = mask > 0
    if inside.sum() < 16:
        return frame.copy()
    face_w = float(np.ptp(hull[:, 0]))
    k = max(3, int(feather * face_w) | 1)
    mask = cv2.erode(mask, np.ones((k, k), np.uint8))
    soft = cv2.GaussianBlur(mask, (2 * k + 1, 2 * k + 1), 0).astype(np.float32)[..., None] / 255.0

    # colour transfer in LAB: donor face statistics -> target face statistics
    t_lab = cv2.cvtColor(frame, cv2.COLOR_RGB2LAB).astype(np.float32)
    d_lab = cv2.cvtColor(warped, cv2.COLOR_RGB2LAB).astype(np.float32)
    t_mu, t_sd = _lab_stats(t_lab, inside)
    d_mu, d_sd = _lab_stats(d_lab, inside)
    d_lab = (d_lab - d_mu) * (t_sd / d_sd) + t_mu
    matched = cv2.cvtColor(np.clip(d_lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)

    out = soft * matched.astype(np.float32) + (1.0 - soft) * frame.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def largest(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda f: f.area, default=None)


def hanks_donor() -> tuple[np.ndarray, np.ndarray]:
    """The donor identity: InsightFace's aligned 112x112 sample, whose landmarks are the ArcFace template."""
    from detectors import samples

    return samples.hanks(), ARCFACE_TEMPLATE_112.copy()


def swapped_frames(
    frames, detect: Callable[[np.ndarray], list[Face]], donor: np.ndarray, donor_kps: np.ndarray, stats: dict | None = None
):
    """Yield each frame with its largest face swapped (frames without a face pass through unchanged)."""
    for f in frames:
        face = largest(detect(f))
        if face is None:
            if stats is not None:
                stats["missed"] = stats.get("missed", 0) + 1
            yield f
            continue
        if stats is not None:
            stats["swapped"] = stats.get("swapped", 0) + 1
        yield swap_face(f, face.kps, donor, donor_kps)


def clip_dir(out_dir: Path | None = None, n_frames: int = 100, size: tuple[int, int] = (640, 360),
             fps: float = 25.0) -> Path:
    """The folder of the clips for these parameters (the key covers the demo version and the parameters)."""
    key = hashlib.sha256(json.dumps([DEMO_VERSION, n_frames, list(size), fps]).encode()).hexdigest()[:12]
    return (out_dir or cache_dir()) / f"demo-{key}"


def cached_clips(out_dir: Path | None = None, n_frames: int = 100, size: tuple[int, int] = (640, 360),
                 fps: float = 25.0) -> tuple[Path, Path] | None:
    """(real, swapped) when a complete earlier build of these clips is there, else None (a build is needed)."""
    d = clip_dir(out_dir, n_frames, size, fps)
    real, fake = d / "real.mp4", d / "swapped.mp4"
    return (real, fake) if real.is_file() and fake.is_file() and (d / "done").is_file() else None


def build_demo_clips(
    detect: Callable[[np.ndarray], list[Face]],
    out_dir: Path | None = None,
    n_frames: int = 100,
    size: tuple[int, int] = (640, 360),
    fps: float = 25.0,
) -> tuple[Path, Path]:
    """Write (or reuse from the cache) ``real.mp4`` and its face-swapped twin ``swapped.mp4``.

    Returns their paths. The cache key covers the demo version and clip parameters, so a changed
    demo never reuses stale clips.
    """
    from detectors import samples

    cached = cached_clips(out_dir, n_frames, size, fps)
    if cached is not None:
        return cached
    d = clip_dir(out_dir, n_frames, size, fps)
    real, fake = d / "real.mp4", d / "swapped.mp4"
    d.mkdir(parents=True, exist_ok=True)
    frames = list(samples.moving_frames(samples.astronaut(), n_frames, size, seed=1))
    samples.write_video(real, frames, fps=fps)
    donor, donor_kps = hanks_donor()
    stats: dict[str, int] = {}
    samples.write_video(fake, swapped_frames(frames, detect, donor, donor_kps, stats), fps=fps)
    (d / "done").write_text(json.dumps(stats) + "\n")
    return real, fake


def clips(console: Any, n_frames: int = 100) -> tuple[Path, Path]:
    """The demo's clips from the cache, or built (and cached) now with the default face detector;
    says on ``console`` (a rich console) which of the two it did."""
    cached = cached_clips(n_frames=n_frames)
    if cached is not None:
        console.print(f"[bold]fakewatch demo[/]: using the sample clip and its face-swapped twin cached in "
                      f"{cached[0].parent}")
        return cached
    console.print("[bold]fakewatch demo[/]: building the sample clip and its face-swapped twin (first run only: "
                  f"they are cached in {cache_dir()} for the next runs) ...")
    from daemon.runner import build_face_pipeline

    return build_demo_clips(build_face_pipeline().detector.detect, n_frames=n_frames)
