"""Per-stream state checkpoints in a compacted Kafka topic (key = stream id), and the typed
interface between the Kafka source and the pipeline that holds the streams' state.

**Checkpoints.** Before the Kafka source commits an offset of a partition, every stream of that
partition whose records below that offset are not yet covered gets a *checkpoint*: the stream's
whole state (tracker, temporal, fusion with the last emitted verdict of each track, the best-crop
boxes), taken at a frame boundary, together with ``offset`` = the offset of the stream's last
record whose effect the state contains (every record of the stream up to it is done: its verdicts
were delivered). The checkpoint is written (``acks=all``) before the offset commit, and a commit
never passes the first record of a stream that no saved checkpoint covers. So after a crash, at
any point, the committed offset C and the stored checkpoint (offset X) of each stream satisfy:
the state contains every record of the stream below C, and records up to X are already in it.
A restarted member restores the checkpoint when the stream's first record arrives, skips the
stream's redelivered records ``<= X`` (their verdicts are out) and processes the rest on top of
the restored state: exactly where the commits say. An end-of-stream record for a stream that was
never in this member's memory closes its tracks from the restored state.

The topic is created with ``cleanup.policy=compact`` when missing, so only the latest checkpoint
per stream is kept (a tombstone, an empty value, deletes one; the source never writes tombstones:
the checkpoint after an end-of-stream keeps the stream's track-id counter, so ids are not reused
when the stream id comes back). This store keeps a local cache of the whole topic: a group-less
consumer assigned to every state partition reads from the beginning once and then incrementally
(:meth:`StateStore.catch_up`).

Values are JSON: ``{"v": 2, "stream_id", "saved_at", "topic", "partition", "offset", "state"}``
(version 1, written before checkpoints existed, has no position: it is restored, nothing is
skipped). Numpy arrays and scalars in the state become lists and numbers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from daemon.kafka.clients import start_or_close
from daemon.kafka.config import KafkaConfig
from daemon.metrics import Metrics

log = logging.getLogger(__name__)
SNAPSHOT_VERSION = 2
_READABLE_VERSIONS = (1, 2)


@runtime_checkable
class StreamStateHost(Protocol):
    """What the Kafka source needs from the pipeline that holds per-stream state (the daemon).

    The source calls these from the event loop. ``snapshot_stream`` is called only at a frame
    boundary of that stream: when none of its frames is in the pipeline, or from inside
    ``frame.done()`` of the stream's oldest outstanding frame (the pipeline calls ``done()``
    after that frame's verdicts were delivered and before it starts analysing the next frame of
    the stream), so the state it returns contains exactly the frames done so far.
    """

    async def drain_stream(self, stream_id: str) -> None:
        """Return when no frame of the stream is in the pipeline any more."""

    def snapshot_stream(self, stream_id: str) -> dict[str, Any] | None:
        """The stream's state (JSON-serialisable); falsy when the pipeline holds none."""

    def restore_stream(self, stream_id: str, state: dict[str, Any]) -> None:
        """Replace the stream's state with one from :meth:`snapshot_stream`."""

    def forget_stream(self, stream_id: str) -> None:
        """Drop the stream's state without end events (partition revoked; its frames were abandoned)."""


@dataclass(frozen=True)
class Checkpoint:
    """A stored stream state and the position it covers (``offset`` None: unknown, version 1)."""

    stream_id: str
    state: dict[str, Any]
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def covered_to(self, tp: TopicPartition) -> int:
        """Highest offset of ``tp`` whose record this state already contains (-1: none known)."""
        if self.offset is None or self.topic != tp.topic or self.partition != tp.partition:
            return -1
        return self.offset


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy arrays and scalars
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"state value of type {type(o).__name__} is not JSON-serialisable")


def encode_checkpoint(stream_id: str, state: dict[str, Any] | None, tp: TopicPartition | None = None,
                      offset: int | None = None) -> bytes:
    env = {"v": SNAPSHOT_VERSION, "stream_id": stream_id, "saved_at": time.time(),
           "topic": None if tp is None else tp.topic, "partition": None if tp is None else tp.partition,
           "offset": offset, "state": state or {}}
    return json.dumps(env, default=_json_default, separators=(",", ":")).encode()


def encode_snapshot(stream_id: str, state: dict[str, Any]) -> bytes:
    """A checkpoint without a position (restored, nothing skipped)."""
    return encode_checkpoint(stream_id, state)


def decode_checkpoint(value: bytes, stream_id: str | None = None) -> Checkpoint | None:
    try:
        env = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(env, dict) or env.get("v") not in _READABLE_VERSIONS or not isinstance(env.get("state"), dict):
        return None
    sid = stream_id if stream_id is not None else str(env.get("stream_id", ""))
    if env["v"] == 1:
        return Checkpoint(sid, env["state"])
    off, part = env.get("offset"), env.get("partition")
    return Checkpoint(sid, env["state"], env.get("topic"), None if part is None else int(part),
                      None if off is None else int(off))


def decode_snapshot(value: bytes) -> dict[str, Any] | None:
    """Just the state of a stored checkpoint (None when unreadable)."""
    cp = decode_checkpoint(value)
    return None if cp is None else cp.state


