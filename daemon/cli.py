"""``fakewatch``: the daemon's command line.

Subcommands:

* ``run -c CONFIG [--set k=v ...] [--dry-run]`` — the daemon. SIGTERM/SIGINT: graceful shutdown
  (stop sources, drain the pipeline, flush sinks, exit 0 within ``shutdown_timeout_s``); a second
  signal exits at once with code 130.
* ``scan PATH|URL ...`` — one-shot scan of files/URLs: per-identity report table, the status of
  every input (ok / no faces / failed: reason) + JSONL events; exit 1 when any input failed.
* ``demo`` — builds a real sample clip and its face-swapped twin (cached), scans both with the
  default bundle while serving metrics (``--keep``: until Ctrl-C), prints verdicts and the
  per-identity table.
* ``sample-clips [DIR]`` — writes the demo's two clips to DIR (default ``out/sample``), the inputs
  of ``examples/sample-clip.yaml``.
* ``bench`` — throughput of the pipeline with N live-paced streams against a naive baseline.
* ``bundle-info [DIR]`` — a bundle's manifest summary.
* ``produce`` / ``verdicts`` — Kafka tools (daemon/kafka/tools.py).

Exit codes: 0 success, 1 runtime failure (some inputs failed), 2 bad configuration or usage,
130 interrupted twice.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.events import VerdictEvent
from daemon.sinks.base import Sink

log = logging.getLogger("fakewatch")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130


# --- small helpers ---------------------------------------------------------------------------------


def _err(msg: str) -> None:
    print(f"fakewatch: error: {msg}", file=sys.stderr, flush=True)


class CollectSink(Sink):
    """Keeps every event in memory (for the report tables of ``scan`` and ``demo``)."""

    name = "report"

    def __init__(self, on_event: Callable[[VerdictEvent], None] | None = None):
        self.events: list[VerdictEvent] = []
        self.on_event = on_event

    async def emit(self, events: list[VerdictEvent]) -> None:
        self.events.extend(events)
        if self.on_event:
            for e in events:
                self.on_event(e)


@dataclass
class IdentityRow:
    stream: str
    track: int
    frames: int
    first: float
    last: float
    frame_score: float | None
    temporal_score: float | None
    score: float
    verdict: str
    alerts: set[str] = field(default_factory=set)


def identity_rows(events: list[VerdictEvent]) -> list[IdentityRow]:
    """One row per (stream, track): the latest event's scores (the ``end`` event when there is one)."""
    rows: dict[tuple[str, int], IdentityRow] = {}
    for e in sorted(events, key=lambda e: (e.stream_id, e.track_id, e.seq_last, e.event == "end")):
        key = (e.stream_id, e.track_id)
        prev = rows.get(key)
        row = IdentityRow(
            e.stream_id, e.track_id, e.frames, e.pts_first, e.pts_last, e.scores.get("frame"),
            e.scores.get("temporal"), e.score, e.verdict, set(prev.alerts) if prev else set(),
        )
        if e.alert:
            row.alerts.add(e.alert)
        rows[key] = row
    return list(rows.values())


def score_legend(fusion: Any = None) -> str:
    """What the score columns mean, with the configured weights and thresholds (daemon/fusion.py)."""
    if fusion is None:
        from daemon.fusion import FusionConfig

        fusion = FusionConfig()
    fusion = fusion.resolve()  # no-op when the weights are set (build_daemon sets the bundle's)
    wf, wt = fusion.frame_weight, fusion.temporal_weight
    hi, lo = fusion.threshold_high, fusion.threshold_low
    return (
        "scores 0..1, higher = more likely manipulated. frame: the frame model (calibrated, 0.5 = the bundle's "
        "threshold; smoothed over the track). temporal: DiffFake over pairs of the track's faces seconds apart "
        f"(- until a pair exists). fused: ({wf:g} frame + {wt:g} temporal) / weights of the scores present. "
        f"verdict: fake once fused >= {hi:g} (until it falls below {lo:g}), real below {lo:g}, uncertain in "
        f"between or before {fusion.min_frames} scored frames. first s / last s: stream time in seconds."
    )


