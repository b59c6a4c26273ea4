"""Every Prometheus metric the daemon exports, in one place.

Naming follows the Prometheus guide: one prefix (``fakewatch_``), base units (seconds), ``_total``
for counters, ``_info`` for metadata. Labels are bounded: ``stream`` comes from configured stream
ids, and streams discovered at run time (Kafka keys) are capped by :class:`StreamLabels` with an
``other`` bucket. Track or identity ids are never labels.

One :class:`Metrics` object owns one :class:`CollectorRegistry`, so several daemons (tests) can
live in one process. ``deploy/prometheus/alerts.yml`` and ``deploy/grafana/fakewatch.json`` use
only names defined here (a test scrapes a running daemon to check that).
"""

from __future__ import annotations

import platform
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

PREFIX = "fakewatch"

STREAM_STATES = ("starting", "running", "reconnecting", "ended", "failed")
DROP_REASONS = ("sampled_out", "queue_full", "stale", "decode_error", "bad_frame", "shutdown", "revoked")
STAGES = ("decode", "detect", "embed", "track", "classify", "temporal", "fuse", "sink")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 10)) + (0.95, 0.99)


class StreamLabels:
    """Caps the number of distinct ``stream`` label values; the rest share ``other``."""

    def __init__(self, limit: int = 64):
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, stream_id: str) -> str:
        with self._lock:
            if stream_id in self._seen:
                return stream_id
            if len(self._seen) < self.limit:
                self._seen.add(stream_id)
                return stream_id
        return "other"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, stream_label_limit: int = 64):
        r = self.registry = registry or CollectorRegistry()
        self.stream_label = StreamLabels(stream_label_limit)
        p = PREFIX

        self.build_info = Info(f"{p}_build", "fakewatch build information", registry=r)
        self.bundle_info = Info(
            f"{p}_bundle", "Loaded model bundle, its models and the runtime that runs them", registry=r
        )
        self.ready = Gauge(f"{p}_ready", "1 when models are loaded and sources started", registry=r)

        # sources
        self.frames_received = Counter(f"{p}_frames_received_total", "Frames read from a source", ["stream"], registry=r)
        self.frames_analysed = Counter(
            f"{p}_frames_analysed_total", "Frames that went through face detection", ["stream"], registry=r
        )
        self.frames_dropped = Counter(
            f"{p}_frames_dropped_total", "Frames not analysed, by reason", ["stream", "reason"], registry=r
        )
        self.stream_up = Gauge(f"{p}_stream_up", "1 while the stream delivers frames", ["stream"], registry=r)
        self.stream_state = Gauge(
            f"{p}_stream_state", "Current stream state (1 for the current state)", ["stream", "state"], registry=r
        )
        self.stream_last_frame = Gauge(
            f"{p}_stream_last_frame_timestamp_seconds", "Unix time of the last frame received", ["stream"], registry=r
        )
        self.stream_reconnects = Counter(
            f"{p}_stream_reconnects_total", "Reconnect attempts of live streams", ["stream"], registry=r
        )
        self.stream_errors = Counter(
            f"{p}_stream_errors_total", "Stream errors by kind", ["stream", "kind"], registry=r
        )

        # faces, tracks, scores, verdicts
        self.faces = Counter(f"{p}_faces_detected_total", "Faces detected", ["stream"], registry=r)
        self.detect_passes = Counter(
            f"{p}_detect_passes_total", "Face-detection passes by mode (full frame | regions around last faces)",
            ["mode"], registry=r,
        )
        self.tracks_started = Counter(f"{p}_tracks_started_total", "Face tracks confirmed", ["stream"], registry=r)
        self.tracks_ended = Counter(f"{p}_tracks_ended_total", "Face tracks ended", ["stream"], registry=r)
        self.tracks_active = Gauge(f"{p}_tracks_active", "Confirmed face tracks alive now", ["stream"], registry=r)
        self.fake_score = Histogram(
            f"{p}_fake_score", "Fused per-track fake score at each update", ["stream"], buckets=SCORE_BUCKETS, registry=r
        )
        self.verdicts = Counter(
            f"{p}_verdicts_total", "Verdict events emitted (event = start|update|end)", ["stream", "event"], registry=r
        )
        self.alerts = Counter(
            f"{p}_alerts_total",
            "Fake alerts raised (kind = threshold|spike|sustained)",
            ["stream", "kind"],
            registry=r,
        )

        # pipeline internals
        self.stage_latency = Histogram(
            f"{p}_stage_latency_seconds", "Time spent in a pipeline stage per item", ["stage"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.frame_to_verdict = Histogram(
            f"{p}_frame_to_verdict_seconds", "From frame receipt to its verdicts being produced",
            buckets=E2E_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            f"{p}_batch_size", "Inference batch sizes", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(f"{p}_queue_depth", "Items waiting in a stage queue", ["queue"], registry=r)
        self.queue_capacity = Gauge(f"{p}_queue_capacity", "Capacity of a stage queue", ["queue"], registry=r)

        # sinks
        self.sink_events = Counter(f"{p}_sink_events_total", "Events delivered by a sink", ["sink"], registry=r)
        self.sink_errors = Counter(f"{p}_sink_errors_total", "Sink delivery failures", ["sink"], registry=r)

        # kafka
        self.kafka_consumed = Counter(
            f"{p}_kafka_messages_consumed_total", "Kafka messages consumed", ["topic"], registry=r
        )
        self.kafka_dead_letters = Counter(
            f"{p}_kafka_dead_letters_total", "Messages sent to the dead-letter topic", ["reason"], registry=r
        )
        self.kafka_commits = Counter(f"{p}_kafka_commits_total", "Successful offset commits", registry=r)
        self.kafka_commit_failures = Counter(f"{p}_kafka_commit_failures_total", "Failed offset commits", registry=r)
        self.kafka_rebalances = Counter(f"{p}_kafka_rebalances_total", "Partition revocations seen", registry=r)
        self.kafka_assigned = Gauge(f"{p}_kafka_assigned_partitions", "Partitions assigned to this consumer", registry=r)
        self.kafka_paused = Gauge(f"{p}_kafka_paused_partitions", "Partitions paused for backpressure", registry=r)
        self.kafka_lag = Gauge(
            f"{p}_kafka_consumer_lag", "High watermark minus position, as this consumer sees it",
            ["topic", "partition"], registry=r,
        )
        self.kafka_state_ops = Counter(
            f"{p}_kafka_state_operations_total", "Temporal state snapshots (op = save|restore)", ["op"], registry=r
        )

        from daemon import __version__

        self.build_info.info({"version": __version__, "python": platform.python_version()})

    # helpers ---------------------------------------------------------------------------------
    def set_stream_state(self, stream_id: str, state: str) -> None:
        label = self.stream_label(stream_id)
        for s in STREAM_STATES:
            self.stream_state.labels(label, s).set(1.0 if s == state else 0.0)
        self.stream_up.labels(label).set(1.0 if state == "running" else 0.0)

    def drop(self, stream_id: str, reason: str, n: int = 1) -> None:
        self.frames_dropped.labels(self.stream_label(stream_id), reason).inc(n)

    def watch_queue(self, name: str, capacity: int) -> None:
        self.queue_capacity.labels(name).set(capacity)
        self.queue_depth.labels(name).set(0)
