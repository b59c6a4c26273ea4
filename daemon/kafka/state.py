"""Per-stream temporal state snapshots in a compacted Kafka topic (key = stream id).

When partitions are revoked, the Kafka source snapshots each of their streams' state
(``Daemon.snapshot_stream``) here; the consumer that gets those partitions next reads the topic up
to its end and restores a stream's state when that stream's first frame arrives. The topic is
created with ``cleanup.policy=compact`` when missing, so only the latest snapshot per stream is
kept (a tombstone, i.e. an empty value, deletes one).

This store keeps a local cache of the whole topic: a group-less consumer assigned to every state
partition reads from the beginning once and then incrementally (:meth:`StateStore.catch_up`).

Snapshot values are JSON: ``{"v": 1, "stream_id": ..., "saved_at": ..., "state": {...}}``; numpy
arrays and scalars in the state become lists and numbers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from daemon.kafka.clients import start_or_close
from daemon.kafka.config import KafkaConfig
from daemon.metrics import Metrics

log = logging.getLogger(__name__)
SNAPSHOT_VERSION = 1


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy arrays and scalars
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"state value of type {type(o).__name__} is not JSON-serialisable")


def encode_snapshot(stream_id: str, state: dict[str, Any]) -> bytes:
    env = {"v": SNAPSHOT_VERSION, "stream_id": stream_id, "saved_at": time.time(), "state": state}
    return json.dumps(env, default=_json_default, separators=(",", ":")).encode()


def decode_snapshot(value: bytes) -> dict[str, Any] | None:
    try:
        env = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(env, dict) or env.get("v") != SNAPSHOT_VERSION or not isinstance(env.get("state"), dict):
        return None
    return env["state"]


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
        self._cache: dict[str, dict[str, Any]] = {}
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
            enable_auto_commit=False, auto_offset_reset="earliest", **self.cfg.common_kwargs(),
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
                            st = decode_snapshot(r.value)
                            if st is None:
                                log.warning("ignoring an unreadable state snapshot for stream %s", sid)
                            else:
                                self._cache[sid] = st
                else:
                    log.warning("state topic %s: catch-up stopped after %.0f s", self.topic, timeout_s)
            except KafkaError as e:
                log.warning("state topic %s: catch-up failed: %s", self.topic, type(e).__name__)
        return n

    def get(self, stream_id: str) -> dict[str, Any] | None:
        return self._cache.get(stream_id)

    async def save(self, stream_id: str, state: dict[str, Any]) -> bool:
        assert self._producer is not None, "StateStore.start() first"
        value = encode_snapshot(stream_id, state)
        try:
            await self._producer.send_and_wait(self.topic, value, key=stream_id.encode())
        except KafkaError as e:
            log.warning("could not save the state of stream %s: %s", stream_id, type(e).__name__)
            return False
        self._cache[stream_id] = json.loads(value)["state"]  # (kafka_state_ops is counted by the daemon)
        return True

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
