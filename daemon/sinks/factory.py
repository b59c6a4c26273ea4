"""Builds the configured sinks (stdout, JSON lines, webhook, Kafka) from the config's ``sinks`` section."""

from __future__ import annotations

from typing import Any

from daemon.metrics import Metrics
from daemon.sinks.base import Sink


def build_sinks(sinks_cfg: Any, metrics: Metrics | None = None, kafka_cfg: Any = None) -> list[Sink]:
    """``sinks_cfg`` is a :class:`daemon.config.SinksConfig`; ``kafka_cfg`` the config's ``kafka`` section."""
    from daemon.sinks.jsonl import JsonlSink
    from daemon.sinks.stdout import StdoutSink
    from daemon.sinks.webhook import WebhookSink

    out: list[Sink] = []
    if sinks_cfg.stdout is not None and sinks_cfg.stdout.enabled:
        out.append(StdoutSink(sinks_cfg.stdout.format, metrics))
    if sinks_cfg.jsonl is not None:
        j = sinks_cfg.jsonl
        out.append(JsonlSink(j.path, metrics, fsync=j.fsync, rotate_mb=j.rotate_mb, keep=j.keep))
    if sinks_cfg.webhook is not None:
        w = sinks_cfg.webhook
        out.append(
            WebhookSink(
                w.url, metrics, timeout_s=w.timeout_s, retries=w.retries, backoff_s=w.backoff_s,
                backoff_max_s=w.backoff_max_s, headers=dict(w.headers), batch_size=w.batch_size,
            )
        )
    if sinks_cfg.kafka:
        if kafka_cfg is None:
            raise ValueError("sinks.kafka is true but there is no kafka section")
        from daemon.sinks.kafka import build_kafka_sink

        out.append(build_kafka_sink(kafka_cfg, metrics))
    return out


async def start_sinks(sinks: list[Sink]) -> None:
    for s in sinks:
        await s.start()


async def close_sinks(sinks: list[Sink]) -> None:
    """Flush and close every sink; one failing sink does not stop the others."""
    import logging

    for s in sinks:
        try:
            await s.close()
        except Exception as e:  # noqa: BLE001 - closing must reach every sink
            logging.getLogger(__name__).warning("closing sink %s failed: %s", s.name, e)
