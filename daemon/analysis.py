"""Per-stream analysis: one detected frame of one stream -> verdict events, step by step.

:class:`StreamAnalyser` holds what all streams share (the loaded :class:`~daemon.models.Models`
and the cross-stream :class:`~daemon.batcher.MicroBatcher` of each model); the per-stream state
is the :class:`~daemon.pipeline.StreamContext` handed to each call. :meth:`StreamAnalyser.analyse`
runs the steps in order, each a method::

    identity embeddings (tracker) -> track -> score (frame model + due DiffFake embeddings,
    batched across streams) -> temporal (GMM, one thread hop) -> fuse (events, with their evidence)

Each step's time goes to ``fakewatch_stage_latency_seconds{stage=...}`` through
``Histogram.time()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from daemon.batcher import MicroBatcher
from daemon.events import VerdictEvent
from daemon.evidence import StreamEvidence
from daemon.fusion import Observation, StreamFusion
from daemon.metrics import Metrics
from daemon.models import Models, l2_normalise
from daemon.pipeline import PipelineConfig, StreamContext
from daemon.temporal import StreamTemporal, TemporalResult
from daemon.tracking import Tracker, TrackUpdate
from daemon.types import Frame
from detectors.bundle import Bundle
from detectors.faces.pipeline import FaceObservation

log = logging.getLogger("fakewatch.pipeline")

Observer = Callable[[str, int, Any], None]


class StreamAnalyser:
    """The analysis stages after face detection. Create inside the running loop; ``close()`` at the end."""

    def __init__(self, cfg: PipelineConfig, bundle: Bundle, models: Models, metrics: Metrics,
                 observers: list[Observer]):
        self.cfg = cfg
        self.bundle = bundle
        self.models = models
        self.metrics = metrics
        # called with (stream id, track id, fusion state) after each fused observation of a started
        # track (the review page's score timelines); an observer that raises is logged, never fatal
        self.observers = observers
        self.frame_batcher: MicroBatcher | None = None
        self.embed_batcher: MicroBatcher | None = None
        if models.frame is not None:
            self.frame_batcher = MicroBatcher(
                models.frame, cfg.max_batch, cfg.max_wait_ms / 1000.0, metrics, "frame", cfg.batch_queue
            )
        if models.embedder is not None:
            self.embed_batcher = MicroBatcher(
                models.embedder, cfg.embed_batch, cfg.embed_wait_ms / 1000.0, metrics, "embed", cfg.batch_queue
            )

    async def close(self) -> None:
        for b in (self.frame_batcher, self.embed_batcher):
            if b is not None:
                await b.close(drain=False)

    def new_stream(self, stream_id: str) -> StreamContext:
        """The state of a new stream: tracker, temporal (when the bundle has it), fusion, evidence."""
        man = self.bundle.manifest
        return StreamContext(
            stream_id,
            self.metrics.stream_label(stream_id),
            Tracker(self.cfg.tracker),
            StreamTemporal(self.models.temporal, stream_id) if self.models.temporal is not None else None,
            StreamFusion(stream_id, self.cfg.fusion.resolve(man.fusion), man.frame.threshold if man.frame else 0.5,
                         self.models.versions),
            StreamEvidence(stream_id, self.cfg.evidence),
            self.cfg.stream_queue,
        )

    def _stage(self, name: str):
        return self.metrics.stage_latency.labels(name).time()

    # ------------------------------------------------------------------------ the steps
    async def analyse(self, ctx: StreamContext, frame: Frame, obs: list[FaceObservation]) -> list[VerdictEvent]:
        """The events of one frame: ends of tracks the tracker dropped, starts and updates."""
        raw = await self.identity_embeddings(obs)
        upd = self.track(ctx, frame, obs)
        events = self.end_tracks(ctx, upd.ended)
        due = self.temporal_due(ctx, frame, upd)
        probs = await self.score(obs, upd, due, raw)
        results = await self.temporal(ctx, frame, upd, due, raw)
        events += self.fuse(ctx, frame, obs, upd, probs, results)
        return events

    async def identity_embeddings(self, obs: list[FaceObservation]) -> dict[int, np.ndarray]:
        """Set each face's tracker embedding; the bundle's raw embeddings by face index when it made them."""
        raw: dict[int, np.ndarray] = {}
        mode = self.models.track_embed
        if mode == "bundle" and obs:
            assert self.embed_batcher is not None
            with self._stage("embed"):
                embs = await self.embed_batcher.submit_many([o.crop for o in obs])
            for j, e in enumerate(embs):
                raw[j] = e
                obs[j].face.embedding = l2_normalise(e)
        elif mode == "none":
            for o in obs:
                o.face.embedding = None
        return raw

    def track(self, ctx: StreamContext, frame: Frame, obs: list[FaceObservation]) -> TrackUpdate:
        with self._stage("track"):
            upd = ctx.tracker.update(frame.seq, frame.pts, [o.face for o in obs])
        if upd.started:
            self.metrics.tracks_started.labels(ctx.label).inc(len(upd.started))
        return upd

    @staticmethod
    def temporal_due(ctx: StreamContext, frame: Frame, upd: TrackUpdate) -> list[int]:
        """Indexes into ``upd.assignments`` of the tracks that take a DiffFake sample at this frame."""
        if ctx.temporal is None:
            return []
        return [k for k, (_, tid) in enumerate(upd.assignments) if ctx.temporal.wants_sample(tid, frame.pts)]

    async def score(self, obs: list[FaceObservation], upd: TrackUpdate, due: list[int],
                    raw: dict[int, np.ndarray]) -> list[float | None]:
        """Frame-model probabilities of the confirmed tracks' faces and the due DiffFake embeddings
        (into ``raw``), both batched across streams and run side by side."""
        assigned = upd.assignments
        probs: list[float | None] = [None] * len(assigned)

        async def classify() -> None:
            if self.frame_batcher is None or not assigned:
                return
            with self._stage("classify"):
                probs[:] = await self.frame_batcher.submit_many([obs[j].crop for j, _ in assigned])

        async def embed_due() -> None:
            need = [assigned[k][0] for k in due if assigned[k][0] not in raw]
            if not need:
                return
            assert self.embed_batcher is not None
            with self._stage("embed"):
                embs = await self.embed_batcher.submit_many([obs[j].crop for j in need])
            raw.update(zip(need, embs, strict=True))

        await asyncio.gather(classify(), embed_due())
        return probs

    async def temporal(self, ctx: StreamContext, frame: Frame, upd: TrackUpdate, due: list[int],
                       raw: dict[int, np.ndarray]) -> dict[int, TemporalResult]:
        """DiffFake samples of the due tracks: one thread hop for all of this frame's."""
        temporal = ctx.temporal
        if not due or temporal is None:
            return {}
        jobs = [(upd.assignments[k][1], raw[upd.assignments[k][0]]) for k in due]

        def run() -> dict[int, TemporalResult]:
            return {tid: temporal.add(tid, frame.pts, e) for tid, e in jobs}

        with self._stage("temporal"):
            return await asyncio.to_thread(run)

    def fuse(self, ctx: StreamContext, frame: Frame, obs: list[FaceObservation], upd: TrackUpdate,
             probs: list[float | None], results: dict[int, TemporalResult]) -> list[VerdictEvent]:
        """Fusion of each confirmed track's scores; its start / due update event with complete evidence."""
        events = []
        started = set(upd.started)
        with self._stage("fuse"):
            for k, (j, tid) in enumerate(upd.assignments):
                r = results.get(tid)
                o = obs[j]
                ctx.fusion.observe(tid, Observation(
                    seq=frame.seq, pts=frame.pts, frame_prob=probs[k],
                    temporal=None if r is None else r.score,
                    temporal_pairs=0 if r is None else r.pairs_in_window,
                    mean_loglik=None if r is None else r.mean_loglik,
                ))
                ctx.evidence.observe(tid, o)
                evidence = ctx.evidence.for_event(tid, o)
                ev = ctx.fusion.start(tid, evidence) if tid in started else ctx.fusion.maybe_update(tid, evidence)
                if ev is not None:
                    ctx.evidence.emitted(ev)
                    events.append(ev)
                if self.observers:
                    self._notify(ctx.stream_id, tid, ctx.fusion.tracks.get(tid))
        self.metrics.tracks_active.labels(ctx.label).set(len(ctx.fusion.started_tracks()))
        return events

    def end_stream(self, ctx: StreamContext) -> list[VerdictEvent]:
        """The stream ended: end every track (tracked ones, and started ones the tracker does not know, e.g. restored)."""
        events = self.end_tracks(ctx, ctx.tracker.end_all())
        return events + self.end_tracks(ctx, ctx.fusion.started_tracks())

    def end_tracks(self, ctx: StreamContext, track_ids: list[int]) -> list[VerdictEvent]:
        events = []
        for tid in track_ids:
            ev = ctx.fusion.end(tid, ctx.evidence.for_event(tid))
            if ctx.temporal is not None:
                ctx.temporal.end(tid)
            if ev is not None:
                events.append(ev)
                self.metrics.tracks_ended.labels(ctx.label).inc()
                ctx.evidence.emitted(ev)
            else:
                ctx.evidence.forget(tid)
        self.metrics.tracks_active.labels(ctx.label).set(len(ctx.fusion.started_tracks()))
        return events

    def _notify(self, stream_id: str, track_id: int, state: Any) -> None:
        for cb in self.observers:
            try:
                cb(stream_id, track_id, state)
            except Exception as e:  # noqa: BLE001 - an observer never breaks the pipeline
                log.warning("observer %r failed: %s", cb, e)
