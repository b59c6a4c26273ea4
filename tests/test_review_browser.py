"""The review page in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

A real ``fakewatch run`` (the tiny test bundle, CenterFace, SQLite store, evidence crops) watches
the demo's real clip (scikit-image's astronaut, looped in real time); the tests then

* load the page and wait for the stream row and the track's score timeline and evidence crop;
* add the demo's face-swapped twin through the control API and wait for its row and an alert,
  open the alert's event page (JSON + evidence) and acknowledge it, then remove the stream again;
* stop the daemon (SIGTERM) and start it again on the same port and db: the open page shows
  "reconnecting", then follows the new daemon, and the old alert (acknowledged) is still there.

The tiny bundle is untrained: it cannot tell the two clips apart (fused scores ~0.4-0.5 for
both). So that an alert is deterministic, the config sets ``threshold_high: 0.3`` (and
``threshold_low: 0.2``): every confirmed track turns fake, the swapped clip's included. These
tests check the plumbing from a playing fake clip to an alert on the page, not detection quality.

Nothing is timed: every wait polls for a state with a generous limit (minutes on a loaded box).
The browser runs with ``--no-sandbox`` (tests run as root in containers) and without network
services (``--disable-background-networking`` etc.); Playwright's own browser download is never
used (``executable_path``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("FAKEWATCH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-test-token-0123456789"
WAIT_MS = 300_000  # upper bound of any single wait (polling, not a speed requirement)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
if not CHROMIUM.exists():  # .ci/run installs Debian's chromium; a dev box without it skips
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
expect = sync_api.expect


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaemonProcess:
    """``fakewatch run -c CONFIG`` as a subprocess that can be stopped and started again."""

    def __init__(self, exe: Path, config: Path, port: int, log: Path):
        self.exe, self.config, self.port, self.log = exe, config, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.env = {**os.environ, "FAKEWATCH_REVIEW_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}

    def start(self) -> None:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen([str(self.exe), "run", "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                         stderr=err, env=self.env, cwd=self.config.parent)
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        pytest.fail("daemon never became ready")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def state(self) -> dict:
        with urllib.request.urlopen(self.url + "/review/state.json", timeout=30) as r:
            return json.loads(r.read())


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    """The demo's real clip and its face-swapped twin (daemon/demo.py), small: 2 s of 480x270."""
    from daemon import demo
    from daemon.runner import build_face_pipeline

    faces = build_face_pipeline(None)
    return demo.build_demo_clips(getattr(faces, "detector", faces).detect, tmp_path_factory.mktemp("clips"),
                                 n_frames=50, size=(480, 270))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, tiny_bundle_dir, clips, fakewatch_bin):
    import yaml

    d = tmp_path_factory.mktemp("review")
    cfg = {
        "streams": [{"id": "lobby", "url": str(clips[0]), "loop": True, "realtime": True, "analysis_fps": 4}],
        "bundle": {"path": str(tiny_bundle_dir), "threads": 1},
        "sinks": {"stdout": None, "jsonl": {"path": str(d / "events.jsonl"), "fsync": False}},
        "http": {"port": _free_port(), "review": True, "api_token": "${FAKEWATCH_REVIEW_TOKEN}",
                 "store": {"db": str(d / "review.db")}},
        "pipeline": {
            "evidence": {"enabled": True, "dir": str(d / "evidence")},
            # the untrained tiny bundle scores every face ~0.4-0.5: thresholds this low make every
            # confirmed track fake, so an alert is deterministic (see the module doc)
            "fusion": {"threshold_high": 0.3, "threshold_low": 0.2, "update_interval_s": 0.5, "min_frames": 2},
        },
        "logging": {"level": "info", "format": "text"},
        "shutdown_timeout_s": 60,
    }
    config = d / "review.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = DaemonProcess(fakewatch_bin, config, cfg["http"]["port"], d / "daemon.log")
    proc.start()
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    ctx.close()


def _no_errors(page, allowed: tuple[str, ...] = ()) -> None:
    """No script errors and no Content-Security-Policy violations (Chromium logs both as console errors)."""
    bad = [e for e in page.errors if not any(a in e for a in allowed)]
    assert not bad, bad


def _image_loaded(page, selector: str) -> None:
    page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return !!i && i.complete && i.naturalWidth > 0; }",
        arg=selector, timeout=WAIT_MS)


def test_page_shows_streams_and_a_track_timeline(daemon, page):
    page.goto(daemon.url + "/review")
    row = page.locator('#streams tr[data-stream="lobby"]')
    expect(row.locator(".badge")).to_have_text("running", timeout=WAIT_MS)
    card = page.locator('#tracks .card[data-stream="lobby"]').first
    expect(card.locator("svg.timeline path.fused")).to_be_visible(timeout=WAIT_MS)
    # thresholds drawn, frame and temporal lines present (temporal needs pairs seconds apart)
    expect(card.locator("svg.timeline line.th-high")).to_have_count(1)
    expect(card.locator("svg.timeline line.th-low")).to_have_count(1)
    expect(card.locator("svg.timeline path.frame")).to_have_count(1)
    expect(card.locator("svg.timeline path.temporal")).to_have_count(1, timeout=WAIT_MS)
    _image_loaded(page, '#tracks .card[data-stream="lobby"] img.crop')
    # live numbers: analysed fps is filled in by the page's polling (no reload)
    fps = row.locator("td").nth(3)
    expect(fps).not_to_have_text("–", timeout=WAIT_MS)
    assert float(fps.inner_text()) > 0
    polls = int(page.evaluate("document.body.dataset.polls || '0'"))
    page.wait_for_function("n => parseInt(document.body.dataset.polls || '0', 10) > n", arg=polls + 1)
    expect(page.locator("#status")).to_have_text("live")
    assert "viewer" not in page.content()
    _no_errors(page)


