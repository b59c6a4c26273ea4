"""JSON-lines file sink: one event per line, appended; fsync on flush; optional size-based rotation.

Rotation renames ``events.jsonl`` to ``events.jsonl.1`` (shifting older ones up to ``keep``) when
the file grows past ``rotate_mb`` and starts a new file; a line is never split across files.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from daemon.events import VerdictEvent
from daemon.metrics import Metrics
from daemon.sinks.base import Sink

log = logging.getLogger(__name__)


class JsonlSink(Sink):
    name = "jsonl"

    def __init__(
        self,
        path: str | Path,
        metrics: Metrics | None = None,
        fsync: bool = True,
        rotate_mb: float | None = None,
        keep: int = 5,
    ):
        self.path = Path(path)
        self.metrics = metrics
        self.fsync = fsync
        self.rotate_bytes = int(rotate_mb * 1024 * 1024) if rotate_mb else None
        self.keep = keep
        self._f = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if not self.path.parent.is_dir():
            raise ValueError(f"jsonl sink: folder does not exist: {self.path.parent}")
        self._open()

    def _open(self) -> None:
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the sink's life

    def _rotate(self) -> None:
        assert self._f is not None
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        for i in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._open()

    def _write(self, text: str) -> None:
        if self._f is None:
            self._open()
        assert self._f is not None
        if self.rotate_bytes and self._f.tell() > 0 and self._f.tell() + len(text) > self.rotate_bytes:
            self._rotate()
        self._f.write(text)

    async def emit(self, events: list[VerdictEvent]) -> None:
        if not events:
            return
        text = "".join(e.to_json() + "\n" for e in events)
        async with self._lock:
            try:
                self._write(text)
                self._f.flush()  # type: ignore[union-attr]
            except OSError as e:
                log.warning("jsonl sink write to %s failed: %s", self.path, e)
                if self.metrics:
                    self.metrics.sink_errors.labels(self.name).inc()
                return
        if self.metrics:
            self.metrics.sink_events.labels(self.name).inc(len(events))

    async def flush(self) -> None:
        async with self._lock:
            f = self._f
            if f is None:
                return
            try:
                f.flush()
                if self.fsync:
                    await asyncio.to_thread(os.fsync, f.fileno())
            except (OSError, ValueError) as e:
                log.warning("jsonl sink flush of %s failed: %s", self.path, e)

    async def close(self) -> None:
        await self.flush()
        async with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None
