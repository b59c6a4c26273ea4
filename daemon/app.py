"""The daemon: sources -> faces -> tracking -> frame model + DiffFake -> fusion -> sinks.

One asyncio loop moves small objects between bounded queues; every blocking step runs in a
thread: face detection (one thread), each bundle model (one thread per model, behind a
:class:`~daemon.batcher.MicroBatcher` that mixes crops of all streams), GMM scoring and evidence
JPEGs (the default executor). See docs/pipeline.md for the stage diagram, the backpressure policy
and the score formulas.

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
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from daemon.batcher import MicroBatcher
from daemon.events import VerdictEvent
from daemon.fusion import Observation, StreamFusion
from daemon.metrics import Metrics
from daemon.pipeline import FrameQueue, PipelineConfig, StreamContext, safe_name
from daemon.sinks.base import Sink
from daemon.temporal import StreamTemporal, TemporalModel
from daemon.tracking import Tracker
from daemon.types import Frame, StreamState, end_marker
from detectors.bundle import Bundle
from detectors.faces.pipeline import use_bundle_crop
from detectors.faces.roi import RegionPlanner
from detectors.inference import Embedder, FrameScorer, l2_normalise

log = logging.getLogger("fakewatch.pipeline")


class Daemon:
    """The streaming pipeline. Create, ``await start()``, ``add_source(...)``, ``await shutdown()``."""

    def __init__(
        self,
        cfg: PipelineConfig,
        face_pipeline: Any,
        bundle: Bundle,
        sinks: Sequence[Sink],
        metrics: Metrics,
        runtime: str = "auto",
        plan_dir: Path | None = None,
        regions: RegionPlanner | None = None,
        runtime_options: dict | None = None,
    ):
        """``plan_dir``: TensorRT engine cache (default ``<bundle>/plans``; bundles are often read-only).
        ``runtime_options``: extra :func:`detectors.runtime.select_runtime` keywords (torch precision, CUDA graphs).

        ``regions``: per-stream region passes between full-frame detections
        (:mod:`detectors.faces.roi`); None: every analysed frame gets a full pass.
        """
        self.cfg = cfg
        self.regions = regions  # FacePipeline.process_planned runs full passes if the detector cannot do regions
        self.plan_dir = plan_dir
        self.faces = face_pipeline
        self.bundle = bundle
        self.sinks = list(sinks)
        self.metrics = metrics
        self.runtime = runtime
        self.runtime_options = dict(runtime_options or {})
        if cfg.evidence.enabled and cfg.evidence.dir is None:
            raise ValueError("pipeline.evidence.enabled needs pipeline.evidence.dir (a folder for crops)")
        self.frame_scorer: FrameScorer | None = None
        self.embedder: Embedder | None = None
        self.temporal_model: TemporalModel | None = None
        self._frame_batcher: MicroBatcher | None = None
        self._embed_batcher: MicroBatcher | None = None
        self._track_embed = "none"
        self._models: dict[str, str] = {}
        self._intake = FrameQueue(cfg.intake_queue)
        self._face_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faces")
        self._streams: dict[str, StreamContext] = {}
        self._sources: list[tuple[Any, asyncio.Task]] = []
        self._face_task: asyncio.Task | None = None
        self._started = False
        self._accepting = False
        self._stopped = False
        self._analyse_depth = 0
        self._owner: dict[int, StreamContext] = {}  # id(frame) -> its stream's context, while in flight
        # called with (stream id, track id, fusion state) after each fused observation of a started
        # track (the review page's score timelines); an observer that raises is logged, never fatal
        self.observers: list[Callable[[str, int, Any], None]] = []

    # ------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load the bundle's models (in a thread), start the sinks and the stage tasks."""
        if self._started:
            return
        await asyncio.to_thread(self._load_models)
        cfg = self.cfg
        if self.frame_scorer is not None:
            self._frame_batcher = MicroBatcher(
                self.frame_scorer, cfg.max_batch, cfg.max_wait_ms / 1000.0, self.metrics, "frame", cfg.batch_queue
            )
        if self.embedder is not None:
            self._embed_batcher = MicroBatcher(
                self.embedder, cfg.embed_batch, cfg.embed_wait_ms / 1000.0, self.metrics, "embed", cfg.batch_queue
            )
        for s in self.sinks:
            await s.start()
        self.metrics.watch_queue("intake", cfg.intake_queue)
        self.metrics.watch_queue("analyse", cfg.stream_queue)
        self._face_task = asyncio.get_running_loop().create_task(self._face_loop(), name="face-stage")
        self._started = True
        self._accepting = True
        self.metrics.ready.set(1)

    def _load_models(self) -> None:
        m = self.bundle.manifest
        threads = self.cfg.threads
        info = {"bundle": self.bundle.version_string}
        if m.frame is not None:
            self.frame_scorer = FrameScorer(self.bundle, self.runtime, threads, self.plan_dir, self.runtime_options)
            self._models["frame"] = f"{self.frame_scorer.version} ({self.frame_scorer.runtime.name})"
            info["frame_model"] = self.frame_scorer.version
            info["frame_runtime"] = self.frame_scorer.runtime.name
        has_arcface = getattr(self.faces, "embedder", None) is not None
        mode = self.cfg.tracking_embedding
        want_bundle_for_tracking = mode == "bundle" or (mode == "auto" and not has_arcface)
        if m.temporal is not None and (self.cfg.temporal.enabled or want_bundle_for_tracking):
            self.embedder = Embedder(self.bundle, self.runtime, threads, self.plan_dir, self.runtime_options)
            info["embed_model"] = self.embedder.version
            info["embed_runtime"] = self.embedder.runtime.name
        if m.temporal is not None and self.cfg.temporal.enabled:
            self.temporal_model = TemporalModel.from_bundle(self.bundle, self.cfg.temporal)
            self._models["temporal"] = f"{self.embedder.version} ({self.embedder.runtime.name})"  # type: ignore[union-attr]
        if mode == "none":
            self._track_embed = "none"
        elif has_arcface and mode == "auto":
            self._track_embed = "face"
        elif self.embedder is not None and want_bundle_for_tracking:
            self._track_embed = "bundle"
        else:
            self._track_embed = "face" if has_arcface else "none"
        info["tracking_embedding"] = self._track_embed
        info["faces"] = str(getattr(self.faces, "name", type(self.faces).__name__))
        use_bundle_crop(self.faces, m.crop)  # crops as the bundle was trained on (faces.crop_* override)
        self.metrics.bundle_info.info(info)
        log.info("models loaded: %s", info)

    def ready(self) -> bool:
        return self._started and self._accepting and not self._stopped

    def add_source(self, source: Any) -> None:
        """Run ``source.run(emit)`` as its own task; its failure is contained and ends its stream."""
        if not self._started:
            raise RuntimeError("Daemon.add_source called before start()")
        if hasattr(source, "attach"):  # Kafka: the source calls the rebalance hooks (drain/snapshot/...)
            source.attach(self)
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
            _, pending = await asyncio.wait([task], timeout=timeout_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
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
            _, pending = await asyncio.wait(tasks, timeout=max(0.1, deadline - time.monotonic()))
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
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
        for b in (self._frame_batcher, self._embed_batcher):
            if b is not None:
                await b.close(drain=False)
        self._face_executor.shutdown(wait=False, cancel_futures=True)
        for s in self.sinks:
            try:
                await s.close()
            except Exception as e:
                log.error("sink %s failed to close: %s", getattr(s, "name", s), e)
        for m in (self.frame_scorer, self.embedder):
            if m is not None:
                m.close()

    # ------------------------------------------------------------------------ streams
    def _ctx(self, stream_id: str) -> StreamContext:
        ctx = self._streams.get(stream_id)
        if ctx is None:
            frame_thr = self.bundle.manifest.frame.threshold if self.bundle.manifest.frame else 0.5
            ctx = StreamContext(
                stream_id,
                self.metrics.stream_label(stream_id),
                Tracker(self.cfg.tracker),
                StreamTemporal(self.temporal_model, stream_id) if self.temporal_model is not None else None,
                StreamFusion(stream_id, self.cfg.fusion.resolve(self.bundle.manifest.fusion), frame_thr, self._models),
                self.cfg.stream_queue,
            )
            ctx.task = asyncio.get_running_loop().create_task(self._stream_loop(ctx), name=f"stream-{stream_id}")
            self._streams[stream_id] = ctx
        return ctx

    async def drain_stream(self, stream_id: str) -> None:
        """Wait until every frame of ``stream_id`` handed to the pipeline is done."""
        ctx = self._streams.get(stream_id)
        while ctx is not None and ctx.inflight > 0:
            await ctx.idle.wait()

    def snapshot_stream(self, stream_id: str) -> dict:
        """Tracker + temporal + fusion state of a stream (JSON-serialisable); call after drain_stream."""
        ctx = self._streams.get(stream_id)
        if ctx is None:
            return {}
        self.metrics.kafka_state_ops.labels("save").inc()
        return ctx.snapshot()

    def restore_stream(self, stream_id: str, state: dict) -> None:
        """Replace a stream's state with a snapshot from :meth:`snapshot_stream`."""
        if not state:
            return
        ctx = self._ctx(stream_id)
        ctx.restore(state)
        self.metrics.kafka_state_ops.labels("restore").inc()
        self.metrics.tracks_active.labels(ctx.label).set(len(ctx.fusion.started_tracks()))

    def forget_stream(self, stream_id: str) -> None:
        """Drop a stream's state without end events (partition revoked); queued frames are dropped."""
        ctx = self._streams.pop(stream_id, None)
        if self.regions is not None:
            self.regions.forget(stream_id)
        self._drop_frames(self._intake.drain_nowait(stream_id), "revoked")
        if ctx is None:
            return
        if ctx.task is not None:
            ctx.task.cancel()
        while not ctx.queue.empty():
            frame, _ = ctx.queue.get_nowait()
            self._analyse_depth -= 1
            self._drop(frame, "revoked")
        self.metrics.tracks_active.labels(ctx.label).set(0)

    async def _stop_worker(self, ctx: StreamContext, reason: str) -> None:
        if ctx.task is not None:
            ctx.task.cancel()
            await asyncio.gather(ctx.task, return_exceptions=True)
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
    @staticmethod
    def _valid(frame: Frame) -> bool:
        img = frame.image
        return (
            isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
            and img.shape[0] > 0 and img.shape[1] > 0
        )

    async def _face_loop(self) -> None:
        pending: list[Frame] = []  # taken from the intake, not yet handed to a stream worker
        try:
            while True:
                pending = await self._intake.get_batch(self.cfg.face_batch)
                self.metrics.queue_depth.labels("intake").set(len(self._intake))
                results = await self._detect(pending)
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

    async def _detect(self, batch: list[Frame]) -> dict[int, list]:
        """Face observations per frame (keyed by ``id(frame)``); bad frames are dropped here."""
        frames = []
        ended = [f.stream_id for f in batch if f.end_of_stream]
        for f in batch:
            if f.end_of_stream:
                continue
            if not self._valid(f):
                log.warning("stream %s: frame %d is not an RGB uint8 image (%s); dropped", f.stream_id, f.seq,
                            getattr(f.image, "shape", None))
                self._drop(f, "bad_frame")
                continue
            frames.append(f)
        try:
            return await self._detect_frames(frames) if frames else {}
        finally:
            if self.regions is not None:
                for sid in ended:  # after this batch's frames of the stream were detected
                    self.regions.forget(sid)

    async def _detect_frames(self, frames: list[Frame]) -> dict[int, list]:
        m = self.metrics
        planner = self.regions
        t0 = time.perf_counter()
        try:
            if planner is None:
                obs = await asyncio.get_running_loop().run_in_executor(
                    self._face_executor, self.faces.process_many, [f.image for f in frames]
                )
                plans = [None] * len(frames)
            else:
                obs, plans = await asyncio.get_running_loop().run_in_executor(
                    self._face_executor,
                    partial(self.faces.process_planned, [f.image for f in frames], [f.stream_id for f in frames],
                            planner, [f.pts for f in frames]),
                )
        except asyncio.CancelledError:
            raise
        except Exception as e:  # e.g. a corrupt frame: drop this batch, keep going
            log.error("face stage failed on %d frames: %s", len(frames), e)
            for f in frames:
                self._drop(f, "bad_frame")
                if planner is not None:
                    planner.forget(f.stream_id)
            return {}
        for plan in plans:
            m.detect_passes.labels("full" if plan is None else "regions").inc()
        dt = (time.perf_counter() - t0) / len(frames)
        results = {}
        for f, o in zip(frames, obs, strict=True):
            results[id(f)] = o
            lbl = m.stream_label(f.stream_id)
            m.stage_latency.labels("detect").observe(dt)
            m.frames_analysed.labels(lbl).inc()
            m.faces.labels(lbl).inc(len(o))
        return results

    # ------------------------------------------------------------------------ per-stream analysis
    async def _stream_loop(self, ctx: StreamContext) -> None:
        while True:
            frame, obs = await ctx.queue.get()
            self._analyse_depth -= 1
            self.metrics.queue_depth.labels("analyse").set(self._analyse_depth)
            try:
                if frame.end_of_stream:
                    events = self._end_tracks(ctx, ctx.tracker.end_all())
                    events += self._end_tracks(ctx, ctx.fusion.started_tracks())  # e.g. restored, not tracked
                else:
                    events = await self._analyse(ctx, frame, obs or [])
                if events:
                    await self._write_evidence(ctx, events)
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

    async def _embed_raw(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        assert self._embed_batcher is not None
        return await self._embed_batcher.submit_many(crops)

    async def _analyse(self, ctx: StreamContext, frame: Frame, obs: list) -> list[VerdictEvent]:
        m = self.metrics
        faces = [o.face for o in obs]
        raw: dict[int, np.ndarray] = {}  # face index -> bundle embedding (raw)

        # 1. identity embedding for the tracker
        if self._track_embed == "bundle" and obs:
            t0 = time.perf_counter()
            embs = await self._embed_raw([o.crop for o in obs])
            for j, e in enumerate(embs):
                raw[j] = e
                faces[j].embedding = l2_normalise(e)
            m.stage_latency.labels("embed").observe(time.perf_counter() - t0)
        elif self._track_embed == "none":
            for f in faces:
                f.embedding = None

        # 2. tracking
        t0 = time.perf_counter()
        upd = ctx.tracker.update(frame.seq, frame.pts, faces)
        m.stage_latency.labels("track").observe(time.perf_counter() - t0)
        if upd.started:
            m.tracks_started.labels(ctx.label).inc(len(upd.started))
        events = self._end_tracks(ctx, upd.ended)

        # 3. frame model and DiffFake embeddings for the confirmed tracks' faces (batched across streams)
        assigned = upd.assignments
        probs: list[float | None] = [None] * len(assigned)
        temporal_due = []
        if ctx.temporal is not None:
            temporal_due = [k for k, (j, tid) in enumerate(assigned) if ctx.temporal.wants_sample(tid, frame.pts)]

        async def classify() -> None:
            if self._frame_batcher is None or not assigned:
                return
            t0 = time.perf_counter()
            res = await self._frame_batcher.submit_many([obs[j].crop for j, _ in assigned])
            probs[:] = res
            m.stage_latency.labels("classify").observe(time.perf_counter() - t0)

        async def embed_due() -> None:
            need = [assigned[k][0] for k in temporal_due if assigned[k][0] not in raw]
            if not need:
                return
            t0 = time.perf_counter()
            embs = await self._embed_raw([obs[j].crop for j in need])
            raw.update(zip(need, embs, strict=True))
            m.stage_latency.labels("embed").observe(time.perf_counter() - t0)

        await asyncio.gather(classify(), embed_due())

        # 4. temporal: one thread hop for all due samples of this frame
        tres: dict[int, Any] = {}
        if temporal_due and ctx.temporal is not None:
            t0 = time.perf_counter()
            temporal = ctx.temporal
            jobs = [(assigned[k][1], raw[assigned[k][0]]) for k in temporal_due]

            def run_temporal():
                return {tid: temporal.add(tid, frame.pts, e) for tid, e in jobs}

            tres = await asyncio.to_thread(run_temporal)
            m.stage_latency.labels("temporal").observe(time.perf_counter() - t0)

        # 5. fusion and events
        t0 = time.perf_counter()
        started = set(upd.started)
        for k, (j, tid) in enumerate(assigned):
            r = tres.get(tid)
            o = obs[j]
            ctx.fusion.observe(tid, Observation(
                seq=frame.seq, pts=frame.pts, frame_prob=probs[k],
                temporal=None if r is None else r.score,
                temporal_pairs=0 if r is None else r.pairs_in_window,
                mean_loglik=None if r is None else r.mean_loglik,
            ))
            best = ctx.best.get(tid)
            if best is None or o.quality > best[0]:
                ctx.best[tid] = (o.quality, o.crop, [round(float(v), 1) for v in o.face.box[:4]])
                ctx.best_dirty.add(tid)
            box = {"box": [round(float(v), 1) for v in o.face.box[:4]], "quality": round(float(o.quality), 4)}
            ev = ctx.fusion.start(tid, box) if tid in started else ctx.fusion.maybe_update(tid, box)
            if ev is not None:
                events.append(ev)
            if self.observers:
                self._notify(ctx.stream_id, tid, ctx.fusion.tracks.get(tid))
        m.stage_latency.labels("fuse").observe(time.perf_counter() - t0)
        m.tracks_active.labels(ctx.label).set(len(ctx.fusion.started_tracks()))
        return events

    def _notify(self, stream_id: str, track_id: int, state: Any) -> None:
        for cb in self.observers:
            try:
                cb(stream_id, track_id, state)
            except Exception as e:  # noqa: BLE001 - an observer never breaks the pipeline
                log.warning("observer %r failed: %s", cb, e)

    def _end_tracks(self, ctx: StreamContext, track_ids: list[int]) -> list[VerdictEvent]:
        events = []
        for tid in track_ids:
            ev = ctx.fusion.end(tid)
            if ctx.temporal is not None:
                ctx.temporal.end(tid)
            if ev is not None:
                events.append(ev)
                self.metrics.tracks_ended.labels(ctx.label).inc()
            else:
                ctx.best.pop(tid, None)
                ctx.best_dirty.discard(tid)
        self.metrics.tracks_active.labels(ctx.label).set(len(ctx.fusion.started_tracks()))
        return events

    async def _write_evidence(self, ctx: StreamContext, events: list[VerdictEvent]) -> None:
        ev_cfg = self.cfg.evidence
        writes: list[tuple[Path, np.ndarray]] = []
        for ev in events:
            best = ctx.best.get(ev.track_id)
            if best is not None:
                ev.evidence.setdefault("best_box", best[2])
                ev.evidence["best_quality"] = round(float(best[0]), 4)
            if ev_cfg.enabled and ev_cfg.dir is not None and best is not None:
                path = Path(ev_cfg.dir) / safe_name(ctx.stream_id) / f"track-{ev.track_id}.jpg"
                ev.evidence["crop"] = str(path)
                if ev.track_id in ctx.best_dirty:
                    writes.append((path, best[1]))  # type: ignore[arg-type]
                    ctx.best_dirty.discard(ev.track_id)
            if ev.event == "end":
                ctx.best.pop(ev.track_id, None)
                ctx.best_dirty.discard(ev.track_id)
        if writes:
            q = ev_cfg.jpeg_quality

            def write_all() -> None:
                import cv2

                for path, crop in writes:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    ok = cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
                    if not ok:
                        log.warning("evidence crop could not be written to %s", path)

            try:
                await asyncio.to_thread(write_all)
            except OSError as e:
                log.warning("evidence crops not written: %s", e)

    async def _deliver(self, ctx: StreamContext, events: list[VerdictEvent]) -> None:
        m = self.metrics
        t0 = time.perf_counter()
        results = await asyncio.gather(*(s.emit(events) for s in self.sinks), return_exceptions=True)
        for s, r in zip(self.sinks, results, strict=True):
            if isinstance(r, BaseException):
                if isinstance(r, asyncio.CancelledError):
                    raise r
                log.error("sink %s raised: %s", getattr(s, "name", s), r)
                m.sink_errors.labels(getattr(s, "name", "sink")).inc()
        m.stage_latency.labels("sink").observe(time.perf_counter() - t0)
        for ev in events:
            m.verdicts.labels(ctx.label, ev.event).inc()
            if ev.event != "start":
                m.fake_score.labels(ctx.label).observe(ev.score)
            for kind in ev.evidence.get("alerts", []):
                m.alerts.labels(ctx.label, kind).inc()


__all__ = ["Daemon", "PipelineConfig"]
