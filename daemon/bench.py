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

``--ramp`` replaces 2./3. by a ramp (:func:`run_ramp`): one daemon, live-paced streams added step by
step until a step no longer keeps up (analysed fps below 95 % of the target, a frame lost, or p99
frame-to-verdict latency over the limit); it prints and writes the per-step table (stage times, mean
batch sizes, CPU %, GPU memory on CUDA), ``ramp.json`` and a streams-vs-latency plot ``ramp.png``.

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
    if fps != 25.0:
        name = name.replace(".mp4", f"-{fps:g}fps.mp4")
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


def _passes(comb: dict | None) -> tuple[int, int]:
    """(passes, mirrored passes) of one ``frame_combination`` record: each member once per view, a member that is
    itself a combination (its record nested in the member entry) with all of its own passes."""
    if not comb:
        return 1, 0
    per_view, mirrored = 0, 0
    for m in comb.get("members") or ({},):
        p, f = _passes(m.get("frame_combination"))
        per_view, mirrored = per_view + p, mirrored + f
    if comb.get("hflip"):  # the second view mirrors the crop: its nested mirrored passes see the crop unmirrored
        return 2 * per_view, per_view
    return per_view, mirrored


def frame_passes(manifest) -> tuple[int, int]:
    """(passes, mirrored) of the bundle's frame model: how many network passes one face costs, and how many of them
    see the mirror image. A ``fakewatch-train combine`` graph runs each member once per view (the crop, and with
    ``hflip`` its mirror image), a member that is itself combined with all of its passes; a plain frame model is
    (1, 0). A bundle combined before member records were nested counts each member as one pass."""
    prov = (manifest.provenance if manifest is not None else None) or {}
    return _passes(prov.get("frame_combination"))


def run_baseline(clip: Path, seconds: float, detector, manifest, device: str = "cpu") -> PhaseResult:
    """Decode every frame, detect, classify each face one at a time in torch eager (on ``device``).

    A combined frame model (several networks, mirror views) is matched pass for pass: the baseline runs its network
    once per member and view, so it does the same arithmetic as the bundle's graph.
    """
    import av
    import cv2
    import torch

    from detectors.faces.align import align_face

    model, size, desc = torch_classifier(manifest)
    model = model.to(device)
    passes, mirrored = frame_passes(manifest)
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
                t = t.to(device)
                for k in range(passes):  # .cpu(): on CUDA, wait for the result like a real script
                    model(t.flip(-1) if k < mirrored else t).cpu()
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
                       note=f"torch eager {desc}, batch 1, {device}"
                       + (f", {passes} passes per face ({mirrored} on the mirror image; combined frame model)"
                          if passes > 1 else ""))


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
    from daemon.runner import build_daemon
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
        from daemon.report import make_console

        console = make_console()
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


# --- ramp: how many live streams does the daemon sustain? ----------------------------------------------


@dataclass
class RampStep:
    streams: int
    target_fps: float
    seconds: float
    frames: int
    faces: int
    drops: dict[str, int] = field(default_factory=dict)  # reasons other than sampled_out
    latency: dict[str, float | None] = field(default_factory=dict)  # frame-to-verdict p50/p95/p99, s
    stages: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # stage -> (p50, p95) s
    batch_mean: dict[str, float | None] = field(default_factory=dict)  # model -> mean inference batch size
    cpu_percent: float = 0.0  # process CPU time / wall time (100 = one core busy)
    gpu_mem_mb: float | None = None  # device-wide memory in use at the end of the step (CUDA only)
    ok: bool = True
    why: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def ramp_schedule(start: int, step: int, maximum: int) -> list[int]:
    """Stream counts of the ramp: start, start+step, ... up to maximum (included when reached)."""
    if start < 1 or step < 1 or maximum < start:
        raise ValueError(f"bad ramp: start {start}, step {step}, max {maximum} (need 1 <= start <= max, step >= 1)")
    return list(range(start, maximum + 1, step))


def judge_step(step: RampStep, max_p99_s: float = 1.0, fps_slack: float = 0.95) -> tuple[bool, str]:
    """Does the daemon keep up at this step? (ok, why not): analysed fps below ``fps_slack`` x target,
    any frame lost (other than sampled out), or p99 frame-to-verdict latency above ``max_p99_s``."""
    why = []
    if step.fps < fps_slack * step.target_fps:
        why.append(f"analysed {step.fps:.1f} fps < {fps_slack:g} x target {step.target_fps:g}")
    if step.drops:
        why.append("dropped " + ", ".join(f"{k}={v}" for k, v in sorted(step.drops.items())))
    p99 = step.latency.get("p99")
    if p99 is not None and p99 > max_p99_s:
        why.append(f"p99 latency {p99:.2f} s > {max_p99_s:g} s")
    return not why, "; ".join(why)


