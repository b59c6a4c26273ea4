"""Crash consistency of the Kafka source's state checkpoints, against the real broker (Tansu).

Worker processes (tests/kafka_worker.py: the real KafkaFrameSource + KafkaVerdictSink around
MiniPipeline's track model, state topic on) are SIGKILLed

(a) mid-stream, from outside;
(b) after a stream was fully analysed and committed, before its end-of-stream arrives, while another
    stream is live (the issue's scenario: the end-of-stream reaches a member that never held the tracks);
(c) between a verdict's publish and the offset commit, by the fault hook: before the checkpoint is
    written, and after it is written but before the offsets are committed;
(d) inside a rebalance (in the revoke callback, after the drain, before checkpoint and commit);

and a fresh worker finishes. MiniPipeline is deterministic, so an uncrashed run's events are known
exactly: the distinct events (by id) of every crashed run must be exactly those, which means every
track starts and ends exactly once per track id, no id is reused for other content, no frame is
skipped and none is applied twice; duplicates (at-least-once) must be byte-identical apart from
``emitted_at``; and the group's committed offsets reach the end of every partition (lag 0).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from daemon.kafka import contract
from daemon.kafka.tools import produce_frames
from daemon.types import end_marker
from tests.kafka_broker import committed_offsets, create_topics, kafka_test_config, read_topic
from tests.kafka_harness import MiniPipeline
from tests.kafka_worker import KILL_ENV

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[1]
N = 25  # frames per stream: tracks 1 (0-9), 2 (10-19), 3 (20-24)
PARTITIONS = 2


def _frames(start: int, stop: int):
    for i in range(start, stop):
        yield i, i / 25.0, np.full((16, 16, 3), (i * 7) % 256, np.uint8)


def reference(streams: list[str], n: int = N) -> dict[str, dict]:
    """The events of an uncrashed run (MiniPipeline is a pure function of the frames), by id."""
    pipe = MiniPipeline([], tracks=True)
    out = {}
    for s in streams:
        evs = []
        for i in range(n):
            evs += pipe._events(SimpleNamespace(stream_id=s, seq=i, end_of_stream=False))
        evs += pipe._events(end_marker(s, n - 1))
        for e in evs:
            out[e.id] = _core(e.to_dict())
    return out


def _core(e: dict) -> dict:
    return {k: v for k, v in e.items() if k != "emitted_at"}


class Run:
    def __init__(self, broker, name: str):
        self.bootstrap = broker.bootstrap
        self.cfg = kafka_test_config(broker.bootstrap, name)
        self.topic = self.cfg.frames_topics[0]
        self.procs: list[subprocess.Popen] = []

    async def setup(self) -> None:
        await create_topics(self.bootstrap, {self.topic: PARTITIONS})

    async def publish(self, stream: str, start: int, stop: int, eos: bool = False) -> None:
        p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await p.start()
        try:
            await produce_frames(p, self.topic, stream, _frames(start, stop), end_of_stream=False)
            if eos:
                k, v, h = contract.encode_end_of_stream(stream, stop - 1)
                await p.send_and_wait(self.topic, v, key=k, headers=h)
        finally:
            await p.stop()

    def worker(self, delay: float, kill_at: str | None = None, client_id: str = "fakewatch") -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop(KILL_ENV, None)
        if kill_at:
            env[KILL_ENV] = kill_at
        c = self.cfg
        args = [sys.executable, "-m", "tests.kafka_worker", self.bootstrap, c.group_id, self.topic, c.verdict_topic,
                "--state", c.state_topic, "--tracks", "--delay", str(delay), "--client-id", client_id]
        p = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)

    async def verdicts(self, until=None, timeout_s: float = 150.0) -> list[dict]:
        recs = await read_topic(self.bootstrap, self.cfg.verdict_topic, until=until, timeout_s=timeout_s, idle_s=0.5)
        return [json.loads(r.value) for r in recs]

    async def record_ends(self) -> dict[int, int]:
        """offset + 1 of the last record of each partition (Tansu's ListOffsets can under-report)."""
        last: dict[int, int] = {}
        for r in await read_topic(self.bootstrap, self.topic, idle_s=0.5):
            last[r.partition] = max(last.get(r.partition, 0), r.offset + 1)
        return last

    async def committed(self) -> dict[int, int | None]:
        return await committed_offsets(self.bootstrap, self.cfg.group_id, self.topic, PARTITIONS)

    async def wait_caught_up(self, timeout_s: float = 120.0) -> dict[int, int]:
        """Wait until the group's committed offsets reach the end of every partition (lag 0)."""
        ends = await self.record_ends()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            got = await self.committed()
            if all(got.get(p) == o for p, o in ends.items()):
                return ends
            if loop.time() > deadline:
                raise AssertionError(f"committed offsets {got} never reached the partition ends {ends}")
            await asyncio.sleep(0.3)

    async def finish(self, expected: dict[str, dict], timeout_s: float = 150.0) -> list[dict]:
        """Start a fresh worker, wait for every expected event id and lag 0, stop it gracefully."""
        w = self.worker(delay=0.0, client_id="fresh")
        events = await self.verdicts(until=lambda recs: {json.loads(r.value)["id"] for r in recs} >= set(expected),
                                     timeout_s=timeout_s)
        await self.wait_caught_up()
        w.send_signal(signal.SIGTERM)
        await wait_exit(w, 60)
        return await self.verdicts()  # everything, including what arrived after the wait


async def wait_exit(p: subprocess.Popen, timeout_s: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while p.poll() is None:
        if loop.time() > deadline:
            raise AssertionError(f"worker {p.pid} did not exit within {timeout_s:.0f} s")
        await asyncio.sleep(0.1)
    return p.returncode


def check(events: list[dict], expected: dict[str, dict]) -> None:
    """Exactly the uncrashed run's events; duplicates identical; per track one start and one end."""
    by_id: dict[str, dict] = {}
    for e in events:
        core = _core(e)
        if e["id"] in by_id:
            assert by_id[e["id"]] == core, f"event id {e['id']} delivered with two contents"
        by_id[e["id"]] = core
    tracks: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for e in by_id.values():
        tracks.setdefault((e["stream_id"], e["track_id"]), {}).setdefault(e["event"], []).append(e)
    for key, kinds in sorted(tracks.items()):
        assert len(kinds.get("start", [])) == 1, f"track {key}: {len(kinds.get('start', []))} distinct start events"
        assert len(kinds.get("end", [])) == 1, f"track {key}: {len(kinds.get('end', []))} distinct end events"
        assert len({e["seq_first"] for k in kinds.values() for e in k}) == 1, f"track id {key} carries two tracks"
    missing = sorted((e["stream_id"], e["track_id"], e["event"], e["seq_last"])
                     for i, e in expected.items() if i not in by_id)
    extra = sorted((e["stream_id"], e["track_id"], e["event"], e["seq_last"])
                   for i, e in by_id.items() if i not in expected)
    assert not missing, f"events missing (frames skipped or tracks not ended): {missing[:10]}"
    assert not extra, f"events an uncrashed run does not produce (state lost or applied twice): {extra[:10]}"


STREAMS = ["cam-0", "cam-1", "cam-2", "cam-3"]


async def test_a_killed_mid_stream(broker):
    run = Run(broker, "crash-a")
    await run.setup()
    for s in STREAMS:
        await run.publish(s, 0, N, eos=True)
    expected = reference(STREAMS)
    try:
        w = run.worker(delay=0.05)
        before = await run.verdicts(until=lambda r: len(r) >= 30)
        w.kill()  # no final checkpoint, commit or leave-group
        assert await wait_exit(w, 30) == -signal.SIGKILL
        at_kill = await run.verdicts()
        assert len(before) >= 30
        assert not set(expected) <= {e["id"] for e in at_kill}, "the first worker finished before the kill"
        events = await run.finish(expected)
    finally:
        run.close()
    check(events, expected)


async def test_b_killed_after_a_stream_was_fully_analysed_before_its_end(broker):
    """B: all frames analysed and committed; A: live. Kill; then both end-of-streams reach a new worker."""
    run = Run(broker, "crash-b")
    await run.setup()
    a, b = "live-a", "done-b"
    await run.publish(b, 0, N)
    await run.publish(a, 0, 12)
    expected = reference([a, b])
    try:
        w = run.worker(delay=0.02)
        await run.wait_caught_up()  # every published record is analysed, its verdicts out, committed
        got = {e["id"] for e in await run.verdicts()}
        assert not any(e["event"] == "end" and e["track_id"] == 3 for e in await run.verdicts())
        w.kill()
        assert await wait_exit(w, 30) == -signal.SIGKILL
        assert got < set(expected)
        await run.publish(a, 12, N, eos=True)
        p = AIOKafkaProducer(bootstrap_servers=run.bootstrap, acks="all")
        await p.start()
        k, v, h = contract.encode_end_of_stream(b, N - 1)
        await p.send_and_wait(run.topic, v, key=k, headers=h)
        await p.stop()
        events = await run.finish(expected)
    finally:
        run.close()
    ends_b = [e for e in events if e["stream_id"] == b and e["event"] == "end" and e["track_id"] == 3]
    assert ends_b and ends_b[0]["seq_last"] == N - 1 and ends_b[0]["frames"] == 5  # B's last track closed in full
    check(events, expected)


@pytest.mark.parametrize("point", ["commit.before_state_save", "commit.before_offset_commit"])
async def test_c_killed_between_verdict_publish_and_offset_commit(broker, point):
    run = Run(broker, f"crash-c-{point.split('.')[-1].replace('_', '-')}")
    await run.setup()
    for s in STREAMS:
        await run.publish(s, 0, N, eos=True)
    expected = reference(STREAMS)
    try:
        w = run.worker(delay=0.02, kill_at=f"{point}:3")
        assert await wait_exit(w, 150) == -signal.SIGKILL
        assert f"FAULT {point}" in w.stdout.read()
        ends = await run.record_ends()
        committed = await run.committed()
        # the killed worker had delivered verdicts whose offsets it had not committed
        assert any((committed.get(p) or 0) < o for p, o in ends.items())
        assert await run.verdicts(), "no verdict was published before the fault"
        events = await run.finish(expected)
    finally:
        run.close()
    check(events, expected)


async def test_d_killed_during_a_rebalance(broker):
    run = Run(broker, "crash-d")
    await run.setup()
    for s in STREAMS:
        await run.publish(s, 0, N, eos=True)
    expected = reference(STREAMS)
    try:
        w1 = run.worker(delay=0.1, kill_at="revoke.drained:1", client_id="first")
        await run.verdicts(until=lambda r: len(r) >= 10)
        # a second member joins: the group rebalances, the first member dies in its revoke callback
        events = await run.finish(expected, timeout_s=240)
        assert w1.poll() == -signal.SIGKILL
        assert "FAULT revoke.drained" in w1.stdout.read()
    finally:
        run.close()
    check(events, expected)
