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

This module parses, runs the commands and maps outcomes to exit codes; the daemon is built and run
by :mod:`daemon.runner`, the tables printed by :mod:`daemon.report`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from daemon import __version__, report
from daemon.report import CollectSink, input_statuses, print_identity_table, print_input_table
from daemon.runner import RunResult, review_enabled, run_daemon, scan_config

log = logging.getLogger("fakewatch")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130


# --- small helpers ---------------------------------------------------------------------------------


def _run_inputs(main, ids: dict):
    """Run a scan/demo coroutine; one error line for a fatal error (None) or per failed input."""
    try:
        result = asyncio.run(main())
    except Exception as e:  # noqa: BLE001
        report.err(_one_line(e))
        return None
    for sid, why in result.failed.items():
        report.input_error(ids.get(sid, sid), why)
    return result


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
        report.err(f"{args.config}: nothing to watch (configure streams, a kafka section or http.api_token)")
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
        report.err(_one_line(e))
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


def cmd_scan(args: argparse.Namespace) -> int:
    from daemon.config import ConfigError
    from daemon.logging import setup_logging

    setup_logging("warning" if not args.verbose else "info", "text")
    if not args.verbose:  # failed inputs get one line from us, not a second one from the source's log
        logging.getLogger("fakewatch.sources").setLevel(logging.CRITICAL)
    if args.faces == "insightface" and not args.pack:
        report.err("--faces insightface needs --pack DIR (a local InsightFace model-pack folder)")
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
        report.input_error(item, why)
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
    from daemon import demo
    from daemon.config import ConfigError
    from daemon.logging import setup_logging

    setup_logging("warning", "text")
    console = report.make_console()
    try:  # check the bundle before spending time on the clips
        scan_config([], args.bundle)
    except ConfigError as e:
        print(str(e), file=sys.stderr, flush=True)
        return EXIT_CONFIG
    real, fake = demo.clips(console, args.frames)
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
        report.err(f"{item}: {why}")
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


# --- sample-clips ----------------------------------------------------------------------------------


def cmd_sample_clips(args: argparse.Namespace) -> int:
    """Copy the demo's clips (built on first use) to ``DIR``: inputs for examples/sample-clip.yaml."""
    import shutil

    from daemon import demo
    from daemon.logging import setup_logging

    setup_logging("warning", "text")
    console = report.make_console()
    out = Path(args.dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        report.err(f"{out}: cannot create the folder ({e.strerror})")
        return EXIT_FAILED
    real, fake = demo.clips(console, args.frames)
    for src, name in ((real, "real.mp4"), (fake, "swapped.mp4")):
        shutil.copyfile(src, out / name)
        console.print(f"  {out / name}")
    console.print("next: fakewatch run -c examples/sample-clip.yaml  (from the checkout root; Ctrl-C stops it)")
    return EXIT_OK


# --- bundle-info -----------------------------------------------------------------------------------


def cmd_bundle_info(args: argparse.Namespace) -> int:
    from detectors.bundle import BundleError, default_bundle_path, load_bundle

    root = Path(args.dir) if args.dir else default_bundle_path()
    try:
        bundle = load_bundle(root, verify=not args.no_verify)
    except BundleError as e:
        report.err(str(e))
        return EXIT_FAILED
    report.print_bundle_info(root, bundle, verified=not args.no_verify)
    return EXIT_OK


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

    from daemon.kafka import tools as kafka_tools

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
