"""Checkpoint bookkeeping of the Kafka source and the checkpoint record format (no broker)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
import pytest
from aiokafka import TopicPartition

from daemon.kafka import contract
from daemon.kafka.state import Checkpoint, StreamStateHost, decode_checkpoint, decode_snapshot, encode_checkpoint
from daemon.metrics import Metrics
from daemon.sources.kafka import KafkaFrameSource, _Partition, _Stream
from tests.kafka_broker import kafka_test_config
from tests.kafka_harness import MiniPipeline

TP = TopicPartition("t.frames", 1)


def _two_streams() -> tuple[_Partition, _Stream, _Stream]:
    p = _Partition(TP)
    x, y = _Stream("x", p), _Stream("y", p)
    p.streams = {"x": x, "y": y}
    for o in range(6):  # x: 0, 2, 4; y: 1, 3, 5
        p.add(o)
        (x if o % 2 == 0 else y).track(o, checkpointing=True)
    return p, x, y


def test_commit_never_passes_a_record_no_saved_checkpoint_covers():
    p, x, y = _two_streams()
    assert p.commit_bound() is None  # nothing done
    for o in range(6):
        p.complete(o)
        (x if o % 2 == 0 else y).complete(o)
    assert p.commit_to == 6
    assert p.commit_bound() == 0  # done, but no checkpoint saved yet
    x.saved(4)
    assert p.commit_bound() == 1  # y's record 1 is not covered
    assert p.commit_bound({y: 3}) == 5  # with y's checkpoint about to be committed with the offsets
    y.saved(5)
    assert p.commit_bound() == 6 and not x.uncovered and not y.uncovered


def test_the_done_prefix_bounds_the_commit_even_when_covered():
    p, x, y = _two_streams()
    p.add(6)  # fetched, not dispatched yet (no stream known)
    for o in range(6):
        p.complete(o)
        (x if o % 2 == 0 else y).complete(o)
    x.saved(4)
    y.saved(5)
    assert p.commit_bound() == 6  # record 6 is not done


def test_stream_boundary_only_when_the_oldest_outstanding_record_completes():
    _, x, _ = _two_streams()
    assert x.complete(2) is False  # record 0 still in the pipeline: not a boundary
    assert x.done_to == -1
    assert x.complete(0) is True and x.done_to == 2
    assert not x.idle
    assert x.complete(4) is True and x.idle and x.done_to == 4
    assert x.complete(4) is False  # twice: ignored


def test_checkpoint_record_round_trip_and_version_1():
    v = encode_checkpoint("cam", {"tracker": {"next_id": 7}}, TP, 41)
    cp = decode_checkpoint(v)
    assert cp == Checkpoint("cam", {"tracker": {"next_id": 7}}, "t.frames", 1, 41)
    assert cp.covered_to(TP) == 41
    assert cp.covered_to(TopicPartition("t.frames", 0)) == -1  # another partition: nothing is skipped
    assert decode_snapshot(v) == {"tracker": {"next_id": 7}}
    old = json.dumps({"v": 1, "stream_id": "cam", "saved_at": 0, "state": {"a": 1}}).encode()
    assert decode_checkpoint(old).covered_to(TP) == -1 and decode_snapshot(old) == {"a": 1}
    assert decode_checkpoint(b"not json") is None and decode_checkpoint(b'{"v": 9, "state": {}}') is None


def test_the_source_takes_only_a_typed_state_host():
    cfg = kafka_test_config("127.0.0.1:9", "typed")
    pipe = MiniPipeline([])
    assert isinstance(pipe, StreamStateHost)
    src = KafkaFrameSource(cfg, Metrics(), daemon=pipe)
    assert src.daemon is pipe and not hasattr(src, "attach")
    with pytest.raises(TypeError, match="StreamStateHost"):
        KafkaFrameSource(cfg, Metrics(), daemon=object())


class _SlowStore:
    """A state store whose catch-up reads the checkpoint only when the test lets it."""

    topic = "t.state"

    def __init__(self, cp: Checkpoint):
        self.cp, self.cache, self.go = cp, {}, asyncio.Event()

    async def catch_up(self, timeout_s: float = 10.0) -> int:
        await self.go.wait()
        self.cache[self.cp.stream_id] = self.cp
        return 1

    def get(self, stream_id: str) -> Checkpoint | None:
        return self.cache.get(stream_id)


async def test_a_record_fetched_during_the_assign_catch_up_waits_for_its_checkpoint():
    """aiokafka's fetcher can return a newly assigned partition's records while on_partitions_assigned
    still reads the state topic: the stream's first record must wait for the checkpoint, not start afresh
    (the cause of test_b's 'two distinct start events' of track 1)."""
    cfg = kafka_test_config("127.0.0.1:9", "catchup")
    pipe = MiniPipeline([], tracks=True)
    src = KafkaFrameSource(cfg, Metrics(), daemon=pipe)
    state = {"next_id": 3, "track": 2, "first": 10, "frames": 2, "last_seq": 11}
    src._state = store = _SlowStore(Checkpoint("cam", state, TP.topic, TP.partition, 11))
    src._loop = asyncio.get_running_loop()
    emitted = []

    async def emit(frame):
        emitted.append(frame)
        return True

    assigning = asyncio.create_task(src._on_assigned({TP}))
    await asyncio.sleep(0)
    part = src._parts[TP]
    key, value, headers = contract.encode_frame("cam", 12, np.zeros((16, 16, 3), np.uint8))
    part.add(12)
    src._queue.append((part, SimpleNamespace(topic=TP.topic, partition=TP.partition, offset=12, key=key,
                                             value=value, headers=headers, timestamp=0)))
    src._wake.set()
    dispatcher = asyncio.create_task(src._dispatch(emit))
    try:
        await asyncio.sleep(0.3)  # the record is decoded and waits: no stream restored or started yet
        assert not emitted and "cam" not in part.streams and "cam" not in pipe.restored
        store.go.set()
        await asyncio.wait_for(assigning, 5)
        for _ in range(100):
            if emitted:
                break
            await asyncio.sleep(0.02)
        assert [f.seq for f in emitted] == [12]
        assert pipe.restored["cam"] == state and part.streams["cam"].saved_to == 11
    finally:
        dispatcher.cancel()
        await asyncio.gather(dispatcher, return_exceptions=True)
