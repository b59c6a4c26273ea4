"""Per-track DiffFake temporal evidence (methods.md §4.3-4.6).

For each identity track a ring buffer holds ``(pts, embedding)`` samples taken at about
``sample_fps`` over the last ``horizon_s`` seconds. Each new sample is paired with up to
``pairs_per_sample`` random *older* samples whose time gap lies inside the bundle's
``temporal.pair_gap_s`` (the gap distribution the GMM was fitted on: frames of one identity seconds
apart, never adjacent frames). Each pair becomes ``combine(a, b)`` (``(a-b)**2``, row L2-normalised)
and gets a GMM log-likelihood ``ll`` (higher = more natural = more real).

Score of a track: the mean pair fakeness ``f = -ll`` over the pairs formed in the last
``window_s`` seconds, mapped to [0, 1] with the bundle's calibration::

    z = (mean_f - threshold) / loglik_real_std
    temporal_score = 1 / (1 + exp(-slope * z))

``threshold`` is the bundle's calibrated fakeness threshold (``manifest.temporal.threshold``), so
the threshold maps to 0.5, and one real-data standard deviation above it to ``sigmoid(slope)``
(0.73 with slope 1). ``threshold_z`` (config) overrides the threshold with
``-loglik_real_mean + threshold_z * loglik_real_std`` (z standard deviations above the mean
fakeness of real pairs).

Randomness is deterministic: the partner choice of the n-th sample of a track uses an RNG seeded
from ``(seed, stream_id, track_id, n)``, so a replay of the same frames (or a restore from a
snapshot) draws the same pairs.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from daemon.config_base import StrictModel
from detectors.bundle import Bundle, TemporalModelSpec
from detectors.difffake import COMBINATIONS, GmmScorer, combine


class TemporalConfig(StrictModel):
    """Sampling and scoring of the DiffFake temporal evidence."""

    enabled: bool = True
    sample_fps: float = Field(2.5, gt=0, description="embedding samples per second and track")
    horizon_s: float = Field(15.0, gt=0, description="how far back the ring buffer reaches")
    pairs_per_sample: int = Field(4, ge=1, description="older partners drawn for each new sample (K)")
    window_s: float = Field(10.0, gt=0, description="sliding window of pair scores averaged into the track score")
    pair_gap_s: tuple[float, float] | None = Field(
        None, description="override of the bundle's trained pair time gap [min, max] in seconds"
    )
    slope: float = Field(1.0, gt=0, description="steepness of the fakeness -> [0,1] mapping")
    threshold_z: float | None = Field(
        None, description="if set: fakeness threshold = real mean + threshold_z * real std (instead of the bundle's)"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> TemporalConfig:
        if self.pair_gap_s is not None and not (0 <= self.pair_gap_s[0] < self.pair_gap_s[1]):
            raise ValueError(f"pair_gap_s must be [min, max] with 0 <= min < max, got {self.pair_gap_s}")
        return self


class TemporalModel:
    """The bundle's GMM plus its calibration; shared by every stream."""

    def __init__(self, spec: TemporalModelSpec, gmm: GmmScorer, cfg: TemporalConfig):
        if spec.combination not in COMBINATIONS:
            raise ValueError(f"bundle temporal.combination {spec.combination!r} unknown (expected {COMBINATIONS})")
        self.spec = spec
        self.gmm = gmm
        self.cfg = cfg
        gap = cfg.pair_gap_s if cfg.pair_gap_s is not None else tuple(spec.pair_gap_s)
        if len(gap) != 2 or not (0 <= gap[0] < gap[1]):
            raise ValueError(f"bundle temporal.pair_gap_s must be [min, max] with 0 <= min < max, got {gap}")
        self.gap_min, self.gap_max = float(gap[0]), float(gap[1])
        self.std = float(spec.loglik_real_std) if spec.loglik_real_std > 0 else 1.0
        if cfg.threshold_z is not None:
            self.threshold = -float(spec.loglik_real_mean) + cfg.threshold_z * self.std
        else:
            self.threshold = float(spec.threshold)

    @classmethod
    def from_bundle(cls, bundle: Bundle, cfg: TemporalConfig) -> TemporalModel:
        if bundle.manifest.temporal is None:
            raise ValueError(f"{bundle.root}: bundle has no temporal model")
        return cls(bundle.manifest.temporal, GmmScorer.from_arrays(bundle.load_gmm()), cfg)

    def loglik(self, newest: np.ndarray, partners: np.ndarray) -> np.ndarray:
        a = np.broadcast_to(newest, partners.shape)
        return self.gmm.score_samples(combine(a, partners, self.spec.combination))

    def to_score(self, mean_fakeness: float) -> float:
        """Map a mean pair fakeness (-log-likelihood) to [0, 1]; the calibrated threshold maps to 0.5."""
        z = self.cfg.slope * (mean_fakeness - self.threshold) / self.std
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-min(z, 700.0)))
        e = math.exp(max(z, -700.0))
        return e / (1.0 + e)


