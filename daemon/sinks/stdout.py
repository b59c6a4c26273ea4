"""Stdout sink: one JSON line per event (machine-readable), or a readable table row (``pretty``)."""

from __future__ import annotations

import sys
from typing import TextIO

from daemon.events import VerdictEvent
from daemon.metrics import Metrics
from daemon.sinks.base import Sink

# Same column names and order as the per-identity table of ``scan``/``demo`` (daemon/report.py), and,
# like it, stream time: ``last s`` is the presentation time of the newest frame the event covers.
PRETTY_COLUMNS = (("last s", ">8"), ("stream", "<16"), ("track", ">5"), ("event", "<6"), ("frames", ">6"),
                  ("frame", ">6"), ("temporal", ">8"), ("fused", ">6"), ("verdict", "<9"), ("alert", ""))
PRETTY_HEADER = " ".join(f"{name:{fmt}}" for name, fmt in PRETTY_COLUMNS).rstrip()


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def pretty_row(e: VerdictEvent) -> str:
    """One fixed-width line for a terminal (the header is :data:`PRETTY_HEADER`)."""
    cells = (f"{e.pts_last:.2f}", e.stream_id[:16], e.track_id, e.event, e.frames, _fmt(e.scores.get("frame")),
             _fmt(e.scores.get("temporal")), _fmt(e.score), e.verdict, e.alert or "")
    return " ".join(f"{c:{fmt}}" for c, (_, fmt) in zip(cells, PRETTY_COLUMNS, strict=True)).rstrip()


class StdoutSink(Sink):
    name = "stdout"

    def __init__(self, fmt: str = "json", metrics: Metrics | None = None, stream: TextIO | None = None):
        if fmt not in ("json", "pretty"):
            raise ValueError(f"stdout sink format must be json or pretty, got {fmt!r}")
        self.fmt = fmt
        self.metrics = metrics
        self._stream = stream
        self._header_done = False

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout  # resolved late: tests and the CLI may swap sys.stdout

    async def emit(self, events: list[VerdictEvent]) -> None:
        if not events:
            return
        try:
            if self.fmt == "json":
                text = "".join(e.to_json() + "\n" for e in events)
            else:
                text = "" if self._header_done else PRETTY_HEADER + "\n"
                self._header_done = True
                text += "".join(pretty_row(e) + "\n" for e in events)
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError) as e:  # closed pipe / closed file: count, never raise
            if self.metrics:
                self.metrics.sink_errors.labels(self.name).inc()
            import logging

            logging.getLogger(__name__).warning("stdout sink write failed: %s", e)
            return
        if self.metrics:
            self.metrics.sink_events.labels(self.name).inc(len(events))

    async def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass
