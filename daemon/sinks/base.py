"""The interface every verdict sink implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from daemon.events import VerdictEvent


class Sink(ABC):
    """Receives verdict events from the pipeline.

    ``emit`` returns only when the events are delivered (or the sink gave up after its retries and
    counted the failure in ``fakewatch_sink_errors_total``): the pipeline marks frames done, and
    the Kafka source commits their offsets, after ``emit`` returns. A sink never raises for a
    delivery failure; it logs and counts it, so one broken sink cannot stop the others.
    """

    name: str = "sink"

    async def start(self) -> None:
        """Open files/connections. Raise a clear error here for bad settings (before the daemon serves)."""

    @abstractmethod
    async def emit(self, events: list[VerdictEvent]) -> None: ...

    async def flush(self) -> None:
        """Deliver anything buffered."""

    async def close(self) -> None:
        """Flush and release resources."""
        await self.flush()