def print_identity_table(events: list[VerdictEvent], title: str = "per-identity verdicts", console=None,
                         fusion: Any = None, empty: str = "no face tracks were confirmed") -> None:
    """The per-identity table (one row per track) with the score legend under it."""
    from rich.table import Table

    console = console or _console()
    rows = identity_rows(events)
    t = Table(title=title, caption=score_legend(fusion) if rows else empty, caption_justify="left")
    for col, just in (
        ("stream", "left"), ("track", "right"), ("frames", "right"), ("first s", "right"), ("last s", "right"),
        ("frame", "right"), ("temporal", "right"), ("fused", "right"), ("verdict", "left"),
        ("alerts", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    for r in rows:
        colour = {"fake": "bold red", "real": "green"}.get(r.verdict, "yellow")
        t.add_row(
            r.stream, str(r.track), str(r.frames), f"{r.first:.2f}", f"{r.last:.2f}", f(r.frame_score),
            f(r.temporal_score), f(r.score), f"[{colour}]{r.verdict}[/]", ",".join(sorted(r.alerts)) or "-",
        )
    console.print(t)


@dataclass
class InputStatus:
    input: str  # as given (redacted when shown)
    status: str  # ok | no faces | failed: reason
    tracks: int


def input_statuses(inputs: list[str], ids: dict[str, str], rejected: dict[str, str], failed: dict[str, str],
                   events: list[VerdictEvent]) -> list[InputStatus]:
    """One status per input, in the order given: ``ok`` (face tracks found), ``no faces`` (read to the
    end, no track confirmed) or ``failed: reason`` (rejected before the run, or the source failed)."""
    from daemon.sources.base import redact_url

    tracks: dict[str, set[int]] = {}
    for e in events:
        tracks.setdefault(e.stream_id, set()).add(e.track_id)
    pending = list(ids.items())  # (stream id, input) in the order of the inputs that were accepted
    out = []
    for item in inputs:
        sid = pending.pop(0)[0] if pending and pending[0][1] == item else None
        n = len(tracks.get(sid, ())) if sid else 0
        why = rejected.get(item) if sid is None else failed.get(sid)
        if why is not None:
            status = f"failed: {_without_input(item, why)}"
        else:
            status = "ok" if n else "no faces"
        out.append(InputStatus(redact_url(item), status, n))
    return out


def _without_input(item: str, why: str) -> str:
    """``why`` without a leading copy of the input (``/x.mp4: not a readable video`` -> ``not a readable video``)."""
    from daemon.sources.base import redact_url

    for shown in (redact_url(item), str(Path(item).expanduser())):
        if why.startswith(shown + ": "):
            return why[len(shown) + 2:]
        if why.endswith(": " + shown):  # "file not found: /x.mp4"
            return why[: -len(shown) - 2]
    return why


def input_lines(statuses: list[InputStatus]) -> list[tuple[str, str]]:
    """(kind, line) per input: ``ok  PATH (2 face tracks)``, ``no faces  PATH``, ``failed  PATH: reason``."""
    out = []
    for st in statuses:
        kind, _, reason = st.status.partition(": ") if st.status.startswith("failed") else (st.status, "", "")
        tail = f": {reason}" if reason else f" ({st.tracks} face track{'s' if st.tracks != 1 else ''})" if st.tracks else ""
        out.append((kind, f"  {kind:<8}  {st.input}{tail}"))
    return out


def print_input_table(statuses: list[InputStatus], console=None) -> None:
    """Every input on one line with its status (plain lines: long paths and reasons are never cut)."""
    from rich.text import Text

    console = console or _console()
    n_ok = sum(st.status.startswith("ok") for st in statuses)
    console.print()
    console.print(f"inputs: {len(statuses)}, {n_ok} ok, "
                  f"{sum(st.status.startswith('no faces') for st in statuses)} without faces, "
                  f"{sum(st.status.startswith('failed') for st in statuses)} failed", markup=False, highlight=False)
    for kind, line in input_lines(statuses):
        style = "green" if kind == "ok" else "yellow" if kind.startswith("no faces") else "bold red"
        console.print(Text(line, style=style), soft_wrap=True)


def _console():
    """A rich console; wide enough for the report tables when stdout is not a terminal."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def _input_error(item: str, why: str) -> None:
    """One line per bad input (the reason may already start with the redacted input)."""
    from daemon.sources.base import redact_url

    shown = redact_url(item)
    named = shown in why or str(Path(item).expanduser()) in why  # (e.g. "file not found: /x.mp4")
    _err(why if named else f"{shown}: {why}")

def _run_inputs(main, ids: dict):
    """Run a scan/demo coroutine; one error line for a fatal error (None) or per failed input."""
    try:
        result = asyncio.run(main())
    except Exception as e:  # noqa: BLE001
        _err(_one_line(e))
        return None
    for sid, why in result.failed.items():
        _input_error(ids.get(sid, sid), why)
    return result


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


# --- building and running the daemon --------------------------------------------------------------


def build_face_pipeline(faces_cfg: Any):
    """The configured face pipeline (detectors.faces.factory), CenterFace + alignment by default."""
    try:
        from detectors.faces.factory import build_face_pipeline as build
    except ImportError:  # pragma: no cover - until the factory lands
        from detectors.faces.centerface import CenterFaceDetector
        from detectors.faces.pipeline import FacePipeline

        return FacePipeline(CenterFaceDetector())
    if faces_cfg is None or isinstance(faces_cfg, dict):
        from detectors.faces.factory import FacesConfig

        faces_cfg = FacesConfig(**(faces_cfg or {}))
    return build(faces_cfg)


@dataclass
class RunResult:
    sources: list[Any]
    failed: dict[str, str]  # stream id -> one-line reason
    interrupted: bool = False


async def run_daemon(
    cfg: Any,
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


def review_enabled(cfg: Any) -> bool:
    """True when the config asks for the review page or the control API (both need the HTTP server)."""
    http = cfg.http
    return bool(http.enabled and (getattr(http, "review", False) or getattr(http, "api_token", None) is not None))


def region_planner(faces_cfg: Any, face_pipeline: Any) -> Any:
    """The face stage's region planner (None when disabled or the detector cannot search regions)."""
    from detectors.faces.roi import RegionPlanner

    r = faces_cfg.regions
    if not r.enabled or not getattr(face_pipeline, "supports_regions", False):
        return None
    return RegionPlanner(r.full_interval_s, r.full_every, r.expand, r.face_px, full_cost_px=face_pipeline.full_pass_pixels,
                         full_scale=face_pipeline.full_pass_scale)


def build_daemon(cfg: Any, metrics: Any, extra_sinks: list[Sink] = ()) -> tuple[Any, list[Sink]]:  # type: ignore[assignment]
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


def _kafka_source(cfg, metrics, daemon):
    from daemon.sources.kafka import KafkaFrameSource

    return KafkaFrameSource(cfg.kafka, metrics, daemon=daemon)


class SignalStop:
    """First SIGTERM/SIGINT sets ``event`` (graceful); a second one exits at once with code 130."""

    def __init__(self, event: asyncio.Event, on_first: Callable[[str], None] | None = None):
        self.event = event
        self.on_first = on_first
        self.count = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._handle, sig)

    def _handle(self, sig: signal.Signals) -> None:
        self.count += 1
        if self.count == 1:
            if self.on_first:
                self.on_first(sig.name)
            self.event.set()
            return
        try:
            print(f"fakewatch: second {sig.name}: exiting now", file=sys.stderr, flush=True)
            sys.stdout.flush()
        finally:
            os._exit(EXIT_INTERRUPTED)


# --- run -------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.config import ConfigError, dump_yaml, load_config
    from daemon.logging import setup_logging

    try:
        cfg = load_config(args.config, args.set + ([f"sinks.stdout.format={args.format}"] if args.format else []))
    except ConfigError as e:
        print(str(e), file=sys.stderr, flush=True)
        return EXIT_CONFIG
    if args.dry_run:
        sys.stdout.write(dump_yaml(cfg))
        sys.stdout.flush()
        print(f"{args.config}: ok", file=sys.stderr, flush=True)
        return EXIT_OK
    serving = review_enabled(cfg)  # the review page / control API keep the daemon up until SIGTERM
    if not cfg.streams and cfg.kafka is None and not (serving and cfg.http.api_token is not None):
        _err(f"{args.config}: nothing to watch (configure streams, a kafka section or http.api_token)")
        return EXIT_CONFIG
    setup_logging(cfg.logging.level, cfg.logging.format)

    async def main() -> RunResult:
        stop = asyncio.Event()
        SignalStop(stop, lambda name: log.info("shutting down", extra={"signal": name})).install(
            asyncio.get_running_loop()
        )
        return await run_daemon(cfg, stop=stop, until_sources_end=cfg.kafka is None and not serving)

    try:
        result = asyncio.run(main())
    except Exception as e:  # noqa: BLE001 - one clear line, not a traceback
        log.debug("fatal", exc_info=True)
        _err(_one_line(e))
        return EXIT_FAILED
    for sid, why in result.failed.items():
        log.error("stream failed", extra={"stream": sid, "reason": why})
    log.info("stopped", extra={"interrupted": result.interrupted})
    if result.sources and len(result.failed) == len(result.sources) and not result.interrupted:
        return EXIT_FAILED  # every input failed: nothing was watched
    return EXIT_OK


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# --- scan ------------------------------------------------------------------------------------------


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
):
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


