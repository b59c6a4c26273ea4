"""Kafka load benchmark: N streams through a real broker (Tansu, loopback) vs the file source.

Bounded in frames (``--frames`` per stream) and time (``--timeout`` per phase). Both phases run the
same daemon (same bundle, same face detector) on the same generated clip, paced at ``--fps`` per
stream (each stream is a live camera):

- **file**: N paced PyAV file sources -> daemon -> in-process sink;
- **kafka**: N paced producers -> frames topic (N partitions) -> KafkaFrameSource -> daemon ->
  KafkaVerdictSink -> verdict topic -> a verdict consumer.

Reported per phase: frames/s (frames done / wall time from the first frame to the last one done),
p50/p99 frame-to-verdict latency measured outside the daemon (from a frame's capture time to its
verdict's arrival: in the sink for the file source, at the verdict-topic consumer for Kafka, so the
Kafka number includes both broker hops), and the daemon's own ``fakewatch_frame_to_verdict_seconds``
p50/p99 (from receipt). Only frames that close a verdict event have an outside latency.

    .venv/bin/python benchmarks/kafka_load.py --streams 2 --frames 60 --fps 5
    .venv/bin/python benchmarks/kafka_load.py --tiny-bundle   # no shipped bundle needed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemon.bench import histogram_buckets, histogram_quantile, paced_source_class, percentile  # noqa: E402
from daemon.events import VerdictEvent  # noqa: E402
from daemon.sinks.base import Sink  # noqa: E402


class ArrivalSink(Sink):
    name = "arrival"

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, int, float]] = []

    async def emit(self, events: list[VerdictEvent]) -> None:
        now = time.time()
        self.arrivals += [(e.stream_id, e.seq_last, now) for e in events]


def _latencies(arrivals, captured: dict[tuple[str, int], float]) -> list[float]:
    return [t - captured[(s, q)] for s, q, t in arrivals if (s, q) in captured]


def _daemon_q(reg, before, q: float) -> float | None:
    return histogram_quantile(q, before, histogram_buckets(reg, "fakewatch_frame_to_verdict_seconds", {}))


def _config(args, tmp: Path):
    from daemon.runner import scan_config

    from detectors.bundle import MANIFEST, default_bundle_path

    bundle = args.bundle
    if args.tiny_bundle or (bundle is None and not (Path(default_bundle_path()) / MANIFEST).is_file()):
        print("using the tiny test bundle (no default bundle installed)" if not args.tiny_bundle else "", end="")
        from tests.tiny_bundle import build_tiny_bundle

        bundle = str(build_tiny_bundle(tmp / "bundle"))
    cfg, _, _ = scan_config([], bundle, sets=["sinks.stdout=null"])
    return cfg


async def run_file(cfg, clip: Path, args) -> dict:
    from daemon.runner import build_daemon
    from daemon.metrics import Metrics
    from daemon.sources.av import AvSourceSettings

    metrics = Metrics()
    sink = ArrivalSink()
    daemon, _ = build_daemon(cfg, metrics, [sink])
    await daemon.start()
    captured: dict[tuple[str, int], float] = {}
    done = [0]
    Paced = paced_source_class()

    class Recording(Paced):  # type: ignore[misc, valid-type]
        async def run(self, emit):  # type: ignore[override]
            async def rec(frame):
                if not frame.end_of_stream:
                    captured[(frame.stream_id, frame.seq)] = time.time()
                    prev = frame.on_done
                    frame.on_done = lambda: (done.__setitem__(0, done[0] + 1), prev and prev())
                return await emit(frame)

            await super().run(rec)

    before = histogram_buckets(metrics.registry, "fakewatch_frame_to_verdict_seconds", {})
    t0 = time.monotonic()
    for i in range(args.streams):
        daemon.add_source(Recording(f"file{i}", str(clip), metrics, AvSourceSettings(live=False)))
    total = args.streams * args.frames
    while done[0] < total and time.monotonic() - t0 < args.timeout:
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - t0
    res = _result("file source", done[0], total, elapsed, _latencies(sink.arrivals, captured), metrics, before)
    await daemon.shutdown(drain=False, timeout_s=10)
    return res


async def run_kafka(cfg, clip: Path, args) -> dict:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from daemon.runner import build_daemon
    from daemon.kafka import contract
    from daemon.kafka.config import KafkaConfig
    from daemon.kafka.tools import iter_video
    from daemon.metrics import Metrics
    from daemon.sinks.kafka import KafkaVerdictSink
    from daemon.sources.kafka import KafkaFrameSource
    from tests.kafka_broker import TansuBroker, create_topics

    broker = TansuBroker.start()
    try:
        bs = broker.bootstrap
        kcfg = KafkaConfig(bootstrap_servers=[bs], frames_topics=["bench.frames"], group_id="bench",
                           verdict_topic="bench.verdicts", dead_letter_topic="bench.dlq", state_topic="bench.state",
                           auto_offset_reset="earliest", freshness_budget_s=None, commit_interval_s=0.5)
        await create_topics(bs, {"bench.frames": args.streams, "bench.verdicts": args.streams})
        metrics = Metrics()
        daemon, _ = build_daemon(cfg, metrics, [KafkaVerdictSink(kcfg, metrics)])
        await daemon.start()
        src = KafkaFrameSource(kcfg, metrics, daemon=daemon)
        daemon.add_source(src)
        while not src.assignment:
            await asyncio.sleep(0.05)
        frames = list(iter_video(clip, args.frames))
        captured: dict[tuple[str, int], float] = {}
        arrivals: list[tuple[str, int, float]] = []
        vc = AIOKafkaConsumer("bench.verdicts", bootstrap_servers=bs, group_id=None, auto_offset_reset="earliest")
        await vc.start()

        async def read_verdicts() -> None:
            while True:
                batch = await vc.getmany(timeout_ms=100)
                now = time.time()
                for recs in batch.values():
                    for r in recs:
                        e = json.loads(r.value)
                        arrivals.append((e["stream_id"], e["seq_last"], now))

        async def publish(p: AIOKafkaProducer, sid: str) -> None:
            t0 = time.monotonic()
            for i, (seq, pts, img) in enumerate(frames):
                delay = t0 + i / args.fps - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.time()
                key, value, headers = await asyncio.to_thread(contract.encode_frame, sid, seq, img, pts=pts,
                                                              captured_at=now)
                captured[(sid, seq)] = now
                await p.send(kcfg.frames_topics[0], value, key=key, headers=headers)

        reader = asyncio.create_task(read_verdicts())
        prod = AIOKafkaProducer(bootstrap_servers=bs, acks="all")
        await prod.start()
        before = histogram_buckets(metrics.registry, "fakewatch_frame_to_verdict_seconds", {})
        t0 = time.monotonic()
        pubs = [asyncio.create_task(publish(prod, f"kafka{i}")) for i in range(args.streams)]
        total = args.streams * len(frames)

        def done() -> int:
            return sum((p.commit_to or 0) for p in src._parts.values())  # offsets start at 0: commit_to = done count

        while done() < total and time.monotonic() - t0 < args.timeout:
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - t0
        await asyncio.gather(*pubs, return_exceptions=True)
        await asyncio.sleep(0.5)  # let the last verdicts arrive at the reader
        res = _result("kafka (Tansu)", done(), total, elapsed, _latencies(arrivals, captured), metrics, before)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await vc.stop()
        await prod.stop()
        await daemon.shutdown(drain=False, timeout_s=10)
        return res
    finally:
        broker.stop()


def _result(name, done, total, elapsed, lat, metrics, before) -> dict:
    return {
        "source": name, "frames": done, "expected": total, "seconds": round(elapsed, 2),
        "fps": done / elapsed if elapsed > 0 else 0.0,
        "lat_p50": percentile(lat, 0.5), "lat_p99": percentile(lat, 0.99),
        "lat_n": len(lat),
        "daemon_p50": _daemon_q(metrics.registry, before, 0.5), "daemon_p99": _daemon_q(metrics.registry, before, 0.99),
    }


def print_table(rows: list[dict], args) -> None:
    def ms(x):
        return "-" if x is None else f"{x * 1000:.0f}"

    print(f"\n{args.streams} streams x {args.frames} frames @ {args.fps:g} fps each, {args.width}x{args.height}")
    hdr = f"{'source':<16}{'frames':>12}{'wall s':>8}{'frames/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'n':>5}" \
          f"{'daemon p50':>12}{'daemon p99':>12}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['source']:<16}{r['frames']:>6}/{r['expected']:<5}{r['seconds']:>8.1f}{r['fps']:>10.2f}"
              f"{ms(r['lat_p50']):>8}{ms(r['lat_p99']):>8}{r['lat_n']:>5}{ms(r['daemon_p50']):>12}{ms(r['daemon_p99']):>12}")
    print("p50/p99: capture -> verdict outside the daemon (Kafka: through the broker both ways); "
          "daemon p50/p99: fakewatch_frame_to_verdict_seconds (bucketed)")


async def main_async(args) -> list[dict]:
    from detectors import samples

    with tempfile.TemporaryDirectory(prefix="fw-kafka-load-") as d:
        tmp = Path(d)
        clip = samples.write_video(
            tmp / "clip.mp4",
            samples.moving_frames(samples.astronaut(), args.frames, (args.width, args.height)), fps=args.fps,
        )
        cfg = _config(args, tmp)
        rows = [await run_file(cfg, clip, args), await run_kafka(cfg, clip, args)]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--frames", type=int, default=50, help="frames per stream")
    ap.add_argument("--fps", type=float, default=5.0, help="publishing rate per stream")
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--height", type=int, default=270)
    ap.add_argument("--timeout", type=float, default=120.0, help="bound per phase, seconds")
    ap.add_argument("--bundle", default=None, help="model bundle (default: the shipped default bundle)")
    ap.add_argument("--tiny-bundle", action="store_true", help="build and use the tiny test bundle")
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args(argv)
    if args.streams < 1 or args.frames < 1 or args.fps <= 0:
        ap.error("--streams, --frames and --fps must be positive")
    from daemon.logging import setup_logging

    setup_logging("warning", "text")
    rows = asyncio.run(main_async(args))
    print_table(rows, args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
