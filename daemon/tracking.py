"""Per-stream face tracker: IoU + embedding-cosine association with a Hungarian solver.

One :class:`Tracker` per stream. Each analysed frame calls :meth:`Tracker.update` with that
frame's faces; the tracker answers which faces belong to which *confirmed* track and which tracks
started or ended.

Association (every analysed frame):

* Each track predicts its box at the current frame from a damped constant-velocity estimate
  (per analysed-frame step, so gaps in ``seq`` are handled).
* For every (track, face) pair: ``iou`` = the larger of IoU(predicted box, face box) and
  IoU(last box, face box) (prediction helps linear motion, the last box protects against the
  back-and-forth of a nodding or shaking head), and, when both carry an embedding, ``sim`` = cosine similarity of the face embedding with the track's running mean
  embedding.
* Gate: a pair may match if ``iou >= min_iou`` (and, with embeddings, ``sim >= min_sim``: an
  overlapping box of another person is refused), or, with embeddings, ``sim >= relink_sim`` with no
  overlap required (a fast move at low fps, or a lost track re-found elsewhere in the frame).
* Cost: ``1 - iou`` without embeddings; ``(1 - w) * (1 - iou) + w * (1 - sim)`` with them
  (``w = embedding_weight``), plus ``miss_penalty`` per frame the track has been missing so fresh
  tracks win ties. ``scipy.optimize.linear_sum_assignment`` solves the assignment; gated pairs get
  a prohibitive cost and are dropped from its answer.
* Two stages (a simplified DeepSORT cascade): confirmed tracks (lost ones included) are assigned
  first, tentative tracks then compete for the faces left, so a fresh tentative track never steals
  the face of an established identity.

Lifecycle: a new face starts a *tentative* track; it becomes *confirmed* after ``min_hits``
matches (the frame it is confirmed in is reported in ``started`` and its face in ``assignments``);
a tentative track that misses ``tentative_max_misses`` frames in a row is dropped silently. A
confirmed track that misses a frame is *lost*; it keeps predicting and can be re-found (by IoU or
re-linked by embedding); after ``max_misses`` analysed frames in a row without a match (or
``max_lost_s`` seconds of stream time, when set) it *ends* and is reported in ``ended``.
Public track ids are assigned at confirmation from a per-stream monotonic counter (1, 2, 3, ...),
so every reported id is a real track and ids survive :meth:`state_dict` / :meth:`load_state_dict`.
``max_tracks`` bounds the tracks held per stream: when full, the longest-lost track is ended to
make room, and when none is lost the new face is not tracked.

Why not the ``trackers`` package (Roboflow, Apache-2.0): its trackers (SORT, ByteTrack, OC-SORT,
BoT-SORT) take and return ``supervision.Detections`` and associate by box motion only (no
per-detection embedding input in their ``update``), keep state in objects without a serialisable
snapshot, report no start/end events, and pull in supervision, opencv-python and requests. What we
need is small, so it lives here (see docs/faces-and-tracking.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field
from scipy.optimize import linear_sum_assignment

from daemon.config_base import StrictModel
from detectors.faces.types import Face

STATE_VERSION = 1
_BIG = 1e6


class TrackerConfig(StrictModel):
    """Tracker parameters (per stream; counted in analysed frames, not decoded frames)."""

    min_hits: int = Field(3, ge=1, description="matches before a track is confirmed and reported")
    max_misses: int = Field(15, ge=1, description="analysed frames without a match before a confirmed track ends")
    max_lost_s: float | None = Field(None, gt=0, description="also end a lost track after this much stream time")
    tentative_max_misses: int = Field(1, ge=1, description="misses in a row that drop a tentative track")
    min_iou: float = Field(0.2, ge=0.0, le=1.0, description="IoU gate for box association")
    min_sim: float = Field(0.3, ge=-1.0, le=1.0, description="with embeddings: refuse an overlap below this cosine")
    relink_sim: float = Field(0.6, ge=-1.0, le=1.0, description="with embeddings: match without overlap above this")
    embedding_weight: float = Field(0.5, ge=0.0, le=1.0, description="share of the embedding term in the cost")
    embedding_momentum: float = Field(0.9, ge=0.0, lt=1.0, description="EMA momentum of a track's mean embedding")
    velocity_momentum: float = Field(0.5, ge=0.0, lt=1.0, description="EMA momentum of the box velocity")
    miss_penalty: float = Field(0.02, ge=0.0, description="cost added per missed frame (fresh tracks win ties)")
    max_tracks: int = Field(64, ge=1, description="tracks held per stream (tentative + confirmed + lost)")


@dataclass
class TrackUpdate:
    """Answer of :meth:`Tracker.update`.

    assignments: (face index, track id) for faces matched to confirmed tracks (tentative matches
    are not reported); started: ids confirmed in this frame; ended: ids that ended in this frame.
    """

    assignments: list[tuple[int, int]] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)


@dataclass
class _Track:
    key: int  # internal key, unique per tracker (tentative tracks have no public id yet)
    box: np.ndarray  # last matched box, float64 (4,)
    velocity: np.ndarray  # box change per analysed frame
    embedding: np.ndarray | None
    first_seq: int
    first_pts: float
    last_seq: int
    last_pts: float
    last_step: int  # analysed-frame counter of the last match
    hits: int = 1
    misses: int = 0
    track_id: int | None = None  # public id, set at confirmation

    @property
    def confirmed(self) -> bool:
        return self.track_id is not None

    def predict(self, step: int) -> np.ndarray:
        return self.box + self.velocity * (step - self.last_step)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "track_id": self.track_id,
            "box": [float(v) for v in self.box],
            "velocity": [float(v) for v in self.velocity],
            "embedding": None if self.embedding is None else [float(v) for v in self.embedding],
            "first_seq": self.first_seq,
            "first_pts": self.first_pts,
            "last_seq": self.last_seq,
            "last_pts": self.last_pts,
            "last_step": self.last_step,
            "hits": self.hits,
            "misses": self.misses,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Track:
        emb = d.get("embedding")
        return cls(
            key=int(d["key"]),
            track_id=None if d.get("track_id") is None else int(d["track_id"]),
            box=np.asarray(d["box"], dtype=np.float64),
            velocity=np.asarray(d["velocity"], dtype=np.float64),
            embedding=None if emb is None else np.asarray(emb, dtype=np.float32),
            first_seq=int(d["first_seq"]),
            first_pts=float(d["first_pts"]),
            last_seq=int(d["last_seq"]),
            last_pts=float(d["last_pts"]),
            last_step=int(d["last_step"]),
            hits=int(d["hits"]),
            misses=int(d["misses"]),
        )


@dataclass(frozen=True)
class TrackInfo:
    """Read-only view of a confirmed track (for status pages and events)."""

    track_id: int
    box: tuple[float, float, float, float]
    hits: int
    misses: int
    first_seq: int
    first_pts: float
    last_seq: int
    last_pts: float
    has_embedding: bool


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box of ``a`` (N, 4) and ``b`` (M, 4), x1y1x2y2."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _unit(v: np.ndarray | None) -> np.ndarray | None:
    if v is None:
        return None
    v = np.asarray(v, dtype=np.float32).ravel()
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else None


class Tracker:
    """Face tracker of one stream (not thread-safe: call from the stream's own task)."""

    def __init__(self, cfg: TrackerConfig | None = None):
        self.cfg = cfg or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1  # public ids
        self._next_key = 1  # internal keys
        self._step = 0  # analysed frames seen

    # ---------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._tracks)

    def active_ids(self) -> list[int]:
        """Ids of confirmed tracks that have not ended (including lost ones)."""
        return [t.track_id for t in self._tracks if t.track_id is not None]

    def info(self, track_id: int) -> TrackInfo | None:
        for t in self._tracks:
            if t.track_id == track_id:
                return TrackInfo(
                    track_id=track_id,
                    box=tuple(float(v) for v in t.box),  # type: ignore[arg-type]
                    hits=t.hits,
                    misses=t.misses,
                    first_seq=t.first_seq,
                    first_pts=t.first_pts,
                    last_seq=t.last_seq,
                    last_pts=t.last_pts,
                    has_embedding=t.embedding is not None,
                )
        return None

    # ---------------------------------------------------------------- update
    def _cost(self, tracks: list[_Track], faces: list[Face], embs: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        boxes = np.stack([np.asarray(f.box, dtype=np.float64).ravel()[:4] for f in faces])
        # IoU against the motion prediction or the last seen box, whichever is larger: the
        # prediction helps linear motion, the last box protects against jitter (nodding heads).
        iou = np.maximum(
            iou_matrix(np.stack([t.predict(self._step) for t in tracks]), boxes),
            iou_matrix(np.stack([t.box for t in tracks]), boxes),
        )
        cost = 1.0 - iou
        allowed = iou >= max(cfg.min_iou, 1e-9)
        ti = [i for i, t in enumerate(tracks) if t.embedding is not None]
        fj = [j for j, e in enumerate(embs) if e is not None]
        if ti and fj and len({tracks[i].embedding.shape for i in ti} | {embs[j].shape for j in fj}) == 1:  # type: ignore[union-attr]
            sim = np.stack([tracks[i].embedding for i in ti]) @ np.stack([embs[j] for j in fj]).T  # type: ignore[misc]
            sub = np.ix_(ti, fj)
            cost[sub] = (1.0 - cfg.embedding_weight) * cost[sub] + cfg.embedding_weight * (1.0 - sim)
            allowed[sub] = (allowed[sub] & (sim >= cfg.min_sim)) | (sim >= cfg.relink_sim)
        cost += cfg.miss_penalty * np.array([t.misses for t in tracks], dtype=np.float64)[:, None]
        return np.where(allowed, cost, _BIG), allowed

    def _associate(self, tracks: list[_Track], faces: list[Face], embs: list[np.ndarray | None],
                   free: list[int]) -> list[tuple[_Track, int]]:
        """Hungarian assignment of ``tracks`` to the faces whose indices are in ``free``."""
        if not tracks or not free:
            return []
        cost, allowed = self._cost(tracks, [faces[j] for j in free], [embs[j] for j in free])
        rows, cols = linear_sum_assignment(cost)
        return [(tracks[i], free[j]) for i, j in zip(rows, cols) if allowed[i, j]]

    def update(self, seq: int, pts: float, faces: list[Face]) -> TrackUpdate:
        """Associate this analysed frame's ``faces`` (frame ``seq``, timestamp ``pts`` s) with the tracks."""
        cfg = self.cfg
        self._step += 1
        out = TrackUpdate()
        embs = [_unit(f.embedding) for f in faces]
        matched_t: set[int] = set()
        matched_f: set[int] = set()
        # Two stages (DeepSORT's cascade, simplified): confirmed tracks (lost ones included) pick
        # first, so a fresh tentative track never steals the face of an established identity.
        confirmed = [t for t in self._tracks if t.confirmed]
        tentative = [t for t in self._tracks if not t.confirmed]
        for group in (confirmed, tentative):
            free = [j for j in range(len(faces)) if j not in matched_f]
            for t, j in self._associate(group, faces, embs, free):
                self._hit(t, faces[j], embs[j], seq, pts, out)
                matched_t.add(t.key)
                matched_f.add(j)
                if t.confirmed:  # already confirmed, or confirmed by this hit
                    out.assignments.append((int(j), t.track_id))  # type: ignore[arg-type]
        # misses, ends and drops
        survivors: list[_Track] = []
        for t in self._tracks:
            if t.key not in matched_t:
                t.misses += 1
                if not t.confirmed:
                    if t.misses >= cfg.tentative_max_misses:
                        continue
                elif t.misses >= cfg.max_misses or (
                    cfg.max_lost_s is not None and pts - t.last_pts >= cfg.max_lost_s
                ):
                    out.ended.append(t.track_id)  # type: ignore[arg-type]
                    continue
            survivors.append(t)
        self._tracks = survivors
        # new tentative tracks, best detections first
        new = sorted((j for j in range(len(faces)) if j not in matched_f), key=lambda j: -faces[j].score)
        for j in new:
            if len(self._tracks) >= cfg.max_tracks and not self._evict(out):
                break
            t = _Track(
                key=self._next_key,
                box=np.asarray(faces[j].box, dtype=np.float64).ravel()[:4].copy(),
                velocity=np.zeros(4),
                embedding=embs[j],
                first_seq=int(seq),
                first_pts=float(pts),
                last_seq=int(seq),
                last_pts=float(pts),
                last_step=self._step,
            )
            self._next_key += 1
            self._tracks.append(t)
            if cfg.min_hits <= 1:
                self._confirm(t, out)
                out.assignments.append((int(j), t.track_id))  # type: ignore[arg-type]
        out.assignments.sort()
        return out

    def _hit(self, t: _Track, face: Face, emb: np.ndarray | None, seq: int, pts: float, out: TrackUpdate) -> None:
        cfg = self.cfg
        box = np.asarray(face.box, dtype=np.float64).ravel()[:4]
        steps = max(1, self._step - t.last_step)
        v = (box - t.box) / steps
        t.velocity = cfg.velocity_momentum * t.velocity + (1.0 - cfg.velocity_momentum) * v if t.hits > 1 else v
        t.box = box.copy()
        if emb is not None:
            if t.embedding is None:
                t.embedding = emb
            else:
                t.embedding = _unit(cfg.embedding_momentum * t.embedding + (1.0 - cfg.embedding_momentum) * emb)
        t.hits += 1
        t.misses = 0
        t.last_seq, t.last_pts, t.last_step = int(seq), float(pts), self._step
        if not t.confirmed and t.hits >= cfg.min_hits:
            self._confirm(t, out)

    def _confirm(self, t: _Track, out: TrackUpdate) -> None:
        t.track_id = self._next_id
        self._next_id += 1
        out.started.append(t.track_id)

    def _evict(self, out: TrackUpdate) -> bool:
        lost = [t for t in self._tracks if t.misses > 0]
        if not lost:
            return False
        victim = max(lost, key=lambda t: (t.misses, -t.last_step))
        self._tracks.remove(victim)
        if victim.track_id is not None:
            out.ended.append(victim.track_id)
        return True

    def end_all(self) -> list[int]:
        """End every track (stream end, scene cut, partition revoked); returns the confirmed ids ended."""
        ended = [t.track_id for t in self._tracks if t.track_id is not None]
        self._tracks = []
        return ended  # type: ignore[return-value]

    # ---------------------------------------------------------------- snapshot
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable snapshot (plain lists and numbers)."""
        return {
            "version": STATE_VERSION,
            "next_id": self._next_id,
            "next_key": self._next_key,
            "step": self._step,
            "tracks": [t.to_dict() for t in self._tracks],
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` snapshot (the config stays the one given at construction)."""
        if not isinstance(d, dict) or d.get("version") != STATE_VERSION:
            raise ValueError(f"tracker state: unsupported snapshot version {d.get('version') if isinstance(d, dict) else d!r}")
        try:
            tracks = [_Track.from_dict(t) for t in d["tracks"]]
            next_id, next_key, step = int(d["next_id"]), int(d["next_key"]), int(d["step"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"tracker state: malformed snapshot ({e})") from e
        self._tracks, self._next_id, self._next_key, self._step = tracks, next_id, next_key, step
