"""Per-track fusion of frame and temporal evidence into a verdict, alerts and verdict events.

Scores (all in [0, 1], higher = more fake):

* frame: the frame model's ``p = sigmoid(logit)`` is calibrated piecewise-linearly so the bundle's
  threshold ``t`` maps to 0.5 (``p < t: 0.5 p / t``, else ``0.5 + 0.5 (p - t) / (1 - t)``) and then
  smoothed per track with an exponential moving average (``frame_ema_alpha`` per observation).
* temporal: the DiffFake window score (daemon/temporal.py), already calibrated so its threshold
  maps to 0.5.
* track score = weighted mean of the components that exist
  (``(w_f * frame + w_t * temporal) / (w_f + w_t)``); 0.5 when none exists yet. The weights come from
  the bundle's manifest (``fusion``: fitted by ``fakewatch-train bundle`` from each component's measured
  AUC on validation data; a component without measured signal gets weight 0) unless the config sets
  them; bundles without a ``fusion`` section fall back to 0.6 / 0.4 (:meth:`FusionConfig.resolve`).

Verdict, with hysteresis: a track becomes ``fake`` when its score reaches ``threshold_high`` and
stays fake until the score falls below ``threshold_low``; otherwise it is ``real`` below
``threshold_low`` and ``uncertain`` in between. Until ``min_frames`` observations were scored the
verdict is ``uncertain``.

Alerts: ``threshold`` (the track just became fake), ``spike`` (the instantaneous fused score of one
observation jumps at least ``spike_delta`` above the previous track score and reaches
``threshold_high``), ``sustained`` (fake for at least ``sustained_s`` seconds, once per fake
episode). One alert kind fires at most once per ``alert_cooldown_s``.

Events: ``start`` when the tracker confirms the track, ``update`` every ``update_interval_s`` of
stream time or at once when the verdict changes or an alert fires, ``end`` when the track ends
(lost, or its stream ended). Times are stream presentation times, so a replay of the same frames
emits the same events with the same ids.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import Field, model_validator

from daemon.config_base import StrictModel
from daemon.events import VerdictEvent

ALERT_PRIORITY = ("sustained", "threshold", "spike")  # the event's ``alert`` field gets the first that fired


DEFAULT_WEIGHTS = (0.6, 0.4)  # bundles without a fitted ``fusion`` section


class FusionConfig(StrictModel):
    frame_weight: float | None = Field(
        None, ge=0, description="null = the bundle's fitted weight (manifest `fusion`; 0.6 for bundles without one)")
    temporal_weight: float | None = Field(
        None, ge=0, description="null = the bundle's fitted weight (manifest `fusion`; 0.4 for bundles without one)")
    frame_ema_alpha: float = Field(0.3, gt=0, le=1, description="EMA weight of the newest frame score")
    threshold_high: float = Field(0.6, gt=0, lt=1, description="enter 'fake' at or above this track score")
    threshold_low: float = Field(0.4, gt=0, lt=1, description="leave 'fake' below this track score")
    min_frames: int = Field(3, ge=1, description="scored observations before a verdict other than uncertain")
    spike_delta: float = Field(0.3, gt=0, le=1)
    sustained_s: float = Field(5.0, gt=0)
    alert_cooldown_s: float = Field(10.0, ge=0)
    update_interval_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FusionConfig:
        if self.threshold_low > self.threshold_high:
            raise ValueError(
                f"threshold_low ({self.threshold_low}) must not exceed threshold_high ({self.threshold_high})"
            )
        if self.frame_weight is not None and self.temporal_weight is not None:
            if self.frame_weight + self.temporal_weight <= 0:
                raise ValueError("frame_weight + temporal_weight must be > 0")
        return self

    def resolve(self, bundle_fusion: dict | None = None) -> FusionConfig:
        """A copy with both weights set: config values first, then the bundle manifest's fitted ``fusion``
        weights, then :data:`DEFAULT_WEIGHTS`. Where the config sets only one weight, the other comes from
        the same source as it would alone."""
        if self.frame_weight is not None and self.temporal_weight is not None:
            return self
        bf = bundle_fusion or {}
        fitted = bf.get("frame_weight") is not None and bf.get("temporal_weight") is not None
        wf, wt = (float(bf["frame_weight"]), float(bf["temporal_weight"])) if fitted else DEFAULT_WEIGHTS
        out = self.model_copy(update={"frame_weight": wf if self.frame_weight is None else self.frame_weight,
                                      "temporal_weight": wt if self.temporal_weight is None else self.temporal_weight})
        if out.frame_weight + out.temporal_weight <= 0:
            raise ValueError(f"fusion weights resolve to 0 + 0 (config {self.frame_weight}/{self.temporal_weight}, "
                             f"bundle {bf.get('frame_weight')}/{bf.get('temporal_weight')})")
        return out


def calibrate_frame(p: float, threshold: float) -> float:
    """Piecewise-linear map of a frame probability so the calibrated ``threshold`` becomes 0.5."""
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    p = min(max(p, 0.0), 1.0)
    return 0.5 * p / t if p < t else 0.5 + 0.5 * (p - t) / (1 - t)


@dataclass
class Observation:
    """One face of one track in one frame."""

    seq: int
    pts: float
    frame_prob: float | None = None  # sigmoid of the frame model, uncalibrated
    temporal: float | None = None  # temporal score of the track after this frame, if any
    temporal_pairs: int = 0
    mean_loglik: float | None = None


@dataclass
class TrackFusion:
    seq_first: int
    pts_first: float
    seq_last: int = 0
    pts_last: float = 0.0
    frames: int = 0
    scored: int = 0
    frame_ema: float | None = None
    frame_prob_ema: float | None = None
    temporal: float | None = None
    temporal_pairs: int = 0
    mean_loglik: float | None = None
    score: float = 0.5
    verdict: str = "uncertain"
    fake_since: float | None = None
    sustained_done: bool = False
    last_alert: dict[str, float] = field(default_factory=dict)
    pending_alerts: list[str] = field(default_factory=list)
    started: bool = False
    last_event_pts: float | None = None
    last_event_verdict: str | None = None
    peak_score: float = 0.0


class StreamFusion:
    """Fusion state of every track of one stream."""

    def __init__(
        self,
        stream_id: str,
        cfg: FusionConfig,
        frame_threshold: float = 0.5,
        models: dict[str, str] | None = None,
    ):
        self.stream_id = stream_id
        self.cfg = cfg.resolve() if cfg.frame_weight is None or cfg.temporal_weight is None else cfg
        self.frame_threshold = frame_threshold
        self.models = dict(models or {})
        self.tracks: dict[int, TrackFusion] = {}

    # scoring ---------------------------------------------------------------------------------
    def _fuse(self, frame: float | None, temporal: float | None) -> float:
        num = den = 0.0
        if frame is not None and self.cfg.frame_weight > 0:
            num += self.cfg.frame_weight * frame
            den += self.cfg.frame_weight
        if temporal is not None and self.cfg.temporal_weight > 0:
            num += self.cfg.temporal_weight * temporal
            den += self.cfg.temporal_weight
        return num / den if den > 0 else 0.5

    def observe(self, track_id: int, obs: Observation) -> TrackFusion:
        """Fold one observation of a track into its state (alerts become pending)."""
        c = self.cfg
        t = self.tracks.get(track_id)
        if t is None:
            t = self.tracks[track_id] = TrackFusion(seq_first=obs.seq, pts_first=obs.pts)
        t.seq_last, t.pts_last = obs.seq, obs.pts
        t.frames += 1
        frame_now = None
        if obs.frame_prob is not None:
            frame_now = calibrate_frame(obs.frame_prob, self.frame_threshold)
            a = c.frame_ema_alpha
            t.frame_ema = frame_now if t.frame_ema is None else (1 - a) * t.frame_ema + a * frame_now
            t.frame_prob_ema = (
                obs.frame_prob if t.frame_prob_ema is None else (1 - a) * t.frame_prob_ema + a * obs.frame_prob
            )
        if obs.temporal is not None:
            t.temporal = obs.temporal
            t.temporal_pairs = obs.temporal_pairs
            t.mean_loglik = obs.mean_loglik
        if frame_now is None and obs.temporal is None:
            return t
        t.scored += 1
        prev = t.score
        instant = self._fuse(frame_now if frame_now is not None else t.frame_ema, t.temporal)
        t.score = self._fuse(t.frame_ema, t.temporal)
        t.peak_score = max(t.peak_score, t.score)

        fired: list[str] = []
        if t.scored >= c.min_frames:
            if t.verdict == "fake":
                new = "fake" if t.score >= c.threshold_low else "real"
            elif t.score >= c.threshold_high:
                new = "fake"
            elif t.score < c.threshold_low:
                new = "real"
            else:
                new = "uncertain"
            if new == "fake" and t.verdict != "fake":
                t.fake_since = obs.pts
                t.sustained_done = False
                fired.append("threshold")
            elif new != "fake":
                t.fake_since = None
            t.verdict = new
            if t.scored > 1 and instant - prev >= c.spike_delta and instant >= c.threshold_high:
                fired.append("spike")
            if (
                t.verdict == "fake"
                and not t.sustained_done
                and t.fake_since is not None
                and obs.pts - t.fake_since >= c.sustained_s
            ):
                t.sustained_done = True
                fired.append("sustained")
        for kind in fired:
            last = t.last_alert.get(kind)
            if last is None or obs.pts - last >= c.alert_cooldown_s or obs.pts < last:
                t.last_alert[kind] = obs.pts
                if kind not in t.pending_alerts:
                    t.pending_alerts.append(kind)
        return t

    # events ----------------------------------------------------------------------------------
    def _event(self, track_id: int, t: TrackFusion, kind: str, evidence: dict[str, Any] | None = None) -> VerdictEvent:
        alerts = [k for k in ALERT_PRIORITY if k in t.pending_alerts]
        ev = VerdictEvent(
            stream_id=self.stream_id,
            track_id=track_id,
            event=kind,
            seq_first=t.seq_first,
            seq_last=t.seq_last,
            pts_first=round(t.pts_first, 6),
            pts_last=round(t.pts_last, 6),
            frames=t.frames,
            score=round(t.score, 6),
            verdict=t.verdict,
            alert=alerts[0] if alerts else None,
            scores={
                "frame": None if t.frame_ema is None else round(t.frame_ema, 6),
                "frame_prob": None if t.frame_prob_ema is None else round(t.frame_prob_ema, 6),
                "temporal": None if t.temporal is None else round(t.temporal, 6),
                "peak": round(t.peak_score, 6),
            },
            models=dict(self.models),
            evidence={
                "alerts": alerts,
                "temporal_pairs": t.temporal_pairs,
                "mean_loglik": None if t.mean_loglik is None else round(t.mean_loglik, 4),
                **(evidence or {}),
            },
            emitted_at=time.time(),
        )
        t.pending_alerts = []
        t.last_event_pts = t.pts_last
        t.last_event_verdict = t.verdict
        return ev

    def start(self, track_id: int, evidence: dict[str, Any] | None = None) -> VerdictEvent | None:
        """The tracker confirmed the track: its start event (None if it was never observed or already started)."""
        t = self.tracks.get(track_id)
        if t is None or t.started:
            return None
        t.started = True
        return self._event(track_id, t, "start", evidence)

    def maybe_update(self, track_id: int, evidence: dict[str, Any] | None = None) -> VerdictEvent | None:
        """An update event if one is due (interval elapsed, verdict changed, or an alert is pending)."""
        t = self.tracks.get(track_id)
        if t is None or not t.started:
            return None
        due = (
            bool(t.pending_alerts)
            or t.verdict != t.last_event_verdict
            or t.last_event_pts is None
            or t.pts_last - t.last_event_pts >= self.cfg.update_interval_s
            or t.pts_last < t.last_event_pts
        )
        return self._event(track_id, t, "update", evidence) if due else None

    def end(self, track_id: int, evidence: dict[str, Any] | None = None) -> VerdictEvent | None:
        """Drop the track; its end event if it had started (an unconfirmed track ends silently)."""
        t = self.tracks.pop(track_id, None)
        if t is None or not t.started:
            return None
        return self._event(track_id, t, "end", evidence)

    def started_tracks(self) -> list[int]:
        return [tid for tid, t in self.tracks.items() if t.started]

    # snapshots -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "tracks": {str(tid): asdict(t) for tid, t in self.tracks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"fusion state version {state.get('version')!r} not supported (expected 1)")
        self.tracks = {int(tid): TrackFusion(**d) for tid, d in state.get("tracks", {}).items()}
