"""The daemon: sources -> faces -> tracking -> frame model + DiffFake -> fusion -> sinks.

One asyncio loop moves small objects between bounded queues; every blocking step runs in a thread
(face detection: :class:`~daemon.face_stage.FaceStage`; each bundle model behind a cross-stream
:class:`~daemon.batcher.MicroBatcher`; GMM scoring and evidence JPEGs). This module holds the
lifecycle, the sources, the intake, the hand-over between the stages and the per-stream state
operations; models come from :mod:`daemon.models`, the analysis of a stream's frames from
:class:`~daemon.analysis.StreamAnalyser`. Stage diagram, backpressure, scores: docs/pipeline.md.

Contracts kept here:

* every frame handed to ``emit`` gets ``frame.done()`` exactly once: after the sinks returned for
  the events of that frame, or when it is dropped (the drop is counted by reason);
* frames of one stream are analysed in order (one worker task per stream), streams in parallel;
* a failing source (or a frame that makes a stage fail) never affects other streams;
* per-stream state is created lazily at the first frame (Kafka discovers streams at run time)
  and can be drained, snapshotted, restored and forgotten (Kafka rebalances).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from daemon.analysis import StreamAnalyser
from daemon.events import VerdictEvent
from daemon.face_stage import FaceStage
from daemon.metrics import Metrics
from daemon.models import BundleConfig, Models, load_models
from daemon.pipeline import FrameQueue, PipelineConfig, StreamContext
from daemon.sinks.base import Sink
from daemon.types import Frame, StreamState, end_marker
from detectors.bundle import Bundle
from detectors.faces.pipeline import FacePipeline
from detectors.faces.roi import RegionPlanner

log = logging.getLogger("fakewatch.pipeline")


class Daemon:
    """The streaming pipeline. Create, ``await start()``, ``add_source(...)``, ``await shutdown()``."""

    def __init__(
        self,
        cfg: PipelineConfig,
        face_pipeline: FacePipeline,
        bundle: Bundle,
        sinks: Sequence[Sink],
        metrics: Metrics,
        *,
        models: BundleConfig | None = None,
        regions: RegionPlanner | None = None,
    ):
        """``models``: the config's ``bundle`` section (runtime, threads, TensorRT plan cache, torch
        options; default: its defaults). ``regions``: per-stream region passes between full-frame
        detections (:mod:`detectors.faces.roi`); None: every analysed frame gets a full pass.
        """
        self.cfg = cfg
        self.faces = face_pipeline
        self.bundle = bundle
        self.bundle_cfg = models if models is not None else BundleConfig.defaults()
        self.sinks = list(sinks)
        self.metrics = metrics
        self.models = Models()
        self._analyser: StreamAnalyser | None = None
        self._face_stage = FaceStage(face_pipeline, regions, metrics, self._drop)
        self._intake = FrameQueue(cfg.intake_queue)
        self._streams: dict[str, StreamContext] = {}
        self._sources: list[tuple[Any, asyncio.Task]] = []
        self._face_task: asyncio.Task | None = None
        self._started = False
        self._accepting = False
        self._stopped = False
        self._analyse_depth = 0
        self._owner: dict[int, StreamContext] = {}  # id(frame) -> its stream's context, while in flight
        # called with (stream id, track id, fusion state) after each fused observation of a started track
        self.observers: list[Callable[[str, int, Any], None]] = []

    # ------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load the bundle's models (in a thread), start the sinks and the stage tasks."""
        if self._started:
            return
        self.models = await asyncio.to_thread(load_models, self.bundle, self.bundle_cfg, self.cfg, self.faces)
        self.metrics.bundle_info.info(self.models.info)
        log.info("models loaded: %s", self.models.info)
        self._analyser = StreamAnalyser(self.cfg, self.bundle, self.models, self.metrics, self.observers)
        for s in self.sinks:
            await s.start()
        self.metrics.watch_queue("intake", self.cfg.intake_queue)
        self.metrics.watch_queue("analyse", self.cfg.stream_queue)
        self._face_task = asyncio.get_running_loop().create_task(self._face_loop(), name="face-stage")
        self._started = True
        self._accepting = True
        self.metrics.ready.set(1)

    def ready(self) -> bool:
        return self._started and self._accepting and not self._stopped

    def add_source(self, source: Any) -> None:
        """Run ``source.run(emit)`` as its own task; its failure is contained and ends its stream."""
        if not self._started:
            raise RuntimeError("Daemon.add_source called before start()")
        task = asyncio.get_running_loop().create_task(
            self._run_source(source), name=f"source-{getattr(source, 'stream_id', '?')}"
        )
        self._sources.append((source, task))

    def sources(self) -> list[Any]:
        """Every source added so far (ended and failed ones included), in the order they were added."""
        return [s for s, _ in self._sources]

    def stream_ids(self) -> list[str]:
        """Streams that have per-stream state (every stream that delivered a frame, Kafka ones included)."""
        return list(self._streams)

    async def remove_source(self, stream_id: str, timeout_s: float = 10.0) -> bool:
        """Stop the source of ``stream_id`` and forget it (its tracks end with end events); False if none.

        Other streams keep running; the same id can be added again afterwards.
        """
        entry = next(((s, t) for s, t in self._sources if getattr(s, "stream_id", None) == stream_id), None)
        if entry is None:
            return False
        source, task = entry
        try:
            await asyncio.wait_for(source.stop(), timeout_s)
        except Exception as e:  # includes timeouts; the task is cancelled below
            log.warning("source %s did not stop cleanly: %s", stream_id, e)
        if not task.done():
            await _finish([task], timeout_s)
        self._sources = [(s, t) for s, t in self._sources if s is not source]
        return True

    async def _run_source(self, source: Any) -> None:
        sid = getattr(source, "stream_id", None)
        try:
            await source.run(self._emit_from(source))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a broken source never takes the daemon down
            log.error("source %s crashed: %s", sid, e, exc_info=log.isEnabledFor(logging.DEBUG))
            if sid is not None:
                self.metrics.stream_errors.labels(self.metrics.stream_label(sid), "crash").inc()
                self.metrics.set_stream_state(sid, StreamState.FAILED.value)
                try:
                    source.state = StreamState.FAILED
                    source.last_error = str(e)
                except Exception:  # pragma: no cover - exotic source objects
                    pass
                # the contract says sources always send an end marker; a crash did not
                await self._emit(end_marker(sid), live=False)

    def _emit_from(self, source: Any):
        live = bool(getattr(source, "live", False))

        async def emit(frame: Frame) -> bool:
            return await self._emit(frame, live)

        return emit

    async def wait_sources(self) -> None:
        """Return when every source task finished and all frames in flight are done."""
        while True:
            tasks = [t for _, t in self._sources]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            await self._wait_idle()
            if all(t.done() for _, t in self._sources) and len(tasks) == len(self._sources):
                return

    async def _wait_idle(self) -> None:
        while True:
            busy = [c for c in self._streams.values() if c.inflight > 0]
            if not busy:
                return
            await asyncio.gather(*(c.idle.wait() for c in busy))

    async def shutdown(self, drain: bool = True, timeout_s: float = 10.0) -> None:
        """Stop sources, finish (``drain``) or drop the frames in flight, close batchers and sinks."""
        if self._stopped:
            return
        deadline = time.monotonic() + timeout_s
        self.metrics.ready.set(0)
        for source, _ in self._sources:
            try:
                await asyncio.wait_for(source.stop(), max(0.1, deadline - time.monotonic()))
            except Exception as e:  # includes timeouts; a source that cannot stop is cancelled below
                log.warning("source %s did not stop cleanly: %s", getattr(source, "stream_id", "?"), e)
        tasks = [t for _, t in self._sources if not t.done()]
        if tasks:
            await _finish(tasks, max(0.1, deadline - time.monotonic()))
        self._accepting = False
        if drain and self._started:
            try:
                await asyncio.wait_for(self._wait_idle(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("shutdown: drain timed out after %.1fs; dropping what is left", timeout_s)
        self._stopped = True
        # whatever is still queued is dropped (counted, done)
        self._drop_frames(self._intake.drain_nowait(), "shutdown")
        if self._face_task is not None:
            self._face_task.cancel()
            await asyncio.gather(self._face_task, return_exceptions=True)
        for ctx in list(self._streams.values()):
            await self._stop_worker(ctx, "shutdown")
        if self._analyser is not None:
            await self._analyser.close()
        self._face_stage.close()
        for s in self.sinks:
            try:
                await s.close()
            except Exception as e:
                log.error("sink %s failed to close: %s", getattr(s, "name", s), e)
        self.models.close()

    # ------------------------------------------------------------------------ streams
    def _ctx(self, stream_id: str) -> StreamContext:
        ctx = self._streams.get(stream_id)
        if ctx is None:
            assert self._analyser is not None
            ctx = self._analyser.new_stream(stream_id)
            ctx.task = asyncio.get_running_loop().create_task(self._stream_loop(ctx), name=f"stream-{stream_id}")
            self._streams[stream_id] = ctx
        return ctx

    async def drain_stream(self, stream_id: str) -> None:
        """Wait until every frame of ``stream_id`` handed to the pipeline is done."""
        ctx = self._streams.get(stream_id)
        while ctx is not None and ctx.inflight > 0:
            await ctx.idle.wait()

    def snapshot_stream(self, stream_id: str) -> dict:
        """Tracker + temporal + fusion state of a stream and its tracks' best-crop boxes (JSON-serialisable).

        Consistent only at a frame boundary of the stream: after drain_stream, or from inside the
        ``frame.done()`` the stream worker calls after a frame's delivery (daemon.kafka.state.StreamStateHost).
        The boxes are there because events carry them (``evidence.best_box``): a replay from this
        snapshot must produce the same events; the crops themselves are not kept."""
        ctx = self._streams.get(stream_id)
        if ctx is None:
            return {}
        self.metrics.kafka_state_ops.labels("save").inc()
        snap = ctx.snapshot()
        snap["best"] = {str(tid): [float(q), list(box)] for tid, (q, _crop, box) in ctx.evidence.best.items()}
        return snap

    def restore_stream(self, stream_id: str, state: dict) -> None:
        """Replace a stream's state with a snapshot from :meth:`snapshot_stream`."""
        if not state:
            return
        ctx = self._ctx(stream_id)
        ctx.restore(state)
        # restored best boxes have no crop (None): a better face later replaces them, none is written before
        ctx.evidence.best = {int(tid): (float(q), None, [float(v) for v in box])  # type: ignore[misc]
                             for tid, (q, box) in state.get("best", {}).items()}
        ctx.evidence.dirty.clear()
        self.metrics.kafka_state_ops.labels("restore").inc()
        self.metrics.tracks_active.labels(ctx.label).set(len(ctx.fusion.started_tracks()))

    def forget_stream(self, stream_id: str) -> None:
        """Drop a stream's state without end events (partition revoked); queued frames are dropped."""
        ctx = self._streams.pop(stream_id, None)
        self._face_stage.forget(stream_id)
        self._drop_frames(self._intake.drain_nowait(stream_id), "revoked")
        if ctx is None:
            return
        if ctx.task is not None:
            ctx.task.cancel()
        self._drop_queued(ctx, "revoked")
        self.metrics.tracks_active.labels(ctx.label).set(0)

    async def _stop_worker(self, ctx: StreamContext, reason: str) -> None:
        if ctx.task is not None:
            ctx.task.cancel()
            await asyncio.gather(ctx.task, return_exceptions=True)
        self._drop_queued(ctx, reason)

    def _drop_queued(self, ctx: StreamContext, reason: str) -> None:
        while not ctx.queue.empty():
            frame, _ = ctx.queue.get_nowait()
            self._analyse_depth -= 1
            self._drop(frame, reason)

    # ------------------------------------------------------------------------ intake
    async def _emit(self, frame: Frame, live: bool) -> bool:
        if not self._accepting:
            self._drop(frame, "shutdown")
            return False
        ctx = self._ctx(frame.stream_id)
        ctx.frame_in()
        original = frame.on_done
        key = id(frame)
        self._owner[key] = ctx

        def on_done() -> None:
            self._owner.pop(key, None)
            ctx.frame_out()
            if original is not None:
                original()

        frame.on_done = on_done
        if live:
            old = self._intake.put_drop_oldest(frame)
            if old is not None:
                self._drop(old, "queue_full")
                if old is frame:
                    return False
        else:
            await self._intake.put(frame)
        self.metrics.queue_depth.labels("intake").set(len(self._intake))
        return True

    def _drop(self, frame: Frame, reason: str) -> None:
        if not frame.end_of_stream:
            self.metrics.drop(frame.stream_id, reason)
        frame.done()

    def _drop_frames(self, frames: list[Frame], reason: str) -> None:
        for f in frames:
            self._drop(f, reason)

    # ------------------------------------------------------------------------ face stage
    async def _face_loop(self) -> None:
        pending: list[Frame] = []  # taken from the intake, not yet handed to a stream worker
        try:
            while True:
                pending = await self._intake.get_batch(self.cfg.face_batch)
                self.metrics.queue_depth.labels("intake").set(len(self._intake))
                results = await self._face_stage.detect(pending)
                while pending:  # hand over in arrival order (end markers after their stream's frames)
                    f = pending[0]
                    if f.end_of_stream or id(f) in results:
                        ctx = self._streams.get(f.stream_id)
                        if ctx is None or self._owner.get(id(f)) is not ctx:
                            self._drop(f, "revoked")  # its stream was forgotten meanwhile
                            pending.pop(0)
                            continue
                        await ctx.queue.put((f, results.get(id(f))))
                        self._analyse_depth += 1
                        self.metrics.queue_depth.labels("analyse").set(self._analyse_depth)
                    pending.pop(0)
        except asyncio.CancelledError:
            self._drop_frames(pending, "shutdown")
            raise

    # ------------------------------------------------------------------------ per-stream analysis
    async def _stream_loop(self, ctx: StreamContext) -> None:
        analyser = self._analyser
        assert analyser is not None
        while True:
            frame, obs = await ctx.queue.get()
            self._analyse_depth -= 1
            self.metrics.queue_depth.labels("analyse").set(self._analyse_depth)
            try:
                if frame.end_of_stream:
                    events = analyser.end_stream(ctx)
                else:
                    events = await analyser.analyse(ctx, frame, obs or [])
                if events:
                    await ctx.evidence.flush()  # the events' crops exist before the sinks see them
                    await self._deliver(ctx, events)
                if not frame.end_of_stream:
                    self.metrics.frame_to_verdict.observe(time.monotonic() - frame.received_at)
            except asyncio.CancelledError:
                self._drop(frame, "shutdown")
                raise
            except Exception as e:  # one bad frame never stops its stream or others
                log.error("stream %s: frame %d failed in the pipeline: %s", ctx.stream_id, frame.seq, e,
                          exc_info=True)
                self.metrics.stream_errors.labels(ctx.label, "pipeline").inc()
                if not frame.end_of_stream:
                    self.metrics.drop(frame.stream_id, "bad_frame")
            frame.done()

    async def _deliver(self, ctx: StreamContext, events: list[VerdictEvent]) -> None:
        m = self.metrics
        with m.stage_latency.labels("sink").time():
            results = await asyncio.gather(*(s.emit(events) for s in self.sinks), return_exceptions=True)
        for s, r in zip(self.sinks, results, strict=True):
            if isinstance(r, BaseException):
                if isinstance(r, asyncio.CancelledError):
                    raise r
                log.error("sink %s raised: %s", getattr(s, "name", s), r)
                m.sink_errors.labels(getattr(s, "name", "sink")).inc()
        for ev in events:
            m.verdicts.labels(ctx.label, ev.event).inc()
            if ev.event != "start":
                m.fake_score.labels(ctx.label).observe(ev.score)
            for kind in ev.evidence.get("alerts", []):
                m.alerts.labels(ctx.label, kind).inc()


async def _finish(tasks: list[asyncio.Task], timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for ``tasks``; cancel the ones still running."""
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=1.0)


__all__ = ["Daemon", "PipelineConfig"]