@dataclass
class TemporalResult:
    """What the temporal stage knows about a track after a sample."""

    score: float | None  # [0, 1], None until the first pair was formed
    mean_loglik: float | None
    pairs_in_window: int
    new_pairs: int


@dataclass
class _Track:
    samples: deque = field(default_factory=deque)  # (pts, float32 embedding)
    pairs: deque = field(default_factory=deque)  # (pts, loglik)
    n: int = 0  # samples taken so far (seeds the partner draw)
    last_pts: float | None = None


def _enc(v: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(v, dtype=np.float32).tobytes()).decode("ascii")


def _dec(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.float32).copy()


class StreamTemporal:
    """Temporal state of every track of one stream. Not thread-safe: one stream worker uses it at a time."""

    def __init__(self, model: TemporalModel, stream_id: str):
        self.model = model
        self.cfg = model.cfg
        self.stream_id = stream_id
        self.tracks: dict[int, _Track] = {}

    # sampling -------------------------------------------------------------------------------
    def wants_sample(self, track_id: int, pts: float) -> bool:
        """True when the track is due for a new embedding sample (about ``sample_fps``)."""
        t = self.tracks.get(track_id)
        if t is None or t.last_pts is None:
            return True
        # small tolerance so a 5 fps stream sampled at 2.5 fps takes every 2nd frame, not every 3rd
        return pts - t.last_pts >= 0.95 / self.cfg.sample_fps or pts < t.last_pts

    def _rng(self, track_id: int, n: int) -> np.random.Generator:
        key = f"{self.cfg.seed}\x00{self.stream_id}\x00{track_id}\x00{n}".encode()
        return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))

    def add(self, track_id: int, pts: float, embedding: np.ndarray) -> TemporalResult:
        """Add a sample, score its pairs, and return the track's current temporal evidence."""
        t = self.tracks.setdefault(track_id, _Track())
        emb = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if t.last_pts is not None and pts < t.last_pts:  # time went backwards (stream restarted): start over
            t.samples.clear()
            t.pairs.clear()
        while t.samples and pts - t.samples[0][0] > self.cfg.horizon_s:
            t.samples.popleft()
        gaps = np.array([pts - p for p, _ in t.samples], dtype=np.float64)
        eligible = np.flatnonzero((gaps >= self.model.gap_min) & (gaps <= self.model.gap_max))
        new_pairs = 0
        if eligible.size:
            k = min(self.cfg.pairs_per_sample, eligible.size)
            pick = np.sort(self._rng(track_id, t.n).choice(eligible, size=k, replace=False))
            partners = np.stack([t.samples[i][1] for i in pick])
            ll = self.model.loglik(emb, partners)
            for v in ll:
                t.pairs.append((pts, float(v)))
            new_pairs = len(ll)
        t.samples.append((pts, emb))
        t.n += 1
        t.last_pts = pts
        while t.pairs and pts - t.pairs[0][0] > self.cfg.window_s:
            t.pairs.popleft()
        return self._result(t, new_pairs)

    def _result(self, t: _Track, new_pairs: int = 0) -> TemporalResult:
        if not t.pairs:
            return TemporalResult(None, None, 0, new_pairs)
        mean_ll = float(np.mean([v for _, v in t.pairs]))
        return TemporalResult(self.model.to_score(-mean_ll), mean_ll, len(t.pairs), new_pairs)

    def result(self, track_id: int) -> TemporalResult | None:
        t = self.tracks.get(track_id)
        return None if t is None else self._result(t)

    def end(self, track_id: int) -> None:
        self.tracks.pop(track_id, None)

    # snapshots ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "tracks": {
                str(tid): {
                    "n": t.n,
                    "last_pts": t.last_pts,
                    "samples": [[p, _enc(e)] for p, e in t.samples],
                    "pairs": [[p, v] for p, v in t.pairs],
                }
                for tid, t in self.tracks.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"temporal state version {state.get('version')!r} not supported (expected 1)")
        tracks: dict[int, _Track] = {}
        for tid, d in state.get("tracks", {}).items():
            tracks[int(tid)] = _Track(
                samples=deque((float(p), _dec(e)) for p, e in d["samples"]),
                pairs=deque((float(p), float(v)) for p, v in d["pairs"]),
                n=int(d["n"]),
                last_pts=None if d["last_pts"] is None else float(d["last_pts"]),
            )
        self.tracks = tracks
