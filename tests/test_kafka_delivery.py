"""Kafka source + sink against a real Kafka-protocol broker (Tansu), with a pipeline-less harness.

Frames in, verdicts out; dead letters; stale frames; backpressure; a consumer SIGKILLed
mid-stream (exact verdict ids, as the harness's verdicts are one per frame); transactional mode
refused without broker support; the CLI tools. The real Daemon runs in test_kafka_daemon.py and
test_kafka_recovery.py (SIGKILL and broker restart).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from daemon.kafka import contract
from daemon.kafka.config import KafkaConfig
from daemon.kafka.tools import produce_frames, produce_video
from daemon.metrics import Metrics
from daemon.sinks.kafka import KafkaVerdictSink
from daemon.sources.kafka import KafkaFrameSource
from tests.kafka_broker import committed_offsets as _committed
from tests.kafka_broker import create_topics, read_topic
from tests.kafka_broker import kafka_test_config as _cfg
from tests.kafka_broker import wait_until as _wait
from tests.kafka_harness import ListSink, MiniPipeline

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[1]


def _frames(n: int, start: int = 0, h: int = 48, w: int = 64):
    for i in range(start, start + n):
        yield i, i / 25.0, np.full((h, w, 3), (i * 7) % 256, np.uint8)


@asynccontextmanager
async def harness(cfg: KafkaConfig, delay_s: float = 0.0, capacity: int = 16):
    m = Metrics()
    sink = KafkaVerdictSink(cfg, m)
    await sink.start()
    extra = ListSink()
    pipe = MiniPipeline([sink, extra], capacity=capacity, delay_s=delay_s)
    pipe.start()
    src = KafkaFrameSource(cfg, m, daemon=pipe)
    task = asyncio.create_task(src.run(pipe.emit))
    try:
        yield src, pipe, extra, m
    finally:
        await src.stop()
        await asyncio.wait_for(task, 60)
        await pipe.stop()
        await sink.close()


async def test_frames_in_verdicts_out_with_poison(broker, sample_clip):
    """Published clips -> every verdict arrives; poison records -> dead letters, streams keep flowing."""
    cfg = _cfg(broker.bootstrap, "e2e")
    topic = cfg.frames_topics[0]
    await create_topics(broker.bootstrap, {topic: 3})
    n_per_stream = 10
    streams = ["cam-a", "cam-b", "cam-c"]
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await p.start()
    try:
        for s in streams:
            sent = await produce_video(sample_clip, topic, s, broker.bootstrap, max_frames=n_per_stream,
                                       end_of_stream=False, producer=p)
            assert sent == n_per_stream
        # poison: empty, header-less, text labelled PNG, key disagreeing with the stream header, oversized
        k, v, h = contract.encode_frame("cam-a", 1000, np.zeros((8, 8, 3), np.uint8))
        poison = [
            ("cam-a", b"", h, "empty"),
            ("cam-b", b"\xff\xd8\xffjunk", None, "missing_header"),
            ("cam-c", b"just some text", [(a, b"image/png" if a == contract.H_CONTENT_TYPE else b)
                                          for a, b in contract.frame_headers("cam-c", 1000, time.time(), "image/png")],
             "content_mismatch"),
            ("cam-b", v, h, "key_mismatch"),
            ("cam-a", b"\xff\xd8\xff" + b"\0" * (cfg.max_payload_bytes + 10), h, "oversized"),
        ]
        for key, value, headers, _ in poison:
            await p.send_and_wait(topic, value, key=key.encode(), headers=headers)
        # the streams keep flowing after the poison
        for s in streams:
            sent = await produce_frames(p, topic, s, _frames(3, start=n_per_stream), end_of_stream=True)
    finally:
        await p.stop()
    expected = len(streams) * (n_per_stream + 3) + len(streams)  # one update per frame + one end per stream
    async with harness(cfg) as (src, pipe, extra, m):
        await _wait(lambda: len(extra.events) >= expected, 90, "all verdicts")
        await _wait(lambda: src.outstanding == 0, 30, "all frames done")
        await asyncio.sleep(0.5)  # one more commit interval
        assert m.kafka_assigned._value.get() == 3
        assert m.kafka_consumed.labels(topic)._value.get() == expected + len(poison)  # frames + EOS + poison
        assert m.kafka_commits._value.get() >= 1 and m.kafka_commit_failures._value.get() == 0
    verdicts = await read_topic(broker.bootstrap, cfg.verdict_topic, until=lambda r: len(r) >= expected)
    assert len(verdicts) == expected
    events = [json.loads(r.value) for r in verdicts]
    assert len({e["id"] for e in events}) == expected
    assert all(r.key.decode() == e["stream_id"] for r, e in zip(verdicts, events))
    for s in streams:
        seqs = sorted(e["seq_last"] for e in events if e["stream_id"] == s and e["event"] == "update")
        assert seqs == list(range(n_per_stream + 3)), s
        assert sum(1 for e in events if e["stream_id"] == s and e["event"] == "end") == 1
    dl = await read_topic(broker.bootstrap, cfg.dead_letter_topic, until=lambda r: len(r) >= len(poison))
    reasons = sorted(dict(r.headers)[contract.H_DLQ_REASON].decode() for r in dl)
    assert reasons == sorted(x[3] for x in poison)
    for r in dl:
        h = dict(r.headers)
        assert h[contract.H_DLQ_TOPIC].decode() == topic
        assert int(h[contract.H_DLQ_OFFSET]) >= 0 and int(h[contract.H_DLQ_PARTITION]) in range(3)
    assert src.dead_letters == len(poison)
    assert m.kafka_dead_letters.labels("content_mismatch")._value.get() == 1
    # every offset, poison included, is committed
    # (Tansu 0.6 under-reports ListOffsets(latest) by one after multi-record batches: use the records)
    records = await read_topic(broker.bootstrap, topic)
    assert len(records) == len(streams) * (n_per_stream + 3 + 1) + len(poison)
    last = {}
    for r in records:
        last[r.partition] = max(last.get(r.partition, -1), r.offset)
    committed = await _committed(broker.bootstrap, cfg.group_id, topic, 3)
    assert {p: o for p, o in committed.items() if o is not None} == {p: o + 1 for p, o in last.items()}


async def test_stale_frames_dropped_counted_and_committed(broker):
    cfg = _cfg(broker.bootstrap, "stale", freshness_budget_s=30.0)
    topic = cfg.frames_topics[0]
    await create_topics(broker.bootstrap, {topic: 1})
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await p.start()
    try:
        for i in range(4):  # captured an hour ago
            k, v, h = contract.encode_frame("old", i, np.zeros((16, 16, 3), np.uint8), captured_at=time.time() - 3600)
            await p.send_and_wait(topic, v, key=k, headers=h)
        await produce_frames(p, topic, "fresh", _frames(3), end_of_stream=False)
    finally:
        await p.stop()
    async with harness(cfg) as (src, pipe, extra, m):
        await _wait(lambda: len(extra.events) >= 3 and src.outstanding == 0, 60, "fresh verdicts")
        await asyncio.sleep(0.5)
    assert {e.stream_id for e in extra.events} == {"fresh"}
    assert src.stale == 4
    assert m.frames_dropped.labels("old", "stale")._value.get() == 4
    assert (await _committed(broker.bootstrap, cfg.group_id, topic, 1))[0] == 7


async def test_backpressure_pauses_but_keeps_membership(broker):
    cfg = _cfg(broker.bootstrap, "bp", intake_high=6, intake_low=2, max_poll_records=4)
    topic = cfg.frames_topics[0]
    await create_topics(broker.bootstrap, {topic: 2})
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await p.start()
    try:
        for s in ("s1", "s2"):
            await produce_frames(p, topic, s, _frames(30), end_of_stream=False)
    finally:
        await p.stop()
    max_out = 0
    paused_seen = 0
    async with harness(cfg, delay_s=0.01, capacity=2) as (src, pipe, extra, m):
        loop = asyncio.get_running_loop()
        end = loop.time() + 90
        while len(extra.events) < 60 and loop.time() < end:
            max_out = max(max_out, src.outstanding)
            paused_seen = max(paused_seen, int(m.kafka_paused._value.get()))
            await asyncio.sleep(0.005)
        rebalances = m.kafka_rebalances._value.get()
    assert len(extra.events) == 60
    assert paused_seen >= 1, "partitions were never paused"
    assert max_out <= cfg.intake_high + cfg.max_poll_records  # bounded intake (one batch past the mark at most)
    assert rebalances == 1  # only the final stop; pausing never made the consumer leave the group


async def test_consumer_killed_mid_stream_no_verdict_missing(broker):
    """SIGKILL a consumer process mid-stream, start another: every verdict id arrives (dupes identical)."""
    cfg = _cfg(broker.bootstrap, "kill")
    topic = cfg.frames_topics[0]
    await create_topics(broker.bootstrap, {topic: 2})
    streams, n = ["k1", "k2", "k3"], 25
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await p.start()
    try:
        for s in streams:
            await produce_frames(p, topic, s, _frames(n), end_of_stream=True)
    finally:
        await p.stop()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "tests.kafka_worker", broker.bootstrap, cfg.group_id, topic, cfg.verdict_topic,
            "--delay", "0.05"]
    first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        seen = await read_topic(broker.bootstrap, cfg.verdict_topic, until=lambda r: len(r) >= 15, timeout_s=90)
        assert len(seen) >= 15
        first.kill()  # no goodbye: no final commit, no leave-group
        first.wait(10)
        killed_after = len(await read_topic(broker.bootstrap, cfg.verdict_topic, idle_s=0.5))
        second = subprocess.Popen(args[:-1] + ["0"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        try:
            expected = len(streams) * (n + 1)
            ids: dict[str, str] = {}

            def all_ids(recs) -> bool:
                for r in recs:
                    ids.setdefault(json.loads(r.value)["id"], r.value.decode())
                return len(ids) >= expected

            recs = await read_topic(broker.bootstrap, cfg.verdict_topic, until=all_ids, timeout_s=120)
        finally:
            second.terminate()
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    assert killed_after < expected, "the first consumer finished before it was killed"
    assert len(ids) == expected
    # duplicates (re-processed after the crash) carry identical ids and identical content
    for r in recs:
        e = json.loads(r.value)
        assert json.loads(ids[e["id"]])["seq_last"] == e["seq_last"]
    per_stream = {s: sorted(json.loads(v)["seq_last"] for v in ids.values()
                            if json.loads(v)["stream_id"] == s and json.loads(v)["event"] == "update")
                  for s in streams}
    assert all(per_stream[s] == list(range(n)) for s in streams)


async def test_transactional_mode_refused_clearly_without_broker_support(broker):
    """Tansu 0.6 (memory) grants no producer ids: transactional mode must fail at start, clearly."""
    from daemon.sinks.kafka import KafkaTransactions, broker_supports_idempotence

    cfg = _cfg(broker.bootstrap, "txn", transactional=True, transactional_id="fw-test-txn")
    assert await broker_supports_idempotence(cfg) is False
    sink = KafkaVerdictSink(cfg, Metrics(), KafkaTransactions(cfg))
    with pytest.raises(RuntimeError, match="transactions"):
        await sink.start()


def test_cli_produce_and_verdicts_tools(broker, sample_clip, capsys):
    """The ``produce`` and ``verdicts`` subcommands against the broker (sync: they run their own loop)."""
    import argparse

    from daemon.kafka import tools

    rc = tools.main(["produce", str(sample_clip), "--topic", "cli.frames", "--stream-id", "cli-cam",
                     "--bootstrap", broker.bootstrap, "--max-frames", "5", "--content-type", "image/webp"])
    assert rc == 0
    recs = asyncio.run(read_topic(broker.bootstrap, "cli.frames", until=lambda r: len(r) >= 6))
    decoded = [contract.decode(r.key, r.value, r.headers) for r in recs]
    assert [f.seq for f in decoded[:5]] == list(range(5)) and decoded[0].image.shape == (360, 640, 3)
    assert decoded[5] == contract.EndOfStream("cli-cam", 4)

    async def put_verdicts():
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await p.start()
        for i in range(3):
            await p.send_and_wait("cli.verdicts", json.dumps({"id": f"e{i}"}).encode(), key=b"cli-cam")
        await p.stop()

    asyncio.run(put_verdicts())
    capsys.readouterr()
    assert tools.main(["verdicts", "--topic", "cli.verdicts", "--bootstrap", broker.bootstrap,
                       "--from-beginning", "--max", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["e0", "e1", "e2"]
    ap = argparse.ArgumentParser()
    tools.add_parsers(ap.add_subparsers(dest="cmd"))
    assert ap.parse_args(["verdicts", "--topic", "t"]).func is tools._cmd_verdicts
    assert tools.main(["produce", "/nonexistent.mp4", "--topic", "t", "--stream-id", "s"]) == 2


async def test_source_waits_for_a_broker_that_is_not_up_yet(tmp_path):
    """Started before any broker listens: the source retries (``reconnecting``), then consumes."""
    from tests.kafka_broker import TansuBroker, free_port, tansu_binary

    binary = tansu_binary()
    if binary is None:
        pytest.skip("tansu binary not found")
    late = TansuBroker(binary, free_port(), tmp_path / "late.log")
    cfg = _cfg(late.bootstrap, "late", state_topic=None, dead_letter_topic=None)
    m = Metrics()
    sink = ListSink()
    pipe = MiniPipeline([sink])
    pipe.start()
    src = KafkaFrameSource(cfg, m, daemon=pipe)
    task = asyncio.create_task(src.run(pipe.emit))
    try:
        await _wait(lambda: src.state.value == "reconnecting", 30, "the reconnecting state")
        await asyncio.to_thread(late._spawn, 20.0)
        await create_topics(late.bootstrap, {cfg.frames_topics[0]: 1})
        p = AIOKafkaProducer(bootstrap_servers=late.bootstrap, acks="all")
        await p.start()
        await produce_frames(p, cfg.frames_topics[0], "late-cam", _frames(4), end_of_stream=False)
        await p.stop()
        await _wait(lambda: len(sink.events) >= 4, 60, "verdicts from the late broker")
        assert src.state.value == "running"
    finally:
        await src.stop()
        await asyncio.wait_for(task, 60)
        await pipe.stop()
        late.stop()
    assert sorted(e.seq_last for e in sink.events) == [0, 1, 2, 3]


async def test_credentials_never_in_logs_or_metrics(broker, caplog):
    """A SASL source (Tansu runs without authentication here) logs and exports no secret."""
    import logging

    from prometheus_client import generate_latest

    secret = "s3cr3t-Pa55w0rd"
    cfg = _cfg(broker.bootstrap, "sasl", state_topic=None, dead_letter_topic=None, request_timeout_ms=5000,
               security={"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "svc",
                         "sasl_password": secret})
    m = Metrics()
    pipe = MiniPipeline([ListSink()])
    pipe.start()
    src = KafkaFrameSource(cfg, m, daemon=pipe)
    caplog.set_level(logging.DEBUG)
    task = asyncio.create_task(src.run(pipe.emit))
    await asyncio.sleep(4.0)
    await src.stop()
    await asyncio.wait_for(task, 60)
    await pipe.stop()
    text = caplog.text + repr(cfg) + cfg.model_dump_json() + (src.last_error or "")
    assert secret not in text and secret not in generate_latest(m.registry).decode()
    assert len(caplog.records) > 0  # the source did log (state changes at least)


class _FailingOnceTransactions:
    """Stands in for KafkaTransactions (Tansu has no transactions): the first commit fails like an
    aborted transaction; later ones commit the offsets through the source's consumer."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.fail_next = 1
        self.commits: list[dict] = []
        self.source: KafkaFrameSource | None = None
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self.producer is None:
            self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await self.producer.start()

    async def send_many(self, records) -> None:
        futs = [await self.producer.send(t, v, key=k) for t, k, v in records]
        await asyncio.gather(*futs)

    async def commit(self, offsets, group_id) -> None:
        from aiokafka.errors import KafkaError

        if self.fail_next:
            self.fail_next -= 1
            raise KafkaError("injected transaction abort")
        await self.source._consumer.commit(offsets)
        self.commits.append(dict(offsets))

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None