async def ensure_topic(cfg: KafkaConfig, topic: str, partitions: int = 1, configs: dict[str, str] | None = None) -> None:
    """Create ``topic`` if it does not exist (best effort: a broker that forbids it logs a warning)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(client_id=f"{cfg.client_id}-admin", **cfg.common_kwargs())
    try:
        await admin.start()
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {})])
    except TopicAlreadyExistsError:
        pass
    except (KafkaError, OSError) as e:
        log.warning("could not create topic %s: %s", topic, type(e).__name__)
    finally:
        await admin.close()


class StateStore:
    def __init__(self, cfg: KafkaConfig, metrics: Metrics | None = None, producer: AIOKafkaProducer | None = None):
        if not cfg.state_topic:
            raise ValueError("kafka state_topic is not set")
        self.cfg = cfg
        self.topic: str = cfg.state_topic
        self.metrics = metrics
        self._producer = producer
        self._own_producer = producer is None
        self._consumer: AIOKafkaConsumer | None = None
        self._cache: dict[str, Checkpoint] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await ensure_topic(self.cfg, self.topic, 1, {"cleanup.policy": "compact"})
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                client_id=f"{self.cfg.producer_client_id or self.cfg.client_id}-state", acks="all",
                **self.cfg.common_kwargs(),
            )
            await start_or_close(self._producer)
        self._consumer = AIOKafkaConsumer(
            client_id=f"{self.cfg.consumer_client_id or self.cfg.client_id}-state", group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed" if self.cfg.transactional else "read_uncommitted",
            **self.cfg.common_kwargs(),
        )
        await start_or_close(self._consumer)
        await self._assign()

    async def _assign(self) -> bool:
        assert self._consumer is not None
        parts = self._consumer.partitions_for_topic(self.topic)
        if not parts:
            await self._consumer._client.force_metadata_update()  # noqa: SLF001 (no public refresh)
            parts = self._consumer.partitions_for_topic(self.topic)
        if not parts:
            return False
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        if set(tps) != self._consumer.assignment():
            self._consumer.assign(tps)
            await self._consumer.seek_to_beginning(*tps)
        return True

    async def catch_up(self, timeout_s: float = 10.0) -> int:
        """Read new snapshots up to the topic's current end (bounded). Returns the records read."""
        if self._consumer is None:
            return 0
        n = 0
        async with self._lock:
            try:
                if not await self._assign():
                    return 0
                tps = list(self._consumer.assignment())
                end = await self._consumer.end_offsets(tps)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout_s
                while loop.time() < deadline:
                    positions = [await self._consumer.position(tp) for tp in tps]
                    if all(pos >= end[tp] for pos, tp in zip(positions, tps)):
                        break
                    batch = await self._consumer.getmany(timeout_ms=200)
                    for recs in batch.values():
                        for r in recs:
                            n += 1
                            if r.key is None:
                                continue
                            sid = r.key.decode("utf-8", "replace")
                            if not r.value:
                                self._cache.pop(sid, None)
                                continue
                            cp = decode_checkpoint(r.value, sid)
                            if cp is None:
                                log.warning("ignoring an unreadable state checkpoint for stream %s", sid)
                            else:
                                self._cache[sid] = cp
                else:
                    log.warning("state topic %s: catch-up stopped after %.0f s", self.topic, timeout_s)
            except KafkaError as e:
                log.warning("state topic %s: catch-up failed: %s", self.topic, type(e).__name__)
        return n

    def get(self, stream_id: str) -> Checkpoint | None:
        return self._cache.get(stream_id)

    def remember(self, stream_id: str, value: bytes) -> None:
        """Put a checkpoint written elsewhere (inside a committed transaction) into the cache."""
        cp = decode_checkpoint(value, stream_id)
        if cp is not None:
            self._cache[stream_id] = cp

    async def save_encoded(self, stream_id: str, value: bytes) -> bool:
        """Write one encoded checkpoint and wait for ``acks=all``; False (logged) if that failed.

        One record per request on purpose: Tansu 0.6 under-reports ``ListOffsets(latest)`` after
        multi-record batches, and a reader that stops one record short would miss a checkpoint."""
        assert self._producer is not None, "StateStore.start() first"
        try:
            await self._producer.send_and_wait(self.topic, value, key=stream_id.encode())
        except KafkaError as e:
            log.warning("could not save the state of stream %s: %s", stream_id, type(e).__name__)
            return False
        self.remember(stream_id, value)
        return True

    async def save(self, stream_id: str, state: dict[str, Any], tp: TopicPartition | None = None,
                   offset: int | None = None) -> bool:
        return await self.save_encoded(stream_id, encode_checkpoint(stream_id, state, tp, offset))

    async def delete(self, stream_id: str) -> None:
        assert self._producer is not None
        try:
            await self._producer.send_and_wait(self.topic, None, key=stream_id.encode())
        except KafkaError as e:
            log.warning("could not delete the state of stream %s: %s", stream_id, type(e).__name__)
        self._cache.pop(stream_id, None)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._own_producer and self._producer is not None:
            await self._producer.stop()
            self._producer = None
