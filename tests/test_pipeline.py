"""End-to-end pipeline: real PyAV decoding of generated clips, real CenterFace, the real tracker,
a tiny real bundle through ONNX Runtime, and a real (collecting) sink."""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path

import numpy as np
import pytest

from daemon.app import Daemon
from daemon.events import VerdictEvent
from daemon.fusion import FusionConfig
from daemon.metrics import Metrics
from daemon.models import BundleConfig
from daemon.pipeline import EvidenceConfig, FrameQueue, PipelineConfig
from daemon.sinks.base import Sink
from daemon.sources.av import AvSource, AvSourceSettings
from daemon.sources.base import Emit, Source
from daemon.temporal import TemporalConfig
from daemon.tracking import TrackerConfig
from daemon.types import Frame, StreamState, end_marker
from detectors import samples
from detectors.bundle import load_bundle
from detectors.faces.centerface import CenterFaceDetector
from detectors.faces.pipeline import FacePipeline
from tests.media_corpus import deterministic_options
from tests.tiny_bundle import build_tiny_bundle


class CollectSink(Sink):
    name = "collect"

    def __init__(self) -> None:
        self.events: list[VerdictEvent] = []
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def emit(self, events: list[VerdictEvent]) -> None:
        self.events.extend(events)

    async def close(self) -> None:
        self.closed = True


class DoneCounting(Source):
    """A real source wrapper: passes the inner source's frames on and counts each frame's done()."""

    def __init__(self, inner: Source):
        self.inner = inner
        self.stream_id = inner.stream_id
        self.metrics = inner.metrics
        self.live = inner.live
        self.done_calls: collections.Counter[int] = collections.Counter()
        self.emitted: list[int] = []
        self.ends = 0

    @property
    def state(self):  # type: ignore[override]
        return self.inner.state

    async def run(self, emit: Emit) -> None:
        async def counting(frame: Frame) -> bool:
            key = -1 if frame.end_of_stream else frame.seq
            if frame.end_of_stream:
                self.ends += 1
            else:
                self.emitted.append(frame.seq)
            frame.on_done = lambda: self.done_calls.update([key])
            return await emit(frame)

        await self.inner.run(counting)

    async def stop(self) -> None:
        await self.inner.stop()


@pytest.fixture(scope="module")
def faces():
    return FacePipeline(CenterFaceDetector(det_max_side=320))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(build_tiny_bundle(tmp_path_factory.mktemp("bundle")))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """4 s, 25 fps, 480x270 H.264 clip of a moving real face."""
    p = tmp_path_factory.mktemp("clips") / "astronaut4s.mp4"
    return samples.write_video(p, samples.moving_frames(samples.astronaut(), 100, (480, 270)), fps=25,
                               options=deterministic_options("libx264"))  # same bytes (and detections) every run


ONE_THREAD = BundleConfig.defaults(threads=1)  # the bundle models' intra-op threads


def _cfg(**kw) -> PipelineConfig:
    return PipelineConfig(
        tracker=TrackerConfig(min_hits=2),
        temporal=TemporalConfig(sample_fps=2.5),
        fusion=FusionConfig(update_interval_s=0.8, min_frames=2),
        **kw,
    )