async def test_failed_transaction_commit_rewinds_and_reprocesses(broker):
    """Transactional mode: a failed commit rewinds to the committed offsets; nothing is lost."""
    cfg = _cfg(broker.bootstrap, "txfail", transactional=True, state_topic=None, commit_interval_s=0.3)
    topic = cfg.frames_topics[0]
    await create_topics(broker.bootstrap, {topic: 1})
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await p.start()
    await produce_frames(p, topic, "tx-cam", _frames(8), end_of_stream=False)
    await p.stop()
    txn = _FailingOnceTransactions(broker.bootstrap)
    m = Metrics()
    sink = KafkaVerdictSink(cfg, m, transactions=txn)
    await sink.start()
    extra = ListSink()
    pipe = MiniPipeline([sink, extra])
    pipe.start()
    src = KafkaFrameSource(cfg, m, daemon=pipe, transactions=txn)
    txn.source = src
    task = asyncio.create_task(src.run(pipe.emit))
    try:
        await _wait(lambda: txn.commits and max(o for c in txn.commits for o in c.values()) == 8, 60,
                    "a successful commit of all 8 frames")
    finally:
        await src.stop()
        await asyncio.wait_for(task, 60)
        await pipe.stop()
    assert m.kafka_commit_failures._value.get() == 1
    seqs = [e.seq_last for e in extra.events]
    assert sorted(set(seqs)) == list(range(8))
    assert len(seqs) > 8  # the frames of the aborted transaction were processed again (same ids)
    assert len({e.id for e in extra.events}) == 8
    assert (await _committed(broker.bootstrap, cfg.group_id, topic, 1))[0] == 8
