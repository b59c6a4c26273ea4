"""Evidence of verdict events, in one place: the face box and quality behind an event, the
best-quality crop of its track (box, quality, optional JPEG).

:meth:`StreamEvidence.for_event` returns an event's complete evidence *before* the event exists,
so the content-hashed event id (:mod:`daemon.events`) covers it; :meth:`StreamEvidence.emitted`
queues the JPEG of a track whose best crop changed since it was last written, and
:meth:`StreamEvidence.flush` writes the queued JPEGs (one thread hop) before the events reach the
sinks.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from daemon.config_base import StrictModel
from daemon.events import VerdictEvent

log = logging.getLogger("fakewatch.pipeline")

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(stream_id: str) -> str:
    """A stream id as a file-name component (for evidence folders)."""
    return _SAFE.sub("_", stream_id).strip("._") or "stream"


class EvidenceConfig(StrictModel):
    """Optional evidence crops: the best-quality aligned crop of each track as a JPEG."""

    enabled: bool = False
    dir: Path | None = Field(None, description="folder for <stream>/track-<id>.jpg (needed when enabled)")
    jpeg_quality: int = Field(90, ge=10, le=100)


def _box(face: Any) -> list[float]:
    return [round(float(v), 1) for v in face.box[:4]]


class StreamEvidence:
    """The evidence state of one stream: the best crop of each live track (quality, crop, box)."""

    def __init__(self, stream_id: str, cfg: EvidenceConfig):
        self.stream_id = stream_id
        self.cfg = cfg
        self.best: dict[int, tuple[float, np.ndarray, list[float]]] = {}
        self.dirty: set[int] = set()  # tracks whose best crop changed since it was written
        self._writes: list[tuple[Path, np.ndarray]] = []

    def crop_path(self, track_id: int) -> Path | None:
        if not self.cfg.enabled or self.cfg.dir is None:
            return None
        return Path(self.cfg.dir) / safe_name(self.stream_id) / f"track-{track_id}.jpg"

    def observe(self, track_id: int, obs: Any) -> None:
        """Keep ``obs`` (a face observation: face, crop, quality) when it is the track's best so far."""
        best = self.best.get(track_id)
        if best is None or obs.quality > best[0]:
            self.best[track_id] = (obs.quality, obs.crop, _box(obs.face))
            self.dirty.add(track_id)

    def for_event(self, track_id: int, obs: Any = None) -> dict[str, Any]:
        """The evidence of an event of ``track_id``: the face behind it (``obs``, when there is one),
        the track's best crop and, when crops are written, the crop's path."""
        out: dict[str, Any] = {}
        if obs is not None:
            out["box"] = _box(obs.face)
            out["quality"] = round(float(obs.quality), 4)
        best = self.best.get(track_id)
        if best is not None:
            out["best_box"] = best[2]
            out["best_quality"] = round(float(best[0]), 4)
            path = self.crop_path(track_id)
            if path is not None:
                out["crop"] = str(path)
        return out

    def emitted(self, ev: VerdictEvent) -> None:
        """An event of this stream was made: queue its track's crop if it changed; an end forgets the track."""
        tid = ev.track_id
        best = self.best.get(tid)
        path = self.crop_path(tid)
        if best is not None and path is not None and tid in self.dirty:
            self._writes.append((path, best[1]))
            self.dirty.discard(tid)
        if ev.event == "end":
            self.forget(tid)

    def forget(self, track_id: int) -> None:
        self.best.pop(track_id, None)
        self.dirty.discard(track_id)

    async def flush(self) -> None:
        """Write the queued crops (JPEG, in a thread); a failing write is logged, never fatal."""
        writes, self._writes = self._writes, []
        if not writes:
            return
        q = self.cfg.jpeg_quality

        def write_all() -> None:
            import cv2

            for path, crop in writes:
                path.parent.mkdir(parents=True, exist_ok=True)
                ok = cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
                if not ok:
                    log.warning("evidence crop could not be written to %s", path)

        try:
            await asyncio.to_thread(write_all)
        except OSError as e:
            log.warning("evidence crops not written: %s", e)
