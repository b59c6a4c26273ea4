"""Soak test: the real daemon on several looping, live-paced streams for a long time.

Runs the daemon in this process (``daemon.runner.build_daemon`` + the real ``MetricsServer`` on
127.0.0.1, any free port) on ``--streams`` generated clips with faces, each looped forever and
released at its presentation time (``daemon.bench.paced_source_class``: a live stream made from a
file), sampled to ``--fps`` analysed frames per second per stream, with a JSON-lines sink.

Every ``--interval`` seconds it samples, from /proc/self (psutil is not needed):

* RSS (``VmRSS``), open file descriptors (``/proc/self/fd``), threads (``Threads``);
* over HTTP from ``/metrics``: ``fakewatch_queue_depth`` per queue, frames analysed, tracks
  started/ended, verdicts, frames dropped by reason.

At the end it prints the table, fits a least-squares line to RSS after ``--warmup`` seconds and
prints the slope in MB/min with a verdict (``flat`` when the slope is below ``--max-slope``
MB/min and fds/threads did not grow; the default warm-up is half the run), and writes every sample to ``--csv``. Exit code 0 = flat,
1 = not flat (growth), 2 = bad arguments.

    .venv/bin/python -m benchmarks.soak --duration 600 --streams 3 --fps 2 --csv soak.csv

Bundle: ``--bundle DIR``; without it a tiny real bundle is built into a temp folder
(tests/tiny_bundle.py: small CNNs exported to ONNX; the face detector is the real CenterFace).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import os
import re
import sys
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script or with -m from the repo root
    sys.path.insert(0, str(REPO))

MAX_DURATION_S = 24 * 3600.0


# --- process sampling --------------------------------------------------------------------------------


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS (bytes) and Threads from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "VmRSS":
                out["rss"] = int(value.split()[0]) * 1024
            elif key == "Threads":
                out["threads"] = int(value.split()[0])
    return out


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


_SAMPLE_RE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$')
_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for every sample line of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if m:
            labels = dict(_LABEL_RE.findall(m.group("labels") or ""))
            out.append((m.group("name"), labels, float(m.group("value"))))
    return out


def metric_sum(samples, name: str, **match: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in match.items()))


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    fds: int
    threads: int
    intake_depth: float
    analyse_depth: float
    frames_analysed: float
    faces: float
    tracks_started: float
    tracks_ended: float
    verdicts: float
    dropped: float
    drops: dict[str, float] = field(default_factory=dict)


# --- clips ---------------------------------------------------------------------------------------------


def make_clips(folder: Path, n: int, seconds: float, size: tuple[int, int] = (640, 360), fps: float = 25.0) -> list[Path]:
    """``n`` H.264 clips with moving faces (the packaged astronaut and group photos, different pans)."""
    from detectors import samples

    photos = [samples.astronaut, samples.group_photo]
    out = []
    for i in range(n):
        p = folder / f"soak{i}.mp4"
        frames = samples.moving_frames(photos[i % 2](), int(seconds * fps), size, seed=i)
        out.append(samples.write_video(p, frames, fps=fps))
    return out


# --- the run -------------------------------------------------------------------------------------------


def slope_mb_per_min(samples: list[Sample], warmup_s: float) -> float | None:
    pts = [(s.t_s, s.rss_mb) for s in samples if s.t_s >= warmup_s]
    if len(pts) < 3:
        return None
    t = np.array([p[0] for p in pts]) / 60.0
    y = np.array([p[1] for p in pts])
    return float(np.polyfit(t, y, 1)[0])


async def soak(args: argparse.Namespace, bundle: Path, clips: list[Path], workdir: Path) -> list[Sample]:
    import aiohttp

    from daemon.bench import paced_source_class
    from daemon.runner import build_daemon
    from daemon.config import validate_config
    from daemon.metrics import Metrics
    from daemon.server import MetricsServer
    from daemon.sources.av import AvSourceSettings

    cfg = validate_config({
        "bundle": {"path": str(bundle), "threads": args.threads},
        "sinks": {"stdout": None, "jsonl": {"path": str(workdir / "events.jsonl"), "fsync": False}},
        "http": {"host": "127.0.0.1", "port": 0},
        "logging": {"level": "warning", "format": "text"},
    }, "soak")
    metrics = Metrics()
    daemon, _ = build_daemon(cfg, metrics)
    server = MetricsServer(metrics, daemon.ready, "127.0.0.1", 0)
    await server.start()
    await daemon.start()
    paced = paced_source_class()
    sources = []
    for i, clip in enumerate(clips):
        # a file looped forever, released at presentation time: a live stream without a server
        st = AvSourceSettings(analysis_fps=args.fps, live=False, loop=True)
        src = paced(f"soak{i}", str(clip), metrics, st)
        sources.append(src)
        daemon.add_source(src)
    print(f"soak: {len(clips)} streams @ {args.fps:g} fps, {args.duration:.0f} s, metrics at {server.url}/metrics",
          flush=True)
    samples: list[Sample] = []
    snap0 = None
    t0 = time.monotonic()
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(server.url + "/metrics") as r:
                    text = await r.text()
                m = parse_metrics(text)
                st = proc_status()
                reasons: dict[str, float] = {}
                for n, lab, v in m:
                    if n == "fakewatch_frames_dropped_total":
                        reasons[lab["reason"]] = reasons.get(lab["reason"], 0.0) + v
                drops = reasons
                s = Sample(
                    t_s=round(time.monotonic() - t0, 1),
                    rss_mb=st["rss"] / 2**20,
                    fds=open_fds(),
                    threads=st["threads"],
                    intake_depth=metric_sum(m, "fakewatch_queue_depth", queue="intake"),
                    analyse_depth=metric_sum(m, "fakewatch_queue_depth", queue="analyse"),
                    frames_analysed=metric_sum(m, "fakewatch_frames_analysed_total"),
                    faces=metric_sum(m, "fakewatch_faces_detected_total"),
                    tracks_started=metric_sum(m, "fakewatch_tracks_started_total"),
                    tracks_ended=metric_sum(m, "fakewatch_tracks_ended_total"),
                    verdicts=metric_sum(m, "fakewatch_verdicts_total"),
                    dropped=sum(v for k, v in drops.items() if k != "sampled_out"),
                    drops=drops,
                )
                samples.append(s)
                print(_row(s), flush=True)
                if args.tracemalloc and snap0 is None and s.t_s >= args.warmup_s:
                    snap0 = tracemalloc.take_snapshot()
                if s.t_s >= args.duration:
                    break
                await asyncio.sleep(min(args.interval, max(0.1, args.duration - s.t_s)))
        if snap0 is not None:
            _print_growth(snap0, tracemalloc.take_snapshot())
    finally:
        for src in sources:
            await src.stop()
        await daemon.shutdown(drain=True, timeout_s=10.0)
        await server.stop()
    return samples


def _print_growth(before, after, top: int = 12) -> None:
    """The Python allocations that grew most between two tracemalloc snapshots (leak hunting)."""
    stats = after.compare_to(before, "lineno")
    total = sum(st.size_diff for st in stats)
    print(f"\ntracemalloc: Python heap {total / 2**20:+.2f} MB since the warm-up; largest growth by line:")
    for st in stats[:top]:
        print(f"  {st.size_diff / 2**10:+9.1f} KiB {st.count_diff:+7d} blocks  {st.traceback[0]}")


HEADER = (f"{'t s':>7} {'RSS MB':>8} {'fds':>5} {'thr':>4} {'q.in':>5} {'q.an':>5} {'analysed':>9} "
          f"{'faces':>7} {'trk+':>5} {'trk-':>5} {'verdicts':>8} {'dropped':>7}")


def _row(s: Sample) -> str:
    return (f"{s.t_s:7.1f} {s.rss_mb:8.1f} {s.fds:5d} {s.threads:4d} {s.intake_depth:5.0f} {s.analyse_depth:5.0f} "
            f"{s.frames_analysed:9.0f} {s.faces:7.0f} {s.tracks_started:5.0f} {s.tracks_ended:5.0f} "
            f"{s.verdicts:8.0f} {s.dropped:7.0f}")


def write_csv(path: Path, samples: list[Sample]) -> None:
    reasons = sorted({r for s in samples for r in s.drops})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        cols = [k for k in asdict(samples[0]) if k != "drops"] if samples else []
        w.writerow(cols + [f"dropped_{r}" for r in reasons])
        for s in samples:
            d = asdict(s)
            w.writerow([d[c] for c in cols] + [s.drops.get(r, 0.0) for r in reasons])


def verdict(samples: list[Sample], warmup_s: float, max_slope: float) -> tuple[bool, str]:
    """Flat = RSS slope after the warm-up below ``max_slope`` MB/min and fds/threads not growing.

    fds and threads oscillate (each loop of a file closes and reopens its decoder and its threads),
    so their growth is judged on the maxima of the first and second half of the post-warm-up part.
    """
    slope = slope_mb_per_min(samples, warmup_s)
    after = [s for s in samples if s.t_s >= warmup_s]
    if slope is None or len(after) < 4:
        return False, "not enough samples after the warm-up to judge"
    half = len(after) // 2
    first, second = after[:half], after[half:]
    fd_growth = max(s.fds for s in second) - max(s.fds for s in first)
    thr_growth = max(s.threads for s in second) - max(s.threads for s in first)
    flat = abs(slope) <= max_slope and fd_growth <= 2 and thr_growth <= 2
    early = slope_mb_per_min(samples, min(60.0, warmup_s))
    text = (f"RSS slope after the {warmup_s:.0f} s warm-up: {slope:+.3f} MB/min (threshold {max_slope:g})"
            f"{'' if early is None else f'; from 60 s on: {early:+.3f} MB/min'}; "
            f"RSS {after[0].rss_mb:.1f} -> {after[-1].rss_mb:.1f} MB (max {max(s.rss_mb for s in after):.1f}); "
            f"max fds {max(s.fds for s in first)} -> {max(s.fds for s in second)}, "
            f"max threads {max(s.threads for s in first)} -> {max(s.threads for s in second)} (first vs second half); "
            f"verdict: {'FLAT' if flat else 'NOT FLAT'}")
    return flat, text


def read_csv(path: Path) -> list[Sample]:
    samples = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            drops = {k[len("dropped_"):]: float(v) for k, v in row.items() if k.startswith("dropped_")}
            samples.append(Sample(
                t_s=float(row["t_s"]), rss_mb=float(row["rss_mb"]), fds=int(row["fds"]), threads=int(row["threads"]),
                intake_depth=float(row["intake_depth"]), analyse_depth=float(row["analyse_depth"]),
                frames_analysed=float(row["frames_analysed"]), faces=float(row["faces"]),
                tracks_started=float(row["tracks_started"]), tracks_ended=float(row["tracks_ended"]),
                verdicts=float(row["verdicts"]), dropped=float(row["dropped"]), drops=drops,
            ))
    return samples


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds to run (default 600)")
    p.add_argument("--interval", type=float, default=15.0, help="seconds between samples (default 15)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds ignored by the slope fit (default: half the duration, at least 30): allocator "
                        "and ONNX Runtime arenas keep growing, ever more slowly, for several minutes")
    p.add_argument("--streams", type=int, default=3, help="looping live-paced streams (default 3)")
    p.add_argument("--fps", type=float, default=2.0, help="analysed frames per second per stream (default 2)")
    p.add_argument("--clip-seconds", type=float, default=8.0, help="length of each generated clip (default 8)")
    p.add_argument("--bundle", help="model bundle folder (default: build a tiny real bundle in a temp folder)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per bundle model (default 1)")
    p.add_argument("--max-slope", type=float, default=1.0, help="MB/min above which RSS is not flat (default 1.0)")
    p.add_argument("--csv", default="soak.csv", help="write every sample here (default soak.csv)")
    p.add_argument("--tracemalloc", action="store_true",
                   help="trace Python allocations; print the lines whose memory grew after the warm-up (slower)")
    p.add_argument("--report", metavar="CSV", help="do not run: print the table and verdict of an earlier run's CSV")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (0 < args.duration <= MAX_DURATION_S) or args.interval <= 0 or not (1 <= args.streams <= 64) or args.fps <= 0:
        print("soak: error: need 0 < --duration <= 86400, --interval > 0, 1 <= --streams <= 64, --fps > 0",
              file=sys.stderr)
        return 2
    if args.report:
        samples = read_csv(Path(args.report))
        dur = samples[-1].t_s if samples else 0.0
        warmup = args.warmup if args.warmup is not None else max(30.0, 0.5 * dur)
        print(HEADER)
        for s in samples:
            print(_row(s))
        flat, text = verdict(samples, warmup, args.max_slope)
        print(text)
        return 0 if flat else 1
    warmup = args.warmup if args.warmup is not None else max(30.0, 0.5 * args.duration)
    args.warmup_s = warmup
    if args.tracemalloc:
        tracemalloc.start(1)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="fakewatch-soak-") as tmp:
        work = Path(tmp)
        if args.bundle:
            bundle = Path(args.bundle)
        else:
            from tests.tiny_bundle import build_tiny_bundle

            print("soak: building the tiny test bundle ...", flush=True)
            bundle = build_tiny_bundle(work / "bundle")
        clips = make_clips(work, args.streams, args.clip_seconds)
        print(HEADER, flush=True)
        samples = asyncio.run(soak(args, bundle, clips, work))
    print("\n" + HEADER)
    for s in samples:
        print(_row(s))
    write_csv(Path(args.csv), samples)
    flat, text = verdict(samples, warmup, args.max_slope)
    last = samples[-1]
    rate = last.frames_analysed / last.t_s if last.t_s else 0.0
    print(f"\nanalysed {last.frames_analysed:.0f} frames ({rate:.2f}/s, target {args.streams * args.fps:g}/s), "
          f"{last.tracks_started:.0f} tracks started, {last.verdicts:.0f} verdicts, drops {last.drops}")
    print(text)
    print(f"samples written to {args.csv}")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
