"""/metrics, /healthz, /readyz on a real server bound to 127.0.0.1."""

from __future__ import annotations

import aiohttp
import pytest

from daemon.metrics import Metrics
from daemon.server import MetricsServer


@pytest.fixture
async def served():
    m = Metrics()
    state = {"ready": False}
    srv = MetricsServer(m, lambda: state["ready"], host="127.0.0.1", port=0)
    await srv.start()
    async with aiohttp.ClientSession() as s:
        yield srv, m, state, s
    await srv.stop()


async def test_metrics_endpoint_exports_registry(served):
    srv, m, _, s = served
    m.frames_received.labels("cam1").inc(7)
    async with s.get(srv.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        body = await r.text()
    assert 'fakewatch_frames_received_total{stream="cam1"} 7.0' in body
    assert "fakewatch_build_info" in body


async def test_healthz_and_readyz_follow_state(served):
    srv, m, state, s = served
    async with s.get(srv.url + "/healthz") as r:
        assert r.status == 200
    async with s.get(srv.url + "/readyz") as r:
        assert r.status == 503
    assert m.registry.get_sample_value("fakewatch_ready") == 0.0
    state["ready"] = True
    async with s.get(srv.url + "/readyz") as r:
        assert r.status == 200
    assert m.registry.get_sample_value("fakewatch_ready") == 1.0


async def test_readyz_check_that_raises_is_not_ready():
    def broken() -> bool:
        raise RuntimeError("boom")

    srv = MetricsServer(Metrics(), broken, port=0)
    await srv.start()
    try:
        async with aiohttp.ClientSession() as s, s.get(srv.url + "/readyz") as r:
            assert r.status == 503
    finally:
        await srv.stop()


@pytest.mark.parametrize(
    "path",
    ["/", "/metrics/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static/x", "/healthz/x", "/index.html", "/../pyproject.toml"],
)
async def test_everything_else_is_404_without_reflection(served, path):
    srv, _, _, s = served
    async with s.get(srv.url + path + "?q=<script>alert(1)</script>") as r:
        body = await r.text()
    assert r.status == 404
    assert body == "not found\n"
    assert "script" not in body and "passwd" not in body


async def test_query_string_not_reflected_on_known_paths(served):
    srv, _, _, s = served
    async with s.get(srv.url + "/healthz?x=<b>reflected</b>") as r:
        assert r.status == 200
        assert "reflected" not in await r.text()


async def test_other_methods_rejected(served):
    srv, _, _, s = served
    async with s.post(srv.url + "/metrics", data=b"x") as r:
        assert r.status == 405
        assert await r.text() == "method not allowed\n"


async def test_port_in_use_is_a_clear_error(served):
    srv, m, _, _ = served
    other = MetricsServer(m, lambda: True, host="127.0.0.1", port=srv.port)
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{srv.port}"):
        await other.start()
