"""Micro-batching of inference calls across every stream.

Callers ``await batcher.submit(item)`` one item at a time (one face crop); a single worker task
gathers items from all streams into a batch (up to ``max_batch`` items, waiting at most
``max_wait_s`` after the first one), runs ``fn(items)`` on a dedicated single-thread executor (so
the ONNX Runtime / TensorRT calls of one model never contend with each other and never block the
event loop), and resolves each caller's future with its own result.

While one batch runs, new items pile up in the queue, so under load batches fill up by themselves;
with light load an item waits at most ``max_wait_s``. The input queue is bounded: ``submit`` waits
when it is full (backpressure towards the stages that feed it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from daemon.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_CLOSE = object()


class BatcherClosed(RuntimeError):
    """``submit`` was called on a closed batcher, or the batcher closed before the item ran."""


class MicroBatcher(Generic[T, R]):
    """Gather single items into batches for ``fn(list[T]) -> Sequence[R]`` (same length, same order)."""

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        max_batch: int = 16,
        max_wait_s: float = 0.005,
        metrics: Metrics | None = None,
        model_name: str = "model",
        queue_size: int | None = None,
        stage: str | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        self.model_name = model_name
        self.stage = stage
        self.queue_size = queue_size or max(4 * max_batch, 16)
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{model_name}")
        self._closed = False
        self.batches = 0  # number of fn calls so far
        self.items = 0  # items run so far

    # ------------------------------------------------------------------------------------------
    def _ensure_started(self) -> asyncio.Queue:
        if self._queue is None:
            self._queue = asyncio.Queue(self.queue_size)
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.model_name}")
            if self.metrics is not None:
                self.metrics.watch_queue(f"batch_{self.model_name}", self.queue_size)
        return self._queue

    @property
    def closed(self) -> bool:
        return self._closed

    async def submit(self, item: T) -> R:
        """Queue ``item`` (waiting while the queue is full) and return its result (or raise fn's error)."""
        if self._closed:
            raise BatcherClosed(f"batcher {self.model_name!r} is closed")
        q = self._ensure_started()
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await q.put((item, fut))
        if self.metrics is not None:
            self.metrics.queue_depth.labels(f"batch_{self.model_name}").set(q.qsize())
        return await fut

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Submit several items at once (they may land in the same batch) and return results in order."""
        return list(await asyncio.gather(*(self.submit(i) for i in items)))

    # ------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        q = self._queue
        assert q is not None
        loop = asyncio.get_running_loop()
        stop = False
        batch: list[tuple[Any, asyncio.Future]] = []
        try:
            while not stop:
                first = await q.get()
                if first is _CLOSE:
                    break
                batch = [first]
                deadline = loop.time() + self.max_wait_s
                while len(batch) < self.max_batch:
                    try:
                        nxt = q.get_nowait()
                    except asyncio.QueueEmpty:
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            break
                        try:
                            nxt = await asyncio.wait_for(q.get(), remaining)
                        except TimeoutError:
                            break
                    if nxt is _CLOSE:
                        stop = True
                        break
                    batch.append(nxt)
                if self.metrics is not None:
                    self.metrics.queue_depth.labels(f"batch_{self.model_name}").set(q.qsize())
                # callers that were cancelled while waiting need no work
                live = [(i, f) for i, f in batch if not f.done()]
                if live:
                    await self._run_batch(loop, live)
                batch = []
        finally:
            # worker cancelled (close without drain) or crashed: nobody may wait forever
            for _, f in batch:
                if not f.done():
                    f.set_exception(BatcherClosed(f"batcher {self.model_name!r} closed before this item ran"))
            while not q.empty():
                entry = q.get_nowait()
                if entry is not _CLOSE and not entry[1].done():
                    entry[1].set_exception(BatcherClosed(f"batcher {self.model_name!r} closed before this item ran"))

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, live: list[tuple[Any, asyncio.Future]]) -> None:
        items = [i for i, _ in live]
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.fn, items)
            if len(results) != len(items):
                raise RuntimeError(
                    f"batch function of {self.model_name!r} returned {len(results)} results for {len(items)} items"
                )
        except asyncio.CancelledError:
            raise
        except Exception as e:  # every waiter of this batch gets the error; the worker goes on
            log.debug("batch of %d for %s failed: %s", len(items), self.model_name, e)
            for _, f in live:
                if not f.done():
                    f.set_exception(e)
            return
        finally:
            self.batches += 1
            self.items += len(items)
            if self.metrics is not None:
                self.metrics.batch_size.labels(self.model_name).observe(len(items))
                if self.stage is not None:
                    dt = time.perf_counter() - t0
                    self.metrics.stage_latency.labels(self.stage).observe(dt)
        for (_, f), r in zip(live, results, strict=True):
            if not f.done():
                f.set_result(r)

    # ------------------------------------------------------------------------------------------
    async def close(self, drain: bool = True) -> None:
        """Stop accepting items; with ``drain`` run everything already queued first, else fail it."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None and self._queue is not None:
            if drain:
                await self._queue.put(_CLOSE)
                try:
                    await self._worker
                except asyncio.CancelledError:
                    pass
            else:
                self._worker.cancel()
                try:
                    await self._worker
                except asyncio.CancelledError:
                    pass
        self._executor.shutdown(wait=False, cancel_futures=True)