def _value(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    return m.registry.get_sample_value(name, labels or {}) or 0.0


async def test_one_clip_end_to_end(bundle, faces, clip, tmp_path):
    metrics = Metrics()
    sink = CollectSink()
    evidence = tmp_path / "evidence"
    d = Daemon(_cfg(evidence=EvidenceConfig(enabled=True, dir=evidence)), faces, bundle, [sink], metrics,
               models=ONE_THREAD)
    await d.start()
    assert d.ready() and sink.started
    src = DoneCounting(AvSource("cam-1", str(clip), metrics, AvSourceSettings(analysis_fps=5.0)))
    d.add_source(src)
    await asyncio.wait_for(d.wait_sources(), 120)
    await d.shutdown()
    assert sink.closed and not d.ready()

    # every frame (and the end marker) done exactly once
    assert len(src.emitted) >= 15
    assert src.ends == 1
    assert set(src.done_calls) == set(src.emitted) | {-1}
    assert all(n == 1 for n in src.done_calls.values())

    # one identity -> one track: start, >= 1 update, end; ids deterministic and unique
    evs = [e for e in sink.events if e.stream_id == "cam-1"]
    kinds = [e.event for e in evs]
    assert {e.track_id for e in evs} == {1}, kinds
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("update") >= 1
    assert kinds.count("start") == 1 and kinds.count("end") == 1
    assert len({e.id for e in evs}) == len(evs)
    assert [e.seq_last for e in evs] == sorted(e.seq_last for e in evs)
    end = evs[-1]
    assert end.verdict in ("fake", "real", "uncertain") and 0.0 <= end.score <= 1.0
    assert end.scores["frame"] is not None and end.scores["temporal"] is not None  # both kinds of evidence
    assert end.evidence["temporal_pairs"] > 0
    assert set(end.models) == {"frame", "temporal"} and "onnxruntime-cpu" in end.models["frame"]
    crop = Path(end.evidence["crop"])
    assert crop.is_file() and crop.parent.parent == evidence
    # the evidence was complete when the content-hashed id was made: rehashing what was sent gives the same id
    for e in evs:
        assert {"best_box", "best_quality", "crop"} <= set(e.evidence), e.evidence
        assert VerdictEvent(**{**e.to_dict(), "id": ""}).id == e.id, e.event
    # every event matches the published schema
    import jsonschema

    schema = json.loads((Path(__file__).parents[1] / "docs/schemas/verdict-event.v1.json").read_text())
    for e in evs:
        jsonschema.validate(json.loads(e.to_json()), schema)

    # metrics counted along the way
    lbl = {"stream": "cam-1"}
    assert _value(metrics, "fakewatch_frames_analysed_total", lbl) == len(src.emitted)
    assert _value(metrics, "fakewatch_faces_detected_total", lbl) >= len(src.emitted) - 2
    assert _value(metrics, "fakewatch_tracks_started_total", lbl) == 1
    assert _value(metrics, "fakewatch_tracks_ended_total", lbl) == 1
    assert _value(metrics, "fakewatch_tracks_active", lbl) == 0
    assert _value(metrics, "fakewatch_verdicts_total", {"stream": "cam-1", "event": "update"}) == kinds.count("update")
    assert _value(metrics, "fakewatch_batch_size_count", {"model": "frame"}) > 0
    assert _value(metrics, "fakewatch_batch_size_count", {"model": "embed"}) > 0
    for stage in ("detect", "embed", "track", "classify", "temporal", "fuse", "sink"):
        assert _value(metrics, "fakewatch_stage_latency_seconds_count", {"stage": stage}) > 0, stage
    assert _value(metrics, "fakewatch_frame_to_verdict_seconds_count") == len(src.emitted)
    assert _value(metrics, "fakewatch_queue_capacity", {"queue": "intake"}) == 16
    info = metrics.registry.get_sample_value(
        "fakewatch_bundle_info", {"bundle": "tiny-test@1", "frame_model": "tiny-test/plain-tinycnn@1",
                                  "frame_runtime": "onnxruntime-cpu", "embed_model": "tiny-test/difffake-tinycnn@1",
                                  "embed_runtime": "onnxruntime-cpu", "tracking_embedding": "bundle",
                                  "faces": "centerface"})
    assert info == 1.0


async def test_replay_gives_identical_events(bundle, faces, clip):
    """Same frames -> same events (ids, scores): tracker, temporal RNG and fusion are deterministic."""
    runs = []
    for _ in range(2):
        metrics, sink = Metrics(), CollectSink()
        d = Daemon(_cfg(), faces, bundle, [sink], metrics, models=ONE_THREAD)
        await d.start()
        d.add_source(AvSource("cam", str(clip), metrics, AvSourceSettings(analysis_fps=5.0)))
        await asyncio.wait_for(d.wait_sources(), 120)
        await d.shutdown()
        runs.append([(e.id, e.score, e.verdict, e.scores["temporal"]) for e in sink.events])
    assert runs[0] and runs[0] == runs[1]


async def test_two_streams_one_fails(bundle, faces, clip, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(4000))
    metrics, sink = Metrics(), CollectSink()
    d = Daemon(_cfg(), faces, bundle, [sink], metrics, models=ONE_THREAD)
    await d.start()
    good = DoneCounting(AvSource("good", str(clip), metrics, AvSourceSettings(analysis_fps=5.0)))
    bad = DoneCounting(AvSource("bad", str(broken), metrics, AvSourceSettings(analysis_fps=5.0)))
    d.add_source(bad)
    d.add_source(good)
    await asyncio.wait_for(d.wait_sources(), 120)
    await d.shutdown()
    assert bad.state == StreamState.FAILED
    assert good.state == StreamState.ENDED
    good_kinds = [e.event for e in sink.events if e.stream_id == "good"]
    assert good_kinds[0] == "start" and good_kinds[-1] == "end"
    assert not [e for e in sink.events if e.stream_id == "bad"]
    assert all(n == 1 for n in good.done_calls.values()) and len(good.done_calls) == len(good.emitted) + 1
    assert all(n == 1 for n in bad.done_calls.values())


class CrashingSource(Source):
    """A source whose reader breaks after a few frames (a bug, not a clean failure)."""

    def __init__(self, stream_id: str, metrics: Metrics, frames: list[np.ndarray]):
        super().__init__(stream_id, metrics, live=False)
        self.frames = frames
        self.done = 0

    async def run(self, emit: Emit) -> None:
        for i, img in enumerate(self.frames):
            def on_done() -> None:
                self.done += 1
            await emit(Frame(self.stream_id, i, i / 5.0, img, on_done=on_done))
        raise RuntimeError("reader thread exploded")

    async def stop(self) -> None:
        pass


async def test_crashing_source_is_contained_and_live_drops_counted(bundle, faces, clip):
    metrics, sink = Metrics(), CollectSink()
    d = Daemon(_cfg(), faces, bundle, [sink], metrics, models=ONE_THREAD)
    await d.start()
    imgs = list(samples.moving_frames(samples.astronaut(), 6, (320, 180)))
    crash = CrashingSource("crashy", metrics, imgs)
    good = DoneCounting(AvSource("ok", str(clip), metrics, AvSourceSettings(analysis_fps=5.0)))
    d.add_source(crash)
    d.add_source(good)
    await asyncio.wait_for(d.wait_sources(), 120)
    assert crash.done == len(imgs)  # all its frames were still analysed and done
    kinds = [e.event for e in sink.events if e.stream_id == "crashy"]
    assert kinds and kinds[0] == "start" and kinds[-1] == "end"  # its track was ended by the daemon
    assert _value(metrics, "fakewatch_stream_errors_total", {"stream": "crashy", "kind": "crash"}) == 1
    assert [e.event for e in sink.events if e.stream_id == "ok"][-1] == "end"

    # live intake: a burst bigger than the intake queue drops the oldest frames, each counted and done
    done: list[int] = []
    burst = [Frame("live", i, i / 5.0, imgs[0], on_done=lambda i=i: done.append(i)) for i in range(40)]
    results = [await d._emit(f, live=True) for f in burst]
    assert all(results)
    await d._emit(end_marker("live"), live=True)
    await asyncio.wait_for(d.drain_stream("live"), 60)
    dropped = _value(metrics, "fakewatch_frames_dropped_total", {"stream": "live", "reason": "queue_full"})
    assert dropped > 0
    assert sorted(done) == list(range(40))  # every frame done once, dropped or analysed
    assert _value(metrics, "fakewatch_frames_analysed_total", {"stream": "live"}) == 40 - dropped
    await d.shutdown()


async def test_snapshot_restore_forget(bundle, faces):
    metrics, sink = Metrics(), CollectSink()
    d = Daemon(_cfg(), faces, bundle, [sink], metrics, models=ONE_THREAD)
    await d.start()
    imgs = list(samples.moving_frames(samples.astronaut(), 8, (320, 180)))
    for i, img in enumerate(imgs):
        await d._emit(Frame("k1", i, i / 2.0, img), live=False)
    await asyncio.wait_for(d.drain_stream("k1"), 60)
    snap = json.loads(json.dumps(d.snapshot_stream("k1")))
    assert snap["tracker"]["tracks"] and snap["fusion"]["tracks"]["1"]["started"]
    assert snap["temporal"]["tracks"]["1"]["samples"]
    n_events = len(sink.events)
    d.forget_stream("k1")  # revoked: no end events
    assert len(sink.events) == n_events
    # another replica (here: the same daemon) restores and goes on; the track keeps its id
    d.restore_stream("k1", snap)
    for i, img in enumerate(imgs[:3], start=len(imgs)):
        await d._emit(Frame("k1", i, i / 2.0, img), live=False)
    await d._emit(end_marker("k1"), live=False)
    await asyncio.wait_for(d.drain_stream("k1"), 60)
    after = sink.events[n_events:]
    assert [e.event for e in after][-1] == "end"
    assert "start" not in [e.event for e in after] and {e.track_id for e in after} == {1}
    assert after[-1].frames == snap["fusion"]["tracks"]["1"]["frames"] + 3  # state carried over
    await d.shutdown()


async def test_frame_queue_policy():
    q = FrameQueue(2)
    img = np.zeros((2, 2, 3), np.uint8)
    fr = [Frame("s", i, 0.0, img) for i in range(3)]
    assert q.put_drop_oldest(fr[0]) is None and q.put_drop_oldest(fr[1]) is None
    q.put_drop_oldest(end_marker("s"))  # control items never count or get evicted
    assert q.put_drop_oldest(fr[2]) is fr[0]
    assert [f.seq for f in await q.get_batch(10)] == [1, -1, 2]
    # frames of file sources are never evicted by a live source: the live frame is refused instead
    await q.put(fr[0])
    await q.put(fr[1])
    live = Frame("live", 9, 0.0, img)
    assert q.put_drop_oldest(live) is live
    assert [f.seq for f in await q.get_batch(10)] == [0, 1]
    # a file source waits for room instead of dropping
    await q.put(fr[0])
    await q.put(fr[1])
    waiter = asyncio.create_task(q.put(fr[2]))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    assert [f.seq for f in await q.get_batch(1)] == [0]
    await asyncio.wait_for(waiter, 1)
    assert len(q) == 2


async def test_shutdown_without_drain_marks_every_frame_done(bundle, faces, clip):
    metrics, sink = Metrics(), CollectSink()
    d = Daemon(_cfg(intake_queue=4), faces, bundle, [sink], metrics, models=ONE_THREAD)
    await d.start()
    src = DoneCounting(AvSource("cam", str(clip), metrics, AvSourceSettings(analysis_fps=25.0)))
    d.add_source(src)
    for _ in range(600):  # until the pipeline is busy with this stream
        if _value(metrics, "fakewatch_frames_analysed_total", {"stream": "cam"}) >= 3:
            break
        await asyncio.sleep(0.05)
    await d.shutdown(drain=False, timeout_s=5.0)
    assert not d.ready()
    assert src.emitted and len(src.emitted) < 100  # stopped early
    # whatever happened to them (analysed, or dropped at shutdown), every frame was done once
    assert set(src.done_calls) >= set(src.emitted)
    assert all(n == 1 for n in src.done_calls.values())
    # frames refused after shutdown are done and reported as dropped
    late = []
    assert await d._emit(Frame("cam", 999, 99.0, np.zeros((8, 8, 3), np.uint8), on_done=lambda: late.append(1)),
                         live=False) is False
    assert late == [1]
