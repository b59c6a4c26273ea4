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

from daemon.cli import build_parser, main
from daemon.events import VerdictEvent
from daemon.report import identity_rows
from daemon.runner import stream_id_for

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


def _tables(stdout: str) -> dict[str, list[list[str]]]:
    """The rich tables of a report, by title: each row as its stripped cells (header row first)."""
    tables: dict[str, list[list[str]]] = {}
    title, rows = None, None
    for line in stdout.splitlines():
        if line.strip() and not line.startswith(("┏", "┃", "┡", "│", "└", "┗")) and rows is None:
            title = line.strip()
        elif line.startswith(("┃", "│")):
            if rows is None:
                rows = tables.setdefault(title, [])
            rows.append([c.strip() for c in line.strip("┃│").split("┃" if line.startswith("┃") else "│")])
        elif line.startswith("└"):
            title, rows = None, None
    return tables


def test_scan_reports_one_identity_and_writes_jsonl(fakewatch_bin, tiny_bundle_dir, sample_clip, tmp_path):
    from tests import media_corpus as mc

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    empty = mc.zero_byte(tmp_path)
    no_face = mc.encode(tmp_path / "noface.mp4", [mc.marker_frame()] * 10)
    missing = tmp_path / "missing.mp4"
    out = tmp_path / "events.jsonl"
    inputs = [str(sample_clip), str(bad), "ftp://127.0.0.1/x.mp4", str(missing), str(empty), str(no_face)]
    p = subprocess.run(
        [str(fakewatch_bin), "scan", *inputs, "--bundle", str(tiny_bundle_dir), "--jsonl", str(out), "--fps", "10"],
        capture_output=True, text=True, env=_env(tmp_path), timeout=300,
    )
    assert p.returncode == 1, p.stderr  # some inputs failed
    err = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(err) == 4, p.stderr  # one clear line per bad input
    assert any(str(bad) in line and "not a readable video" in line for line in err)
    assert any("unsupported url scheme 'ftp'" in line for line in err)
    assert f"fakewatch: error: file not found: {missing}" in err  # the path once, not twice
    assert sum(line.count(str(missing)) for line in err) == 1
    tables = _tables(p.stdout)
    # the good input was still scanned: one identity row in the table
    (identities,) = [rows for title, rows in tables.items() if title.startswith("fakewatch scan: 6 input(s)")]
    assert identities[0][:10] == ["stream", "track", "frames", "first s", "last s", "frame", "temporal", "fused",
                                  "verdict", "alerts"]
    assert len(identities) == 2 and identities[1][0] == "astronaut", p.stdout
    assert identities[1][8] in ("real", "fake", "uncertain")
    # the legend under the table says what the columns and thresholds are
    text = " ".join(p.stdout.split())
    assert "fused: (0.6 frame + 0.4 temporal)" in text and "fake once fused >= 0.6" in text
    assert "real below 0.4" in text and "stream time" in text
    # every input is listed with its status, in the order given
    lines = p.stdout.split("inputs: 6, 1 ok, 1 without faces, 4 failed\n", 1)[1].splitlines()[:6]
    assert lines[0] == f"  ok        {sample_clip} (1 face track)", p.stdout
    assert lines[1].startswith(f"  failed    {bad}: not a readable video")
    assert lines[2].startswith("  failed    ftp://127.0.0.1/x.mp4: unsupported url scheme 'ftp'")
    assert lines[3] == f"  failed    {missing}: file not found"
    assert lines[4] == f"  failed    {empty}: file is empty (0 bytes)"
    assert lines[5] == f"  no faces  {no_face}"
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
    assert "while the scan runs, a few seconds; --keep: until Ctrl-C" in p.stdout  # how long, and how to keep it
    # first run: says it builds the clips, not "(cached)"
    assert "building the sample clip and its face-swapped twin (first run only" in p.stdout
    assert "(cached)" not in p.stdout
    cached = list((tmp_path / "cache" / "fakewatch").glob("demo-*/swapped.mp4"))
    assert len(cached) == 1
    streams = {r["stream_id"] for r in _jsonl(out)}
    assert streams == {"real", "swapped"}
    table = [line for line in p.stdout.splitlines() if line.startswith("│")]
    assert {line.split("│")[1].strip() for line in table} == {"real", "swapped"}


