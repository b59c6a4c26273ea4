"""Webhook sink: POSTs event batches as JSON to an HTTP(S) endpoint, with retries.

Body: ``{"schema_version": 1, "events": [<verdict event>, ...]}`` (at most ``batch_size`` events
per request), ``Content-Type: application/json``. A 2xx answer is a delivery. Connection errors,
timeouts, 408, 429 and 5xx are retried ``retries`` times with exponential backoff
(``backoff_s * 2**attempt``, capped at ``backoff_max_s``); other 4xx answers are not retried.
A batch that could not be delivered is logged and counted in ``fakewatch_sink_errors_total``
(one per failed request); ``emit`` never raises.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp

from daemon.events import SCHEMA_VERSION, VerdictEvent
from daemon.logging import redact_text
from daemon.metrics import Metrics
from daemon.sinks.base import Sink

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class WebhookSink(Sink):
    name = "webhook"

    def __init__(
        self,
        url: str,
        metrics: Metrics | None = None,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        headers: dict[str, str] | None = None,
        batch_size: int = 100,
    ):
        self.url = url
        self.metrics = metrics
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.headers = {"Content-Type": "application/json", "User-Agent": "fakewatch", **(headers or {})}
        self.batch_size = batch_size
        self._session: aiohttp.ClientSession | None = None
        self.attempts = 0  # requests sent (for tests and logs)

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)

    async def emit(self, events: list[VerdictEvent]) -> None:
        for i in range(0, len(events), self.batch_size):
            await self._deliver(events[i : i + self.batch_size])

    async def _deliver(self, batch: list[VerdictEvent]) -> bool:
        if not batch:
            return True
        if self._session is None:
            await self.start()
        assert self._session is not None
        body = json.dumps(
            {"schema_version": SCHEMA_VERSION, "events": [e.to_dict() for e in batch]}, separators=(",", ":")
        ).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))
            self.attempts += 1
            try:
                async with self._session.post(self.url, data=body) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        if self.metrics:
                            self.metrics.sink_events.labels(self.name).inc(len(batch))
                        return True
                    last = f"HTTP {resp.status}"
                    if resp.status not in RETRY_STATUS:
                        break
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        log.warning(
            "webhook delivery of %d event(s) to %s failed after %d attempt(s): %s",
            len(batch), redact_text(self.url), attempt + 1, redact_text(last),
        )
        if self.metrics:
            self.metrics.sink_errors.labels(self.name).inc()
        return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
