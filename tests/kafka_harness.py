"""A small pipeline-less consumer harness for the Kafka source/sink tests.

``MiniPipeline`` stands where the daemon's pipeline stands: it receives frames from a source's
``emit``, produces one deterministic ``update`` verdict per frame (``end`` per end-of-stream)
through real sinks, then calls ``frame.done()``; it implements the daemon's rebalance hooks
(``drain_stream``, ``snapshot_stream``, ``restore_stream``, ``forget_stream``) with a per-stream
frame counter as its "temporal state".
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from daemon.events import VerdictEvent
from daemon.types import Frame


class MiniPipeline:
    def __init__(self, sinks: list, capacity: int = 16, delay_s: float = 0.0):
        self.sinks = sinks
        self.queue: asyncio.Queue[Frame] = asyncio.Queue(capacity)
        self.delay_s = delay_s
        self.state: dict[str, dict[str, Any]] = {}
        self.restored: dict[str, dict[str, Any]] = {}
        self.inflight: dict[str, int] = defaultdict(int)
        self.frames_seen: list[tuple[str, int]] = []
        self.ended: list[str] = []
        self._task: asyncio.Task | None = None

    async def emit(self, frame: Frame) -> bool:
        self.inflight[frame.stream_id] += 1
        await self.queue.put(frame)
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            f = await self.queue.get()
            try:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if f.end_of_stream and f.stream_id not in self.state:
                    continue  # e.g. the source's own end marker at shutdown: no tracks, no verdicts
                st = self.state.setdefault(f.stream_id, {"frames": 0, "last_seq": -1})
                if f.end_of_stream:
                    # content is a pure function of the stream's frames (not of this process's counters), so a
                    # replay after a crash or a rewind reproduces identical events and ids
                    ev = VerdictEvent(f.stream_id, 0, "end", 0, max(st["last_seq"], 0), 0.0, 0.0, max(st["last_seq"], 0) + 1, 0.0,
                                      "real")
                    self.ended.append(f.stream_id)
                else:
                    st["frames"] += 1
                    st["last_seq"] = f.seq
                    self.frames_seen.append((f.stream_id, f.seq))
                    ev = VerdictEvent(f.stream_id, 0, "update", f.seq, f.seq, f.pts, f.pts, f.seq + 1, 0.1, "real")
                for s in self.sinks:
                    await s.emit([ev])
            finally:
                self.inflight[f.stream_id] -= 1
                f.done()

    # daemon rebalance hooks --------------------------------------------------------------------
    async def drain_stream(self, stream_id: str) -> None:
        while self.inflight.get(stream_id, 0) > 0:
            await asyncio.sleep(0.01)

    def snapshot_stream(self, stream_id: str) -> dict[str, Any] | None:
        return self.state.get(stream_id)

    def restore_stream(self, stream_id: str, state: dict[str, Any]) -> None:
        self.restored[stream_id] = dict(state)
        self.state[stream_id] = dict(state)

    def forget_stream(self, stream_id: str) -> None:
        self.state.pop(stream_id, None)


class ListSink:
    """Collects events in memory (a second sink beside the real Kafka sink)."""

    name = "list"

    def __init__(self) -> None:
        self.events: list[VerdictEvent] = []

    async def emit(self, events: list[VerdictEvent]) -> None:
        self.events.extend(events)
