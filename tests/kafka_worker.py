"""A Kafka consumer process for the crash tests: ``python -m tests.kafka_worker BOOTSTRAP GROUP FRAMES VERDICTS``.

Runs the real KafkaFrameSource + KafkaVerdictSink around either :class:`tests.kafka_harness.MiniPipeline`
(slowed down by ``--delay`` so it can be killed mid-stream; ``--tracks`` for its track model) or,
with ``--bundle DIR``, the real :class:`daemon.app.Daemon` (CenterFace + that bundle), until
SIGKILLed or SIGTERMed. ``--state TOPIC`` enables the state topic (checkpoints). Prints ``READY``
once partitions are assigned.

Fault injection: ``FAKEWATCH_TEST_KILL_AT=POINT[:N]`` makes the process SIGKILL itself the N-th
time (default 1) the source reaches ``POINT`` (``commit.before_state_save``,
``commit.before_offset_commit``, ``revoke.drained``: see daemon/sources/kafka.py), so a test can
crash it deterministically between a verdict's publish and the offset commit, or inside a rebalance.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from daemon.kafka.config import KafkaConfig
from daemon.metrics import Metrics
from daemon.sinks.kafka import KafkaVerdictSink
from daemon.sources.kafka import KafkaFrameSource
from tests.kafka_harness import MiniPipeline

KILL_ENV = "FAKEWATCH_TEST_KILL_AT"


def fault_hook(spec: str | None):
    """The source's ``fault`` callable for ``POINT[:N]`` (None without a spec)."""
    if not spec:
        return None
    point, _, n = spec.partition(":")
    left = [int(n or 1)]

    def hook(name: str) -> None:
        if name != point:
            return
        left[0] -= 1
        if left[0] <= 0:
            print(f"FAULT {name}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


async def main(a: argparse.Namespace) -> None:
    cfg = KafkaConfig(
        bootstrap_servers=[a.bootstrap], frames_topics=[a.frames], group_id=a.group, verdict_topic=a.verdicts,
        state_topic=a.state, dead_letter_topic=None, auto_offset_reset="earliest", freshness_budget_s=None,
        session_timeout_ms=6000, heartbeat_interval_ms=1000, max_poll_interval_ms=20000, commit_interval_s=0.2,
        intake_high=8, intake_low=2, client_id=a.client_id,
    )
    m = Metrics()
    sink = KafkaVerdictSink(cfg, m)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    hook = fault_hook(os.environ.get(KILL_ENV))
    if a.bundle:
        from daemon.app import Daemon
        from daemon.fusion import FusionConfig
        from daemon.models import BundleConfig
        from daemon.pipeline import PipelineConfig
        from daemon.temporal import TemporalConfig
        from daemon.tracking import TrackerConfig
        from detectors.bundle import load_bundle
        from detectors.faces.centerface import CenterFaceDetector
        from detectors.faces.pipeline import FacePipeline

        pcfg = PipelineConfig(tracker=TrackerConfig(min_hits=2), temporal=TemporalConfig(sample_fps=2.5),
                              fusion=FusionConfig(update_interval_s=0.2, min_frames=2))
        d = Daemon(pcfg, FacePipeline(CenterFaceDetector(det_max_side=320)), load_bundle(a.bundle), [sink], m,
                   models=BundleConfig.defaults(threads=1))
        await d.start()
        src = KafkaFrameSource(cfg, m, daemon=d)
        src.fault = hook
        d.add_source(src)
        while not src.assignment:
            await asyncio.sleep(0.05)
        print("READY", flush=True)
        await stop.wait()
        await d.shutdown(drain=True, timeout_s=20)
        return
    await sink.start()
    pipe = MiniPipeline([sink], capacity=4, delay_s=a.delay, tracks=a.tracks)
    pipe.start()
    src = KafkaFrameSource(cfg, m, daemon=pipe)
    src.fault = hook
    task = asyncio.create_task(src.run(pipe.emit))
    while not src.assignment:
        await asyncio.sleep(0.05)
    print("READY", flush=True)
    await stop.wait()
    await src.stop()
    await task
    await pipe.stop()
    await sink.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    for n in ("bootstrap", "group", "frames", "verdicts"):
        ap.add_argument(n)
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--state", default=None, help="state topic (checkpoints); default: none")
    ap.add_argument("--tracks", action="store_true", help="MiniPipeline's track model (see tests/kafka_harness.py)")
    ap.add_argument("--client-id", default="fakewatch")
    ap.add_argument("--bundle", default=None, help="run the real Daemon with this bundle")
    asyncio.run(main(ap.parse_args()))
    sys.exit(0)
