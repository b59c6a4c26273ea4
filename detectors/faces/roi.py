"""Region-of-interest face detection between full-frame passes (per-stream, serving only).

A talking head or a studio shot keeps its faces from one analysed frame to the next, so the
detector need not search the whole frame every time. As in MediaPipe's face pipeline (detect once,
then look again only where the face was) and DeepStream's primary-detector ``interval``, a stream
alternates between:

* a **full pass**: the detector runs on the whole frame at least every ``full_interval_s`` seconds
  of stream time (and every ``full_every`` analysed frames, for sources whose timestamps do not
  advance), whenever the stream has no face yet, after a face was lost, when the frame size
  changes and when the stream time goes backwards (a loop or a restart);
* **region passes**: for each face of the previous pass, a square around it (``expand`` times the
  face's long side, centred on the face) is resized to ``input_px`` and all squares of the frame
  run through the detector as one batch.

Unlike "detect every N frames and carry the boxes over", every analysed frame still gets freshly
detected boxes and landmarks, so alignment is as good as in a full pass (better for faces that a
full pass would have downscaled below ``input_px / expand``). What a region pass cannot do is find
a face that was not there before: new faces wait for the next full pass (at most
``full_interval_s`` of stream time). A region pass that finds fewer faces than it looked for schedules a full pass
next. When the regions together would cost as much as a full pass (many faces), the full pass runs.

A detection from a region is kept only when its centre lies in the region's inner half, so the
face it belongs to fits inside the region (a neighbour cut by the region's edge is left to its own
region or the next full pass); overlapping regions' duplicates are removed with NMS.

The trainer never uses this: its ``prepare`` runs full passes on single images.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from detectors.faces.types import Face


def square_regions(faces: list[Face], expand: float) -> np.ndarray:
    """(N, 4) float32 squares x1y1x2y2, ``expand`` x each face's long side, centred on the face."""
    if not faces:
        return np.zeros((0, 4), np.float32)
    b = np.stack([f.box for f in faces]).astype(np.float32)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    half = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * expand / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1).astype(np.float32)


