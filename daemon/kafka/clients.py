"""Small helpers for aiokafka clients."""

from __future__ import annotations

import contextlib


async def start_or_close(client) -> None:
    """``await client.start()``; if that fails (broker unreachable, auth), stop the half-open client
    before re-raising, so reconnect loops do not leak clients ("Unclosed AIOKafkaProducer")."""
    try:
        await client.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await client.stop()
        raise
