"""Sinks against real files and real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest
from aiohttp import web

from daemon.config import load_config
from daemon.events import VerdictEvent
from daemon.metrics import Metrics
from daemon.sinks.base import Sink
from daemon.sinks.factory import build_sinks, close_sinks, start_sinks
from daemon.sinks.jsonl import JsonlSink
from daemon.sinks.stdout import PRETTY_HEADER, StdoutSink
from daemon.sinks.webhook import WebhookSink

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs/schemas/verdict-event.v1.json").read_text())


def events(n: int = 3, stream: str = "cam1") -> list[VerdictEvent]:
    out = []
    for i in range(n):
        out.append(
            VerdictEvent(
                stream_id=stream, track_id=i, event=("start", "update", "end")[i % 3], seq_first=0, seq_last=10 + i,
                pts_first=0.0, pts_last=0.4 + i, frames=5 + i, score=0.1 * (i + 1), verdict="fake" if i else "real",
                alert="threshold" if i else None, scores={"frame": 0.2, "temporal": None},
                models={"frame": "tiny@1 onnxruntime-cpu"}, evidence={"box": [1, 2, 3, 4]}, emitted_at=1.7e9,
            )
        )
    return out


def counter(m: Metrics, name: str, sink: str) -> float:
    return m.registry.get_sample_value(f"fakewatch_{name}_total", {"sink": sink}) or 0.0


async def test_jsonl_lines_validate_against_schema(tmp_path):
    m = Metrics()
    p = tmp_path / "events.jsonl"
    sink = JsonlSink(p, m)
    await sink.start()
    await sink.emit(events(3))
    await sink.emit(events(2, stream="cam2"))
    await sink.close()
    lines = p.read_text().splitlines()
    assert len(lines) == 5
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for line in lines:
        validator.validate(json.loads(line))
    assert counter(m, "sink_events", "jsonl") == 5
    # append, do not truncate
    sink2 = JsonlSink(p, m)
    await sink2.start()
    await sink2.emit(events(1))
    await sink2.close()
    assert len(p.read_text().splitlines()) == 6


def test_schema_rejects_a_broken_event():
    bad = json.loads(events(1)[0].to_json())
    bad["verdict"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


async def test_jsonl_rotation_keeps_whole_lines(tmp_path):
    p = tmp_path / "ev.jsonl"
    sink = JsonlSink(p, rotate_mb=1500 / 1024 / 1024, keep=2)  # ~1.5 kB per file
    await sink.start()
    for _ in range(6):
        await sink.emit(events(3))
    await sink.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["ev.jsonl", "ev.jsonl.1", "ev.jsonl.2"]
    total = 0
    for f in files:
        for line in f.read_text().splitlines():
            json.loads(line)  # every line whole
            total += 1
    assert 0 < total < 18  # the oldest file was dropped (keep=2)


async def test_jsonl_start_rejects_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="folder does not exist"):
        await JsonlSink(tmp_path / "nope" / "e.jsonl").start()


async def test_stdout_json_and_pretty():
    buf = io.StringIO()
    m = Metrics()
    s = StdoutSink("json", m, stream=buf)
    await s.emit(events(2))
    rows = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [r["track_id"] for r in rows] == [0, 1]
    assert counter(m, "sink_events", "stdout") == 2

    buf = io.StringIO()
    p = StdoutSink("pretty", stream=buf)
    await p.emit(events(2))
    await p.emit(events(1))
    lines = buf.getvalue().splitlines()
    assert lines[0] == PRETTY_HEADER and len(lines) == 4
    assert "cam1" in lines[2] and "fake" in lines[2] and "threshold" in lines[2]


def test_pretty_rows_use_stream_time_and_the_table_column_names():
    """A live row names its scores like the per-identity table (frame / temporal / fused) and shows the
    stream time of the event (pts), not the wall clock it was emitted at."""
    from rich.console import Console

    from daemon.report import print_identity_table
    from daemon.sinks.stdout import pretty_row

    e = VerdictEvent("cam1", 7, "update", 0, 90, 1.0, 12.345, 9, 0.72, "fake", "threshold",
                     {"frame": 0.8, "temporal": 0.6}, emitted_at=1_700_000_000.0)
    head, row = PRETTY_HEADER.split(), pretty_row(e).split()
    assert head[:2] == ["last", "s"] and row[0] == "12.35"  # stream time, not 22:13:20
    assert ":" not in row[0]
    names = ["frame", "temporal", "fused", "verdict"]
    assert [h for h in head if h in names] == names
    assert row[5:9] == ["0.800", "0.600", "0.720", "fake"]  # in the header's order
    buf = io.StringIO()
    print_identity_table([e], console=Console(file=buf, width=200))
    table_head = next(line for line in buf.getvalue().splitlines() if line.startswith("┃"))
    assert [c.strip() for c in table_head.strip("┃").split("┃") if c.strip() in names] == names


async def _serve(app: web.Application):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/hook"


async def test_webhook_retries_until_success():
    received: list[dict] = []
    calls = {"n": 0}

    async def hook(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return web.Response(status=503)
        received.append(await request.json())
        assert request.headers["X-Token"] == "t0ken"
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner, url = await _serve(app)
    m = Metrics()
    try:
        sink = WebhookSink(url, m, retries=3, backoff_s=0.01, headers={"X-Token": "t0ken"}, batch_size=2)
        await sink.start()
        await sink.emit(events(3))  # two batches: 2 + 1
        await sink.close()
    finally:
        await runner.cleanup()
    assert calls["n"] == 4  # 2 failures, then batch 1 ok, then batch 2 ok
    assert sink.attempts == 4
    assert [len(b["events"]) for b in received] == [2, 1]
    assert received[0]["schema_version"] == 1
    for b in received:
        for e in b["events"]:
            jsonschema.validate(e, SCHEMA)
    assert counter(m, "sink_events", "webhook") == 3
    assert counter(m, "sink_errors", "webhook") == 0


async def _emit_to_hook_answering(status: int, retries: int) -> tuple[int, Metrics]:
    """One event through a WebhookSink to a hook that always answers ``status``: (requests made, metrics)."""
    calls = {"n": 0}

    async def hook(_: web.Request) -> web.Response:
        calls["n"] += 1
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner, url = await _serve(app)
    m = Metrics()
    try:
        sink = WebhookSink(url, m, retries=retries, backoff_s=0.01)
        await sink.emit(events(1))
        await sink.close()
    finally:
        await runner.cleanup()
    return calls["n"], m


async def test_webhook_gives_up_after_retries_and_counts():
    n, m = await _emit_to_hook_answering(500, retries=2)
    assert n == 3
    assert counter(m, "sink_errors", "webhook") == 1
    assert counter(m, "sink_events", "webhook") == 0


async def test_webhook_client_error_is_not_retried():
    n, m = await _emit_to_hook_answering(400, retries=3)
    assert n == 1
    assert counter(m, "sink_errors", "webhook") == 1


async def test_webhook_down_counts_error_without_raising():
    # a port that was just listening and is now closed: connection refused
    app = web.Application()
    runner, url = await _serve(app)
    await runner.cleanup()
    m = Metrics()
    sink = WebhookSink(url, m, retries=2, backoff_s=0.01, timeout_s=2)
    await sink.start()
    await sink.emit(events(2))  # must not raise
    await sink.close()
    assert sink.attempts == 3
    assert counter(m, "sink_errors", "webhook") == 1
    assert counter(m, "sink_events", "webhook") == 0


async def test_factory_builds_configured_sinks(tmp_path):
    cfg = load_config(
        None,
        [f"sinks.jsonl.path={tmp_path / 'v.jsonl'}", "sinks.webhook.url=http://127.0.0.1:9/x", "sinks.stdout.format=pretty"],
        env={},
        check_paths=False,
    )
    sinks = build_sinks(cfg.sinks, Metrics(), cfg.kafka)
    assert [type(s).__name__ for s in sinks] == ["StdoutSink", "JsonlSink", "WebhookSink"]
    assert all(isinstance(s, Sink) for s in sinks)
    await start_sinks(sinks)
    await close_sinks(sinks)
    assert (tmp_path / "v.jsonl").exists()

    none = load_config(None, ["sinks.stdout=null"], env={}, check_paths=False)
    assert build_sinks(none.sinks) == []
