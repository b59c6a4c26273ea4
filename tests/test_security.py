"""Security posture of the daemon: HTTP surface, secrets in output, config loading.

tests/test_server.py already checks the 404/405 basics through aiohttp's client (which normalises
paths); here raw bytes go over a socket so that un-normalised traversal paths, odd methods and
hostile headers reach the server as written. Secrets: a real ``fakewatch run`` with a password in
a stream URL and a Kafka SASL password, whose source fails, must not print them in logs, metric
labels, ``--dry-run`` output or error messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from daemon.cli import main
from daemon.config import ConfigError, DaemonConfig, HttpConfig, load_config
from daemon.metrics import Metrics
from daemon.server import MetricsServer


URL_PW = "S3cretCamPw"
SASL_PW = "S3cretSaslPw"
HOOK_TOKEN = "S3cretHookToken"
QUERY_TOKEN = "S3cretQueryTok"
SECRETS = (URL_PW, SASL_PW, HOOK_TOKEN, QUERY_TOKEN)
FILE_CONTENT = "TOP-SECRET-FILE-CONTENT"


def _assert_no_secret(text: str, where: str) -> None:
    for s in SECRETS + (FILE_CONTENT,):
        assert s not in text, f"{s!r} leaked into {where}"


# --- HTTP surface over raw sockets -------------------------------------------------------------------


@pytest.fixture
async def server():
    srv = MetricsServer(Metrics(), lambda: True, host="127.0.0.1", port=0)
    await srv.start()
    yield srv
    await srv.stop()


async def raw(srv: MetricsServer, request: bytes) -> tuple[int, bytes, bytes]:
    """(status, raw header block, body) of one request sent byte for byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, head, body


def _get(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n".encode()


TRAVERSALS = [
    "/../../etc/passwd",
    "/metrics/../../../etc/passwd",
    "/metrics/../x",
    "/healthz/..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/%252e%252e/etc/passwd",
    "/..%5c..%5cetc%5cpasswd",
    "//etc/passwd",
    "/./././etc/passwd",
    "/metrics%00/../etc/passwd",
    "/.git/config",
    "/pyproject.toml",
    "/daemon/",
    "/.",
    "http://127.0.0.1/../etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_traversal_paths_never_serve_files(server, path):
    status, head, body = await raw(server, _get(path))
    assert status in (400, 404), (status, body[:200])
    assert b"root:" not in body and b"[project]" not in body and b"[core]" not in body
    assert b"Index of" not in body and b"<a href" not in body  # no directory listing
    assert b"passwd" not in body and b"passwd" not in head  # the path is not echoed either


async def test_only_three_paths_answer(server):
    for path in ("/metrics", "/healthz", "/readyz"):
        status, _, _ = await raw(server, _get(path))
        assert status == 200, path
    for path in ("/", "/metrics/", "/Metrics", "/healthz.json", "/readyz/", "/debug/pprof", "/favicon.ico"):
        status, _, body = await raw(server, _get(path))
        assert (status, body) == (404, b"not found\n"), path


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"])
async def test_other_methods_rejected(server, method):
    probe = "zz-probe-<script>"
    status, head, body = await raw(
        server, _get("/metrics", method, f"X-Probe: {probe}\r\nContent-Length: 0\r\n")
    )
    assert status == 405, (method, status, body)
    assert body == b"method not allowed\n"
    assert b"zz-probe" not in head + body  # TRACE does not echo the request


async def test_head_is_allowed_and_has_no_body(server):
    status, head, body = await raw(server, _get("/metrics", "HEAD"))
    assert status == 200 and body == b""


async def test_headers_and_query_strings_are_not_reflected(server):
    probe = "zz-probe-<img src=x onerror=alert(1)>"
    headers = (
        f"X-Forwarded-Host: {probe}\r\nReferer: {probe}\r\nUser-Agent: {probe}\r\nCookie: s={probe}\r\n"
        f"X-Original-URL: /../etc/passwd\r\n"
    )
    for path in ("/metrics?x=zz-probe", "/healthz?x=zz-probe", "/readyz?x=zz-probe", "/nope?x=zz-probe"):
        status, head, body = await raw(server, _get(path, extra=headers))
        assert status in (200, 404)
        assert b"zz-probe" not in head and b"zz-probe" not in body, path
        assert b"Set-Cookie" not in head


async def test_oversized_and_malformed_requests_are_refused_and_server_survives(server):
    cases = [
        (_get("/" + "a" * 20000), (400, 404, 414, 431)),
        (_get("/healthz", extra=f"X-Big: {'b' * 20000}\r\n"), (400, 431)),
        (b"GARBAGE / HTTP/1.1\r\n\r\n", (400,)),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, (0, 400)),  # a TLS hello
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n"
         + b"x" * 100000, (405, 413)),
    ]
    for request, allowed in cases:
        status, head, _ = await raw(server, request)
        assert status in allowed, (request[:40], status)
        assert b"text/html" not in head  # error pages are plain text, never rendered markup
    status, _, body = await raw(server, _get("/healthz"))
    assert (status, body) == (200, b"ok\n")