def cmd_scan(args: argparse.Namespace) -> int:
    from daemon.config import ConfigError
    from daemon.logging import setup_logging

    setup_logging("warning" if not args.verbose else "info", "text")
    if not args.verbose:  # failed inputs get one line from us, not a second one from the source's log
        logging.getLogger("fakewatch.sources").setLevel(logging.CRITICAL)
    if args.faces == "insightface" and not args.pack:
        _err("--faces insightface needs --pack DIR (a local InsightFace model-pack folder)")
        return EXIT_CONFIG
    try:
        cfg, ids, errors = scan_config(
            args.inputs, args.bundle, args.jsonl, args.fps, args.faces, args.pack, args.set,
            stdout_format="pretty" if args.events else None,
        )
    except ConfigError as e:
        print(str(e), file=sys.stderr, flush=True)
        return EXIT_CONFIG
    for item, why in errors.items():
        _input_error(item, why)
    if not ids:  # every input was rejected up front
        print_input_table(input_statuses(args.inputs, ids, errors, {}, []))
        return EXIT_FAILED
    collect = CollectSink()

    async def main() -> RunResult:
        stop = asyncio.Event()
        SignalStop(stop).install(asyncio.get_running_loop())
        return await run_daemon(cfg, extra_sinks=[collect], stop=stop, serve_http=False)

    t0 = time.monotonic()
    result = _run_inputs(main, ids)
    if result is None:
        return EXIT_FAILED
    statuses = input_statuses(args.inputs, ids, errors, result.failed, collect.events)
    if result.interrupted:
        for st in statuses:
            if not st.status.startswith("failed"):
                st.status += " (interrupted)"
    n_failed = sum(st.status.startswith("failed") for st in statuses)
    empty = "no face tracks were confirmed" + (f" ({n_failed} of {len(statuses)} input(s) failed: see the inputs "
                                               "below)" if n_failed else "")
    print_identity_table(collect.events, title=f"fakewatch scan: {len(statuses)} input(s), {time.monotonic() - t0:.1f} s",
                         fusion=cfg.pipeline.fusion, empty=empty)
    print_input_table(statuses)
    if args.jsonl:
        print(f"{len(collect.events)} event(s) written to {args.jsonl}")
    return EXIT_OK if not n_failed and not result.interrupted else EXIT_FAILED


