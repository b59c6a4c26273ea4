"""``fakewatch bench``: pipeline throughput and live capacity, side by side with a naive baseline.

Three measurements in one process, each ``--seconds`` long (after a short warm-up):

1. **naive baseline** — what a straightforward script does: decode every frame (PyAV), detect
   faces (the same detector as the pipeline), align, and classify each face one at a time with
   PyTorch eager (the bundle's backbone architecture built with timm; random weights — speed does
   not depend on them), no batching, no overlap of decode and inference.
2. **pipeline, max throughput** — the daemon on N copies of the clip as file inputs (every frame
   analysed, backpressure, nothing dropped): how many frames/s the batched ONNX Runtime pipeline
   sustains. The ratio to (1) is the speed-up.
3. **pipeline, live** — N live-paced streams (frames released at their presentation time,
   sampled to ``--fps``): does the daemon keep up (analysed fps >= N x fps) and how many frames
   did it drop (by reason)?

Per-stage p50/p95 latencies come from the daemon's ``fakewatch_stage_latency_seconds`` histogram
(interpolated within buckets, as Prometheus' ``histogram_quantile`` does) and from our own timing
for the baseline. Peak RSS is sampled from /proc every 100 ms during each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

WARMUP_S = 3.0


# --- measuring helpers -----------------------------------------------------------------------------


def rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRss:
    """Samples the resident set size in a thread; ``peak`` is the maximum seen."""

    def __init__(self, interval_s: float = 0.1):
        self.interval_s = interval_s
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())


def percentile(samples: list[float], q: float) -> float | None:
    return float(np.percentile(samples, q * 100)) if samples else None


def histogram_buckets(registry, name: str, labels: dict[str, str]) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of one labelled histogram series."""
    out = []
    for metric in registry.collect():
        if metric.name != name:
            continue
        for s in metric.samples:
            if s.name == name + "_bucket" and all(s.labels.get(k) == v for k, v in labels.items()):
                out.append((float(s.labels["le"]), s.value))
    return sorted(out)