def test_demo_clips_message_says_built_or_cached(tmp_path, monkeypatch):
    """The demo says "building" when it builds the clips and "cached" only when it reuses them."""
    import io

    from rich.console import Console

    from daemon import demo

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert demo.cached_clips(n_frames=4) is None
    buf = io.StringIO()
    first = demo.clips(Console(file=buf, width=200), 4)
    assert "building the sample clip" in buf.getvalue() and "using" not in buf.getvalue()
    assert demo.cached_clips(n_frames=4) == first
    buf = io.StringIO()
    assert demo.clips(Console(file=buf, width=200), 4) == first
    assert "using the sample clip and its face-swapped twin cached in" in buf.getvalue()
    assert "building" not in buf.getvalue()


def test_sample_clip_example_runs_out_of_the_box(fakewatch_bin, tiny_bundle_dir, tmp_path):
    """examples/sample-clip.yaml after `fakewatch sample-clips`, from a checkout root: both streams give
    verdicts (pretty rows on stdout, JSONL under out/), SIGTERM exits 0; what it writes is git-ignored."""
    import shutil

    root = tmp_path / "checkout"
    (root / "examples").mkdir(parents=True)
    shutil.copy(REPO / "examples" / "sample-clip.yaml", root / "examples")
    env = _env(tmp_path)
    made = subprocess.run([str(fakewatch_bin), "sample-clips", "--frames", "16"], cwd=root, capture_output=True,
                          text=True, env=env, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    assert (root / "out/sample/real.mp4").is_file() and (root / "out/sample/swapped.mp4").is_file()
    out = root / "out" / "sample" / "verdicts.jsonl"
    proc = subprocess.Popen(
        [str(fakewatch_bin), "run", "-c", "examples/sample-clip.yaml", "--set", f"bundle.path={tiny_bundle_dir}",
         "--set", "http.port=0"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.monotonic() + 240  # readiness wait only (a loaded CI box), not a speed check
    streams: set[str] = set()
    while streams != {"real", "swapped"}:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no verdicts from both clips: rc={proc.returncode} {proc.communicate()[1][-2000:]}")
        time.sleep(0.5)
        if out.exists():
            streams = {json.loads(line)["stream_id"] for line in out.read_text().splitlines() if line.endswith("}")}
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    from daemon.sinks.stdout import PRETTY_HEADER

    assert stdout.splitlines()[0] == PRETTY_HEADER
    assert {r["stream_id"] for r in _jsonl(out)} == {"real", "swapped"}
    # run from the real checkout, both example configs write only where .gitignore covers
    if shutil.which("git") and (REPO / ".git").exists():
        for path in ("out/sample/verdicts.jsonl", "out/sample/real.mp4", "fakewatch-verdicts.jsonl",
                     "fakewatch-verdicts.jsonl.1"):
            r = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
            assert r.returncode == 0, f"{path} is not git-ignored"
    cfg = yaml.safe_load((REPO / "examples" / "fakewatch.yaml").read_text())
    assert cfg["sinks"]["jsonl"]["path"] == "fakewatch-verdicts.jsonl"


def test_readme_quick_start_works_without_guessing():
    """The README says how to reach the venv's commands, documents demo --keep, and only uses subcommands
    and example files that exist."""
    import re

    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "source .venv/bin/activate" in quick and ".venv/bin/fakewatch" in quick
    assert "--keep" in quick and "while the scan runs" in quick
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    used = set(re.findall(r"^(?:\.venv/bin/)?fakewatch ([a-z-]+)", readme, re.M)) | set(
        re.findall(r"&& (?:\.venv/bin/)?fakewatch ([a-z-]+)", readme))
    assert {"demo", "run", "scan", "sample-clips"} <= used
    assert used <= set(sub.choices), used - set(sub.choices)
    for example in re.findall(r"examples/[\w.-]+\.yaml", readme):
        assert (REPO / example).is_file(), example


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