@pytest.mark.xfail(strict=True, reason=(
    "aiohttp's low-level 400 page quotes the offending request bytes (text/plain); a fixed body needs a "
    "RequestHandler.handle_error override in daemon/server.py"))
async def test_malformed_request_error_page_does_not_quote_the_request(server):
    _, _, body = await raw(server, b"ZZPROBE / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"ZZPROBE" not in body


def test_default_listen_address_is_loopback():
    assert HttpConfig().host == "127.0.0.1"
    assert DaemonConfig.model_validate({}, context={"check_paths": False}).http.host == "127.0.0.1"
    assert MetricsServer(Metrics(), lambda: True).host == "127.0.0.1"


async def test_server_binds_only_loopback(server):
    socks = [sock for site in server._runner.sites for sock in site._server.sockets]  # type: ignore[union-attr]
    assert socks and {sock.getsockname()[0] for sock in socks} == {"127.0.0.1"}


# --- config loading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/apply:subprocess.check_output [['touch', '{marker}']]",
    "!!python/object/new:os.system ['touch {marker}']",
    "!!python/name:os.system",
])
def test_yaml_python_tags_are_rejected(tmp_path, payload):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"shutdown_timeout_s: {payload.format(marker=marker)}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(cfg, check_paths=False)
    # the same payload as a --set override stays a harmless string (and fails validation)
    with pytest.raises(ConfigError):
        load_config(None, [f"shutdown_timeout_s={payload.format(marker=marker)}"], check_paths=False)
    assert not marker.exists()


def test_config_cannot_pull_in_files(tmp_path):
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(FILE_CONTENT)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "include": str(secret_file),  # no include mechanism: an unknown key
        "logging": {"level": f"${{{secret_file}}}"},  # ${...} names an env variable, never a file
    }))
    with pytest.raises(ConfigError) as e:
        load_config(cfg, env={}, check_paths=False)
    text = str(e.value)
    assert "include" in text and "unknown key" in text.lower()
    assert FILE_CONTENT not in text


# --- secrets in --dry-run and config errors ------------------------------------------------------------


def _secret_config(tmp_path: Path, bundle: Path | None, **extra) -> dict:
    secret_file = tmp_path / "not-a-video.mp4"
    secret_file.write_text(FILE_CONTENT + "\n")
    data = {
        "streams": [
            {"id": "cam", "url": f"rtsp://admin:{URL_PW}@127.0.0.1:1/live", "live": True, "open_timeout_s": 2,
             "reconnect": {"initial_s": 0.1, "max_s": 0.2, "max_attempts": 2}},
            {"id": "tok", "url": f"http://127.0.0.1:1/cam.m3u8?token={QUERY_TOKEN}", "live": True,
             "open_timeout_s": 2, "reconnect": {"initial_s": 0.1, "max_s": 0.2, "max_attempts": 1}},
            {"id": "textfile", "url": str(secret_file), "live": False},
        ],
        "kafka": {
            "bootstrap_servers": ["127.0.0.1:1"],
            "request_timeout_ms": 2000,
            "security": {"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "svc",
                         "sasl_password": "${FW_TEST_SASL}"},
        },
        "sinks": {"stdout": None, "webhook": {"url": "http://127.0.0.1:1/hook", "retries": 0,
                                              "headers": {"Authorization": f"Bearer {HOOK_TOKEN}"}}},
        "http": {"port": 0},
        "logging": {"level": "debug", "format": "json"},
        "shutdown_timeout_s": 5,
    }
    if bundle is not None:
        data["bundle"] = {"path": str(bundle), "threads": 1}
    data.update(extra)
    return data


