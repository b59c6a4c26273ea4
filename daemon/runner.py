"""The composition root: builds the daemon from a validated config and runs it.

:func:`build_daemon` wires a :class:`~daemon.config.DaemonConfig` into a
:class:`~daemon.app.Daemon` (bundle, face pipeline with its region planner, sinks, the ``bundle``
section whole); :func:`run_daemon` adds the sources (PyAV streams, Kafka), the HTTP server and the
review page, runs until the sources end or ``stop`` is set and shuts down gracefully;
:func:`scan_config` is the config of a one-shot scan. Used by the CLI, ``fakewatch bench``,
``benchmarks/`` and the tests; it prints nothing (reports: :mod:`daemon.report`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.sinks.base import Sink
from detectors.faces.pipeline import FacePipeline

if TYPE_CHECKING:
    from daemon.app import Daemon
    from daemon.config import DaemonConfig
    from daemon.metrics import Metrics
    from detectors.faces.factory import FacesConfig
    from detectors.faces.roi import RegionPlanner

log = logging.getLogger("fakewatch")


def stream_id_for(path_or_url: str, taken: set[str]) -> str:
    """A label-safe, unique stream id from a file name or URL path."""
    from urllib.parse import urlsplit

    p = urlsplit(path_or_url)
    base = Path(p.path).stem if (p.path and p.path != "/") else (p.hostname or "stream")
    sid = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-._")[:56] or "stream"
    if not sid[0].isalnum():
        sid = "s" + sid
    out, i = sid, 2
    while out in taken:
        out, i = f"{sid}-{i}", i + 1
    taken.add(out)
    return out


def build_face_pipeline(faces_cfg: FacesConfig | dict | None = None) -> FacePipeline:
    """The configured face pipeline (:mod:`detectors.faces.factory`; None: the defaults, CenterFace + alignment)."""
    from detectors.faces.factory import FacesConfig, build_face_pipeline as build

    if faces_cfg is None or isinstance(faces_cfg, dict):
        faces_cfg = FacesConfig(**(faces_cfg or {}))
    return build(faces_cfg)


@dataclass
class RunResult:
    sources: list[Any]
    failed: dict[str, str]  # stream id -> one-line reason
    interrupted: bool = False


async def run_daemon(
    cfg: DaemonConfig,
    *,
    extra_sinks: list[Sink] = (),  # type: ignore[assignment]
    stop: asyncio.Event | None = None,
    serve_http: bool = True,
    on_ready: Callable[[Any], None] | None = None,
    until_sources_end: bool = True,
    linger: Callable[[], Any] | None = None,
) -> RunResult:
    """Build the daemon from a validated :class:`daemon.config.DaemonConfig` and run it.

    Returns when every source ended (``until_sources_end``) or when ``stop`` is set; then shuts
    down gracefully (drain, flush sinks) within ``cfg.shutdown_timeout_s``. ``linger`` (an async
    callable) runs after the shutdown while /metrics is still served (``demo --keep``).
    """
    from daemon.metrics import Metrics
    from daemon.server import MetricsServer
    from daemon.sources.av import AvSource

    metrics = Metrics()
    review = None
    if serve_http and cfg.http.enabled and review_enabled(cfg):
        from daemon.review.web import Review

        review = Review(cfg, metrics)
        await asyncio.to_thread(review.open)  # the SQLite store, when configured
        extra_sinks = [*extra_sinks, review.sink]
    try:
        daemon, sinks = build_daemon(cfg, metrics, extra_sinks)
    except BaseException:
        if review is not None:
            review.close()
        raise
    server = None
    if review is not None:
        review.attach(daemon)
    if serve_http and cfg.http.enabled:
        server = MetricsServer(metrics, daemon.ready, cfg.http.host, cfg.http.port, review=review)
        try:
            await server.start()
        except BaseException:
            if review is not None:
                review.close()
            raise
        log.info("serving /metrics, /healthz, /readyz", extra={"url": server.url})
        if review is not None:
            log.info("review page and control API", extra={
                "review": f"{server.url}/review" if cfg.http.review else None, "api": review.api_on})
    stop = stop or asyncio.Event()
    sources: list[Any] = []
    interrupted = False
    started = False
    sources_task: asyncio.Future | None = None
    try:
        await daemon.start()  # loads the models, starts the sinks
        started = True
        for s in cfg.streams:
            src = AvSource(s.id, s.url, metrics, s.source)
            sources.append(src)
            daemon.add_source(src)
        if cfg.kafka is not None:
            ksrc = _kafka_source(cfg, metrics, daemon)
            sources.append(ksrc)
            daemon.add_source(ksrc)
        if on_ready:
            on_ready(server)
        # (never cancel wait_sources: cancelling its gather would cancel the source tasks)
        stop_task = asyncio.ensure_future(stop.wait())
        waiters = [stop_task]
        if until_sources_end and sources:
            sources_task = asyncio.ensure_future(daemon.wait_sources())
            waiters.append(sources_task)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        interrupted = stop.is_set()
    finally:
        try:
            # stops the sources, drains in-flight frames, closes (flushes) the sinks
            await daemon.shutdown(drain=True, timeout_s=cfg.shutdown_timeout_s)
        finally:
            if not started:
                from daemon.sinks.factory import close_sinks

                await close_sinks(sinks)
            if linger is not None and started:
                await linger()
            if server is not None:
                await server.stop()
            if review is not None:
                await asyncio.to_thread(review.close)
            if sources_task is not None and not sources_task.done():
                await asyncio.wait([sources_task], timeout=1.0)
                sources_task.cancel()
    failed = {
        s.stream_id: (getattr(s, "last_error", None) or "failed")
        for s in sources
        if getattr(getattr(s, "state", None), "value", None) == "failed"
    }
    return RunResult(sources, failed, interrupted)


def review_enabled(cfg: DaemonConfig) -> bool:
    """True when the config asks for the review page or the control API (both need the HTTP server)."""
    http = cfg.http
    return bool(http.enabled and (http.review or http.api_token is not None))


def region_planner(faces_cfg: FacesConfig, face_pipeline: FacePipeline) -> RegionPlanner | None:
    """The face stage's region planner (None when disabled or the detector cannot search regions)."""
    from detectors.faces.roi import RegionPlanner

    r = faces_cfg.regions
    if not r.enabled or not face_pipeline.supports_regions:
        return None
    return RegionPlanner(r.full_interval_s, r.full_every, r.expand, r.face_px, full_cost_px=face_pipeline.full_pass_pixels,
                         full_scale=face_pipeline.full_pass_scale)