def histogram_quantile(q: float, before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float | None:
    """Quantile of the observations between two snapshots (linear within a bucket, like Prometheus)."""
    prev = dict(before)
    buckets = [(le, c - prev.get(le, 0.0)) for le, c in after]
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lo_bound, lo_count = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return lo_bound
            if c == lo_count:
                return le
            return lo_bound + (le - lo_bound) * (rank - lo_count) / (c - lo_count)
        lo_bound, lo_count = le, c
    return None


def counter_sum(registry, name: str, **match: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in match.items()):
                total += s.value
    return total


# --- results -----------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    seconds: float
    frames: int
    faces: int
    peak_rss_mb: float
    stages: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # stage -> (p50, p95) s
    drops: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.seconds if self.seconds > 0 else 0.0


# --- clip ----------------------------------------------------------------------------------------------


SCENES = {
    "single": "one moving face (scikit-image's astronaut), like a talking head or a news presenter",
    "group": "six moving faces (insightface's t1 group photo), a crowded shot",
}


def default_clip(seconds: float = 10.0, fps: float = 25.0, scene: str = "single") -> Path:
    """A cached 1280x720 H.264 clip of ``scene`` (see :data:`SCENES`), slowly panning/zooming."""
    from daemon.demo import cache_dir
    from detectors import samples

    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; expected one of {sorted(SCENES)}")
    name = f"bench-720p-{int(seconds)}s.mp4" if scene == "group" else f"bench-720p-{scene}-{int(seconds)}s.mp4"
    p = cache_dir() / name
    if not p.is_file():
        tmp = p.with_suffix(".tmp.mp4")
        image = samples.group_photo() if scene == "group" else samples.astronaut()
        zoom = 1.1 if scene == "group" else 1.15
        samples.write_video(tmp, samples.moving_frames(image, int(seconds * fps), (1280, 720), zoom=zoom), fps=fps)
        tmp.replace(p)
    return p


# --- 1. naive baseline ----------------------------------------------------------------------------------


def torch_classifier(manifest) -> tuple[Any, int, str]:
    """(eager torch model, input size, description): the bundle's frame architecture, random weights.

    Built with ``detectors.models`` (timm names and ``tiny_cnn``), i.e. the same module the trainer
    exports, so the baseline and the pipeline run the same network.
    """
    import torch

    from detectors.models.frame import build_frame_detector

    name = manifest.frame.backbone if manifest is not None and manifest.frame is not None else "efficientnet_b0"
    size = manifest.frame.input_size if manifest is not None and manifest.frame is not None else 224
    try:
        model = build_frame_detector(name)
        desc = name
    except Exception as e:  # noqa: BLE001 - an unknown backbone name: say so and use a stand-in
        log.warning("backbone %r cannot be built (%s); baseline uses efficientnet_b0", name, e)
        model = build_frame_detector("efficientnet_b0")
        desc = f"efficientnet_b0 (stand-in for {name})"
    model.eval()
    torch.set_grad_enabled(False)
    return model, size, desc + ", random weights (speed only)"


def run_baseline(clip: Path, seconds: float, detector, manifest) -> PhaseResult:
    """Decode every frame, detect, classify each face one at a time in torch eager."""
    import av
    import cv2
    import torch

    from detectors.faces.align import align_face

    model, size, desc = torch_classifier(manifest)
    crop = manifest.crop if manifest is not None else None
    crop_size, crop_scale = (crop.size, crop.scale) if crop is not None else (256, 1.3)
    mean = np.array([0.5, 0.5, 0.5], np.float32)
    std = np.array([0.5, 0.5, 0.5], np.float32)
    if manifest is not None and manifest.frame is not None:
        mean = np.asarray(manifest.frame.normalisation.mean, np.float32)
        std = np.asarray(manifest.frame.normalisation.std, np.float32)
    timings: dict[str, list[float]] = {"decode": [], "detect": [], "classify": []}
    frames = faces = 0

    def frames_forever():
        while True:
            with av.open(str(clip)) as c:
                for fr in c.decode(video=0):
                    yield fr

    with PeakRss() as rss:
        it = frames_forever()
        t_start = time.monotonic()
        measuring_from = t_start + WARMUP_S
        t0 = None
        while True:
            now = time.monotonic()
            if t0 is None and now >= measuring_from:
                t0, frames, faces = now, 0, 0
                for v in timings.values():
                    v.clear()
            if t0 is not None and now - t0 >= seconds:
                break
            a = time.perf_counter()
            img = next(it).to_ndarray(format="rgb24")
            b = time.perf_counter()
            found = detector.detect(img)
            c = time.perf_counter()
            for f in found:
                x = align_face(img, f.kps, crop_size, crop_scale)
                if x.shape[0] != size:
                    x = cv2.resize(x, (size, size), interpolation=cv2.INTER_LINEAR)
                t = torch.from_numpy(((x.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None].copy())
                model(t)
            d = time.perf_counter()
            timings["decode"].append(b - a)
            timings["detect"].append(c - b)
            if found:
                timings["classify"].append((d - c) / len(found))
            frames += 1
            faces += len(found)
        elapsed = time.monotonic() - t0
    stages = {k: (percentile(v, 0.5), percentile(v, 0.95)) for k, v in timings.items()}
    return PhaseResult("naive baseline (1 stream, every frame)", elapsed, frames, faces, rss.peak / 2**20, stages,
                       note=f"torch eager {desc}, batch 1")


# --- 2./3. pipeline --------------------------------------------------------------------------------------


def paced_source_class():
    """An AvSource reading its file at the native frame rate (a live stream made from a file).

    The pacing happens in the reader thread, before sampling, like a camera; pacing the hand-off
    instead would let the reader race ahead and fill its live buffer, and count those frames as
    queue_full drops that no real camera would cause.
    """
    from daemon.sources.av import AvSource, AvSourceSettings

    class PacedAvSource(AvSource):
        def __init__(self, stream_id, url, metrics, settings=None):
            settings = settings or AvSourceSettings(live=True)
            super().__init__(stream_id, url, metrics, settings.model_copy(update={"realtime": True}))

    return PacedAvSource


async def run_pipeline(cfg, clip: Path, n: int, fps: float | None, seconds: float, live: bool) -> PhaseResult:
    from daemon.cli import build_daemon
    from daemon.metrics import STAGES, Metrics
    from daemon.sources.av import AvSource, AvSourceSettings

    metrics = Metrics()
    daemon, sinks = build_daemon(cfg, metrics)
    cls = paced_source_class() if live else AvSource
    reg = metrics.registry
    with PeakRss() as rss:
        await daemon.start()
        sources = []
        for i in range(n):
            st = AvSourceSettings(analysis_fps=fps, live=live, loop=True)
            src = cls(f"bench{i}", str(clip), metrics, st)
            sources.append(src)
            daemon.add_source(src)
        await asyncio.sleep(WARMUP_S)
        h0 = {s: histogram_buckets(reg, "fakewatch_stage_latency_seconds", {"stage": s}) for s in STAGES}
        f0 = counter_sum(reg, "fakewatch_frames_analysed_total")
        c0 = counter_sum(reg, "fakewatch_faces_detected_total")
        d0 = {r: counter_sum(reg, "fakewatch_frames_dropped_total", reason=r) for r in _reasons()}
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        f1 = counter_sum(reg, "fakewatch_frames_analysed_total")
        c1 = counter_sum(reg, "fakewatch_faces_detected_total")
        d1 = {r: counter_sum(reg, "fakewatch_frames_dropped_total", reason=r) for r in _reasons()}
        h1 = {s: histogram_buckets(reg, "fakewatch_stage_latency_seconds", {"stage": s}) for s in STAGES}
        for s in sources:
            await s.stop()
        await daemon.shutdown(drain=False, timeout_s=10.0)
    stages = {s: (histogram_quantile(0.5, h0[s], h1[s]), histogram_quantile(0.95, h0[s], h1[s])) for s in STAGES}
    stages = {k: v for k, v in stages.items() if v[0] is not None}
    drops = {r: int(d1[r] - d0[r]) for r in d1 if d1[r] - d0[r] > 0}
    name = (f"pipeline live ({n} streams @ {fps:g} fps)" if live else f"pipeline max ({n} file streams, every frame)")
    info = {}
    for metric in reg.collect():
        if metric.name == "fakewatch_bundle":
            for smp in metric.samples:
                info = smp.labels
    note = ", ".join(f"{k} {info[k]}" for k in ("bundle", "frame_runtime", "embed_runtime", "faces") if k in info)
    return PhaseResult(name, elapsed, int(f1 - f0), int(c1 - c0), rss.peak / 2**20, stages, drops,
                       note=note or f"runtime {cfg.bundle.runtime}")


def _reasons():
    from daemon.metrics import DROP_REASONS

    return DROP_REASONS


# --- report ----------------------------------------------------------------------------------------------


def print_report(results: list[PhaseResult], n: int, fps: float, console=None) -> dict[str, Any]:
    from rich.table import Table

    if console is None:
        from daemon.cli import _console

        console = _console()
    t = Table(title="fakewatch bench")
    t.add_column("")
    for r in results:
        t.add_column(r.name, justify="right")
    stage_names = sorted({s for r in results for s in r.stages}, key=_stage_order)

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.1f}"

    t.add_row("analysed frames/s", *[f"{r.fps:.1f}" for r in results])
    t.add_row("faces/s", *[f"{r.faces_per_s:.1f}" for r in results])
    for s in stage_names:
        t.add_row(f"{s} p50 / p95 ms", *[f"{ms(r.stages[s][0])} / {ms(r.stages[s][1])}" if s in r.stages else "-"
                                          for r in results])
    t.add_row("peak RSS MB", *[f"{r.peak_rss_mb:.0f}" for r in results])
    t.add_row("frames dropped", *[", ".join(f"{k}={v}" for k, v in sorted(r.drops.items())) or "0" for r in results])
    t.add_row("measured s", *[f"{r.seconds:.1f}" for r in results])
    console.print(t)
    summary: dict[str, Any] = {"results": [asdict(r) | {"fps": r.fps, "faces_per_s": r.faces_per_s} for r in results]}
    by = {r.name.split(" (")[0]: r for r in results}
    base, best, live = by.get("naive baseline"), by.get("pipeline max"), by.get("pipeline live")
    for r in results:
        if r.note:
            console.print(f"  {r.name}: {r.note}")
    if base and best and base.fps > 0:
        ratio = best.fps / base.fps
        summary["speedup"] = ratio
        console.print(f"speed-up of the pipeline over the naive baseline: [bold]{ratio:.2f}x[/] analysed frames/s "
                      f"({best.fps:.1f} vs {base.fps:.1f})")
        if "stand-in" in base.note:
            summary["comparable"] = False
            console.print("[yellow]note: the bundle's backbone is not a timm model, so the baseline ran a stand-in "
                          "architecture: the ratio compares different models[/]")
    if live:
        target = n * fps
        keeps_up = live.fps >= 0.95 * target and not {k for k in live.drops if k not in ("sampled_out",)}
        summary["live_target_fps"] = target
        summary["keeps_up"] = keeps_up
        lost = {k: v for k, v in live.drops.items() if k != "sampled_out"}
        console.print(
            f"live: {n} stream(s) x {fps:g} fps = {target:g} fps target, analysed {live.fps:.1f} fps -> "
            + ("[bold green]keeps up[/]" if keeps_up else "[bold red]does not keep up[/]")
            + (f" (dropped: {', '.join(f'{k}={v}' for k, v in lost.items())})" if lost else " (no frames lost)")
        )
    return summary


def _stage_order(s: str) -> int:
    from daemon.metrics import STAGES

    return STAGES.index(s) if s in STAGES else len(STAGES)


# --- entry ---------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    from daemon.cli import _err, build_face_pipeline, scan_config
    from daemon.config import ConfigError
    from daemon.logging import setup_logging
    from detectors.bundle import BundleError, load_bundle

    setup_logging("error", "text")  # looping live streams "reconnect" at every end of the clip: not news here
    if args.streams < 1 or args.fps <= 0 or args.seconds <= 0:
        _err("--streams, --fps and --seconds must be positive")
        return 2
    scene = getattr(args, "scene", "single")
    clip = Path(args.clip) if args.clip else default_clip(scene=scene)
    if not clip.is_file():
        _err(f"{clip}: clip not found")
        return 2
    try:
        cfg, _, _ = scan_config([], args.bundle, sets=["sinks.stdout=null"])
        bundle = load_bundle(cfg.bundle.resolved_path(), verify=False)
    except (ConfigError, BundleError) as e:
        _err(str(e))
        return 2
    what = "" if args.clip else f" ({scene}: {SCENES[scene]})"
    print(f"fakewatch bench: clip {clip}{what}, {args.streams} stream(s), {args.fps:g} fps, {args.seconds:g} s per run "
          f"(+{WARMUP_S:g} s warm-up)", flush=True)
    results: list[PhaseResult] = []
    if not args.no_baseline:
        faces = build_face_pipeline(cfg.faces)
        detector = getattr(faces, "detector", faces)
        results.append(run_baseline(clip, args.seconds, detector, bundle.manifest))
        print(f"  baseline: {results[-1].fps:.1f} frames/s", flush=True)
    results.append(asyncio.run(run_pipeline(cfg, clip, args.streams, None, args.seconds, live=False)))
    print(f"  pipeline max: {results[-1].fps:.1f} frames/s", flush=True)
    results.append(asyncio.run(run_pipeline(cfg, clip, args.streams, args.fps, args.seconds, live=True)))
    summary = print_report(results, args.streams, args.fps)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0