def _histogram_mean(registry, name: str, labels: dict[str, str], before: tuple[float, float]) -> tuple[
        float | None, tuple[float, float]]:
    """(mean of the observations since ``before``, new (sum, count) snapshot) of one histogram series."""
    total = counter_sum(registry, name + "_sum", **labels)
    count = counter_sum(registry, name + "_count", **labels)
    ds, dc = total - before[0], count - before[1]
    return (ds / dc if dc > 0 else None), (total, count)


def gpu_memory_mb() -> float | None:
    """Device-wide GPU memory in use (all processes and runtimes), MiB; None without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return (total - free) / 2**20
    except Exception:  # noqa: BLE001 - a broken CUDA setup: report no number rather than fail the bench
        return None


async def run_ramp(cfg, clip: Path, fps: float, schedule: list[int], step_s: float, settle_s: float = WARMUP_S,
                   max_p99_s: float = 1.0, progress=None) -> tuple[list[RampStep], dict[str, str]]:
    """One daemon; add live-paced streams step by step (``schedule``: total streams per step) and
    measure each step for ``step_s`` after ``settle_s``; stop at the first step that does not keep up.
    Returns the steps and the daemon's ``fakewatch_bundle`` info labels (bundle, runtimes, face backend)."""
    from daemon.runner import build_daemon
    from daemon.metrics import STAGES, Metrics
    from daemon.sources.av import AvSourceSettings

    metrics = Metrics()
    daemon, _ = build_daemon(cfg, metrics)
    cls = paced_source_class()
    reg = metrics.registry
    e2e = "fakewatch_frame_to_verdict_seconds"
    steps: list[RampStep] = []
    sources = []
    await daemon.start()
    try:
        for n in schedule:
            while len(sources) < n:
                src = cls(f"ramp{len(sources)}", str(clip), metrics, AvSourceSettings(analysis_fps=fps, live=True,
                                                                                         loop=True))
                sources.append(src)
                daemon.add_source(src)
            await asyncio.sleep(settle_s)
            h0 = {s: histogram_buckets(reg, "fakewatch_stage_latency_seconds", {"stage": s}) for s in STAGES}
            l0 = histogram_buckets(reg, e2e, {})
            b0 = {m: _histogram_mean(reg, "fakewatch_batch_size", {"model": m}, (0.0, 0.0))[1] for m in ("frame", "embed")}
            f0 = counter_sum(reg, "fakewatch_frames_analysed_total")
            c0 = counter_sum(reg, "fakewatch_faces_detected_total")
            d0 = {r: counter_sum(reg, "fakewatch_frames_dropped_total", reason=r) for r in _reasons()}
            cpu0, t0 = time.process_time(), time.monotonic()
            await asyncio.sleep(step_s)
            elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
            h1 = {s: histogram_buckets(reg, "fakewatch_stage_latency_seconds", {"stage": s}) for s in STAGES}
            l1 = histogram_buckets(reg, e2e, {})
            drops = {r: int(counter_sum(reg, "fakewatch_frames_dropped_total", reason=r) - d0[r]) for r in _reasons()}
            stages = {s: (histogram_quantile(0.5, h0[s], h1[s]), histogram_quantile(0.95, h0[s], h1[s])) for s in STAGES}
            step = RampStep(
                streams=n, target_fps=n * fps, seconds=elapsed,
                frames=int(counter_sum(reg, "fakewatch_frames_analysed_total") - f0),
                faces=int(counter_sum(reg, "fakewatch_faces_detected_total") - c0),
                drops={k: v for k, v in drops.items() if v > 0 and k != "sampled_out"},
                latency={f"p{q}": histogram_quantile(q / 100, l0, l1) for q in (50, 95, 99)},
                stages={k: v for k, v in stages.items() if v[0] is not None},
                batch_mean={m: _histogram_mean(reg, "fakewatch_batch_size", {"model": m}, b0[m])[0]
                            for m in ("frame", "embed")},
                cpu_percent=100.0 * cpu / elapsed if elapsed > 0 else 0.0,
                gpu_mem_mb=gpu_memory_mb(),
            )
            step.ok, step.why = judge_step(step, max_p99_s)
            steps.append(step)
            if progress is not None:
                progress(step)
            if not step.ok:
                break
    finally:
        for src in sources:
            await src.stop()
        await daemon.shutdown(drain=False, timeout_s=10.0)
    info: dict[str, str] = {}
    for metric in reg.collect():
        if metric.name == "fakewatch_bundle":
            for smp in metric.samples:
                info = dict(smp.labels)
    return steps, info