def build_daemon(cfg: DaemonConfig, metrics: Metrics, extra_sinks: list[Sink] = ()) -> tuple[Daemon, list[Sink]]:  # type: ignore[assignment]
    """(daemon, sinks) from a validated config: loads the bundle and the face models (slow)."""
    from daemon.app import Daemon
    from daemon.sinks.factory import build_sinks
    from detectors.bundle import load_bundle

    bundle = load_bundle(cfg.bundle.resolved_path(), verify=cfg.bundle.verify)
    face_pipeline = build_face_pipeline(cfg.faces)
    sinks = build_sinks(cfg.sinks, metrics, cfg.kafka) + list(extra_sinks)
    # fusion weights: the config's where set, else the bundle's fitted ones (the report legend reads them back)
    cfg.pipeline.fusion = cfg.pipeline.fusion.resolve(bundle.manifest.fusion)
    daemon = Daemon(cfg.pipeline, face_pipeline, bundle, sinks, metrics, models=cfg.bundle,
                    regions=region_planner(cfg.faces, face_pipeline))
    return daemon, sinks


def _kafka_source(cfg: DaemonConfig, metrics: Metrics, daemon: Daemon) -> Any:
    from daemon.sources.kafka import KafkaFrameSource

    return KafkaFrameSource(cfg.kafka, metrics, daemon=daemon)


def scan_config(
    inputs: list[str],
    bundle: str | None = None,
    jsonl: str | None = None,
    fps: float | None = None,
    faces: str | None = None,
    pack: str | None = None,
    sets: list[str] = (),  # type: ignore[assignment]
    stdout_format: str | None = None,
    port: int | None = None,
) -> tuple[DaemonConfig, dict[str, str], dict[str, str]]:
    """(config, {stream id: input}, {input: error}) for a one-shot scan of ``inputs``."""
    from daemon.config import ConfigError, check_stream_url, parse_value, set_path, validate_config

    errors: dict[str, str] = {}
    streams: list[dict[str, Any]] = []
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for item in inputs:
        try:
            check_stream_url(item)
        except ValueError as e:
            errors[item] = str(e)
            continue
        sid = stream_id_for(item, taken)
        ids[sid] = item
        src: dict[str, Any] = {"live": False}
        if fps is not None:
            src["analysis_fps"] = fps
        streams.append({"id": sid, "url": item, "source": src})
    data: dict[str, Any] = {"streams": streams, "sinks": {"stdout": None}, "http": {"enabled": port is not None}}
    if port is not None:
        data["http"]["port"] = port
    if stdout_format:
        data["sinks"]["stdout"] = {"format": stdout_format}
    if bundle:
        data["bundle"] = {"path": bundle}
    if jsonl:
        data["sinks"]["jsonl"] = {"path": jsonl}
    if faces:
        data["faces"] = _faces_section(faces, pack)
    problems = []
    for item in sets:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError("expected key=value")
            set_path(data, key.strip(), parse_value(value))
        except ValueError as e:
            problems.append(f"--set {item!r}: {e}")
    if problems:
        raise ConfigError(problems, "command line")
    return validate_config(data, "command line"), ids, errors


def _faces_section(backend: str, pack: str | None) -> dict[str, Any]:
    sec: dict[str, Any] = {"backend": backend}
    if pack:
        sec["pack_dir"] = pack
    return sec
