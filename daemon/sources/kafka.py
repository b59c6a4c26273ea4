"""Kafka frame source: a consumer-group member that feeds frames of many streams to the pipeline.

Message contract: :mod:`daemon.kafka.contract` (key = stream id, value = JPEG/PNG/WebP, headers).

Modelled on aiokafka's own split of the consumer into fetcher / coordinator / subscription state:

- :class:`_Partition` (fetch position bookkeeping): the offsets of one assigned partition, fetched,
  handed out and done; its committable offset is ``offset + 1`` of the contiguous done prefix;
- :class:`_Stream` (state coverage): the records of one stream on that partition, and which of them
  the stream's last durable checkpoint (:mod:`daemon.kafka.state`) covers;
- the pipeline is reached only through the typed :class:`~daemon.kafka.state.StreamStateHost`
  (drain / snapshot / restore / forget), the rebalance callbacks only through aiokafka's typed
  :class:`~aiokafka.ConsumerRebalanceListener`.

Two tasks run while the source runs:

- the **poll loop** calls ``getmany`` all the time (so the consumer never leaves the group), puts
  records into a local intake queue, pauses every assigned partition when the intake (queued +
  in the pipeline, not yet done) reaches ``intake_high`` and resumes below ``intake_low``, and
  checkpoints + commits every ``commit_interval_s``;
- the **dispatcher** decodes and validates records, sends bad ones to the dead-letter topic,
  drops stale ones (``frames_dropped{reason="stale"}``), restores a stream's checkpoint on its
  first record after an assignment (and skips its records the checkpoint already contains), and
  awaits ``emit(frame)``.

Delivery: auto-commit is off; each record's offset is tracked per partition and marked complete by
``Frame.on_done`` (called by the pipeline after the sinks delivered the frame's verdicts, or when
it dropped the frame). With a state topic and a host, the committed offset of a partition is also
held below the first record of any of its streams that no saved checkpoint covers, and checkpoints
are written before the commit: the state a restarted member restores is exactly consistent with
the committed offsets (docs/kafka.md, "Crash consistency"). Dead letters, stale frames and control
messages complete at once.

Rebalances (aiokafka: eager protocol only): on revoke, queued records of the revoked partitions
are abandoned (not committed, so the next owner reads them again), in-flight ones are drained with
a bound (``drain_timeout_s``), the streams are checkpointed, the covered done prefix is committed,
and the streams are forgotten. On assign, the state topic is read up to its end.

``fault``: an optional callable invoked with a point name (``commit.before_state_save``,
``commit.before_offset_commit``, ``revoke.drained``) where a crash is most delicate; the crash tests
set it (tests/kafka_worker.py) to kill the process there. It is None in production.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from daemon.kafka import contract
from daemon.kafka.clients import start_or_close
from daemon.kafka.config import KafkaConfig
from daemon.kafka.state import StateStore, StreamStateHost, encode_checkpoint
from daemon.metrics import Metrics
from daemon.sources.base import Emit, Source
from daemon.types import StreamState, end_marker

log = logging.getLogger("fakewatch.kafka")


def _set_event() -> asyncio.Event:
    e = asyncio.Event()
    e.set()
    return e


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
    streams: dict[str, "_Stream"] = field(default_factory=dict)
    revoked: bool = False
    # set once the state topic was read for this assignment: before that, a stream's first record must
    # not be dispatched (its checkpoint may not be in the cache yet). aiokafka sets the assignment, and
    # its fetcher may return records, while on_partitions_assigned (the catch-up) is still running.
    restorable: asyncio.Event = field(default_factory=lambda: _set_event())

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

    def commit_bound(self, assume: dict["_Stream", int] | None = None) -> int | None:
        """The offset that may be committed: the done prefix, held below the first record of each stream
        that its saved checkpoint (or the one in ``assume``, about to be committed with it) does not cover."""
        bound = self.commit_to
        if bound is None:
            return None
        for st in self.streams.values():
            first = st.first_uncovered(None if assume is None else assume.get(st))
            if first is not None and first < bound:
                bound = first
        return bound


@dataclass(eq=False)
class _Stream:
    """One stream's records on one partition (dispatch = offset order) and their checkpoint coverage."""

    sid: str
    part: _Partition
    pending: dict[int, bool] = field(default_factory=dict)  # handed out, not yet in the done prefix
    done_to: int = -1  # every record of this stream up to this offset is done
    saved_to: int = -1  # the saved checkpoint contains every record of this stream up to this offset
    uncovered: deque[int] = field(default_factory=deque)  # records after saved_to (commits stay below [0])
    want: bool = False  # take a checkpoint at the next frame boundary
    captured: tuple[int, bytes] | None = None  # (covered offset, encoded checkpoint), not saved yet

    def track(self, offset: int, checkpointing: bool) -> None:
        self.pending[offset] = False
        if checkpointing:
            self.uncovered.append(offset)

    def complete(self, offset: int) -> bool:
        """Mark ``offset`` done; True when that puts the stream at a frame boundary (the record was the
        oldest outstanding one, so everything of this stream up to ``done_to`` is done)."""
        if self.pending.get(offset) is not False:
            return False
        self.pending[offset] = True
        while self.pending:
            first = next(iter(self.pending))
            if not self.pending[first]:
                break
            del self.pending[first]
            self.done_to = first
        return offset <= self.done_to

    @property
    def idle(self) -> bool:
        return not self.pending

    def first_uncovered(self, covered: int | None = None) -> int | None:
        c = self.saved_to if covered is None else max(self.saved_to, covered)
        return next((o for o in self.uncovered if o > c), None)

    def saved(self, covered: int) -> None:
        self.saved_to = max(self.saved_to, covered)
        while self.uncovered and self.uncovered[0] <= self.saved_to:
            self.uncovered.popleft()
        if self.captured is not None and self.captured[0] <= self.saved_to:
            self.captured = None


