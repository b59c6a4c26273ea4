"""Shutdown of a real ``fakewatch run`` subprocess (tiny bundle, looping clips, JSON-lines sink).

tests/test_cli.py covers the basic cases (one stream: SIGTERM -> drained, end event, exit 0;
SIGTERM + SIGINT -> exit 130). Here the cases it leaves out:

* SIGINT (Ctrl-C) with several streams: every track that started gets its ``end`` event, a live
  source sleeping in a long reconnect backoff does not hold the exit up;
* a sink that hangs (webhook retrying with long backoffs): SIGTERM still exits 0, bounded by
  ``shutdown_timeout_s`` (the drain gives up and says so);
* the same hang, and a second SIGTERM while draining: exit 130 at once, the JSONL file is intact.

The waits below are hang guards far above ``shutdown_timeout_s``, not speed checks: a daemon that
honoured the hanging sink's backoffs (minutes) would exceed them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import yaml


HANG_GUARD_S = 90.0  # > shutdown_timeout_s; << the hanging sink's retry backoffs (30+60+120... s), the 120 s reconnect backoff


class Daemon:
    """``fakewatch run -c CONFIG`` with its stderr (JSON logs) collected in a thread."""

    def __init__(self, exe: Path, cfg: dict, tmp_path: Path):
        self.events = tmp_path / "events.jsonl"
        cfg = {
            "bundle": cfg.pop("bundle"),
            "sinks": {"stdout": None, "jsonl": {"path": str(self.events)}, **cfg.pop("sinks", {})},
            "http": {"port": 0},
            "logging": {"level": "info", "format": "json"},
            "shutdown_timeout_s": 3,
            **cfg,
        }
        path = tmp_path / "fakewatch.yaml"
        path.write_text(yaml.safe_dump(cfg))
        env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
        self.proc = subprocess.Popen([str(exe), "run", "-c", str(path)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def logs(self) -> list[dict]:
        return [json.loads(x) for x in list(self.lines) if x.startswith("{")]

    def rows(self) -> list[dict]:
        if not self.events.exists():
            return []
        text = self.events.read_text()
        return [json.loads(x) for x in text.splitlines()[: text.count("\n")]]  # complete lines only

    def wait_for(self, what: str, cond) -> None:
        deadline = time.monotonic() + 240  # startup on a loaded box: a readiness wait, not a speed check
        while not cond():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self._reader.join(5)
                raise AssertionError(f"{what}: not reached (rc={self.proc.returncode})\n{''.join(self.lines)[-3000:]}")
            time.sleep(0.2)

    def stop(self, *signals: signal.Signals, gap_s: float = 0.0) -> int:
        for i, sig in enumerate(signals):
            if i and gap_s:
                time.sleep(gap_s)
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"no exit within {HANG_GUARD_S:.0f} s of {[s.name for s in signals]}") from None
        self._reader.join(10)
        return rc


def _stuck_webhook() -> dict:
    # connection refused at once, then retried with backoffs of 30, 60, 120 ... s: the sink hangs
    return {"webhook": {"url": "http://127.0.0.1:1/hook", "retries": 8, "backoff_s": 30, "backoff_max_s": 300}}


def test_sigint_ends_every_track_of_every_stream(fakewatch_bin, tiny_bundle_dir, sample_clip, tmp_path):
    d = Daemon(fakewatch_bin, {
        "bundle": {"path": str(tiny_bundle_dir), "threads": 1},
        "streams": [
            {"id": "cam1", "url": str(sample_clip), "loop": True, "live": False, "analysis_fps": 5},
            {"id": "cam2", "url": str(sample_clip), "loop": True, "live": False, "analysis_fps": 5},
            # a live camera that is down: sleeping in a 120 s reconnect backoff when the signal comes
            {"id": "down", "url": "rtsp://127.0.0.1:1/x", "live": True, "open_timeout_s": 2,
             "reconnect": {"initial_s": 120, "max_s": 120, "jitter": 0}},
        ],
        "shutdown_timeout_s": 45,  # room to drain on a loaded box (with 3 s the drain can time out: no end events)
    }, tmp_path)
    d.wait_for("start events of both file streams",
               lambda: {r["stream_id"] for r in d.rows() if r["event"] == "start"} >= {"cam1", "cam2"})
    d.wait_for("the down camera in reconnect backoff",
               lambda: any(r.get("msg", "").startswith("stream down: reconnecting") or
                           ("reconnecting" in r.get("msg", "") and "down" in r.get("msg", "")) for r in d.logs()))
    assert d.stop(signal.SIGINT) == 0, "".join(d.lines)[-3000:]
    rows = d.rows()
    assert d.events.read_text().endswith("\n")  # flushed, no torn last line
    started = {(r["stream_id"], r["track_id"]) for r in rows if r["event"] == "start"}
    ended = {(r["stream_id"], r["track_id"]) for r in rows if r["event"] == "end"}
    assert started and started == ended, (started, ended, "".join(d.lines)[-4000:])
    for key in started:  # the end event is the last event of its track
        assert [r for r in rows if (r["stream_id"], r["track_id"]) == key][-1]["event"] == "end"
    logs = d.logs()
    assert any(r["msg"] == "shutting down" and r.get("signal") == "SIGINT" for r in logs)
    assert any(r["msg"] == "stopped" for r in logs)


def _running_with_stuck_sink(fakewatch_bin: Path, bundle_dir: Path, clip: Path, tmp_path: Path, **extra) -> Daemon:
    """A daemon looping ``clip`` into the JSONL sink and a hanging webhook, once it has written an event."""
    d = Daemon(fakewatch_bin, {
        "bundle": {"path": str(bundle_dir), "threads": 1},
        "streams": [{"id": "cam1", "url": str(clip), "loop": True, "live": False, "analysis_fps": 5}],
        "sinks": _stuck_webhook(),
        **extra,
    }, tmp_path)
    d.wait_for("first event in the JSONL file", lambda: bool(d.rows()))
    return d


def test_sigterm_with_a_hanging_sink_is_bounded_by_shutdown_timeout(fakewatch_bin, tiny_bundle_dir, sample_clip,
                                                                   tmp_path):
    d = _running_with_stuck_sink(fakewatch_bin, tiny_bundle_dir, sample_clip, tmp_path)
    assert d.stop(signal.SIGTERM) == 0, "".join(d.lines)[-3000:]
    logs = d.logs()
    assert any("drain timed out" in r["msg"] for r in logs), "".join(d.lines)[-3000:]
    assert any(r["msg"] == "stopped" for r in logs)
    assert d.events.read_text().endswith("\n") and d.rows()


def test_second_sigterm_while_draining_exits_130_with_intact_jsonl(fakewatch_bin, tiny_bundle_dir, sample_clip,
                                                                   tmp_path):
    # shutdown_timeout_s: the drain would wait on the hanging sink for minutes
    d = _running_with_stuck_sink(fakewatch_bin, tiny_bundle_dir, sample_clip, tmp_path, shutdown_timeout_s=600)
    d.proc.send_signal(signal.SIGTERM)
    d.wait_for("graceful shutdown under way", lambda: any(r["msg"] == "shutting down" for r in d.logs()))
    assert d.stop(signal.SIGTERM) == 130
    assert "second SIGTERM: exiting now" in "".join(d.lines)
    assert not any(r["msg"] == "stopped" for r in d.logs())  # it did not wait for the drain
    text = d.events.read_text()
    assert text.endswith("\n")  # events are written whole lines at a time
    assert all(json.loads(line)["stream_id"] == "cam1" for line in text.splitlines())
