"""The real Daemon (tiny real bundle, CenterFace, tracker, fusion) fed by Kafka, against Tansu.

- frames of two streams published with the ``produce`` tool's function -> the verdicts in the
  verdict topic are exactly the events the pipeline produced, every offset is committed;
- two daemons in one consumer group split the streams after a rebalance, and the temporal state
  one wrote to the state topic is restored by the other (its tracks continue: no new ``start``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from daemon.app import Daemon
from daemon.events import VerdictEvent
from daemon.fusion import FusionConfig
from daemon.kafka.config import KafkaConfig
from daemon.kafka.state import decode_snapshot
from daemon.kafka.tools import iter_video, produce_frames
from daemon.metrics import Metrics
from daemon.models import BundleConfig
from daemon.pipeline import PipelineConfig
from daemon.sinks.base import Sink
from daemon.sinks.kafka import KafkaVerdictSink
from daemon.sources.kafka import KafkaFrameSource
from daemon.temporal import TemporalConfig
from daemon.tracking import TrackerConfig
from detectors import samples
from detectors.bundle import load_bundle
from detectors.faces.centerface import CenterFaceDetector
from detectors.faces.pipeline import FacePipeline
from tests.kafka_broker import create_topics, kafka_test_config, read_topic
from tests.kafka_broker import wait_until as _wait

pytestmark = pytest.mark.kafka
# "left" and "right" land on partitions 0 and 1 of a 2-partition topic (murmur2, the Java default)
STREAMS = ("left", "right")


class CollectSink(Sink):
    name = "collect"

    def __init__(self) -> None:
        self.events: list[VerdictEvent] = []

    async def emit(self, events: list[VerdictEvent]) -> None:
        self.events.extend(events)


@pytest.fixture(scope="module")
def bundle(tiny_bundle_dir):
    return load_bundle(tiny_bundle_dir)


@pytest.fixture(scope="module")
def faces():
    return FacePipeline(CenterFaceDetector(det_max_side=320))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("clips") / "astronaut.mp4"
    return samples.write_video(p, samples.moving_frames(samples.astronaut(), 24, (320, 180)), fps=25)


def _pipeline_cfg() -> PipelineConfig:
    return PipelineConfig(
        tracker=TrackerConfig(min_hits=2),
        temporal=TemporalConfig(sample_fps=2.5),
        fusion=FusionConfig(update_interval_s=0.2, min_frames=2),
    )


def _kafka_cfg(bootstrap: str, name: str, **kw) -> KafkaConfig:
    return kafka_test_config(bootstrap, name, **{"intake_high": 16, "intake_low": 4, **kw})


async def _start_daemon(bundle, faces, kcfg: KafkaConfig):
    metrics = Metrics()
    collect = CollectSink()
    d = Daemon(_pipeline_cfg(), faces, bundle, [KafkaVerdictSink(kcfg, metrics), collect], metrics,
               models=BundleConfig.defaults(threads=1))
    await d.start()
    src = KafkaFrameSource(kcfg, metrics, daemon=d)
    d.add_source(src)
    return d, src, collect, metrics


def _done_to(src: KafkaFrameSource) -> dict[int, int]:
    return {tp.partition: p.commit_to for tp, p in src._parts.items() if p.commit_to is not None}


async def _publish(bootstrap: str, topic: str, clip: Path, start: int, n: int, eos: bool) -> None:
    frames = list(iter_video(clip))[start:start + n]
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await p.start()
    try:
        for s in STREAMS:
            sent = await produce_frames(p, topic, s, iter(frames), end_of_stream=eos)
            assert sent == n
    finally:
        await p.stop()


async def test_daemon_frames_in_verdicts_out(broker, bundle, faces, clip):
    kcfg = _kafka_cfg(broker.bootstrap, "dmn")
    topic = kcfg.frames_topics[0]
    await create_topics(broker.bootstrap, {topic: 2})
    n = 16
    await _publish(broker.bootstrap, topic, clip, 0, n, eos=True)
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await p.start()
    await p.send_and_wait(topic, b"not an image", key=b"left")  # header-less poison on partition 0
    await p.stop()
    d, src, collect, metrics = await _start_daemon(bundle, faces, kcfg)
    try:
        # partition p holds n frames + EOS per stream (+ the poison on partition 0)
        await _wait(lambda: _done_to(src) == {0: n + 2, 1: n + 1}, 120, "all records done")
        await asyncio.sleep(0.5)  # one commit interval
    finally:
        await d.shutdown(drain=True, timeout_s=20)
    assert collect.events, "the pipeline produced no events (no face found?)"
    ends = {e.stream_id for e in collect.events if e.event == "end"}
    assert ends == set(STREAMS)  # end-of-stream control messages ended the tracks
    recs = await read_topic(broker.bootstrap, kcfg.verdict_topic, until=lambda r: len(r) >= len(collect.events))
    from_kafka = [json.loads(r.value) for r in recs]
    assert sorted(e["id"] for e in from_kafka) == sorted(e.id for e in collect.events)
    assert all(r.key.decode() == e["stream_id"] for r, e in zip(recs, from_kafka))
    dl = await read_topic(broker.bootstrap, kcfg.dead_letter_topic, until=lambda r: len(r) >= 1)
    assert [dict(r.headers)["fw-dlq-reason"] for r in dl] == [b"missing_header"]
    committed = metrics.registry.get_sample_value("fakewatch_kafka_commits_total")
    assert committed and committed >= 1


async def test_two_daemons_split_streams_and_hand_over_state(broker, bundle, faces, clip):
    kcfg = _kafka_cfg(broker.bootstrap, "grp")
    topic = kcfg.frames_topics[0]
    await create_topics(broker.bootstrap, {topic: 2})
    await _publish(broker.bootstrap, topic, clip, 0, 12, eos=False)
    a = await _start_daemon(bundle, faces, kcfg)
    b = None
    try:
        da, sa, ca, ma = a
        await _wait(lambda: _done_to(sa) == {0: 12, 1: 12}, 120, "daemon A processed phase 1")
        started_by_a = {(e.stream_id, e.track_id) for e in ca.events if e.event == "start"}
        assert {s for s, _ in started_by_a} == set(STREAMS), "A started no track on some stream"
        b = await _start_daemon(bundle, faces, kcfg.model_copy(update={"client_id": "fakewatch-b"}))
        db, sb, cb, mb = b
        await _wait(lambda: len(sa.assignment) == 1 and len(sb.assignment) == 1, 60, "the group split the partitions")
        assert sa.assignment.isdisjoint(sb.assignment)
        n_a_before = len(ca.events)
        await _publish(broker.bootstrap, topic, clip, 12, 12, eos=True)
        all_events = lambda: ca.events + cb.events  # noqa: E731
        await _wait(lambda: {e.stream_id for e in all_events() if e.event == "end"} == set(STREAMS), 120,
                    "both streams ended")
    finally:
        await a[0].shutdown(drain=True, timeout_s=20)
        if b is not None:
            await b[0].shutdown(drain=True, timeout_s=20)
    # A wrote a snapshot of both streams to the compacted state topic on the revoke
    snaps = {r.key.decode(): decode_snapshot(r.value) for r in await read_topic(broker.bootstrap, kcfg.state_topic)}
    assert set(STREAMS) <= set(snaps) and all(snaps[s] and snaps[s]["tracker"] for s in STREAMS)
    # B owns exactly one stream now, and restored its state from A's snapshot
    b_streams = {e.stream_id for e in cb.events}
    a_after = {e.stream_id for e in ca.events[n_a_before:]}
    assert len(b_streams) == 1 and b_streams.isdisjoint(a_after), (b_streams, a_after)
    restores = [m.registry.get_sample_value("fakewatch_kafka_state_operations_total", {"op": "restore"}) or 0
                for m in (ma, mb)]
    assert restores[1] >= 1, "B did not restore the stream it took over"
    (moved,) = b_streams
    continued = {t for s, t in started_by_a if s == moved}
    b_tracks = {e.track_id for e in cb.events}
    assert b_tracks & continued, "B's events are not on the tracks A started (state not carried over)"
    assert not any(e.event == "start" and e.track_id in continued for e in cb.events), "a restored track restarted"


async def test_config_and_cli_runner_wire_kafka_source_and_sink(broker, tiny_bundle_dir, clip):
    """``kafka:`` section + ``sinks.kafka: true`` through the CLI runner (config -> source + sink)."""
    from daemon.runner import run_daemon
    from daemon.config import validate_config

    name = "cfg"
    cfg = validate_config({
        "bundle": {"path": str(tiny_bundle_dir)},
        "faces": {"det_max_side": 320},
        "http": {"enabled": False},
        "sinks": {"stdout": None, "kafka": True},
        "kafka": {
            "bootstrap_servers": [broker.bootstrap], "frames_topics": [f"{name}.frames"], "group_id": f"{name}.g",
            "verdict_topic": f"{name}.verdicts", "state_topic": f"{name}.state", "dead_letter_topic": None,
            "auto_offset_reset": "earliest", "freshness_budget_s": None, "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000, "commit_interval_s": 0.2,
        },
    })
    assert isinstance(cfg.kafka, KafkaConfig)
    await create_topics(broker.bootstrap, {f"{name}.frames": 1})
    frames = list(iter_video(clip))[:10]
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await p.start()
    await produce_frames(p, f"{name}.frames", "cli-stream", iter(frames), end_of_stream=True)
    await p.stop()
    stop = asyncio.Event()
    runner = asyncio.create_task(run_daemon(cfg, stop=stop, serve_http=False))
    try:
        recs = await read_topic(
            broker.bootstrap, f"{name}.verdicts", timeout_s=120,
            until=lambda r: any(json.loads(x.value)["event"] == "end" for x in r),
        )
    finally:
        stop.set()
        result = await asyncio.wait_for(runner, 60)
    events = [json.loads(r.value) for r in recs]
    assert {e["stream_id"] for e in events} == {"cli-stream"}
    assert any(e["event"] == "end" for e in events)
    assert not result.failed
