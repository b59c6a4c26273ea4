"""Objects that move between daemon stages (small; the event loop only moves these)."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class StreamState(str, enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"


@dataclass
class Frame:
    """One decoded RGB frame of one stream.

    ``seq`` is the frame's index in its source (monotonic per stream), ``pts`` its presentation
    time in seconds from the stream start, ``captured_at`` the capture wall time when the source
    knows it (Kafka header) else the receipt time, ``received_at`` a ``time.monotonic()`` stamp
    used for latency metrics.

    ``on_done`` (optional) is called exactly once when the pipeline has finished with the frame:
    its verdict events were produced by the sinks, or it was dropped (the drop is counted). The
    Kafka source uses it to commit offsets only after processing (at-least-once).
    """

    stream_id: str
    seq: int
    pts: float
    image: np.ndarray  # (H, W, 3) uint8 RGB
    captured_at: float = field(default_factory=time.time)
    received_at: float = field(default_factory=time.monotonic)
    meta: dict[str, Any] = field(default_factory=dict)
    on_done: Callable[[], None] | None = None
    end_of_stream: bool = False

    def done(self) -> None:
        cb, self.on_done = self.on_done, None
        if cb is not None:
            cb()


def end_marker(stream_id: str, seq: int = -1, on_done: Callable[[], None] | None = None) -> Frame:
    """A control item telling the pipeline a stream ended (flush and end its tracks)."""
    return Frame(stream_id, seq, 0.0, np.zeros((0, 0, 3), np.uint8), on_done=on_done, end_of_stream=True)
