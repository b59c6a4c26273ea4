"""Kafka verdict sink: one record per :class:`VerdictEvent`, key = stream id, value = ``to_json()``.

The producer uses ``acks=all`` and idempotence when the broker grants producer ids (``idempotence:
auto`` probes with an ``InitProducerId`` request first: Tansu 0.6 with memory storage answers with
an error, so the sink falls back to plain ``acks=all`` and logs it once). ``emit`` returns only
after every record is acknowledged, so the frames behind those events are marked done (and their
offsets committed) only after the verdicts are in Kafka.

Transactional mode (``transactional: true``): sends go into the open transaction of a shared
:class:`KafkaTransactions`, which the Kafka source commits together with the consumed offsets.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from daemon.events import VerdictEvent
from daemon.kafka.clients import start_or_close
from daemon.kafka.config import KafkaConfig
from daemon.metrics import Metrics
from daemon.sinks.base import Sink

log = logging.getLogger(__name__)


async def broker_supports_idempotence(cfg: KafkaConfig, timeout_s: float = 10.0) -> bool:
    """Ask the broker for a producer id (what an idempotent producer does first)."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.transaction import InitProducerIdRequest

    client = AIOKafkaClient(client_id=f"{cfg.client_id}-probe", **cfg.common_kwargs())
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        node = client.get_random_node()
        resp = await asyncio.wait_for(client.send(node, InitProducerIdRequest(None, 60000)), timeout_s)
        return resp.error_code == 0
    except (KafkaError, OSError, asyncio.TimeoutError) as e:
        log.info("idempotence probe failed (%s): assuming unsupported", type(e).__name__)
        return False
    finally:
        await client.close()


async def start_producer(cfg: KafkaConfig, purpose: str, **extra: Any) -> tuple[AIOKafkaProducer, bool]:
    """A started ``acks=all`` producer; idempotent if configured/supported. Returns (producer, idempotent)."""
    idem = cfg.idempotence == "on" or (cfg.idempotence == "auto" and await broker_supports_idempotence(cfg))
    if cfg.idempotence == "auto" and not idem:
        log.warning("kafka broker does not grant producer ids: %s producer runs with acks=all, no idempotence", purpose)
    p = AIOKafkaProducer(
        client_id=f"{cfg.producer_client_id or cfg.client_id}-{purpose}", acks="all", enable_idempotence=idem,
        max_request_size=max(1_048_576, cfg.max_payload_bytes + 65536), **cfg.common_kwargs(), **extra,
    )
    await start_or_close(p)
    return p, idem


class KafkaTransactions:
    """One transactional producer shared by the verdict sink and the Kafka source.

    The sink sends inside the open transaction; the source calls :meth:`commit` with the offsets
    of done frames, which adds them to the transaction, commits it and opens the next one. A frame
    is done only after its verdicts were sent, so the offsets committed in a transaction never
    run ahead of the verdicts in it or in earlier ones. Needs a broker with transactions (Tansu
    0.6 memory storage has none: :meth:`start` then fails with a clear error).
    """

    def __init__(self, cfg: KafkaConfig):
        self.cfg = cfg
        self.producer: AIOKafkaProducer | None = None
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        if self.producer is not None:
            return
        if not await broker_supports_idempotence(self.cfg):
            raise RuntimeError("kafka transactional mode needs a broker with transactions (InitProducerId failed)")
        p = AIOKafkaProducer(
            client_id=f"{self.cfg.producer_client_id or self.cfg.client_id}-txn", acks="all",
            enable_idempotence=True, transactional_id=self.cfg.effective_transactional_id(),
            **self.cfg.common_kwargs(),
        )
        await start_or_close(p)
        await p.begin_transaction()
        self.producer = p

    async def send_many(self, records: list[tuple[str, bytes, bytes]]) -> None:
        assert self.producer is not None, "KafkaTransactions.start() first"
        async with self.lock:
            futs = [await self.producer.send(t, v, key=k) for t, k, v in records]
            await asyncio.gather(*futs)

    async def commit(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        assert self.producer is not None
        async with self.lock:
            try:
                if offsets:
                    await self.producer.send_offsets_to_transaction(offsets, group_id)
                await self.producer.commit_transaction()
            except KafkaError:
                await self.producer.abort_transaction()
                raise
            finally:
                await self.producer.begin_transaction()

    async def close(self) -> None:
        p, self.producer = self.producer, None
        if p is not None:
            try:
                await p.commit_transaction()
            except KafkaError as e:
                log.warning("final transaction commit failed: %s", type(e).__name__)
            await p.stop()


class KafkaVerdictSink(Sink):
    name = "kafka"

    def __init__(self, cfg: KafkaConfig, metrics: Metrics | None = None, transactions: KafkaTransactions | None = None,
                 retries: int = 3):
        self.cfg = cfg
        self.metrics = metrics
        self.txn = transactions
        self.retries = retries
        self.topic = cfg.verdict_topic
        self._producer: AIOKafkaProducer | None = None
        self.idempotent = False

    async def start(self) -> None:
        if self.cfg.transactional:
            if self.txn is None:
                raise ValueError("kafka transactional mode: give the sink the source's KafkaTransactions")
            await self.txn.start()
            return
        self._producer, self.idempotent = await start_producer(self.cfg, "verdicts")

    async def emit(self, events: list[VerdictEvent]) -> None:
        if not events:
            return
        records = [(self.topic, e.stream_id.encode(), e.to_json().encode()) for e in events]
        for attempt in range(1, self.retries + 1):
            try:
                if self.txn is not None and self.cfg.transactional:
                    await self.txn.send_many(records)
                else:
                    assert self._producer is not None, "KafkaVerdictSink.start() first"
                    futs = [await self._producer.send(t, v, key=k) for t, k, v in records]
                    await asyncio.gather(*futs)
                if self.metrics:
                    self.metrics.sink_events.labels(self.name).inc(len(events))
                return
            except KafkaError as e:
                log.warning("kafka sink: delivery attempt %d/%d failed: %s", attempt, self.retries, type(e).__name__)
                if attempt < self.retries:
                    await asyncio.sleep(min(2.0, 0.25 * 2 ** attempt))
        if self.metrics:
            self.metrics.sink_errors.labels(self.name).inc()
        log.error("kafka sink: gave up on %d events for topic %s", len(events), self.topic)

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    async def close(self) -> None:
        p, self._producer = self._producer, None
        if p is not None:
            await p.flush()
            await p.stop()


_SHARED_TXN: dict[str, KafkaTransactions] = {}


def shared_transactions(cfg: KafkaConfig) -> KafkaTransactions:
    """The one :class:`KafkaTransactions` per transactional id in this process (source + sink share it)."""
    tid = cfg.effective_transactional_id()
    if tid not in _SHARED_TXN:
        _SHARED_TXN[tid] = KafkaTransactions(cfg)
    return _SHARED_TXN[tid]


def build_kafka_sink(cfg: KafkaConfig, metrics: Metrics | None = None) -> KafkaVerdictSink:
    """Used by :func:`daemon.sinks.factory.build_sinks` for ``sinks.kafka: true``."""
    return KafkaVerdictSink(cfg, metrics, shared_transactions(cfg) if cfg.transactional else None)


KafkaSink = KafkaVerdictSink
