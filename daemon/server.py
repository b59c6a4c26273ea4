"""The daemon's HTTP endpoints (aiohttp, 127.0.0.1 by default).

* ``GET /metrics`` — Prometheus text format of the daemon's own registry.
* ``GET /healthz`` — 200 while the event loop runs (a stuck loop cannot answer: that is the signal).
* ``GET /readyz``  — 200 when models are loaded and sources started, else 503.

Nothing else is served: every other path or method answers 404/405 with a fixed body, no files,
no query-string reflection. With ``http.review`` / ``http.api_token`` the review page and the
control API are mounted beside them (daemon/review/web.py, docs/review.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.metrics import Metrics

ReadyFn = Callable[[], bool]


def make_app(metrics: Metrics, ready: ReadyFn, review: Any = None) -> web.Application:
    """``review``: a :class:`daemon.review.web.Review` to mount (page and/or control API), or None."""
    async def get_metrics(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        try:
            ok = bool(ready())
        except Exception:  # noqa: BLE001 - a failing check means not ready
            ok = False
        metrics.ready.set(1.0 if ok else 0.0)
        return web.Response(text="ready\n" if ok else "not ready\n", status=200 if ok else 503)

    @web.middleware
    async def fixed_errors(request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed as e:
            return web.Response(text="method not allowed\n", status=405, headers={"Allow": e.headers.get("Allow") or "GET, HEAD"})
        except web.HTTPException as e:
            return web.Response(text="not found\n" if e.status == 404 else "error\n", status=e.status)

    max_body = 1024
    if review is not None and review.api_on:
        from daemon.review.web import MAX_BODY

        max_body = MAX_BODY
    app = web.Application(middlewares=[fixed_errors], client_max_size=max_body)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if review is not None:
        review.mount(app)
    return app


class MetricsServer:
    """Runs :func:`make_app` on ``host:port`` inside the current event loop (``port=0``: any free port)."""

    def __init__(self, metrics: Metrics, ready: ReadyFn, host: str = "127.0.0.1", port: int = 9108, review: Any = None):
        self.app = make_app(metrics, ready, review)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(f"cannot listen on {self.host}:{self.port}: {e.strerror or e}") from e
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
