"""Kafka frame source: a consumer-group member that feeds frames of many streams to the pipeline.

Message contract: :mod:`daemon.kafka.contract` (key = stream id, value = JPEG/PNG/WebP, headers).

Two tasks run while the source runs:

- the **poll loop** calls ``getmany`` all the time (so the consumer never leaves the group), puts
  records into a local intake queue, pauses every assigned partition when the intake (queued +
  in the pipeline, not yet done) reaches ``intake_high`` and resumes below ``intake_low``, and
  commits offsets every ``commit_interval_s``;
- the **dispatcher** decodes and validates records, sends bad ones to the dead-letter topic,
  drops stale ones (``frames_dropped{reason="stale"}``), restores a stream's temporal state on its
  first frame after an assignment, and awaits ``emit(frame)``.

Delivery is at-least-once: auto-commit is off; each record's offset is tracked per partition and
marked complete by ``Frame.on_done`` (called by the pipeline after the sinks delivered the
frame's verdicts, or when it dropped the frame). The committed offset is ``offset + 1`` of the
contiguous completed prefix. Dead letters, stale frames and control messages complete at once.

Rebalances (aiokafka: eager protocol only): on revoke, queued records of the revoked partitions
are abandoned (not committed, so the next owner reads them again), in-flight ones are drained with
a bound (``drain_timeout_s``, using ``daemon.drain_stream``), the completed prefix is committed, and
each stream's state is snapshotted to the state topic and forgotten. On assign, the state topic is
read up to its end; a stream's snapshot is restored when its first frame arrives.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from daemon.kafka import contract
from daemon.kafka.clients import start_or_close
from daemon.kafka.config import KafkaConfig
from daemon.kafka.state import StateStore
from daemon.metrics import Metrics
from daemon.sources.base import Emit, Source
from daemon.types import StreamState, end_marker

log = logging.getLogger("fakewatch.kafka")


@dataclass(eq=False)
class _Partition:
    """Offsets of one assigned partition: fetched, in flight, done. Replaced on every assignment."""

    tp: TopicPartition
    pending: dict[int, bool] = field(default_factory=dict)  # offset -> done, in fetch (= offset) order
    emitted: set[int] = field(default_factory=set)  # handed to the pipeline, not done yet
    commit_to: int | None = None  # offset + 1 of the contiguous done prefix
    committed: int | None = None
    last_fetched: int = -1
    first_fetched: int | None = None  # where this tracking began (the position at assignment)
    streams: set[str] = field(default_factory=set)
    revoked: bool = False

    def add(self, offset: int) -> None:
        self.pending[offset] = False
        self.last_fetched = offset
        if self.first_fetched is None:
            self.first_fetched = offset

    def complete(self, offset: int) -> bool:
        """Mark ``offset`` done; True if it was outstanding."""
        self.emitted.discard(offset)
        if self.pending.get(offset) is not False:
            return False
        self.pending[offset] = True
        while self.pending:
            first = next(iter(self.pending))
            if not self.pending[first]:
                break
            del self.pending[first]
            self.commit_to = first + 1
        return True

    @property
    def outstanding(self) -> int:
        return sum(1 for d in self.pending.values() if not d)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, src: "KafkaFrameSource"):
        self.src = src

    async def on_partitions_revoked(self, revoked):  # type: ignore[override]
        await self.src._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned):  # type: ignore[override]
        await self.src._on_assigned(set(assigned))


async def _maybe_await(x: Any) -> Any:
    return await x if inspect.isawaitable(x) else x


class KafkaFrameSource(Source):
    """Frames of many streams from a Kafka consumer group (each :class:`Frame` has its own stream id)."""

    def __init__(self, cfg: KafkaConfig, metrics: Metrics | None = None, *, daemon: Any = None,
                 source_id: str | None = None, transactions: Any = None):
        # live=False: emit awaits a full pipeline (backpressure -> pause) instead of dropping frames; Kafka
        # keeps what we do not read yet, and the freshness budget is what drops old frames.
        super().__init__(source_id or f"kafka:{cfg.group_id}", metrics or Metrics(), live=False)
        self.cfg = cfg
        self.daemon = daemon
        self.txn = transactions
        if cfg.transactional and transactions is None:
            from daemon.sinks.kafka import shared_transactions

            self.txn = shared_transactions(cfg)
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._state: StateStore | None = None
        self._parts: dict[TopicPartition, _Partition] = {}
        self._queue: deque[tuple[_Partition, Any]] = deque()
        self._wake = asyncio.Event()
        self._done_event = asyncio.Event()
        self._restored: set[str] = set()
        self._paused = False
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._last_commit = 0.0
        self._last_lag = 0.0
        self.dead_letters = 0  # counters mirrored for tests/benchmarks
        self.stale = 0
        self.commits = 0

    # public ------------------------------------------------------------------------------------
    def attach(self, daemon: Any) -> None:
        """Give the source the daemon whose rebalance hooks (drain/snapshot/restore/forget) it calls."""
        self.daemon = daemon

    @property
    def outstanding(self) -> int:
        return sum(p.outstanding for p in self._parts.values())

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._parts)

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def wait_stopped(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._stopped.wait(), timeout)

    # main ----------------------------------------------------------------------------------------
    async def run(self, emit: Emit) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        dispatcher: asyncio.Task | None = None
        try:
            if not await self._start_with_retry():
                return  # stopped before the broker answered
            self._set_state(StreamState.RUNNING, f"group {self.cfg.group_id}, topics {','.join(self.cfg.frames_topics)}")
            dispatcher = asyncio.create_task(self._dispatch(emit), name="kafka-dispatch")
            await self._poll_loop(dispatcher)
            self._set_state(StreamState.ENDED, "stopped")
        except asyncio.CancelledError:
            self._set_state(StreamState.ENDED, "cancelled")
            raise
        except Exception as e:  # noqa: BLE001 - one clear line, never a traceback with secrets
            self.last_error = f"{type(e).__name__}: {e}"
            self._count_error("kafka")
            self._set_state(StreamState.FAILED, self.last_error)
        finally:
            if dispatcher is not None:
                dispatcher.cancel()
                await asyncio.gather(dispatcher, return_exceptions=True)
            await asyncio.shield(self._shutdown())
            try:
                await emit(end_marker(self.stream_id))
            except Exception:  # noqa: BLE001
                pass
            self._stopped.set()

    async def _start_with_retry(self) -> bool:
        """Start the clients; while the brokers are unreachable, retry with backoff (``reconnecting``)."""
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                await self._start_clients()
                return True
            except (KafkaError, OSError) as e:
                await self._close_clients()
                self._set_state(StreamState.RECONNECTING, f"cannot reach the brokers ({type(e).__name__})")
                try:
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                except asyncio.TimeoutError:
                    pass
                backoff = min(10.0, backoff * 2)
        return False

    async def _start_clients(self) -> None:
        cfg = self.cfg
        if self.txn is not None:
            await self.txn.start()
        if cfg.dead_letter_topic:
            from daemon.sinks.kafka import start_producer

            self._dlq, _ = await start_producer(cfg, "dlq")
        if cfg.state_topic and self.daemon is not None:
            self._state = StateStore(cfg, self.metrics, producer=self._dlq)
            await self._state.start()
        self._consumer = AIOKafkaConsumer(
            client_id=cfg.consumer_client_id or cfg.client_id,
            group_id=cfg.group_id,
            group_instance_id=cfg.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset=cfg.auto_offset_reset,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            max_partition_fetch_bytes=max(1_048_576, cfg.max_payload_bytes + 65536),
            isolation_level="read_committed" if cfg.transactional else "read_uncommitted",
            **cfg.common_kwargs(),
        )
        await start_or_close(self._consumer)
        # subscribe after start: start() would otherwise wait for the first assignment (unstoppable)
        self._consumer.subscribe(cfg.frames_topics, listener=_Listener(self))

    async def _poll_loop(self, dispatcher: asyncio.Task) -> None:
        c = self._consumer
        assert c is not None
        backoff = 0.2
        while not self._stopping.is_set():
            if dispatcher.done():
                dispatcher.result()  # re-raise a dispatcher failure
                raise RuntimeError("kafka dispatcher stopped")
            try:
                batch = await c.getmany(timeout_ms=self.cfg.poll_timeout_ms, max_records=self.cfg.max_poll_records)
                backoff = 0.2
            except KafkaError as e:
                log.warning("kafka poll failed (%s); retrying in %.1f s", type(e).__name__, backoff)
                self._set_state(StreamState.RECONNECTING, type(e).__name__)
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            if self.state == StreamState.RECONNECTING:
                self._set_state(StreamState.RUNNING, "poll ok")
            for tp, recs in batch.items():
                part = self._parts.get(tp)
                if part is None or part.revoked:  # fetched just before a revoke: the next owner reads them
                    continue
                for r in recs:
                    if r.offset <= part.last_fetched:  # position reset (e.g. a broker lost its log)
                        log.warning("kafka %s: offset went back %d -> %d; resetting its tracking",
                                    tp, part.last_fetched, r.offset)
                        part = self._parts[tp] = _Partition(tp)
                    part.add(r.offset)
                    self._queue.append((part, r))
                self.metrics.kafka_consumed.labels(tp.topic).inc(len(recs))
            if batch:
                self._wake.set()
            self._backpressure()
            now = time.monotonic()
            if now - self._last_commit >= self.cfg.commit_interval_s:
                await self._commit()
            if now - self._last_lag >= 2.0:
                self._update_lag()

    def _backpressure(self) -> None:
        c = self._consumer
        if c is None:
            return
        n = self.outstanding
        parts = list(c.assignment())
        if not self._paused and n >= self.cfg.intake_high:
            if parts:
                c.pause(*parts)
            self._paused = True
            self.metrics.kafka_paused.set(len(parts))
            log.debug("kafka intake %d >= %d: paused %d partitions", n, self.cfg.intake_high, len(parts))
        elif self._paused and n <= self.cfg.intake_low:
            if parts:
                c.resume(*parts)
            self._paused = False
            self.metrics.kafka_paused.set(0)
            log.debug("kafka intake %d <= %d: resumed", n, self.cfg.intake_low)
        elif self._paused:  # newly assigned partitions start unpaused
            unpaused = [tp for tp in parts if tp not in c.paused()]
            if unpaused:
                c.pause(*unpaused)
                self.metrics.kafka_paused.set(len(parts))

    def _update_lag(self) -> None:
        self._last_lag = time.monotonic()
        c = self._consumer
        if c is None:
            return
        for tp, part in self._parts.items():
            hw = c.highwater(tp)
            if hw is not None and part.last_fetched >= 0:
                self.metrics.kafka_lag.labels(tp.topic, str(tp.partition)).set(max(0, hw - part.last_fetched - 1))

    # dispatch ------------------------------------------------------------------------------------
    async def _dispatch(self, emit: Emit) -> None:
        cfg = self.cfg
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            part, r = self._queue.popleft()
            if part.revoked or self._parts.get(part.tp) is not part:
                continue
            received = time.monotonic()
            res = await asyncio.to_thread(
                contract.decode, r.key, r.value, r.headers, max_payload_bytes=cfg.max_payload_bytes,
                received_at=received,
            )
            if part.revoked:
                continue
            if isinstance(res, contract.DeadLetter):
                await self._dead_letter(part, r, res)
                self._complete(part, r.offset)
                continue
            part.streams.add(res.stream_id)
            await self._ensure_restored(res.stream_id)
            if isinstance(res, contract.EndOfStream):
                frame = end_marker(res.stream_id, res.seq)
            else:
                frame = res
                age = time.time() - frame.captured_at
                if cfg.freshness_budget_s is not None and age > cfg.freshness_budget_s:
                    self.stale += 1
                    self.metrics.drop(frame.stream_id, "stale")
                    self._complete(part, r.offset)
                    continue
            frame.meta["kafka"] = {"topic": r.topic, "partition": r.partition, "offset": r.offset,
                                   "timestamp_ms": r.timestamp}
            frame.on_done = self._done_callback(part, r.offset)
            part.emitted.add(r.offset)
            ok = await emit(frame)
            if not ok:
                frame.done()  # dropped downstream (idempotent if the pipeline already called it)

    def _done_callback(self, part: _Partition, offset: int):
        def cb() -> None:
            loop = self._loop
            if loop is not None and threading.get_ident() != self._loop_thread:
                loop.call_soon_threadsafe(self._complete, part, offset)
            else:
                self._complete(part, offset)

        return cb

    def _complete(self, part: _Partition, offset: int) -> None:
        part.complete(offset)
        self._done_event.set()
        if self._paused and self.outstanding <= self.cfg.intake_low:
            self._backpressure()

    async def _dead_letter(self, part: _Partition, r: Any, dl: contract.DeadLetter) -> None:
        self.dead_letters += 1
        self.metrics.kafka_dead_letters.labels(dl.reason).inc()
        log.warning("kafka %s[%d]@%d -> dead letter (%s): %s", r.topic, r.partition, r.offset, dl.reason, dl.detail)
        if self._dlq is None or not self.cfg.dead_letter_topic:
            return
        headers = contract.dead_letter_headers(r.headers, dl, r.topic, r.partition, r.offset)
        value = r.value if r.value is not None and len(r.value) <= self.cfg.max_payload_bytes else None
        for attempt in range(3):
            try:
                await self._dlq.send_and_wait(self.cfg.dead_letter_topic, value, key=r.key, headers=headers)
                return
            except KafkaError as e:
                log.warning("dead-letter send failed (%s), attempt %d/3", type(e).__name__, attempt + 1)
                await asyncio.sleep(0.5 * (attempt + 1))
        log.error("kafka %s[%d]@%d: could not write the dead letter; skipping it", r.topic, r.partition, r.offset)

    async def _ensure_restored(self, stream_id: str) -> None:
        if stream_id in self._restored:
            return
        self._restored.add(stream_id)
        if self._state is None or self.daemon is None:
            return
        snap = self._state.get(stream_id)
        if snap is None:
            return
        try:
            await _maybe_await(self.daemon.restore_stream(stream_id, snap))  # the daemon counts kafka_state_ops
            log.info("stream %s: temporal state restored from %s", stream_id, self.cfg.state_topic)
        except Exception as e:  # noqa: BLE001 - a bad snapshot must not stop the source
            log.warning("stream %s: could not restore state (%s: %s)", stream_id, type(e).__name__, e)

    # commits --------------------------------------------------------------------------------------
    async def _commit(self, parts: list[_Partition] | None = None) -> bool:
        self._last_commit = time.monotonic()
        c = self._consumer
        if c is None:
            return False
        todo = parts if parts is not None else list(self._parts.values())
        offsets = {p.tp: p.commit_to for p in todo
                   if p.commit_to is not None and (p.committed is None or p.commit_to > p.committed)}
        if not offsets:
            return True
        async with self._commit_lock:
            try:
                if self.txn is not None:
                    await self.txn.commit(offsets, self.cfg.group_id)
                else:
                    await c.commit(offsets)  # type: ignore[arg-type]
            except (KafkaError, AssertionError) as e:
                self.metrics.kafka_commit_failures.inc()
                log.warning("kafka commit failed (%s); those frames may be redelivered", type(e).__name__)
                if self.txn is not None:
                    # the aborted transaction took the verdicts with it: read those frames again
                    await self._rewind([p for p in todo if p.tp in offsets])
                return False
        for p in todo:
            if p.tp in offsets:
                p.committed = offsets[p.tp]
        self.commits += 1
        self.metrics.kafka_commits.inc()
        return True

    async def _rewind(self, parts: list[_Partition]) -> None:
        """Seek partitions back to their last committed offset and restart their tracking."""
        c = self._consumer
        if c is None:
            return
        for p in parts:
            if self._parts.get(p.tp) is not p:
                continue
            target = p.committed if p.committed is not None else p.first_fetched
            if target is None:
                continue  # nothing fetched yet
            p.revoked = True  # queued/in-flight records of the old tracking are ignored
            self._parts[p.tp] = _Partition(p.tp, committed=p.committed)
            try:
                c.seek(p.tp, target)
            except (KafkaError, AssertionError, ValueError) as e:
                log.warning("kafka %s: rewind failed (%s)", p.tp, type(e).__name__)
        self._queue = deque(item for item in self._queue if not item[0].revoked)

    # rebalance ------------------------------------------------------------------------------------
    async def _drain(self, parts: list[_Partition], timeout: float) -> None:
        """Wait (bounded) until the frames of ``parts`` handed to the pipeline are done."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        streams = sorted({s for p in parts for s in p.streams})
        if self.daemon is not None and hasattr(self.daemon, "drain_stream") and streams:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(_maybe_await(self.daemon.drain_stream(s)) for s in streams)), timeout)
            except asyncio.TimeoutError:
                log.warning("kafka revoke: draining %d streams took over %.1f s", len(streams), timeout)
            except Exception as e:  # noqa: BLE001
                log.warning("kafka revoke: drain failed (%s)", type(e).__name__)
        while any(p.emitted for p in parts) and loop.time() < deadline:
            self._done_event.clear()
            try:
                await asyncio.wait_for(self._done_event.wait(), max(0.01, deadline - loop.time()))
            except asyncio.TimeoutError:
                break
        left = sum(len(p.emitted) for p in parts)
        if left:
            log.warning("kafka revoke: %d in-flight frames not done after %.1f s; they will be redelivered", left, timeout)

    async def _release(self, parts: list[_Partition], reason: str) -> None:
        """Revoke/stop: abandon queued records, drain, commit, snapshot + forget streams."""
        for p in parts:
            p.revoked = True  # the dispatcher skips their queued records
        await self._drain(parts, self.cfg.drain_timeout_s)
        await self._commit(parts)
        streams = sorted({s for p in parts for s in p.streams})
        for s in streams:
            self._restored.discard(s)
            if self.daemon is None:
                continue
            if self._state is not None and hasattr(self.daemon, "snapshot_stream"):
                try:
                    snap = await _maybe_await(self.daemon.snapshot_stream(s))
                    if snap is not None:
                        await self._state.save(s, snap)
                except Exception as e:  # noqa: BLE001
                    log.warning("stream %s: could not snapshot state (%s: %s)", s, type(e).__name__, e)
            if hasattr(self.daemon, "forget_stream"):
                try:
                    await _maybe_await(self.daemon.forget_stream(s))
                except Exception as e:  # noqa: BLE001
                    log.warning("stream %s: forget failed (%s)", s, type(e).__name__)
        for p in parts:
            if self._parts.get(p.tp) is p:
                del self._parts[p.tp]
        self._queue = deque(item for item in self._queue if not item[0].revoked)
        log.info("kafka %s: released %d partitions, %d streams", reason, len(parts), len(streams))

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.metrics.kafka_rebalances.inc()
        parts = [self._parts[tp] for tp in revoked if tp in self._parts]
        if parts:
            await self._release(parts, "revoke")
        self.metrics.kafka_assigned.set(len(self._parts))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            if tp not in self._parts:
                self._parts[tp] = _Partition(tp)
        self.metrics.kafka_assigned.set(len(self._parts))
        if self._state is not None:
            n = await self._state.catch_up(timeout_s=min(10.0, self.cfg.drain_timeout_s + 1))
            log.info("kafka assign: %d partitions; state topic caught up (%d records)", len(assigned), n)
        if self._paused and self._consumer is not None and assigned:
            self._consumer.pause(*assigned)

    async def _shutdown(self) -> None:
        parts = list(self._parts.values())
        if parts and self._consumer is not None:
            try:
                await self._release(parts, "stop")
            except Exception as e:  # noqa: BLE001
                log.warning("kafka stop: release failed (%s)", type(e).__name__)
        await self._close_clients()
        if self.txn is not None:
            try:
                await self.txn.close()
            except Exception as e:  # noqa: BLE001
                log.warning("kafka stop: closing the transaction failed (%s)", type(e).__name__)
        self.metrics.kafka_assigned.set(0)
        self.metrics.kafka_paused.set(0)

    async def _close_clients(self) -> None:
        for name, closer in (("consumer", self._consumer), ("state", self._state), ("dlq", self._dlq)):
            if closer is None:
                continue
            try:
                await asyncio.wait_for((closer.close() if name == "state" else closer.stop()), 15)
            except Exception as e:  # noqa: BLE001
                log.warning("kafka stop: closing the %s client failed (%s)", name, type(e).__name__)
        self._consumer = self._state = self._dlq = None


def build_kafka_source(cfg: KafkaConfig, metrics: Metrics | None = None) -> KafkaFrameSource:
    """Used by the CLI: the daemon's ``add_source`` (or the caller) attaches the daemon before ``run``."""
    return KafkaFrameSource(cfg, metrics)


KafkaSource = KafkaFrameSource
