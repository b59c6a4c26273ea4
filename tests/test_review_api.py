"""Security and behaviour of the review page and the control API (daemon/review/web.py).

A real aiohttp server on 127.0.0.1 with the review routes mounted; the "daemon" behind it is a
small stand-in that runs real :class:`AvSource` readers (so a file that is not a video really
fails to open) and throws their frames away. Raw-socket requests reach the server byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from daemon.config import validate_config
from daemon.events import VerdictEvent
from daemon.metrics import Metrics
from daemon.review.web import CSP, MAX_BODY, Review
from daemon.server import MetricsServer
from tests.test_security import raw  # one raw-HTTP helper (status, header block, body)

TOKEN = "review-test-token-0123456789"
CAM_PW = "S3cretCamPw"


class StandInDaemon:
    """What Review needs of a Daemon: sources, add/remove, ready; frames are dropped at once."""

    def __init__(self):
        self._sources: list[tuple] = []
        self.observers: list = []

    def ready(self) -> bool:
        return True

    def sources(self):
        return [s for s, _ in self._sources]

    def stream_ids(self):
        return []

    def add_source(self, source) -> None:
        async def emit(frame) -> bool:
            frame.done()
            return True

        self._sources.append((source, asyncio.get_running_loop().create_task(source.run(emit))))

    async def remove_source(self, stream_id: str) -> bool:
        for s, t in self._sources:
            if s.stream_id == stream_id:
                await s.stop()
                await asyncio.wait([t], timeout=10)
                self._sources = [(a, b) for a, b in self._sources if a is not s]
                return True
        return False

    async def close(self) -> None:
        for s, t in self._sources:
            await s.stop()
            t.cancel()
        await asyncio.gather(*(t for _, t in self._sources), return_exceptions=True)


def _cfg(tmp_path: Path, **http) -> object:
    return validate_config({
        "http": {"review": True, "api_token": TOKEN, "port": 0, **http},
        "pipeline": {"evidence": {"enabled": True, "dir": str(tmp_path / "evidence")}},
    }, "test", check_paths=False)


@pytest.fixture
async def served(tmp_path, sample_clip):
    from daemon.sources.av import AvSource, AvSourceSettings

    cfg = _cfg(tmp_path)
    metrics = Metrics()
    review = Review(cfg, metrics, open_wait_s=20)
    daemon = StandInDaemon()
    review.attach(daemon)
    # a running stream whose URL has a password: it must never be shown
    daemon.add_source(AvSource("cam1", f"rtsp://viewer:{CAM_PW}@127.0.0.1:1/live?token=zzTokzz", metrics,
                               AvSourceSettings(open_timeout_s=1, reconnect={"initial_s": 5, "max_s": 5})))
    daemon.add_source(AvSource("loop", str(sample_clip), metrics, AvSourceSettings(loop=True, realtime=True)))
    srv = MetricsServer(metrics, lambda: True, "127.0.0.1", 0, review=review)
    await srv.start()
    async with aiohttp.ClientSession() as http:
        yield srv, review, daemon, http, tmp_path
    await srv.stop()
    await daemon.close()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def store_alert(review: Review, tmp_path: Path, crop: str | None = "default", track: int = 1,
                alert: str | None = "threshold") -> VerdictEvent:
    """An alert event with a real crop file in the evidence folder, stored like the sink would."""
    from daemon.review.store import crop_stat

    if crop == "default":
        import cv2

        p = tmp_path / "evidence" / "cam1" / f"track-{track}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), np.full((32, 32, 3), 128, np.uint8))
        crop = str(p)
    ev = VerdictEvent("cam1", track, "update", 0, 40 + track, 0.0, 8.0, 40, 0.91, "fake", alert,
                      {"frame": 0.9, "frame_prob": 0.9, "temporal": 0.8, "peak": 0.91}, {},
                      {"alerts": [alert] if alert else [], **({"crop": crop} if crop else {})}, emitted_at=time.time())
    review.store.add(ev.to_dict(), crop_stat(crop))
    return ev


# --- authentication ----------------------------------------------------------------------------------

API = [("GET", "/api/v1/streams", None), ("POST", "/api/v1/streams", {"id": "x", "url": "rtsp://127.0.0.1/x"}),
       ("DELETE", "/api/v1/streams/cam1", None), ("POST", "/api/v1/alerts/" + "a" * 32 + "/ack", {})]


@pytest.mark.parametrize("headers", [
    {}, auth("wrong-token-0123456789ab"), auth(TOKEN[:-1]), auth(TOKEN + "x"), auth(""),
    {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}, {"X-Api-Token": TOKEN}, {"Cookie": f"token={TOKEN}"},
], ids=["none", "wrong", "prefix", "longer", "empty", "no-scheme", "basic", "other-header", "cookie"])
async def test_control_api_needs_the_bearer_token(served, headers):
    srv, _, daemon, http, _ = served
    for method, path, body in API:
        async with http.request(method, srv.url + path + f"?token={TOKEN}", json=body, headers=headers) as r:
            assert r.status == 401, (method, path)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            text = await r.text()
        assert TOKEN not in text and json.loads(text) == {"error": "unauthorized"}
    assert {s.stream_id for s in daemon.sources()} == {"cam1", "loop"}  # nothing changed


async def test_api_is_off_without_a_token_and_page_off_without_review(tmp_path):
    for http_cfg, off in (({"api_token": None}, "/api/v1/streams"), ({"review": False}, "/review")):
        review = Review(_cfg(tmp_path, **http_cfg), Metrics())
        srv = MetricsServer(Metrics(), lambda: True, "127.0.0.1", 0, review=review)
        await srv.start()
        try:
            async with aiohttp.ClientSession() as http, http.get(srv.url + off, headers=auth()) as r:
                assert (r.status, await r.text()) == (404, "not found\n")
        finally:
            await srv.stop()


def test_review_config_keys():
    from daemon.config import ConfigError, dump_yaml

    assert validate_config({}, check_paths=False).http.review is False  # opt-in
    assert validate_config({"http": {"api_token": ""}}, check_paths=False).http.api_token is None  # ${VAR:-}
    cfg = validate_config({"http": {"review": True, "api_token": TOKEN}}, check_paths=False)
    assert TOKEN not in dump_yaml(cfg) and "api_token: '***'" in dump_yaml(cfg)
    for http_cfg, msg in (({"api_token": "short"}, "at least 16 characters"),
                          ({"enabled": False, "review": True}, "need the HTTP server"),
                          ({"store": {"max_events": 0}}, "http.store.max_events")):
        with pytest.raises(ConfigError, match=msg) as ei:
            validate_config({"http": http_cfg}, check_paths=False)
        assert "short" not in str(ei.value).replace("at least", "")


# --- streams ----------------------------------------------------------------------------------------


async def test_list_streams_redacts_urls(served):
    srv, _, _, http, _ = served
    async with http.get(srv.url + "/api/v1/streams", headers=auth()) as r:
        assert r.status == 200
        text = await r.text()
    rows = {s["id"]: s for s in json.loads(text)["streams"]}
    assert set(rows) == {"cam1", "loop"}
    assert CAM_PW not in text and "zzTokzz" not in text and "viewer" not in text
    assert rows["cam1"]["url"].startswith("rtsp://***@127.0.0.1:1/live")
    for path in ("/review", "/review/parts", "/review/state.json"):
        async with http.get(srv.url + path) as r:
            body = await r.text()
        assert r.status == 200 and CAM_PW not in body and "zzTokzz" not in body, path


async def test_add_stream_validation_errors_are_clear_4xx(served):
    srv, _, daemon, http, tmp_path = served
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video\n")
    cases = [
        ({"id": "s1", "url": "ftp://127.0.0.1/x"}, 422, "url: unsupported url scheme 'ftp'"),
        ({"id": "s1", "url": str(tmp_path / "missing.mp4")}, 422, "url: file not found"),
        ({"id": "bad id!", "url": "rtsp://127.0.0.1/x"}, 422, "id: stream id"),
        ({"id": "s1", "url": "rtsp://127.0.0.1/x", "analysis_fps": -1}, 422, "analysis_fps"),
        ({"id": "s1", "url": "rtsp://127.0.0.1/x", "bogus": 1}, 422, "bogus: unknown key"),
        ({"url": "rtsp://127.0.0.1/x"}, 422, "id: required key is missing"),
        ({"id": "cam1", "url": "rtsp://127.0.0.1/x"}, 409, "exists"),
        ({"id": "s1", "url": str(not_video)}, 422, "could not be opened"),
    ]
    for body, status, text in cases:
        async with http.post(srv.url + "/api/v1/streams", json=body, headers=auth()) as r:
            data = await r.json()
        assert r.status == status, (body, data)
        assert text in json.dumps(data), (body, data)
    assert "this is not a video" not in json.dumps(data)  # the file's content is never echoed
    assert {s.stream_id for s in daemon.sources()} == {"cam1", "loop"}
    loop = next(s for s in daemon.sources() if s.stream_id == "loop")
    assert loop.state.value in ("starting", "running")  # the other streams keep running


async def test_add_and_remove_a_stream(served, sample_clip):
    srv, _, daemon, http, _ = served
    body = {"id": "lobby2", "url": str(sample_clip), "loop": True, "realtime": True, "analysis_fps": 2}
    async with http.post(srv.url + "/api/v1/streams", json=body, headers=auth()) as r:
        assert r.status == 201, await r.text()
        assert r.headers["Location"] == "/api/v1/streams/lobby2"
        assert (await r.json())["stream"]["id"] == "lobby2"
    async with http.get(srv.url + "/review/state.json") as r:
        assert "lobby2" in {s["id"] for s in (await r.json())["streams"]}
    async with http.delete(srv.url + "/api/v1/streams/lobby2", headers=auth()) as r:
        assert (r.status, await r.json()) == (200, {"removed": "lobby2"})
    async with http.delete(srv.url + "/api/v1/streams/lobby2", headers=auth()) as r:
        assert r.status == 404
    assert {s.stream_id for s in daemon.sources()} == {"cam1", "loop"}


@pytest.mark.parametrize("headers,data,status", [
    ({"Content-Type": "text/plain"}, b'{"id": "a", "url": "rtsp://127.0.0.1/a"}', 415),
    ({"Content-Type": "application/json"}, b"{not json", 400),
    ({"Content-Type": "application/json"}, b"[1, 2]", 400),
    ({"Content-Type": "application/json"}, b"", 400),
    ({"Content-Type": "application/json"}, b'{"id": "a", "url": "' + b"x" * (MAX_BODY + 10) + b'"}', 413),
])
async def test_bad_and_oversized_bodies(served, headers, data, status):
    srv, _, _, http, _ = served
    async with http.post(srv.url + "/api/v1/streams", data=data, headers={**auth(), **headers}) as r:
        assert r.status == status, await r.text()


async def test_oversized_bodies_over_a_raw_socket_and_the_server_survives(served):
    srv, _, _, _, _ = served
    big = b"x" * (MAX_BODY * 8)
    head = (f"POST /api/v1/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n").encode()
    status, _, _ = await raw(srv, head + f"Content-Length: {len(big)}\r\n\r\n".encode() + big)
    assert status == 413
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in [big[i:i + 4096] for i in range(0, len(big), 4096)])
    status, _, _ = await raw(srv, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n")
    assert status == 413
    # unauthenticated: refused before the body is read
    status, _, _ = await raw(srv, head.replace(TOKEN.encode(), b"nope")
                             + f"Content-Length: {len(big)}\r\n\r\n".encode() + big)
    assert status in (401, 413)
    status, _, body = await raw(srv, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert (status, body) == (200, b"ok\n")


# --- ids, evidence, acknowledgements -----------------------------------------------------------------

TRAVERSAL_IDS = ["../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "a" * 31, "a" * 33,
                 "A" * 32, "g" * 32, "a" * 32 + "%00", "a" * 32 + "/../../../etc/passwd", "..", "%2e%2e"]


@pytest.mark.parametrize("eid", TRAVERSAL_IDS)
async def test_traversal_in_ids_never_reads_files(served, eid):
    srv, _, _, _, _ = served
    for method, path in (("GET", f"/review/evidence/{eid}.jpg"), ("GET", f"/review/events/{eid}"),
                         ("GET", f"/review/events/{eid}.json"), ("POST", f"/api/v1/alerts/{eid}/ack"),
                         ("DELETE", f"/api/v1/streams/{eid}")):
        req = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
               "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()
        status, head, body = await raw(srv, req)
        assert status in (400, 404), (path, status, body[:100])
        assert b"root:" not in body and b"passwd" not in body and b"passwd" not in head


async def test_evidence_only_from_the_evidence_folder_and_only_while_unchanged(served):
    srv, review, _, http, tmp_path = served
    ok = store_alert(review, tmp_path, track=1)
    async with http.get(srv.url + f"/review/evidence/{ok.id}.jpg") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
        assert (await r.read())[:2] == b"\xff\xd8"
    # an event whose crop path points outside the evidence folder (a symlink inside it, too)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8TOP-SECRET")
    link = tmp_path / "evidence" / "cam1" / "track-7.jpg"
    os.symlink(secret, link)
    for crop, track in ((str(secret), 5), ("/etc/passwd", 6), (str(link), 7),
                        (str(tmp_path / "evidence" / ".." / "secret.jpg"), 8)):
        ev = store_alert(review, tmp_path, crop=crop, track=track)
        async with http.get(srv.url + f"/review/evidence/{ev.id}.jpg") as r:
            body = await r.read()
        assert r.status in (404, 410) and b"TOP-SECRET" not in body and b"root:" not in body, crop
    # the crop file was rewritten by something else (e.g. a track id reused after a restart): 410
    p = Path(ok.evidence["crop"])
    st = p.stat()
    p.write_bytes(p.read_bytes() + b"\x00" * 16)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    async with http.get(srv.url + f"/review/evidence/{ok.id}.jpg") as r:
        assert r.status == 410


async def test_acknowledge_an_alert(served):
    srv, review, _, http, tmp_path = served
    ev = store_alert(review, tmp_path)
    plain = store_alert(review, tmp_path, track=2, alert=None)
    url = srv.url + f"/api/v1/alerts/{ev.id}/ack"
    async with http.post(url, json={"note": "looked at it"}, headers=auth()) as r:
        assert r.status == 200
        first = (await r.json())["ack"]
    assert first["note"] == "looked at it"
    async with http.post(url, headers=auth()) as r:  # idempotent; an empty body is fine
        assert r.status == 200 and (await r.json())["ack"] == first
    async with http.post(srv.url + f"/api/v1/alerts/{plain.id}/ack", headers=auth()) as r:
        assert r.status == 422
    async with http.post(srv.url + f"/api/v1/alerts/{'0' * 32}/ack", headers=auth()) as r:
        assert r.status == 404
    async with http.post(url, json={"note": "x" * 501}, headers=auth()) as r:
        assert r.status == 422
    async with http.get(srv.url + "/review/state.json?ack=open") as r:
        assert ev.id not in {a["id"] for a in (await r.json())["alerts"]}
    async with http.get(srv.url + "/review") as r:
        assert "acknowledged" in await r.text()


# --- headers, hosts, reflection -------------------------------------------------------------------------


async def test_security_headers_on_every_review_and_api_response(served):
    srv, _, _, http, _ = served
    for method, path, h in (("GET", "/review", {}), ("GET", "/review/parts", {}), ("GET", "/review/static/review.js", {}),
                            ("GET", "/review/events/" + "a" * 32, {}), ("GET", "/api/v1/streams", auth()),
                            ("GET", "/api/v1/streams", {}), ("GET", "/nope", {}), ("GET", "/metrics", {})):
        async with http.request(method, srv.url + path, headers=h, allow_redirects=False) as r:
            assert r.headers["Cache-Control"] == "no-store", path
            assert r.headers["Content-Security-Policy"] == CSP, path
            assert r.headers["X-Content-Type-Options"] == "nosniff", path
            assert r.headers["X-Frame-Options"] == "DENY", path
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    async with http.get(srv.url + "/", allow_redirects=False) as r:
        assert (r.status, r.headers["Location"]) == (302, "/review")


async def test_foreign_host_headers_are_refused(served):
    srv, _, _, _, _ = served
    for host, status in (("evil.example", 403), ("evil.example:9108", 403), ("127.0.0.1", 200), ("localhost:1", 200),
                         ("[::1]:9108", 200)):
        req = f"GET /review HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        got, _, body = await raw(srv, req)
        assert got == status, host
        assert b"evil" not in body
    # /metrics is not guarded (Prometheus scrapes it by service name)
    got, _, _ = await raw(srv, b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    assert got == 200


async def test_allowed_hosts(tmp_path):
    review = Review(_cfg(tmp_path, allowed_hosts=["review.internal"]), Metrics())
    srv = MetricsServer(Metrics(), lambda: True, "127.0.0.1", 0, review=review)
    await srv.start()
    try:
        got, _, _ = await raw(srv, b"GET /review HTTP/1.1\r\nHost: review.internal:8080\r\nConnection: close\r\n\r\n")
        assert got == 200
    finally:
        await srv.stop()


async def test_query_strings_are_not_reflected(served):
    srv, _, _, http, _ = served
    probe = "zz<script>alert(1)</script>"
    for path in ("/review", "/review/parts", "/review/state.json"):
        async with http.get(srv.url + path, params={"stream": probe, "verdict": probe, "ack": probe}) as r:
            assert r.status == 200
            assert "zz<script>" not in await r.text() and "zz&lt;script" not in await r.text()


async def test_page_shows_a_stored_track_with_its_timeline_and_crop(served):
    srv, review, _, http, tmp_path = served
    for i in range(20):
        review.store.add_point("cam1", 1, i * 0.4, 0.5 + i * 0.02, None if i < 5 else 0.7, 0.55 + i * 0.02)
    ev = store_alert(review, tmp_path, track=1)
    async with http.get(srv.url + "/review") as r:
        html = await r.text()
    assert f'href="/review/events/{ev.id}"' in html
    assert 'class="th-high"' in html and 'class="fused"' in html and 'class="temporal"' in html
    assert f'src="/review/evidence/{ev.id}.jpg"' in html
    async with http.get(srv.url + f"/review/events/{ev.id}.json") as r:
        data = await r.json()
    assert data["event"]["id"] == ev.id and data["evidence_url"] == f"/review/evidence/{ev.id}.jpg"
    async with http.get(srv.url + f"/review/events/{ev.id}") as r:
        assert r.status == 200 and "Event JSON" in await r.text()


# --- examples/review.yaml ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_review_example_runs_out_of_the_box(fakewatch_bin, tiny_bundle_dir, tmp_path):
    """examples/review.yaml after `fakewatch sample-clips`, from a checkout root: the page lists both
    streams and their tracks, the API is on with a token from the environment, SIGTERM exits 0, and
    `fakewatch verdicts --db` reads the store it left under out/."""
    import shutil
    import signal
    import socket
    import subprocess
    import urllib.request

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "checkout"
    (root / "examples").mkdir(parents=True)
    shutil.copy(repo / "examples" / "review.yaml", root / "examples")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "FAKEWATCH_API_TOKEN": TOKEN}
    made = subprocess.run([str(fakewatch_bin), "sample-clips", "--frames", "16"], cwd=root, capture_output=True,
                          text=True, env=env, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(fakewatch_bin), "run", "-c", "examples/review.yaml", "--set",
                             f"bundle.path={tiny_bundle_dir}", "--set", f"http.port={port}"],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    state: dict = {}
    try:
        deadline = time.monotonic() + 240  # readiness wait only (a loaded CI box), not a speed check
        while not ({t["stream"] for t in state.get("tracks", [])} == {"real", "swapped"}
                   and {s["state"] for s in state.get("streams", [])} == {"running"}):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"page never showed both tracks: {state} {proc.poll()}")
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(url + "/review/state.json", timeout=10) as r:
                    state = json.loads(r.read())
            except OSError:
                continue
        assert state["persistent"] is True
        with urllib.request.urlopen(url + "/review", timeout=30) as r:
            page = r.read().decode()
        assert 'data-stream="real"' in page and 'data-stream="swapped"' in page and "svg" in page
        req = urllib.request.Request(url + "/api/v1/streams", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert {s["id"] for s in json.loads(r.read())["streams"]} == {"real", "swapped"}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert TOKEN not in stderr
    out = subprocess.run([str(fakewatch_bin), "verdicts", "--db", "out/sample/review.db"], cwd=root,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert {json.loads(line)["stream_id"] for line in out.splitlines()} == {"real", "swapped"}
    assert (root / "out" / "sample" / "evidence").is_dir()