class _Listener(ConsumerRebalanceListener):
    def __init__(self, src: "KafkaFrameSource"):
        self.src = src

    async def on_partitions_revoked(self, revoked):  # type: ignore[override]
        await self.src._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned):  # type: ignore[override]
        await self.src._on_assigned(set(assigned))


class KafkaFrameSource(Source):
    """Frames of many streams from a Kafka consumer group (each :class:`Frame` has its own stream id)."""

    def __init__(self, cfg: KafkaConfig, metrics: Metrics | None = None, *, daemon: StreamStateHost | None = None,
                 source_id: str | None = None, transactions: Any = None):
        """``daemon``: the pipeline holding the streams' state (the one wiring: no ``attach`` later);
        None: no state hand-over (each new owner starts the streams afresh)."""
        # live=False: emit awaits a full pipeline (backpressure -> pause) instead of dropping frames; Kafka
        # keeps what we do not read yet, and the freshness budget is what drops old frames.
        super().__init__(source_id or f"kafka:{cfg.group_id}", metrics or Metrics(), live=False)
        self.cfg = cfg
        if daemon is not None and not isinstance(daemon, StreamStateHost):
            raise TypeError(f"{type(daemon).__name__} lacks drain/snapshot/restore/forget_stream (StreamStateHost)")
        self.daemon: StreamStateHost | None = daemon
        self.fault: Callable[[str], None] | None = None  # crash-test hook (see the module docstring)
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
        self.replay_skipped = 0  # redelivered records a restored checkpoint already contained

    # public ------------------------------------------------------------------------------------
    @property
    def checkpointing(self) -> bool:
        """True when offsets are committed only behind durable stream checkpoints."""
        return self._state is not None and self.daemon is not None

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
            if not part.restorable.is_set():
                await part.restorable.wait()  # the state catch-up of this assignment (see _on_assigned)
                if part.revoked or self._parts.get(part.tp) is not part:
                    continue
            st = self._stream(part, res.stream_id)
            if r.offset <= st.saved_to:  # contained in the restored checkpoint: its verdicts are out
                self.replay_skipped += 1
                self._complete(part, r.offset)
                continue
            st.track(r.offset, self.checkpointing)  # (no await between the restore and here)
            if isinstance(res, contract.EndOfStream):
                frame = end_marker(res.stream_id, res.seq)
            else:
                frame = res
                age = time.time() - frame.captured_at
                if cfg.freshness_budget_s is not None and age > cfg.freshness_budget_s:
                    self.stale += 1
                    self.metrics.drop(frame.stream_id, "stale")
                    self._complete(part, r.offset, st)
                    continue
            frame.meta["kafka"] = {"topic": r.topic, "partition": r.partition, "offset": r.offset,
                                   "timestamp_ms": r.timestamp}
            frame.on_done = self._done_callback(part, st, r.offset)
            part.emitted.add(r.offset)
            ok = await emit(frame)
            if not ok:
                frame.done()  # dropped downstream (idempotent if the pipeline already called it)

    def _done_callback(self, part: _Partition, st: _Stream, offset: int):
        def cb() -> None:
            loop = self._loop
            if loop is not None and threading.get_ident() != self._loop_thread:
                # from another thread: not inside the stream's worker, so not a frame boundary to snapshot at
                loop.call_soon_threadsafe(self._complete, part, offset, st, False)
            else:
                self._complete(part, offset, st)

        return cb

    def _complete(self, part: _Partition, offset: int, st: _Stream | None = None, boundary: bool = True) -> None:
        part.complete(offset)
        if st is not None and st.complete(offset) and st.want and boundary:
            # a frame boundary of this stream (inside the pipeline's frame.done(), before its next frame)
            self._capture(st)
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

    def _stream(self, part: _Partition, stream_id: str) -> _Stream:
        """The stream's tracking on ``part``; on its first record there, restore its checkpoint."""
        st = part.streams.get(stream_id)
        if st is not None:
            return st
        st = part.streams[stream_id] = _Stream(stream_id, part)
        if self._state is None or self.daemon is None:
            return st
        cp = self._state.get(stream_id)
        if cp is None:
            return st
        try:
            if cp.state:
                self.daemon.restore_stream(stream_id, cp.state)  # the daemon counts kafka_state_ops
            st.saved_to = st.done_to = cp.covered_to(part.tp)
            log.info("stream %s: state restored from %s (covers %s@%d)", stream_id, self.cfg.state_topic,
                     part.tp, st.saved_to)
        except Exception as e:  # noqa: BLE001 - a bad checkpoint must not stop the source
            log.warning("stream %s: could not restore state (%s: %s)", stream_id, type(e).__name__, e)
        return st

    # checkpoints and commits ----------------------------------------------------------------------
    def _fault_point(self, point: str) -> None:
        if self.fault is not None:
            self.fault(point)

    def _capture(self, st: _Stream) -> None:
        """Snapshot the stream now (the caller knows it is at a frame boundary): covers ``done_to``."""
        st.want = False
        if self.daemon is None or (st.captured is not None and st.captured[0] >= st.done_to):
            return
        try:
            state = self.daemon.snapshot_stream(st.sid)
            st.captured = (st.done_to, encode_checkpoint(st.sid, state, st.part.tp, st.done_to))
        except Exception as e:  # noqa: BLE001 - never raise into the pipeline's frame.done()
            log.warning("stream %s: could not snapshot state (%s: %s)", st.sid, type(e).__name__, e)

    def _prepare_checkpoints(self, parts: list[_Partition]) -> list[_Stream]:
        """Capture idle uncovered streams now, ask busy ones for their next boundary; the captured ones."""
        ready = []
        for p in parts:
            for st in p.streams.values():
                if not st.uncovered:
                    continue
                if st.idle:
                    self._capture(st)
                elif st.captured is None:
                    st.want = True
                if st.captured is not None:
                    ready.append(st)
        return ready

    async def _save_checkpoints(self, ready: list[_Stream]) -> None:
        """Non-transactional: write each captured checkpoint (acks=all) before any commit relies on it."""
        assert self._state is not None
        for st in ready:
            if st.captured is None:
                continue
            covered, value = st.captured
            self._fault_point("commit.before_state_save")
            if await self._state.save_encoded(st.sid, value):
                st.saved(covered)

    async def _commit(self, parts: list[_Partition] | None = None) -> bool:
        self._last_commit = time.monotonic()
        c = self._consumer
        if c is None:
            return False
        todo = parts if parts is not None else list(self._parts.values())
        async with self._commit_lock:
            ready = self._prepare_checkpoints(todo) if self.checkpointing else []
            if ready and self.txn is None:
                await self._save_checkpoints(ready)
                ready = []
            # transactional: the checkpoints go into the same transaction as the offsets
            pending = {st: st.captured for st in ready if st.captured is not None}
            assume = {st: cap[0] for st, cap in pending.items()}
            offsets = {}
            for p in todo:
                bound = p.commit_bound(assume)
                if bound is not None and (p.committed is None or bound > p.committed):
                    offsets[p.tp] = bound
            if not offsets:
                return True
            self._fault_point("commit.before_offset_commit")
            try:
                if self.txn is not None:
                    if pending and self._state is not None:
                        await self.txn.send_many([(self._state.topic, st.sid.encode(), cap[1])
                                                  for st, cap in pending.items()])
                    await self.txn.commit(offsets, self.cfg.group_id)
                else:
                    await c.commit(offsets)  # type: ignore[arg-type]
            except (KafkaError, AssertionError) as e:
                self.metrics.kafka_commit_failures.inc()
                log.warning("kafka commit failed (%s); those frames may be redelivered", type(e).__name__)
                if self.txn is not None:
                    # the aborted transaction took the verdicts (and checkpoints) with it: read those frames again
                    await self._rewind([p for p in todo if p.tp in offsets])
                return False
        for st, (covered, value) in pending.items():
            st.saved(covered)
            if self._state is not None:
                self._state.remember(st.sid, value)
        for p in todo:
            if p.tp in offsets:
                p.committed = offsets[p.tp]
        self.commits += 1
        self.metrics.kafka_commits.inc()
        return True

    async def _rewind(self, parts: list[_Partition]) -> None:
        """Seek partitions back to their last committed offset and restart their tracking.

        The streams' state already contains frames after that offset, so it is forgotten and restored
        from the last committed checkpoint (or started afresh without one) when their records come again."""
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
            self._forget(p)
            try:
                c.seek(p.tp, target)
            except (KafkaError, AssertionError, ValueError) as e:
                log.warning("kafka %s: rewind failed (%s)", p.tp, type(e).__name__)
        self._queue = deque(item for item in self._queue if not item[0].revoked)

    def _forget(self, p: _Partition) -> None:
        for sid in p.streams:
            if self.daemon is not None:
                try:
                    self.daemon.forget_stream(sid)
                except Exception as e:  # noqa: BLE001
                    log.warning("stream %s: forget failed (%s)", sid, type(e).__name__)

    # rebalance ------------------------------------------------------------------------------------
    async def _drain(self, parts: list[_Partition], timeout: float) -> None:
        """Wait (bounded) until the frames of ``parts`` handed to the pipeline are done."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        streams = sorted({s for p in parts for s in p.streams})
        if self.daemon is not None and streams:
            try:
                await asyncio.wait_for(asyncio.gather(*(self.daemon.drain_stream(s) for s in streams)), timeout)
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
        """Revoke/stop: abandon queued records, drain, checkpoint + commit, forget the streams.

        A stream still busy after the drain is not checkpointed: the commit stays below its first
        uncovered record, so the next owner restores its previous checkpoint and replays from there."""
        for p in parts:
            p.revoked = True  # the dispatcher skips their queued records
        await self._drain(parts, self.cfg.drain_timeout_s)
        if reason == "revoke" and any(p.streams for p in parts):
            self._fault_point("revoke.drained")
        await self._commit(parts)
        for p in parts:
            for st in p.streams.values():
                st.want = False
            self._forget(p)
            if self._parts.get(p.tp) is p:
                del self._parts[p.tp]
        self._queue = deque(item for item in self._queue if not item[0].revoked)
        log.info("kafka %s: released %d partitions, %d streams", reason, len(parts),
                 sum(len(p.streams) for p in parts))

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.metrics.kafka_rebalances.inc()
        parts = [self._parts[tp] for tp in revoked if tp in self._parts]
        if parts:
            await self._release(parts, "revoke")
        self.metrics.kafka_assigned.set(len(self._parts))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        new = []
        for tp in assigned:
            if tp not in self._parts:
                self._parts[tp] = part = _Partition(tp)
                new.append(part)
        self.metrics.kafka_assigned.set(len(self._parts))
        if self._state is not None:
            # the fetcher may already return these partitions' records: the dispatcher holds them until
            # the cache has every checkpoint (else a stream's first record would find none and start afresh)
            for part in new:
                part.restorable.clear()
            try:
                n = await self._state.catch_up(timeout_s=min(10.0, self.cfg.drain_timeout_s + 1))
            finally:
                for part in new:
                    part.restorable.set()
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


def build_kafka_source(cfg: KafkaConfig, metrics: Metrics | None = None, daemon: StreamStateHost | None = None
                       ) -> KafkaFrameSource:
    """A source wired to the pipeline that holds its streams' state (the only wiring: at construction)."""
    return KafkaFrameSource(cfg, metrics, daemon=daemon)


KafkaSource = KafkaFrameSource