def ramp_rows(steps: list[RampStep]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the ramp table, as text (the main stages; ramp.json has all of them)."""
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.0f}"

    stage_names = [s for s in ("decode", "detect", "embed", "classify") if any(s in st.stages for st in steps)]
    header = ["streams", "target fps", "analysed fps", "p50 / p99 ms", *[f"{s} p50 ms" for s in stage_names],
              "batch frame / embed", "CPU %", "GPU MiB", "keeps up"]
    rows = []
    for st in steps:
        bm = "/".join("-" if st.batch_mean.get(m) is None else f"{st.batch_mean[m]:.1f}" for m in ("frame", "embed"))
        rows.append([str(st.streams), f"{st.target_fps:g}", f"{st.fps:.1f}",
                     f"{ms(st.latency.get('p50'))} / {ms(st.latency.get('p99'))}",
                     *[ms(st.stages[s][0]) if s in st.stages else "-" for s in stage_names],
                     bm, f"{st.cpu_percent:.0f}", "-" if st.gpu_mem_mb is None else f"{st.gpu_mem_mb:.0f}",
                     "yes" if st.ok else f"no: {st.why}"])
    return header, rows


def max_sustained(steps: list[RampStep]) -> RampStep | None:
    """The largest step that kept up (the ramp stops at the first that does not)."""
    good = [s for s in steps if s.ok]
    return good[-1] if good else None


def plot_ramp(steps: list[RampStep], path: Path, max_p99_s: float, title: str = "") -> Path:
    """Streams vs frame-to-verdict latency (p50, p99) and analysed vs target fps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [s.streams for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for q, style in (("p50", "o-"), ("p99", "s-")):
        ys = [np.nan if s.latency.get(q) is None else s.latency[q] * 1000 for s in steps]
        ax.plot(n, ys, style, label=f"{q} frame-to-verdict")
    ax.axhline(max_p99_s * 1000, color="red", ls="--", lw=1, label=f"p99 limit {max_p99_s:g} s")
    bad = [s for s in steps if not s.ok]
    for s in bad:
        ax.axvline(s.streams, color="red", alpha=0.25, lw=6)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("concurrent live streams")
    ax.set_ylabel("latency (ms)")
    ax2 = ax.twinx()
    ax2.plot(n, [s.fps for s in steps], "g^:", label="analysed fps")
    ax2.plot(n, [s.target_fps for s in steps], color="grey", ls=":", label="target fps")
    ax2.set_ylabel("frames/s")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    import textwrap

    ax.set_title(textwrap.fill(title or "fakewatch bench --ramp", 100), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def ramp_main(args: argparse.Namespace, cfg, clip: Path, manifest, detector=None, device: str = "cpu") -> int:
    """``fakewatch bench --ramp``: ramp, print/write the table, JSON and plot; optional naive baseline."""
    from rich.table import Table

    from daemon.report import err, make_console

    start = args.ramp_start or args.streams
    try:
        schedule = ramp_schedule(start, args.ramp_step or start, args.ramp_max)
    except ValueError as e:
        err(str(e))
        return 2
    settle = WARMUP_S if args.settle_seconds is None else args.settle_seconds
    max_p99 = args.max_p99_ms / 1000.0
    out = Path(args.ramp_out)
    print(f"fakewatch bench --ramp: clip {clip}, {args.fps:g} analysed fps per stream, streams {schedule[0]}.."
          f"{schedule[-1]} step {args.ramp_step or start}, {args.seconds:g} s per step (+{settle:g} s settle); "
          f"stops when analysed fps < 95 % of target, a frame is lost or p99 latency > {max_p99:g} s", flush=True)
    base = None
    if detector is not None:
        base = run_baseline(clip, args.seconds, detector, manifest, device)
        print(f"  naive baseline: {base.fps:.1f} frames/s ({base.note})", flush=True)

    def progress(st: RampStep) -> None:
        p99 = st.latency.get("p99")
        print(f"  {st.streams} streams: {st.fps:.1f}/{st.target_fps:g} fps, p99 "
              f"{'-' if p99 is None else f'{p99:.2f} s'} -> {'ok' if st.ok else 'stop: ' + st.why}", flush=True)

    from detectors.runtime import RuntimeError_

    try:
        steps, info = asyncio.run(run_ramp(cfg, clip, args.fps, schedule, args.seconds, settle, max_p99, progress))
    except RuntimeError_ as e:  # e.g. --runtime torch-cuda without a GPU: one line, not a traceback
        err(str(e))
        return 1
    header, rows = ramp_rows(steps)
    t = Table(title="fakewatch bench --ramp")
    for h in header:
        t.add_column(h, justify="right")
    for r in rows:
        t.add_row(*r)
    console = make_console()
    console.print(t)
    best = max_sustained(steps)
    runtime = (f"runtime {cfg.bundle.runtime}: frame {info.get('frame_runtime', '-')}, "
               f"embed {info.get('embed_runtime', '-')}, faces {info.get('faces', '-')}")
    if best is None:
        line = f"maximum sustained: none (already {steps[0].streams} streams do not keep up: {steps[0].why})"
    elif best is steps[-1] and best.streams == schedule[-1]:
        line = (f"maximum sustained: >= {best.streams} streams x {args.fps:g} fps (the ramp's maximum; "
                f"{best.fps:.1f} analysed fps, p99 {best.latency.get('p99') or 0:.2f} s)")
    else:
        line = (f"maximum sustained: {best.streams} streams x {args.fps:g} fps ({best.fps:.1f} analysed fps, "
                f"p99 {best.latency.get('p99') or 0:.2f} s)")
    console.print(line + f", {runtime}")
    if base is not None and best is not None and base.fps > 0:
        console.print(f"sustained analysed fps / naive baseline: {best.fps / base.fps:.2f}x ({best.fps:.1f} vs {base.fps:.1f})")
    out.mkdir(parents=True, exist_ok=True)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    (out / "ramp.md").write_text("\n".join(md) + "\n\n" + line + "\n")
    summary = {"clip": str(clip), "fps_per_stream": args.fps, "schedule": schedule, "max_p99_s": max_p99,
               "runtime": cfg.bundle.runtime, "info": info, "max_sustained_streams": best.streams if best else 0,
               "steps": [asdict(st) | {"fps": st.fps} for st in steps],
               "baseline": (asdict(base) | {"fps": base.fps}) if base is not None else None}
    (out / "ramp.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    png = plot_ramp(steps, out / "ramp.png", max_p99, f"{clip.name}, {args.fps:g} fps/stream, {runtime}")
    print(f"wrote {out / 'ramp.md'}, {out / 'ramp.json'}, {png}", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0


# --- entry ---------------------------------------------------------------------------------------------


def baseline_device(choice: str = "auto") -> str:
    """The naive baseline's torch device: ``auto`` = cuda when torch sees a GPU, else cpu."""
    if choice != "auto":
        return choice
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        return "cpu"


def main(args: argparse.Namespace) -> int:
    from daemon.report import err
    from daemon.runner import build_face_pipeline, scan_config
    from daemon.config import ConfigError
    from daemon.logging import setup_logging
    from detectors.bundle import BundleError, load_bundle

    setup_logging("error", "text")  # looping live streams "reconnect" at every end of the clip: not news here
    if args.streams < 1 or args.fps <= 0 or args.seconds <= 0:
        err("--streams, --fps and --seconds must be positive")
        return 2
    scene = getattr(args, "scene", "single")
    clip = Path(args.clip) if args.clip else default_clip(fps=getattr(args, "clip_fps", 25.0), scene=scene)
    if not clip.is_file():
        err(f"{clip}: clip not found")
        return 2
    try:
        sets = ["sinks.stdout=null", *([f"bundle.runtime={args.runtime}"] if getattr(args, "runtime", None) else []),
                *(getattr(args, "set", None) or [])]
        cfg, _, _ = scan_config([], args.bundle, sets=sets)
        bundle = load_bundle(cfg.bundle.resolved_path(), verify=False)
    except (ConfigError, BundleError) as e:
        err(str(e))
        return 2
    device = baseline_device(getattr(args, "baseline_device", "auto"))
    if getattr(args, "ramp", False):
        detector = None
        if not args.no_baseline:
            faces = build_face_pipeline(cfg.faces)
            detector = faces.detector
        return ramp_main(args, cfg, clip, bundle.manifest, detector, device)
    what = "" if args.clip else f" ({scene}: {SCENES[scene]})"
    print(f"fakewatch bench: clip {clip}{what}, {args.streams} stream(s), {args.fps:g} fps, {args.seconds:g} s per run "
          f"(+{WARMUP_S:g} s warm-up)", flush=True)
    results: list[PhaseResult] = []
    if not args.no_baseline:
        faces = build_face_pipeline(cfg.faces)
        detector = faces.detector
        results.append(run_baseline(clip, args.seconds, detector, bundle.manifest, device))
        print(f"  baseline: {results[-1].fps:.1f} frames/s", flush=True)
    results.append(asyncio.run(run_pipeline(cfg, clip, args.streams, None, args.seconds, live=False)))
    print(f"  pipeline max: {results[-1].fps:.1f} frames/s", flush=True)
    results.append(asyncio.run(run_pipeline(cfg, clip, args.streams, args.fps, args.seconds, live=True)))
    summary = print_report(results, args.streams, args.fps)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0
