"""Recovery with the real Daemon (tiny real bundle) against Tansu: a consumer SIGKILLed mid-stream,
one SIGKILLed after a stream was fully analysed but before its end-of-stream (state checkpoints on),
and the broker stopped and restarted under a running daemon. The harness-level crash matrix is
tests/test_kafka_crash.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from daemon.kafka import contract
from daemon.kafka.config import KafkaConfig
from daemon.kafka.tools import iter_video, produce_frames
from detectors import samples
from detectors.bundle import load_bundle
from tests.kafka_broker import committed_offsets as _committed
from tests.kafka_broker import create_topics, kafka_test_config, read_topic
from tests.kafka_broker import wait_until as _wait
from tests.test_kafka_daemon import STREAMS, _start_daemon

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("clips") / "astronaut.mp4"
    return samples.write_video(p, samples.moving_frames(samples.astronaut(), 20, (320, 180)), fps=25)


def _cfg(bootstrap: str, name: str, **kw) -> KafkaConfig:
    return kafka_test_config(bootstrap, name, **{"dead_letter_topic": None, "state_topic": None, "intake_high": 8,
                                                 "intake_low": 2, **kw})


async def _publish(bootstrap: str, topic: str, clip: Path, streams, eos: bool = True) -> int:
    frames = list(iter_video(clip))
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await p.start()
    try:
        for s in streams:
            await produce_frames(p, topic, s, iter(frames), end_of_stream=eos)
    finally:
        await p.stop()
    return len(frames)


def _same_event(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k != "emitted_at"} == {k: v for k, v in b.items() if k != "emitted_at"}


def _check_tracks(events: list[dict]) -> dict[tuple[str, int], dict[str, list[dict]]]:
    """Duplicates (same id) identical; every track id: one start, one end, one seq_first. By track."""
    by_id: dict[str, dict] = {}
    for e in events:
        if e["id"] in by_id:
            assert _same_event(by_id[e["id"]], e), f"event id {e['id']} delivered with two contents"
        by_id.setdefault(e["id"], e)
    tracks: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for e in by_id.values():
        tracks.setdefault((e["stream_id"], e["track_id"]), {}).setdefault(e["event"], []).append(e)
    assert tracks, "no events"
    for key, kinds in tracks.items():
        assert len(kinds.get("start", [])) == 1, f"track {key}: {len(kinds.get('start', []))} distinct starts"
        assert len(kinds.get("end", [])) == 1, f"track {key}: {len(kinds.get('end', []))} distinct ends"
        assert len({e["seq_first"] for k in kinds.values() for e in k}) == 1, f"track id {key} reused"
    return tracks


def _worker_args(broker, cfg: KafkaConfig, topic: str, bundle_dir) -> list[str]:
    return [sys.executable, "-m", "tests.kafka_worker", broker.bootstrap, cfg.group_id, topic, cfg.verdict_topic,
            "--bundle", str(bundle_dir), "--state", cfg.state_topic]


async def _partition_ends(bootstrap: str, topic: str) -> dict[int, int]:
    last: dict[int, int] = {}
    for r in await read_topic(bootstrap, topic, idle_s=0.5):
        last[r.partition] = max(last.get(r.partition, 0), r.offset + 1)
    return last


async def _wait_committed(bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout_s: float) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        got = await _committed(bootstrap, group, topic, 2)
        if all(got.get(p) == o for p, o in ends.items()):
            return
        if loop.time() > deadline:
            raise AssertionError(f"committed offsets {got} never reached {ends}")
        await asyncio.sleep(0.3)


async def test_daemon_killed_mid_stream_resumes_from_committed(broker, tiny_bundle_dir, clip):
    cfg = _cfg(broker.bootstrap, "dkill", state_topic="dkill.state")
    topic = cfg.frames_topics[0]
    await create_topics(broker.bootstrap, {topic: 2})
    n = await _publish(broker.bootstrap, topic, clip, STREAMS)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = _worker_args(broker, cfg, topic, tiny_bundle_dir)
    first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    second = None
    try:
        before = await read_topic(broker.bootstrap, cfg.verdict_topic, until=lambda r: len(r) >= 2, timeout_s=120)
        first.kill()  # mid-stream, no final commit, no leave-group
        first.wait(10)
        committed_at_kill = await _committed(broker.bootstrap, cfg.group_id, topic, 2)
        second = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)

        def both_ended(recs) -> bool:
            return {json.loads(r.value)["stream_id"] for r in recs if json.loads(r.value)["event"] == "end"} >= set(STREAMS)

        recs = await read_topic(broker.bootstrap, cfg.verdict_topic, until=both_ended, timeout_s=150)
        second.terminate()  # graceful: drain + final commit
        second.wait(60)
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
    assert before, "no verdicts before the kill"
    assert any((committed_at_kill[p] or 0) < n + 1 for p in (0, 1)), "the first daemon finished before the kill"
    events = [json.loads(r.value) for r in recs]
    assert both_ended(recs)
    # every id seen before the kill is still there; an id emitted twice (reprocessing) is the same event
    by_id: dict[str, dict] = {}
    for e in events:
        if e["id"] in by_id:
            assert _same_event(by_id[e["id"]], e), e["id"]
        by_id.setdefault(e["id"], e)
    assert {json.loads(r.value)["id"] for r in before} <= set(by_id)
    # the frames after the committed offset were analysed: the streams' verdicts reach their last frames
    for s in STREAMS:
        assert max(e["seq_last"] for e in events if e["stream_id"] == s) >= n - 3, s
    assert await _committed(broker.bootstrap, cfg.group_id, topic, 2) == {0: n + 1, 1: n + 1}
    # the second daemon continued the first one's tracks from its checkpoints: no id restarted, all ended once
    _check_tracks(events)


async def test_daemon_end_of_stream_closes_tracks_a_crashed_member_held(broker, tiny_bundle_dir, clip):
    """The issue's scenario: stream B fully analysed (and committed), stream A live, SIGKILL, a new
    daemon, then the end-of-stream records of both: B's tracks end (covering its last frames) although
    the new daemon never analysed a frame of B, and A's tracks continue without reusing ids."""
    import asyncio

    a, b = STREAMS  # partitions 0 and 1
    cfg = _cfg(broker.bootstrap, "deos", state_topic="deos.state")
    topic = cfg.frames_topics[0]
    await create_topics(broker.bootstrap, {topic: 2})
    frames = list(iter_video(clip))
    n, half = len(frames), len(frames) // 2
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await p.start()
    try:
        await produce_frames(p, topic, b, iter(frames), end_of_stream=False)
        await produce_frames(p, topic, a, iter(frames[:half]), end_of_stream=False)
    finally:
        await p.stop()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = _worker_args(broker, cfg, topic, tiny_bundle_dir)
    first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    second = None
    try:
        # everything published so far is analysed, its verdicts out and its offsets committed
        await _wait_committed(broker.bootstrap, cfg.group_id, topic, {0: half, 1: n}, 180)
        before = [json.loads(r.value) for r in await read_topic(broker.bootstrap, cfg.verdict_topic, idle_s=0.5)]
        first.kill()
        first.wait(10)
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await p.start()
        try:
            await produce_frames(p, topic, a, iter(frames[half:]), end_of_stream=True)
            k, v, h = contract.encode_end_of_stream(b, n - 1)
            await p.send_and_wait(topic, v, key=k, headers=h)
        finally:
            await p.stop()
        second = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        await _wait_committed(broker.bootstrap, cfg.group_id, topic, await _partition_ends(broker.bootstrap, topic),
                              180)
        second.terminate()
        await asyncio.to_thread(second.wait, 60)
        events = [json.loads(r.value) for r in await read_topic(broker.bootstrap, cfg.verdict_topic, idle_s=0.5)]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    b_started = {e["track_id"] for e in before if e["stream_id"] == b and e["event"] == "start"}
    assert b_started, "no track of B started before the kill"
    assert not any(e["stream_id"] == b and e["event"] == "end" for e in before)
    tracks = _check_tracks(events)
    assert {t for s, t in tracks if s == b} == b_started  # B: no new track, every old one ended
    assert max(tracks[(b, t)]["end"][0]["seq_last"] for t in b_started) >= n - 3  # covering its last frames
    assert max(e["seq_last"] for e in events if e["stream_id"] == a) >= n - 3


