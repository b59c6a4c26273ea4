"""Stdout sink: one JSON line per event (machine-readable), or a readable table row (``pretty``)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from daemon.events import VerdictEvent
from daemon.metrics import Metrics
from daemon.sinks.base import Sink

PRETTY_HEADER = f"{'time':<8}  {'stream':<16} {'track':>5} {'event':<6} {'frames':>6} {'score':>6} {'frame':>6} {'temp':>6}  {'verdict':<9} alert"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def pretty_row(e: VerdictEvent) -> str:
    """One fixed-width line for a terminal (the header is :data:`PRETTY_HEADER`)."""
    ts = time.strftime("%H:%M:%S", time.localtime(e.emitted_at or time.time()))
    return (
        f"{ts:<8}  {e.stream_id[:16]:<16} {e.track_id:>5} {e.event:<6} {e.frames:>6} {_fmt(e.score):>6} "
        f"{_fmt(e.scores.get('frame')):>6} {_fmt(e.scores.get('temporal')):>6}  {e.verdict:<9} {e.alert or ''}"
    ).rstrip()


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