def test_adding_a_stream_makes_it_appear_and_its_fake_clip_raises_an_alert(daemon, page, clips):
    page.goto(daemon.url + "/review")
    expect(page.locator('#streams tr[data-stream="lobby"]')).to_be_visible()
    status, body = daemon.api("POST", "/api/v1/streams", {"id": "swapped", "url": str(clips[1]), "loop": True,
                                                          "realtime": True, "analysis_fps": 4})
    assert status == 201, body
    # the page picks the new stream up by itself
    expect(page.locator('#streams tr[data-stream="swapped"]')).to_be_visible(timeout=WAIT_MS)
    alert = page.locator('#alerts li[data-stream="swapped"]').first
    expect(alert).to_be_visible(timeout=WAIT_MS)
    expect(page.locator('#tracks .card[data-stream="swapped"]').first).to_be_visible(timeout=WAIT_MS)
    event_id = alert.get_attribute("data-event")
    # a bad URL is refused and the streams keep running
    status, body = daemon.api("POST", "/api/v1/streams", {"id": "broken", "url": "ftp://127.0.0.1/x"})
    assert status == 422 and "unsupported url scheme" in json.dumps(body)
    assert {s["id"]: s["state"] for s in daemon.state()["streams"]} == {"lobby": "running", "swapped": "running"}

    # the alert opens its event: JSON and evidence crop
    page.locator(f'#alerts li[data-event="{event_id}"] a.what').click()
    page.wait_for_url(f"**/review/events/{event_id}")
    expect(page.locator("pre.json")).to_contain_text(event_id)
    expect(page.locator("pre.json")).to_contain_text('"stream_id": "swapped"')
    _image_loaded(page, ".evidence img")
    # acknowledge it with the token typed into the header
    page.fill("#token", TOKEN)
    page.click(f'button[data-ack="{event_id}"]')
    expect(page.locator(f'button[data-ack="{event_id}"]')).to_have_text("acknowledged")
    acked = {a["id"]: a["ack"] for a in daemon.state()["alerts"]}
    assert acked[event_id] is not None

    # removing it through the API takes it off the page; the other stream keeps running
    page.goto(daemon.url + "/review")
    expect(page.locator('#streams tr[data-stream="swapped"]')).to_be_visible()
    assert daemon.api("DELETE", "/api/v1/streams/swapped") == (200, {"removed": "swapped"})
    expect(page.locator('#streams tr[data-stream="swapped"]')).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator('#streams tr[data-stream="lobby"] .badge')).to_have_text("running")
    card = page.locator('#tracks .card[data-stream="swapped"]').first
    expect(card.locator(".facts")).to_contain_text("ended", timeout=WAIT_MS)  # its track got its end event
    _no_errors(page)


def test_the_page_follows_a_daemon_restart_and_keeps_its_history(daemon, page, fakewatch_bin):
    before = daemon.state()
    old_alerts = {a["id"] for a in before["alerts"] if a["stream"] == "swapped" and a["ack"]}
    assert old_alerts, before["alerts"]
    page.goto(daemon.url + "/review")
    expect(page.locator("#status")).to_have_text("live")
    run = page.evaluate("document.body.dataset.run")
    assert run == before["run"]

    assert daemon.stop() == 0
    expect(page.locator("#status")).to_have_text("reconnecting", timeout=WAIT_MS)
    daemon.start()
    page.wait_for_function("r => document.body.dataset.run && document.body.dataset.run !== r", arg=run,
                           timeout=WAIT_MS)
    expect(page.locator("#status")).to_have_text("live")
    # the alerts of the first run came back from the SQLite store, acknowledged
    some = next(iter(old_alerts))
    item = page.locator(f'#alerts li[data-event="{some}"]')
    expect(item).to_be_visible(timeout=WAIT_MS)
    expect(item.locator(".badge.acked")).to_have_text("acknowledged")
    # the configured stream runs again (the API-added one, removed before, was not in the config)
    expect(page.locator('#streams tr[data-stream="lobby"] .badge')).to_have_text("running", timeout=WAIT_MS)
    expect(page.locator('#streams tr[data-stream="swapped"]')).to_have_count(0)
    _no_errors(page, allowed=("Failed to load resource", "net::ERR_CONNECTION_REFUSED"))  # fetches while it was down

    out = subprocess.run([str(fakewatch_bin), "verdicts", "--db", str(daemon.config.parent / "review.db"), "--alerts",
                          "--stream", "swapped"], capture_output=True, text=True, timeout=120, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert old_alerts <= {r["id"] for r in rows}
    assert all(r["alert"] and r["stream_id"] == "swapped" for r in rows)