# --- demo ------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from daemon.config import ConfigError
    from daemon.logging import setup_logging

    setup_logging("warning", "text")
    console = _console()
    try:  # check the bundle before spending time on the clips
        scan_config([], args.bundle)
    except ConfigError as e:
        print(str(e), file=sys.stderr, flush=True)
        return EXIT_CONFIG
    real, fake = _demo_clips(console, args.frames)
    console.print(f"  real:    {real}\n  swapped: {fake}")
    try:
        cfg, ids, errors = scan_config(
            [str(real), str(fake)], args.bundle, args.jsonl, args.fps, stdout_format="pretty", port=args.port,
            sets=["http.host=127.0.0.1"],
        )
    except ConfigError as e:
        print(str(e), file=sys.stderr, flush=True)
        return EXIT_CONFIG
    for item, why in errors.items():
        _err(f"{item}: {why}")
    collect = CollectSink()

    def ready(server) -> None:
        if server is not None:
            how_long = "until Ctrl-C (--keep)" if args.keep else "while the scan runs, a few seconds; --keep: until Ctrl-C"
            console.print(f"  metrics: {server.url}/metrics  (health: /healthz, readiness: /readyz; {how_long})")

    async def main() -> RunResult:
        stop = asyncio.Event()
        SignalStop(stop).install(asyncio.get_running_loop())

        async def keep() -> None:
            print_identity_table(collect.events, title="fakewatch demo: real.mp4 vs swapped.mp4", console=console,
                                 fusion=cfg.pipeline.fusion)
            if args.keep and not stop.is_set():
                console.print("--keep: the scan is done; still serving the metrics until Ctrl-C")
                await stop.wait()

        return await run_daemon(cfg, extra_sinks=[collect], stop=stop, on_ready=ready, linger=keep)

    result = _run_inputs(main, ids)
    if result is None:
        return EXIT_FAILED
    return EXIT_OK if not result.failed else EXIT_FAILED