def crop_region(image: np.ndarray, region: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Cut the square ``region`` (it may extend past the frame: zero-padded), resized to ``side`` x ``side``.

    The region is snapped outwards to whole pixels first, so the mapping back is exact:
    returns (crop uint8 (side, side, 3), origin (2,), s) with frame_xy = origin + crop_xy / s.
    """
    import cv2

    h, w = image.shape[:2]
    x0, y0 = int(np.floor(region[0])), int(np.floor(region[1]))
    span = max(1, int(np.ceil(max(region[2] - region[0], region[3] - region[1]))))
    canvas = np.zeros((span, span, 3), np.uint8)
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(w, x0 + span), min(h, y0 + span)
    if ix1 > ix0 and iy1 > iy0:
        canvas[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[iy0:iy1, ix0:ix1]
    s = side / span
    crop = canvas if span == side else cv2.resize(
        canvas, (side, side), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return crop, np.array([x0, y0], np.float32), float(s)


def inner_half(face_box: np.ndarray, region: np.ndarray) -> bool:
    """True when the box centre lies in the central half of the square region."""
    cx, cy = (face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2
    rx, ry = (region[0] + region[2]) / 2, (region[1] + region[3]) / 2
    q = (region[2] - region[0]) / 4
    return abs(cx - rx) <= q and abs(cy - ry) <= q


@dataclass(frozen=True)
class RegionPlan:
    """Squares (N, 4) x1y1x2y2 to search in one frame, each resized to ``input_px``."""

    regions: np.ndarray
    input_px: int


@dataclass
class _StreamState:
    shape: tuple[int, int]
    faces: list[Face] = field(default_factory=list)
    since_full: int = 0
    last_full_pts: float = float("-inf")
    force_full: bool = False


class RegionPlanner:
    """Per-stream choice between a full pass and region passes (see the module docstring).

    ``plan(key, shape)`` returns None (full pass) or a :class:`RegionPlan`;
    ``update(key, shape, faces, plan)`` records what the pass found. One caller (the daemon's face
    thread, :meth:`FacePipeline.process_planned`) plans and updates in frame order; ``forget`` may
    come from another thread (a lock guards the state).

    Region input size (one per frame, so its regions batch): the largest face of the frame is seen
    at ``min(face_px, its size in a full pass)`` pixels (``full_scale(w, h)``: the full pass's resize
    factor), i.e. never at a lower resolution than a full pass unless it is already ``face_px``
    large there; rounded up to a multiple of 32. ``full_cost_px(w, h)``: network pixels of a full
    pass; when the regions together would cost as much, the full pass runs instead.
    """

    def __init__(self, full_interval_s: float = 1.0, full_every: int = 25, expand: float = 2.0, face_px: int = 64,
                 full_cost_px: Callable[[int, int], int] | None = None,
                 full_scale: Callable[[int, int], float] | None = None):
        if full_every < 1:
            raise ValueError(f"full_every must be >= 1, got {full_every}")
        if full_interval_s < 0:
            raise ValueError(f"full_interval_s must be >= 0, got {full_interval_s}")
        if expand < 1.0:
            raise ValueError(f"expand must be >= 1, got {expand}")
        if face_px < 16:
            raise ValueError(f"face_px must be >= 16, got {face_px}")
        self.full_interval_s = float(full_interval_s)
        self.full_every = int(full_every)
        self.expand = float(expand)
        self.face_px = int(face_px)
        self.full_cost_px = full_cost_px
        self.full_scale = full_scale
        self._state: dict[object, _StreamState] = {}
        self._lock = threading.Lock()

    def plan(self, key: object, shape: tuple[int, ...], pts: float | None = None) -> RegionPlan | None:
        """The pass for a stream's next frame (``pts``: its stream time in seconds, None if unknown)."""
        with self._lock:
            return self._plan(key, (int(shape[0]), int(shape[1])), pts)

    def _plan(self, key: object, hw: tuple[int, int], pts: float | None) -> RegionPlan | None:
        st = self._state.get(key)
        if st is None or st.shape != hw:
            st = self._state[key] = _StreamState(hw)
        due = st.since_full + 1 >= self.full_every
        if pts is not None and not (st.last_full_pts <= pts < st.last_full_pts + self.full_interval_s):
            due = True  # interval over, or the stream time went backwards
        plan = None
        if st.faces and not st.force_full and not due:
            regions = square_regions(st.faces, self.expand)
            longest = float(np.max(regions[:, 2] - regions[:, 0])) / self.expand  # largest face's long side
            scale = self.full_scale(hw[1], hw[0]) if self.full_scale is not None else 1.0
            px = max(32, int(np.ceil(self.expand * min(self.face_px, longest * scale) / 32.0)) * 32)
            if self.full_cost_px is None or len(regions) * px**2 < self.full_cost_px(hw[1], hw[0]):
                plan = RegionPlan(regions, px)
        if plan is None:
            st.since_full = 0
            st.force_full = False
            st.last_full_pts = pts if pts is not None else st.last_full_pts
        else:
            st.since_full += 1
        return plan

    def update(self, key: object, shape: tuple[int, ...], faces: list[Face], plan: RegionPlan | None) -> None:
        """Record the faces a pass found (planned with :meth:`plan`)."""
        hw = (int(shape[0]), int(shape[1]))
        with self._lock:
            st = self._state.get(key)
            if st is None or st.shape != hw:
                st = self._state[key] = _StreamState(hw)
            if plan is not None and len(faces) < len(plan.regions):
                st.force_full = True  # a face was lost: look everywhere next time
            st.faces = list(faces)

    def forget(self, key: object) -> None:
        with self._lock:
            self._state.pop(key, None)

    def __len__(self) -> int:
        return len(self._state)
