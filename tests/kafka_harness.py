"""A small pipeline-less consumer harness for the Kafka source/sink tests.

``MiniPipeline`` stands where the daemon's pipeline stands and keeps the daemon's contracts: it
receives frames from a source's ``emit``, analyses each stream's frames in order, delivers the
frame's verdicts through real sinks, then calls ``frame.done()`` (so ``done()`` is a frame boundary
of the stream), and implements :class:`daemon.kafka.state.StreamStateHost` (drain / snapshot /
restore / forget) over its per-stream state.

Events (a pure function of the stream's frames and the state they started from):

- ``tracks=False``: one ``update`` per frame (track 0), one ``end`` per end-of-stream;
- ``tracks=True``: a "track" per ``segment`` sequence numbers (seq 0-9, 10-19, ...) with ids from
  a per-stream counter held in the state: ``start`` at its first frame, one ``update`` per frame
  (``frames`` = frames of the track so far), ``end`` when the next segment starts or at the end of
  stream. A lost or doubly applied state shows up as a restarted id, a second ``start`` or ``end``
  with other content, or an update whose content differs from the first run's.
"""

from __future__ import annotations

import asyncio
import copy
from collections import defaultdict
from typing import Any

from daemon.events import VerdictEvent
from daemon.types import Frame


class MiniPipeline:
    def __init__(self, sinks: list, capacity: int = 16, delay_s: float = 0.0, tracks: bool = False,
                 segment: int = 10):
        self.sinks = sinks
        self.queue: asyncio.Queue[tuple[Frame, int]] = asyncio.Queue(capacity)
        self.delay_s = delay_s
        self.tracks = tracks
        self.segment = segment
        self.state: dict[str, dict[str, Any]] = {}
        self.restored: dict[str, dict[str, Any]] = {}
        self.inflight: dict[str, int] = defaultdict(int)
        self.generation: dict[str, int] = defaultdict(int)  # bumped by forget: older queued frames are dropped
        self.frames_seen: list[tuple[str, int]] = []
        self.ended: list[str] = []
        self._task: asyncio.Task | None = None

    async def emit(self, frame: Frame) -> bool:
        self.inflight[frame.stream_id] += 1
        await self.queue.put((frame, self.generation[frame.stream_id]))
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _events(self, f: Frame) -> list[VerdictEvent]:
        sid = f.stream_id
        if f.end_of_stream and sid not in self.state:
            return []  # e.g. the source's own end marker at shutdown: no tracks, no verdicts
        if not self.tracks:
            st = self.state.setdefault(sid, {"frames": 0, "last_seq": -1})
            if f.end_of_stream:
                # content is a pure function of the stream's frames (not of this process's counters), so a
                # replay after a crash or a rewind reproduces identical events and ids
                last = max(st["last_seq"], 0)
                return [VerdictEvent(sid, 0, "end", 0, last, 0.0, 0.0, last + 1, 0.0, "real")]
            st["frames"] += 1
            st["last_seq"] = f.seq
            return [VerdictEvent(sid, 0, "update", f.seq, f.seq, f.pts, f.pts, f.seq + 1, 0.1, "real")]
        st = self.state.setdefault(sid, {"next_id": 1, "track": None, "first": 0, "frames": 0, "last_seq": -1})
        out = []

        def ev(kind: str) -> VerdictEvent:
            return VerdictEvent(sid, st["track"], kind, st["first"], st["last_seq"], st["first"] / 25.0,
                                st["last_seq"] / 25.0, st["frames"], round(0.01 * st["frames"], 6), "real")

        if st["track"] is not None and (f.end_of_stream or f.seq // self.segment != st["first"] // self.segment):
            out.append(ev("end"))
            st["track"] = None
        if f.end_of_stream:
            return out
        st["last_seq"] = f.seq
        if st["track"] is None:
            st["track"], st["first"], st["frames"] = st["next_id"], f.seq, 0
            st["next_id"] += 1
            st["frames"] = 1
            out.append(ev("start"))
        else:
            st["frames"] += 1
        out.append(ev("update"))
        return out

    async def _work(self) -> None:
        while True:
            f, gen = await self.queue.get()
            try:
                if gen != self.generation[f.stream_id]:
                    continue  # its stream was forgotten (partition revoked) after it was queued
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                events = self._events(f)
                if f.end_of_stream and events:
                    self.ended.append(f.stream_id)
                if not f.end_of_stream:
                    self.frames_seen.append((f.stream_id, f.seq))
                for s in self.sinks:
                    if events:
                        await s.emit(events)
            finally:
                self.inflight[f.stream_id] -= 1
                f.done()

    # daemon.kafka.state.StreamStateHost ------------------------------------------------------------
    async def drain_stream(self, stream_id: str) -> None:
        while self.inflight.get(stream_id, 0) > 0:
            await asyncio.sleep(0.01)

    def snapshot_stream(self, stream_id: str) -> dict[str, Any] | None:
        st = self.state.get(stream_id)
        return None if st is None else copy.deepcopy(st)

    def restore_stream(self, stream_id: str, state: dict[str, Any]) -> None:
        self.restored[stream_id] = dict(state)
        self.state[stream_id] = copy.deepcopy(state)

    def forget_stream(self, stream_id: str) -> None:
        self.state.pop(stream_id, None)
        self.generation[stream_id] += 1


class ListSink:
    """Collects events in memory (a second sink beside the real Kafka sink)."""

    name = "list"

    def __init__(self) -> None:
        self.events: list[VerdictEvent] = []

    async def emit(self, events: list[VerdictEvent]) -> None:
        self.events.extend(events)