def test_dry_run_redacts_every_secret(tiny_bundle_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FW_TEST_SASL", SASL_PW)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_secret_config(tmp_path, tiny_bundle_dir)))
    rc = main(["run", "-c", str(cfg), "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    _assert_no_secret(out + err, "--dry-run output")
    dumped = yaml.safe_load(out)
    assert dumped["streams"][0]["url"].startswith("rtsp://") and "***" in dumped["streams"][0]["url"]
    assert dumped["kafka"]["security"]["sasl_username"] == "svc"  # the rest of the section is kept


def test_config_errors_do_not_echo_secrets(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FW_TEST_SASL", SASL_PW)
    bad = _secret_config(tmp_path, tmp_path / "missing")
    bad["streams"][0]["analysis_fps"] = -1
    bad["streams"][1]["url"] = f"ftp://admin:{URL_PW}@127.0.0.1/x?token={QUERY_TOKEN}"
    bad["kafka"]["security"]["protocol"] = "SASL_NOPE"
    bad["sinks"]["webhook"]["timeout_s"] = -1
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(bad))
    rc = main(["run", "-c", str(cfg)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "analysis_fps" in err and "ftp" in err and "protocol" in err  # the problems are named ...
    _assert_no_secret(out + err, "config error message")  # ... without the secrets


# --- a real run whose sources fail: logs and metric labels ---------------------------------------------


class _Lines(threading.Thread):
    """Collects a pipe's lines in the background."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.lines = pipe, []

    def run(self) -> None:
        for line in self.pipe:
            self.lines.append(line)


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:  # loopback only
        return r.read().decode()


def test_failing_sources_never_leak_secrets_into_logs_or_metrics(fakewatch_bin, tiny_bundle_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_secret_config(tmp_path, tiny_bundle_dir)))
    env = dict(os.environ, FW_TEST_SASL=SASL_PW)
    proc = subprocess.Popen([str(fakewatch_bin), "run", "-c", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    err, out = _Lines(proc.stderr), _Lines(proc.stdout)
    err.start()
    out.start()
    metrics = ""
    try:
        url = None
        deadline = time.monotonic() + 240  # readiness wait on a loaded box, not a speed check
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            if url is None:
                for line in list(err.lines):
                    if line.startswith("{") and json.loads(line).get("msg", "").startswith("serving /metrics"):
                        url = json.loads(line)["url"]
                continue
            metrics = _scrape(url + "/metrics")
            failed = [ln for ln in metrics.splitlines() if ln.startswith("fakewatch_stream_state{")
                      and 'state="failed"' in ln and ln.endswith(" 1.0")]
            if len(failed) == 3:  # cam, tok and textfile all failed
                break
        else:
            pytest.fail(f"streams did not all fail: rc={proc.poll()} {''.join(err.lines)[-3000:]}\n{metrics[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.join(10)
        out.join(10)
    logs = "".join(err.lines)
    _assert_no_secret(metrics, "/metrics")
    _assert_no_secret(logs, "logs")
    _assert_no_secret("".join(out.lines), "stdout")
    assert 'stream="cam"' in metrics and "admin" not in metrics
    # the failures were logged (so the redaction had something to do)
    assert "127.0.0.1:1/live" in logs and "***" in logs
    assert "kafka" in logs.lower()
    assert proc.returncode == 0, logs[-3000:]
