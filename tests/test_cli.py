"""The ``fakewatch`` command line: scan, run (signals), demo, bundle-info — real subprocesses, tiny bundle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import jsonschema
import numpy as np
import yaml

from daemon.cli import build_parser, identity_rows, main, stream_id_for
from daemon.events import VerdictEvent

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "docs/schemas/verdict-event.v1.json").read_text())


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # the demo cache stays inside the test
    env.pop("COLUMNS", None)
    return env


def _jsonl(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        jsonschema.validate(r, SCHEMA)
    return rows


# --- pure helpers ----------------------------------------------------------------------------------


def test_parser_has_every_command():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"run", "scan", "demo", "bench", "bundle-info"} <= set(sub.choices)


def test_stream_ids_are_label_safe_and_unique():
    taken: set[str] = set()
    assert stream_id_for("/videos/my clip (1).mp4", taken) == "my-clip-1"
    assert stream_id_for("/other/my clip (1).mkv", taken) == "my-clip-1-2"
    assert stream_id_for("rtsp://user:pw@127.0.0.1:8554/", taken) == "127.0.0.1"
    assert stream_id_for("/x/___.mp4", taken) == "stream"


def test_identity_rows_keep_the_latest_event():
    def ev(track, kind, seq, score, alert=None):
        return VerdictEvent("s", track, kind, 0, seq, 0.0, seq / 10, seq, score, "fake" if score > 0.5 else "real",
                            alert, {"frame": score, "temporal": None})

    rows = identity_rows([ev(1, "update", 9, 0.9, "spike"), ev(1, "start", 3, 0.2), ev(2, "start", 4, 0.1),
                          ev(1, "end", 9, 0.7)])
    assert [(r.track, r.score, r.verdict, r.alerts) for r in rows] == [(1, 0.7, "fake", {"spike"}), (2, 0.1, "real", set())]


def test_bundle_info(tiny_bundle_dir, capsys):
    assert main(["bundle-info", str(tiny_bundle_dir)]) == 0
    out = capsys.readouterr().out
    assert "tiny-test@1" in out and "difffake" in out and "sha256 ok" in out
    assert main(["bundle-info", str(tiny_bundle_dir / "nope")]) == 1
    assert "bundle folder not found" in capsys.readouterr().err


# --- scan ------------------------------------------------------------------------------------------


def test_scan_reports_one_identity_and_writes_jsonl(fakewatch_bin, tiny_bundle_dir, sample_clip, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    out = tmp_path / "events.jsonl"
    p = subprocess.run(
        [str(fakewatch_bin), "scan", str(sample_clip), str(bad), "ftp://127.0.0.1/x.mp4",
         "--bundle", str(tiny_bundle_dir), "--jsonl", str(out), "--fps", "10"],
        capture_output=True, text=True, env=_env(tmp_path), timeout=300,
    )
    assert p.returncode == 1, p.stderr  # some inputs failed
    err = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(err) == 2, p.stderr  # one clear line per bad input
    assert any(str(bad) in line and "not a readable video" in line for line in err)
    assert any("unsupported url scheme 'ftp'" in line for line in err)
    # the good input was still scanned: one identity row in the table
    table = [line for line in p.stdout.splitlines() if line.startswith("│")]
    assert len(table) == 1, p.stdout
    assert "astronaut" in table[0] and any(v in table[0] for v in ("real", "fake", "uncertain"))
    rows = _jsonl(out)
    assert rows and {r["stream_id"] for r in rows} == {"astronaut"}
    assert len({r["track_id"] for r in rows}) == 1
    assert rows[-1]["event"] == "end"


# --- run: graceful and forced shutdown --------------------------------------------------------------


def _run_config(tmp_path: Path, bundle: Path, clip: Path) -> tuple[Path, Path]:
    out = tmp_path / "run.jsonl"
    cfg = {
        "streams": [{"id": "cam1", "url": str(clip), "loop": True, "live": False, "analysis_fps": 5}],
        "bundle": {"path": str(bundle)},
        "sinks": {"stdout": None, "jsonl": {"path": str(out)}},
        "http": {"port": 0},
        "logging": {"level": "info", "format": "json"},
        "shutdown_timeout_s": 60,
    }
    p = tmp_path / "fakewatch.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p, out


def _start_and_wait_for_events(fakewatch_bin, cfg: Path, out: Path, tmp_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(fakewatch_bin), "run", "-c", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(tmp_path),
    )
    deadline = time.monotonic() + 240  # readiness wait only (a loaded CI box), not a speed check
    while not (out.exists() and out.stat().st_size > 0):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"daemon produced no events: rc={proc.returncode} {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
    return proc


def test_run_sigterm_drains_flushes_and_exits_0(fakewatch_bin, tiny_bundle_dir, sample_clip, tmp_path):
    cfg, out = _run_config(tmp_path, tiny_bundle_dir, sample_clip)
    proc = _start_and_wait_for_events(fakewatch_bin, cfg, out, tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(r["msg"] == "shutting down" and r.get("signal") == "SIGTERM" for r in logs)
    assert any(r["msg"] == "stopped" for r in logs)
    rows = _jsonl(out)  # every line complete and valid
    # the track was ended by the graceful shutdown and its end event reached the file
    assert rows[-1]["event"] == "end" and rows[-1]["stream_id"] == "cam1"


def test_run_second_signal_exits_at_once_with_130(fakewatch_bin, tiny_bundle_dir, sample_clip, tmp_path):
    cfg, out = _run_config(tmp_path, tiny_bundle_dir, sample_clip)
    proc = _start_and_wait_for_events(fakewatch_bin, cfg, out, tmp_path)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "second SIGINT: exiting now" in stderr


def test_run_without_inputs_is_a_usage_error(fakewatch_bin, tiny_bundle_dir, tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text(yaml.safe_dump({"bundle": {"path": str(tiny_bundle_dir)}}))
    r = subprocess.run([str(fakewatch_bin), "run", "-c", str(p)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "nothing to watch" in r.stderr


# --- demo ------------------------------------------------------------------------------------------


def test_face_swap_changes_only_the_face():
    from daemon.demo import hanks_donor, largest, swap_face
    from detectors import samples
    from detectors.faces.centerface import CenterFaceDetector

    frame = next(samples.moving_frames(samples.astronaut(), 1, (640, 360)))
    face = largest(CenterFaceDetector().detect(frame))
    assert face is not None
    donor, donor_kps = hanks_donor()
    out = swap_face(frame, face.kps, donor, donor_kps)
    assert out.shape == frame.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - frame.astype(int)).sum(-1)
    x1, y1, x2, y2 = face.box.astype(int)
    inside = diff[y1:y2, x1:x2].mean()
    outside = np.delete(diff, np.s_[max(0, y1 - 40): y2 + 40], axis=0).mean()
    assert inside > 10 and outside < 0.5


def test_demo_runs_on_real_and_swapped_clips(fakewatch_bin, tiny_bundle_dir, tmp_path):
    out = tmp_path / "demo.jsonl"
    p = subprocess.run(
        [str(fakewatch_bin), "demo", "--bundle", str(tiny_bundle_dir), "--port", "0", "--frames", "16", "--fps", "8",
         "--jsonl", str(out)],
        capture_output=True, text=True, env=_env(tmp_path), timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "metrics: http://127.0.0.1:" in p.stdout
    cached = list((tmp_path / "cache" / "fakewatch").glob("demo-*/swapped.mp4"))
    assert len(cached) == 1
    streams = {r["stream_id"] for r in _jsonl(out)}
    assert streams == {"real", "swapped"}
    table = [line for line in p.stdout.splitlines() if line.startswith("│")]
    assert {line.split("│")[1].strip() for line in table} == {"real", "swapped"}


def test_bench_histogram_quantile_between_snapshots():
    from daemon.bench import histogram_buckets, histogram_quantile
    from daemon.metrics import Metrics

    m = Metrics()
    h = m.stage_latency.labels("detect")
    h.observe(0.3)  # before the first snapshot: must not count
    before = histogram_buckets(m.registry, "fakewatch_stage_latency_seconds", {"stage": "detect"})
    for _ in range(90):
        h.observe(0.007)  # bucket (0.005, 0.01]
    for _ in range(10):
        h.observe(0.07)  # bucket (0.05, 0.1]
    after = histogram_buckets(m.registry, "fakewatch_stage_latency_seconds", {"stage": "detect"})
    p50 = histogram_quantile(0.5, before, after)
    p95 = histogram_quantile(0.95, before, after)
    assert 0.005 < p50 <= 0.01
    assert 0.05 < p95 <= 0.1
    assert histogram_quantile(0.5, after, after) is None  # nothing observed in between