async def test_daemon_survives_broker_restart(broker, tiny_bundle_dir, clip):
    """Broker stopped and restarted (memory storage: it comes back empty) under a running daemon."""
    from detectors.faces.centerface import CenterFaceDetector
    from detectors.faces.pipeline import FacePipeline

    cfg = _cfg(broker.bootstrap, "drestart", request_timeout_ms=5000, retry_backoff_ms=100)
    topic = cfg.frames_topics[0]
    await create_topics(broker.bootstrap, {topic: 1})
    n = await _publish(broker.bootstrap, topic, clip, ["before"])
    d, src, collect, _ = await _start_daemon(load_bundle(tiny_bundle_dir),
                                             FacePipeline(CenterFaceDetector(det_max_side=320)), cfg)
    try:
        await _wait(lambda: any(e.stream_id == "before" and e.event == "end" for e in collect.events), 120,
                    "the first stream ended")
        await _wait(lambda: all(p.commit_to == n + 1 and p.committed == n + 1 for p in src._parts.values()), 30,
                    "commit of the first stream")
        committed_before = await _committed(broker.bootstrap, cfg.group_id, topic, 1)
        verdicts_before = [e.id for e in collect.events]
        broker.restart(down_s=1.0)
        await create_topics(broker.bootstrap, {topic: 1})
        await _publish(broker.bootstrap, topic, clip, ["after"])
        await _wait(lambda: any(e.stream_id == "after" and e.event == "end" for e in collect.events), 150,
                    "the stream published after the restart ended")
        after_ids = {e.id for e in collect.events if e.stream_id == "after"}
        recs = await read_topic(broker.bootstrap, cfg.verdict_topic, until=lambda r: len(r) >= len(after_ids),
                                timeout_s=60)
    finally:
        await d.shutdown(drain=True, timeout_s=20)
    assert committed_before == {0: n + 1}  # all of the first stream was processed and committed
    assert len(verdicts_before) >= 2
    # the sink reconnected too: the new broker holds the verdicts of the stream published after the restart
    assert after_ids and after_ids <= {json.loads(r.value)["id"] for r in recs}
    assert src.state.value == "ended"
