"""Recovery with the real Daemon (tiny real bundle) against Tansu: a consumer SIGKILLed mid-stream,
and the broker stopped and restarted under a running daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

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


async def test_daemon_killed_mid_stream_resumes_from_committed(broker, tiny_bundle_dir, clip):
    cfg = _cfg(broker.bootstrap, "dkill")
    topic = cfg.frames_topics[0]
    await create_topics(broker.bootstrap, {topic: 2})
    n = await _publish(broker.bootstrap, topic, clip, STREAMS)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "tests.kafka_worker", broker.bootstrap, cfg.group_id, topic, cfg.verdict_topic,
            "--bundle", str(tiny_bundle_dir)]
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
