"""Every ``fakewatch_*`` name in the alert rules and the Grafana dashboard is in a live scrape.

The real daemon (``daemon.runner.run_daemon``: tiny bundle, CenterFace, real HTTP server on
127.0.0.1) runs a looping file with a face, a live RTSP URL on a closed loopback port (so the
reconnect/state/error series exist) and two sinks (a JSON-lines file that works, a webhook to a
closed port that fails). The fusion thresholds are set very low so that the untrained tiny
bundle's tracks turn "fake" and raise alerts. Once per-stream series exist, ``/metrics`` is scraped over HTTP.

Labelled families only print samples once a child exists. A few cannot get one here (Kafka needs a
broker): prometheus_client still prints their ``# HELP`` and
``# TYPE`` lines, so for those the family must be in the scrape, and for everything else a sample
line must be.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.runner import run_daemon
from daemon.config import validate_config

REPO = Path(__file__).resolve().parents[1]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((REPO / "deploy" / "grafana").rglob("*.json"))
METRIC_RE = re.compile(r"\bfakewatch_[a-z0-9_]+")

# used by rules/dashboard, but no child can exist without a Kafka broker: for these the scrape
# must still carry the family (HELP/TYPE), not a sample
FAMILY_ONLY = {
    "fakewatch_kafka_consumer_lag",
    "fakewatch_kafka_messages_consumed_total",
    "fakewatch_kafka_dead_letters_total",
    # unlabelled Kafka counters/gauges always have their one sample (0), so they are checked fully
}


def used_names() -> set[str]:
    names: set[str] = set()
    for p in [ALERTS, *DASHBOARDS]:
        names |= set(METRIC_RE.findall(p.read_text()))
    return names


def scraped(text: str) -> tuple[set[str], set[str]]:
    """(sample names, family names as written in HELP lines) of a Prometheus text exposition."""
    samples: set[str] = set()
    families: set[str] = set()
    for fam in text_string_to_metric_families(text):
        families.add(fam.name)
        if fam.type == "counter":
            families.add(fam.name + "_total")
        if fam.type == "info":
            families.add(fam.name + "_info")
        if fam.type == "histogram":
            families |= {fam.name + s for s in ("_bucket", "_sum", "_count")}
        samples |= {s.name for s in fam.samples}
    return samples, families


def test_rules_and_dashboard_reference_metrics():
    names = used_names()
    assert DASHBOARDS, "no Grafana dashboard found under deploy/grafana"
    assert len(names) >= 20, names
    assert FAMILY_ONLY <= names, "FAMILY_ONLY lists a name the rules/dashboard no longer use"


def _value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def test_live_scrape_has_every_metric_of_rules_and_dashboard(tiny_bundle_dir, sample_clip, tmp_path):
    cfg = validate_config({
        "streams": [
            {"id": "cam1", "url": str(sample_clip), "loop": True, "live": False, "analysis_fps": 8},
            {"id": "cam2", "url": "rtsp://127.0.0.1:1/live", "live": True, "open_timeout_s": 2,
             "reconnect": {"initial_s": 0.1, "max_s": 0.2}},
        ],
        "bundle": {"path": str(tiny_bundle_dir), "threads": 1},
        "sinks": {
            "stdout": None,
            "jsonl": {"path": str(tmp_path / "events.jsonl"), "fsync": False},
            "webhook": {"url": "http://127.0.0.1:1/hook", "retries": 0, "timeout_s": 2},
        },
        "http": {"host": "127.0.0.1", "port": 0},
        # very low thresholds: the untrained model's ~0.5 scores read "fake" -> alerts series
        "pipeline": {"fusion": {"update_interval_s": 0.2, "threshold_high": 0.02, "threshold_low": 0.01,
                                "min_frames": 1}},
    }, "test")
    stop = asyncio.Event()
    server_box: list = []
    run = asyncio.ensure_future(run_daemon(cfg, stop=stop, on_ready=server_box.append))
    text = ""
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(900):  # readiness wait (not a speed check): up to ~3 min on a loaded box
                await asyncio.sleep(0.2)
                if run.done():
                    run.result()  # raises what killed it
                    pytest.fail("daemon ended early")
                if not server_box:
                    continue
                async with http.get(server_box[0].url + "/metrics") as r:
                    assert r.status == 200
                    text = await r.text()
                if (_value(text, "fakewatch_verdicts_total", stream="cam1", event="update") >= 1
                        and _value(text, "fakewatch_sink_errors_total", sink="webhook") >= 1
                        and _value(text, "fakewatch_stream_reconnects_total", stream="cam2") >= 1
                        and _value(text, "fakewatch_fake_score_count", stream="cam1") >= 1
                        and _value(text, "fakewatch_alerts_total", stream="cam1") >= 1):
                    break
            else:
                pytest.fail("the pipeline never produced update verdicts, alerts, sink errors and reconnects")
            async with http.get(server_box[0].url + "/readyz") as r:
                assert r.status == 200
    finally:
        stop.set()
        await asyncio.wait_for(run, 120)

    samples, families = scraped(text)
    names = used_names()
    missing_family = sorted(n for n in names if n not in families and n not in samples)
    assert not missing_family, f"not in the scrape at all: {missing_family}"
    missing_sample = sorted(n for n in names - FAMILY_ONLY if n not in samples)
    assert not missing_sample, f"family present but no series in a live scrape: {missing_sample}"
    # per-stream series exist for the configured streams (the dashboards' stream variable)
    assert _value(text, "fakewatch_frames_analysed_total", stream="cam1") > 0
    assert _value(text, "fakewatch_stream_state", stream="cam1", state="running") == 1
    assert _value(text, "fakewatch_stream_state", stream="cam2", state="running") == 0
    assert _value(text, "fakewatch_queue_capacity", queue="intake") > 0