def _demo_clips(console, n_frames: int) -> tuple[Path, Path]:
    """The demo's real clip and its face-swapped twin: from the cache, or built (and cached) now."""
    from daemon import demo

    cached = demo.cached_clips(n_frames=n_frames)
    if cached is not None:
        console.print(f"[bold]fakewatch demo[/]: using the sample clip and its face-swapped twin cached in "
                      f"{cached[0].parent}")
        return cached
    console.print("[bold]fakewatch demo[/]: building the sample clip and its face-swapped twin (first run only: "
                  f"they are cached in {demo.cache_dir()} for the next runs) ...")
    faces = build_face_pipeline(None)
    detector = getattr(faces, "detector", faces)
    return demo.build_demo_clips(detector.detect, n_frames=n_frames)


# --- sample-clips ----------------------------------------------------------------------------------


def cmd_sample_clips(args: argparse.Namespace) -> int:
    """Copy the demo's clips (built on first use) to ``DIR``: inputs for examples/sample-clip.yaml."""
    import shutil

    from daemon.logging import setup_logging

    setup_logging("warning", "text")
    console = _console()
    out = Path(args.dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _err(f"{out}: cannot create the folder ({e.strerror})")
        return EXIT_FAILED
    real, fake = _demo_clips(console, args.frames)
    for src, name in ((real, "real.mp4"), (fake, "swapped.mp4")):
        shutil.copyfile(src, out / name)
        console.print(f"  {out / name}")
    console.print("next: fakewatch run -c examples/sample-clip.yaml  (from the checkout root; Ctrl-C stops it)")
    return EXIT_OK


# --- bundle-info -----------------------------------------------------------------------------------


def cmd_bundle_info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from detectors.bundle import BundleError, default_bundle_path, load_bundle

    root = Path(args.dir) if args.dir else default_bundle_path()
    try:
        b = load_bundle(root, verify=not args.no_verify)
    except BundleError as e:
        _err(str(e))
        return EXIT_FAILED
    m = b.manifest
    console = _console()
    t = Table(title=f"bundle {m.name}@{m.version}  ({root})", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    t.add_row("format", str(m.format_version))
    t.add_row("created", m.created or "-")
    t.add_row("crop", f"{m.crop.size}px, scale {m.crop.scale}, {m.crop.template}")
    if m.frame:
        fr = m.frame
        t.add_row("frame model", f"{fr.method} / {fr.backbone}, input {fr.input_size}, threshold {fr.threshold:.4g}, "
                  f"file {fr.file}{' (+fp16)' if fr.fp16_file else ''}, v{fr.version}")
    if m.temporal:
        tm = m.temporal
        t.add_row("temporal model", f"{tm.method} / {tm.backbone}, input {tm.input_size}, combination {tm.combination}, "
                  f"threshold {tm.threshold:.4g}, files {tm.file} + {tm.gmm_file}, v{tm.version}")
    for k, v in sorted(m.metrics.items()):
        t.add_row(f"metric {k}", _short(v))
    for k, v in sorted(m.provenance.items()):
        t.add_row(f"provenance {k}", _short(v))
    for k, v in sorted(m.versions.items()):
        t.add_row(f"version {k}", str(v))
    t.add_row("files", ", ".join(f"{rel} ({(root / rel).stat().st_size / 1e6:.1f} MB)" for rel in sorted(m.files)))
    t.add_row("verified", "sha256 ok" if not args.no_verify else "not checked (--no-verify)")
    console.print(t)
    return EXIT_OK


def _short(v: Any, n: int = 100) -> str:
    s = v if isinstance(v, str) else __import__("json").dumps(v, default=str)
    return s if len(s) <= n else s[: n - 1] + "…"


# --- bench -----------------------------------------------------------------------------------------

RUNTIME_CHOICES = ("auto", "cpu", "cuda", "tensorrt", "torch", "torch-cuda")  # = detectors.runtime.RUNTIMES


def cmd_bench(args: argparse.Namespace) -> int:
    from daemon import bench

    return bench.main(args)


# --- parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fakewatch", description="Streaming deepfake-forensics daemon")
    p.add_argument("--version", action="version", version=f"fakewatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the daemon from a config file")
    r.add_argument("-c", "--config", required=True, help="YAML config file (see docs/configuration.md)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. pipeline.max_batch=16")
    r.add_argument("--format", choices=("json", "pretty"), help="stdout sink format (same as --set sinks.stdout.format=...)")
    r.add_argument("--dry-run", action="store_true", help="validate, print the resolved config (secrets redacted), exit 0/2")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("scan", help="scan files or URLs once and print a per-identity report")
    s.add_argument("inputs", nargs="+", metavar="PATH|URL")
    s.add_argument("--bundle", help="model bundle folder (default: the shipped default bundle)")
    s.add_argument("--jsonl", help="write verdict events to this JSON-lines file")
    s.add_argument("--fps", type=float, default=None, help="analysed frames per second (default: the source default)")
    s.add_argument("--faces", choices=("centerface", "insightface"), default=None, help="face detector backend")
    s.add_argument("--pack", help="InsightFace model-pack folder (with --faces insightface)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    s.add_argument("--events", action="store_true", help="also print every verdict event as it happens")
    s.add_argument("-v", "--verbose", action="store_true", help="log progress")
    s.set_defaults(func=cmd_scan)

    d = sub.add_parser("demo", help="scan a built-in sample clip and its face-swapped twin")
    d.add_argument("--port", type=int, default=9108, help="metrics port on 127.0.0.1 (default 9108)")
    d.add_argument("--keep", action="store_true", help="keep serving on the port after the scan until Ctrl-C")
    d.add_argument("--bundle", help="model bundle folder (default: the shipped default bundle)")
    d.add_argument("--fps", type=float, default=None, help="analysed frames per second")
    d.add_argument("--frames", type=int, default=100, help="frames per demo clip (25 fps)")
    d.add_argument("--jsonl", help="also write the verdict events to this JSON-lines file")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="throughput: pipeline with N live-paced streams vs a naive baseline")
    b.add_argument("--clip", help="video to use (default: a generated 720p clip of --scene)")
    b.add_argument("--scene", choices=["single", "group"], default="single",
                   help="generated clip: one moving face (default) or six (a crowded shot)")
    b.add_argument("--streams", type=int, default=2)
    b.add_argument("--fps", type=float, default=5.0, help="analysed fps per stream")
    b.add_argument("--seconds", type=float, default=20.0, help="duration of each measurement")
    b.add_argument("--bundle", help="model bundle folder (default: the shipped default bundle)")
    b.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    b.add_argument("--no-baseline", action="store_true", help="skip the naive baseline")
    b.add_argument("--baseline-device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="torch device of the naive baseline's classifier (auto: cuda when torch sees a GPU)")
    b.add_argument("--runtime", choices=RUNTIME_CHOICES, help="bundle.runtime for the pipeline (default: the config's, auto)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. faces.device=cuda")
    b.add_argument("--clip-fps", type=float, default=25.0, help="frame rate of the generated clip (default 25)")
    b.add_argument("--ramp", action="store_true",
                   help="ramp live streams (--ramp-start, --ramp-step, ... --ramp-max) until the daemon no longer keeps up")
    b.add_argument("--ramp-start", type=int, default=None, help="streams at the first step (default: --streams)")
    b.add_argument("--ramp-step", type=int, default=None, help="streams added per step (default: --ramp-start)")
    b.add_argument("--ramp-max", type=int, default=256, help="last step's streams (default 256)")
    b.add_argument("--settle-seconds", type=float, default=None, help="wait after adding streams before measuring (default 3)")
    b.add_argument("--max-p99-ms", type=float, default=1000.0, help="p99 frame-to-verdict limit of a sustained step")
    b.add_argument("--ramp-out", default="out/bench-ramp", help="folder for ramp.md, ramp.json, ramp.png")
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("sample-clips", help="write the demo's sample clip and its face-swapped twin to a folder",
                       description="Write real.mp4 (a moving real face) and swapped.mp4 (its face-swapped twin) to DIR, "
                       "the inputs of examples/sample-clip.yaml. Built once from images inside installed packages and "
                       "cached, like the demo's clips.")
    c.add_argument("dir", nargs="?", default="out/sample", help="folder to write to (default: out/sample, git-ignored)")
    c.add_argument("--frames", type=int, default=100, help="frames per clip (25 fps)")
    c.set_defaults(func=cmd_sample_clips)

    i = sub.add_parser("bundle-info", help="print a model bundle's manifest summary")
    i.add_argument("dir", nargs="?", help="bundle folder (default: the shipped default bundle)")
    i.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the files")
    i.set_defaults(func=cmd_bundle_info)

    try:
        from daemon.kafka import tools as kafka_tools
    except ImportError:
        kafka_tools = None
    if kafka_tools is not None and hasattr(kafka_tools, "add_parsers"):
        kafka_tools.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
