"""Pipeline configuration and the small units the daemon's stages are built from.

The stages themselves are wired by :class:`daemon.app.Daemon` (see docs/pipeline.md)::

    sources --emit--> intake FrameQueue (bounded; live: drop-oldest, files: wait)
      -> face stage task (FacePipeline.process_planned in its own thread, frames of all streams)
      -> per-stream queue (bounded) -> per-stream worker task, frames in order:
           tracking embedding (ArcFace from the face backend, else the bundle's model, batched)
           -> tracker -> frame model (MicroBatcher across streams) + DiffFake embeddings when due
           -> temporal (GMM, worker thread) -> fusion -> sinks -> frame.done()

This module holds :class:`PipelineConfig`, the bounded :class:`FrameQueue` with its drop policy,
and :class:`StreamContext` (the per-stream state: tracker, temporal, fusion, evidence, in-flight
count). The bundle models' runtime and threads are the ``bundle`` section's
(:class:`daemon.models.BundleConfig`), the face models' the ``faces`` section's.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Literal

from pydantic import Field, model_validator

from daemon.config_base import StrictModel
from daemon.evidence import EvidenceConfig, StreamEvidence
from daemon.fusion import FusionConfig, StreamFusion
from daemon.temporal import StreamTemporal, TemporalConfig
from daemon.tracking import Tracker, TrackerConfig
from daemon.types import Frame


class PipelineConfig(StrictModel):
    """Queues, batching and the per-stream analysis settings of the daemon."""

    intake_queue: int = Field(16, ge=1, description="frames (all streams) waiting for face detection")
    face_batch: int = Field(4, ge=1, description="most frames per face-detection call (mixed streams)")
    stream_queue: int = Field(8, ge=1, description="detected frames waiting per stream for the analysis stages")
    max_batch: int = Field(16, ge=1, description="most crops per frame-model call (mixed streams)")
    max_wait_ms: float = Field(5.0, ge=0, description="longest wait for a frame-model batch to fill")
    embed_batch: int = Field(16, ge=1, description="most crops per embedding-model call")
    embed_wait_ms: float = Field(5.0, ge=0)
    batch_queue: int = Field(64, ge=1, description="crops waiting per model batcher")
    tracking_embedding: Literal["auto", "bundle", "none"] = Field(
        "auto",
        description="identity embedding for the tracker: auto = ArcFace from the face backend when present, "
        "else the bundle's embedding model; bundle = always the bundle's; none = boxes only",
    )
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    temporal: TemporalConfig = Field(default_factory=TemporalConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)

    @model_validator(mode="before")
    @classmethod
    def _threads_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "threads" in data:
            raise ValueError("threads was removed: the bundle models' threads are bundle.threads "
                             "(the face models': faces.threads)")
        return data

    @model_validator(mode="after")
    def _evidence_needs_a_folder(self) -> PipelineConfig:
        if self.evidence.enabled and self.evidence.dir is None:
            raise ValueError("evidence.enabled needs evidence.dir (a folder for crops)")
        return self


class FrameQueue:
    """A bounded FIFO of frames shared by all streams, with the backpressure policy of the intake.

    ``put`` waits for room (file sources: nothing is lost); ``put_drop_oldest`` (live sources)
    never waits: when full it evicts the oldest queued frame of a *live* source and returns it, or,
    when only file frames are queued, refuses the new frame and returns it. Control items (end
    markers) never count against the capacity and are never evicted, so a stream's end is never
    lost.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: collections.deque[tuple[Frame, bool]] = collections.deque()  # (frame, evictable)
        self._data = 0  # non-control items held
        self._not_empty = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._items)

    def _append(self, f: Frame, evictable: bool) -> None:
        self._items.append((f, evictable and not f.end_of_stream))
        if not f.end_of_stream:
            self._data += 1
        self._not_empty.set()
        if self._data >= self.capacity:
            self._room.clear()

    async def put(self, f: Frame) -> None:
        while not f.end_of_stream and self._data >= self.capacity:
            self._room.clear()
            await self._room.wait()
        self._append(f, evictable=False)

    def put_drop_oldest(self, f: Frame) -> Frame | None:
        """Queue ``f`` without waiting; return the frame dropped to make room (maybe ``f``), or None."""
        if f.end_of_stream or self._data < self.capacity:
            self._append(f, evictable=True)
            return None
        for i, (old, evictable) in enumerate(self._items):
            if evictable:
                del self._items[i]
                self._data -= 1
                self._append(f, evictable=True)
                return old
        return f  # only file frames queued: the live frame itself is dropped

    async def get_batch(self, max_n: int) -> list[Frame]:
        """Wait for at least one item; return up to ``max_n`` in FIFO order."""
        while not self._items:
            self._not_empty.clear()
            await self._not_empty.wait()
        out: list[Frame] = []
        while self._items and len(out) < max_n:
            f, _ = self._items.popleft()
            if not f.end_of_stream:
                self._data -= 1
            out.append(f)
        if not self._items:
            self._not_empty.clear()
        if self._data < self.capacity:
            self._room.set()
        return out

    def drain_nowait(self, stream_id: str | None = None) -> list[Frame]:
        """Remove and return every queued item (of one stream, or of all)."""
        keep: collections.deque[tuple[Frame, bool]] = collections.deque()
        out: list[Frame] = []
        for item in self._items:
            if stream_id is None or item[0].stream_id == stream_id:
                out.append(item[0])
            else:
                keep.append(item)
        self._items = keep
        self._data = sum(1 for f, _ in keep if not f.end_of_stream)
        if not keep:
            self._not_empty.clear()
        if self._data < self.capacity:
            self._room.set()
        return out


class StreamContext:
    """Everything the daemon holds for one stream (created lazily at its first frame)."""

    def __init__(
        self,
        stream_id: str,
        label: str,
        tracker: Tracker,
        temporal: StreamTemporal | None,
        fusion: StreamFusion,
        evidence: StreamEvidence,
        queue_size: int,
    ):
        self.stream_id = stream_id
        self.label = label
        self.tracker = tracker
        self.temporal = temporal
        self.fusion = fusion
        self.evidence = evidence
        self.queue: asyncio.Queue = asyncio.Queue(queue_size)
        self.task: asyncio.Task | None = None
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def frame_in(self) -> None:
        self.inflight += 1
        self.idle.clear()

    def frame_out(self) -> None:
        self.inflight -= 1
        if self.inflight <= 0:
            self.inflight = 0
            self.idle.set()

    def snapshot(self) -> dict:
        return {
            "version": 1,
            "stream_id": self.stream_id,
            "tracker": self.tracker.state_dict(),
            "temporal": None if self.temporal is None else self.temporal.state_dict(),
            "fusion": self.fusion.state_dict(),
        }

    def restore(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("version") != 1:
            raise ValueError(f"stream snapshot: unsupported version {state.get('version') if isinstance(state, dict) else state!r}")
        self.tracker.load_state_dict(state["tracker"])
        if self.temporal is not None and state.get("temporal") is not None:
            self.temporal.load_state_dict(state["temporal"])
        self.fusion.load_state_dict(state["fusion"])
