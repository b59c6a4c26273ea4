"""The review page and the control API, mounted on the daemon's HTTP server (daemon/server.py).

Read-only review page (``http.review: true``; no token, loopback by default like /metrics):

* ``GET /review`` — streams, alerts (newest first), identities with score timelines and crops;
  query ``stream``, ``verdict``, ``ack=open`` filter it. ``GET /`` redirects here.
* ``GET /review/parts`` — the same parts as JSON of HTML fragments (the page polls it).
* ``GET /review/state.json`` — streams, alerts and tracks as data (tooling, tests).
* ``GET /review/events/<id>`` (HTML) and ``/review/events/<id>.json`` — one event.
* ``GET /review/evidence/<id>.jpg`` — the best crop of the event's track, read only from the
  evidence folder (``pipeline.evidence.dir``) and only when the file is still the one the event
  pointed at (a later track that reused the file name gets ``410``).

Control API (only when ``http.api_token`` is set; ``Authorization: Bearer <token>``, compared with
:func:`hmac.compare_digest`): ``GET /api/v1/streams``, ``POST /api/v1/streams`` (validated like a
``streams`` entry of the config file), ``DELETE /api/v1/streams/<id>``,
``POST /api/v1/alerts/<id>/ack``.

Every response carries ``Cache-Control: no-store`` and a strict Content-Security-Policy; requests
whose ``Host`` is not an IP address, ``localhost`` or one of ``http.allowed_hosts`` are refused
(DNS rebinding). Ids are matched by the router against fixed patterns (32 hex digits for events,
the config's stream-id pattern for streams), so no request value ever becomes a path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from daemon.logging import redact_text
from daemon.review import render
from daemon.review.assets import CSS, FAVICON, JS
from daemon.review.store import Stored, VerdictStore, crop_stat
from daemon.sinks.base import Sink

log = logging.getLogger("fakewatch.review")

EVENT_ID = r"{id:[0-9a-f]{32}}"
STREAM_ID = r"{id:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}}"
MAX_BODY = 16 * 1024  # request bodies of the control API
MAX_CROP = 8 * 1024 * 1024
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":"), sort_keys=True, default=str) + "\n",
                        status=status, content_type="application/json", headers=headers)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status)


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _clean(text: Any) -> str:
    """A message safe to show: credentials in URLs and key=value secrets removed."""
    from daemon.sources.base import redact_url

    return redact_text(redact_url(str(text or "")))


class ReviewSink(Sink):
    """Feeds every verdict event into the store (after the evidence crop was written)."""

    name = "review"

    def __init__(self, store: VerdictStore, metrics: Any = None):
        self.store = store
        self.metrics = metrics

    async def emit(self, events: list) -> None:
        n = 0
        for ev in events:
            d = ev.to_dict() if hasattr(ev, "to_dict") else dict(ev)
            crop = (d.get("evidence") or {}).get("crop")
            n += self.store.add(d, crop_stat(crop) if crop else None)
        try:
            await self.store.flush()
        except Exception as e:  # noqa: BLE001 - a sink never raises for a delivery failure
            log.error("review store write failed: %s", e)
            if self.metrics is not None:
                self.metrics.sink_errors.labels(self.name).inc()
            return
        if self.metrics is not None and n:
            self.metrics.sink_events.labels(self.name).inc(n)

    async def close(self) -> None:
        await self.store.flush()


class Review:
    """Store + page + control API of one daemon. ``open()``, ``attach(daemon)``, mount, ``close()``."""

    def __init__(self, cfg: Any, metrics: Any, store: VerdictStore | None = None, open_wait_s: float = 5.0):
        http = cfg.http
        self.cfg = cfg
        self.metrics = metrics
        self.page_on = bool(http.review)
        self.token: str | None = http.api_token.get_secret_value() if http.api_token is not None else None
        self.allowed_hosts = {h.lower() for h in (http.allowed_hosts or [])} | {"localhost"}
        self.store = store or VerdictStore(http.store)
        self.sink = ReviewSink(self.store, metrics)
        ev = cfg.pipeline.evidence
        self.evidence_dir: Path | None = Path(ev.dir).resolve() if ev.enabled and ev.dir is not None else None
        fusion = cfg.pipeline.fusion
        self.th_high, self.th_low = float(fusion.threshold_high), float(fusion.threshold_low)
        self.open_wait_s = open_wait_s
        self.daemon: Any = None
        self._samples: dict[str, collections.deque] = {}
        self._removed: set[str] = set()  # stream ids removed through the API (their state stays in the daemon)
        self.interval_ms = 2000

    # --- lifecycle ----------------------------------------------------------------------------------
    def open(self) -> None:
        self.store.open()

    def close(self) -> None:
        self.store.close()

    def attach(self, daemon: Any) -> None:
        """Follow this daemon: its sources for the stream table, its fusion for timeline points."""
        self.daemon = daemon
        obs = getattr(daemon, "observers", None)
        if obs is not None:
            obs.append(self._observe)

    def _observe(self, stream_id: str, track_id: int, t: Any) -> None:
        if t is None or not getattr(t, "started", False):
            return
        frame, temporal = getattr(t, "frame_ema", None), getattr(t, "temporal", None)
        if frame is None and temporal is None:
            return
        self.store.add_point(stream_id, track_id, float(t.pts_last), frame, temporal, float(t.score))

    @property
    def api_on(self) -> bool:
        return self.token is not None

    def mount(self, app: web.Application) -> None:
        """Add the routes, the Host guard and the security headers to the daemon's app."""
        app.middlewares.append(self._host_guard)
        app.on_response_prepare.append(self._headers)
        app.cleanup_ctx.append(self._background)
        r = app.router
        if self.page_on:
            r.add_get("/", self._root)
            r.add_get("/review", self._page)
            r.add_get("/review/parts", self._parts)
            r.add_get("/review/state.json", self._state)
            r.add_get("/review/static/review.css", self._css)
            r.add_get("/review/static/review.js", self._js)
            r.add_get("/review/static/favicon.svg", self._favicon)
            r.add_get(f"/review/events/{EVENT_ID}.json", self._event_json)
            r.add_get(f"/review/events/{EVENT_ID}", self._event_page)
            r.add_get(f"/review/evidence/{EVENT_ID}.jpg", self._evidence)
        if self.api_on:
            r.add_get("/api/v1/streams", self._api_streams)
            r.add_post("/api/v1/streams", self._api_add_stream)
            r.add_delete(f"/api/v1/streams/{STREAM_ID}", self._api_remove_stream)
            r.add_post(f"/api/v1/alerts/{EVENT_ID}/ack", self._api_ack)

    # --- middleware, headers, background ------------------------------------------------------------
    def _host_ok(self, host: str | None) -> bool:
        if not host:
            return False
        name = host.strip().lower()
        if name.startswith("["):  # [::1]:9108
            name = name[1:].split("]", 1)[0]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name.rstrip(".") in self.allowed_hosts

    @web.middleware
    async def _host_guard(self, request: web.Request, handler):
        p = request.path
        if (p == "/" or p.startswith("/review") or p.startswith("/api/")) and not self._host_ok(request.host):
            return web.Response(text="forbidden host\n", status=403)
        return await handler(request)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        response.headers["Server"] = "fakewatch"  # (not aiohttp's name and version)

    async def _background(self, app: web.Application):
        task = asyncio.get_running_loop().create_task(self._tick_loop(), name="review-background")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _tick_loop(self) -> None:
        n = 0
        while True:
            try:
                self._sample()
                await self.store.flush()  # timeline points between events
                n += 1
                if n % 60 == 0:
                    self.store.prune()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the page must not die with a sampling bug
                log.warning("review background tick failed: %s", e)
            await asyncio.sleep(1.0)

    # --- stream rows ----------------------------------------------------------------------------------
    @staticmethod
    def _family(metric: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for fam in metric.collect():
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                lbl = s.labels.get("stream")
                if lbl is not None:
                    out[lbl] = s.value
        return out

    def _sample(self) -> None:
        m = self.metrics
        if m is None:
            return
        now = time.monotonic()
        frames, faces = self._family(m.frames_analysed), self._family(m.faces)
        for lbl, f in frames.items():
            d = self._samples.setdefault(lbl, collections.deque(maxlen=6))
            d.append((now, f, faces.get(lbl, 0.0)))

    def _rates(self, label: str) -> tuple[float | None, float | None]:
        d = self._samples.get(label)
        if not d or len(d) < 2:
            return None, None
        (t0, f0, c0), (t1, f1, c1) = d[0], d[-1]
        if t1 - t0 <= 0:
            return None, None
        fps = max(0.0, (f1 - f0) / (t1 - t0))
        fpf = (c1 - c0) / (f1 - f0) if f1 > f0 else None
        return fps, fpf

    def stream_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        d = self.daemon
        if d is None:
            return rows
        m = self.metrics
        frames = self._family(m.frames_analysed) if m is not None else {}
        active = self._family(m.tracks_active) if m is not None else {}
        seen: set[str] = set()
        for src in d.sources():
            sid = getattr(src, "stream_id", "?")
            seen.add(sid)
            label = m.stream_label(sid) if m is not None else sid
            state = getattr(getattr(src, "state", None), "value", "unknown")
            fps, fpf = self._rates(label)
            url = getattr(src, "display_url", None) or ("kafka" if type(src).__name__.startswith("Kafka") else "")
            rows.append({
                "id": sid, "url": _clean(url), "state": state, "live": bool(getattr(src, "live", False)),
                "fps": None if state != "running" else fps, "faces_per_frame": fpf,
                "tracks_active": int(active.get(label, 0)), "frames": int(frames.get(label, 0)),
                "error": (_clean(getattr(src, "last_error", None)) or None) if state in ("failed", "reconnecting") else None,
            })
        multi = [s for s in d.sources() if not hasattr(s, "display_url")]  # Kafka: one source, many streams
        for sid in d.stream_ids() if multi and hasattr(d, "stream_ids") else []:
            if sid in seen or sid in self._removed:
                continue
            label = m.stream_label(sid) if m is not None else sid
            fps, fpf = self._rates(label)
            state = getattr(getattr(multi[0], "state", None), "value", "running")
            rows.append({"id": sid, "url": "kafka", "state": state, "live": True, "fps": fps,
                         "faces_per_frame": fpf, "tracks_active": int(active.get(label, 0)),
                         "frames": int(frames.get(label, 0)), "error": None})
        return rows

    # --- page ------------------------------------------------------------------------------------------
    def _filters(self, request: web.Request) -> tuple[str | None, str | None, bool]:
        from daemon.config import STREAM_ID_RE

        q = request.query
        stream = q.get("stream") or None
        if stream is not None and not STREAM_ID_RE.match(stream):
            stream = None
        verdict = q.get("verdict") if q.get("verdict") in render.VERDICTS else None
        return stream, verdict, q.get("ack") == "open"

    def _crop_for(self, t: Any) -> tuple[str | None, str]:
        """(event id whose evidence URL shows the track's best crop, or None; why there is none)."""
        if self.evidence_dir is None:
            return None, "evidence crops off (pipeline.evidence)"
        if t is None or t.crop_event is None:
            return None, "no crop yet"
        s = self.store.get(t.crop_event)
        if s is None or self._evidence_path(s) is None:
            return None, "crop no longer available"
        return s.id, ""

    def _evidence_path(self, s: Stored) -> Path | None:
        """The crop file of a stored event if it lies in the evidence folder and is unchanged."""
        if self.evidence_dir is None:
            return None
        raw = (s.event.get("evidence") or {}).get("crop")
        if not raw or s.crop_stat is None:
            return None
        try:
            p = Path(raw).resolve()
            p.relative_to(self.evidence_dir)
        except (OSError, ValueError):
            return None
        if p.suffix.lower() != ".jpg" or not p.is_file():
            return None
        if crop_stat(p) != tuple(s.crop_stat):
            return None
        return p

    def _timeline(self, key: Any, marker: float | None = None) -> str:
        st = self.store
        t = st.track_info(key)
        points = list(t.points) if t is not None else []
        if points and t is not None:
            events = [e for e in (st.get(i) for i in t.alerts) if e is not None]
        else:  # (an event-only history, e.g. loaded from a db written without points)
            events = st.track_events(key)
            points = [(e.event["pts_last"], (e.event.get("scores") or {}).get("frame"),
                       (e.event.get("scores") or {}).get("temporal"), e.event["score"]) for e in events]
        alerts = [(e.event["pts_last"], e.event["score"], e.event.get("alert")) for e in events if e.event.get("alert")]
        return render.timeline_svg(points, alerts, self.th_high, self.th_low, marker=marker)

    def parts(self, stream: str | None, verdict: str | None, open_only: bool) -> dict[str, str]:
        st = self.store
        alerts = st.events(stream, verdict, alerts_only=True, open_only=open_only, limit=50)
        acks = {s.id: a for s in alerts if (a := st.ack_of(s.id))}
        cards = []
        for t in st.tracks(stream, verdict, limit=24):
            latest = st.get(t.latest).event  # type: ignore[arg-type,union-attr]
            crop_id, why = self._crop_for(t)
            cards.append(render.track_card(t, latest, self._timeline(t.key), render.crop_html(crop_id, why),
                                           live=t.key[0] == st.run))
        rows = [r for r in self.stream_rows() if not stream or r["id"] == stream]
        return {"streams": render.streams_part(rows), "alerts": render.alerts_part(alerts, acks, self.api_on),
                "tracks": render.tracks_part(cards)}

    def _header_meta(self) -> str:
        models = ""
        d = self.daemon
        b = getattr(d, "bundle", None)
        if b is not None:
            models = f"bundle {render.esc(getattr(b, 'version_string', ''))} · "
        db = "sqlite" if self.store.persistent else "memory"
        return (f"{models}{len(self.store)} events ({db}) · threshold_low {self.th_low:g} · threshold_high {self.th_high:g} · "
                f"run {render.esc(self.store.run)}")

    async def _root(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/review"})

    async def _page(self, request: web.Request) -> web.Response:
        stream, verdict, open_only = self._filters(request)
        parts = self.parts(stream, verdict, open_only)
        streams = sorted({r["id"] for r in self.stream_rows()} | set(self.store.stream_ids()))
        body = render.dashboard(render.filters(streams, stream, verdict, open_only), parts, 0)
        return _html(render.page("fakewatch review", body, run=self.store.run, header_meta=self._header_meta(),
                                 api=self.api_on, live_src="/review/parts", interval_ms=self.interval_ms))

    async def _parts(self, request: web.Request) -> web.Response:
        parts = self.parts(*self._filters(request))
        hashes = {k: hashlib.sha1(v.encode()).hexdigest()[:16] for k, v in parts.items()}
        return _json({"run": self.store.run, "parts": parts, "hashes": hashes, "time": time.time()})

    async def _state(self, request: web.Request) -> web.Response:
        stream, verdict, open_only = self._filters(request)
        st = self.store
        alerts = [{"id": s.id, "stream": s.event["stream_id"], "track": s.event["track_id"], "run": s.run,
                   "alert": s.event.get("alert"), "verdict": s.event["verdict"], "score": s.event["score"],
                   "pts": s.event["pts_last"], "emitted_at": s.event.get("emitted_at"), "ack": st.ack_of(s.id)}
                  for s in st.events(stream, verdict, alerts_only=True, open_only=open_only, limit=200)]
        tracks = []
        for t in st.tracks(stream, verdict, limit=200):
            e = st.get(t.latest).event  # type: ignore[arg-type,union-attr]
            tracks.append({"run": t.key[0], "stream": t.stream, "track": t.track, "verdict": e["verdict"],
                           "score": e["score"], "event": e["event"], "points": len(t.points),
                           "crop": self._crop_for(t)[0] is not None})
        return _json({"run": st.run, "persistent": st.persistent, "events": len(st),
                      "streams": [r for r in self.stream_rows() if not stream or r["id"] == stream],
                      "alerts": alerts, "tracks": tracks})

    async def _css(self, request: web.Request) -> web.Response:
        return web.Response(text=CSS, content_type="text/css", charset="utf-8")

    async def _favicon(self, request: web.Request) -> web.Response:
        return web.Response(text=FAVICON, content_type="image/svg+xml")

    async def _js(self, request: web.Request) -> web.Response:
        return web.Response(text=JS, content_type="application/javascript", charset="utf-8")

    def _stored(self, request: web.Request) -> Stored | None:
        return self.store.get(request.match_info["id"])

    async def _event_json(self, request: web.Request) -> web.Response:
        s = self._stored(request)
        if s is None:
            return _error(404, "unknown event")
        return _json({"event": s.event, "run": s.run, "ack": self.store.ack_of(s.id),
                      "evidence_url": f"/review/evidence/{s.id}.jpg" if self._crop_for(self.store.track_info(s.key))[0]
                      else None})

    async def _event_page(self, request: web.Request) -> web.Response:
        s = self._stored(request)
        if s is None:
            return _html(render.page("unknown event", '<section><div class="empty">unknown event (it may have been '
                                     'dropped by the retention)</div></section>', run=self.store.run), 404)
        crop_id, why = self._crop_for(self.store.track_info(s.key))
        body = render.event_body(s.event, self.store.ack_of(s.id), self.api_on,
                                 self._timeline(s.key, marker=float(s.event["pts_last"])),
                                 f"/review/evidence/{crop_id}.jpg" if crop_id else None, why)
        return _html(render.page(f"event {s.id}", body, run=self.store.run, header_meta=self._header_meta(),
                                 api=self.api_on))

    async def _evidence(self, request: web.Request) -> web.Response:
        s = self._stored(request)
        if s is None:
            return web.Response(text="not found\n", status=404)
        t = self.store.track_info(s.key)
        src = self.store.get(t.crop_event) if t is not None and t.crop_event else None
        if src is None or self.evidence_dir is None:
            return web.Response(text="no evidence\n", status=404)
        p = self._evidence_path(src)
        if p is None:
            gone = (src.event.get("evidence") or {}).get("crop") and crop_stat(src.event["evidence"]["crop"])
            return web.Response(text="evidence no longer available\n" if gone else "no evidence\n",
                                status=410 if gone else 404)
        data = await asyncio.to_thread(_read_small, p)
        if data is None:
            return web.Response(text="no evidence\n", status=404)
        return web.Response(body=data, content_type="image/jpeg")

    # --- control API ----------------------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return False
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            value = ""
        return hmac.compare_digest(value.strip().encode(), self.token.encode())

    def _unauthorized(self) -> web.Response:
        return _json({"error": "unauthorized"}, 401, headers={"WWW-Authenticate": 'Bearer realm="fakewatch"'})

    async def _body(self, request: web.Request, required: bool) -> dict[str, Any] | web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error(413, f"request body larger than {MAX_BODY} bytes")
        if not request.body_exists:
            return _error(400, "a JSON body is required") if required else {}
        if request.content_type != "application/json":
            return _error(415, "the body must be application/json")
        try:
            raw = await request.read()  # bounded by the app's client_max_size (MAX_BODY with the API on)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body larger than {MAX_BODY} bytes")
        if len(raw) > MAX_BODY:
            return _error(413, f"request body larger than {MAX_BODY} bytes")
        if not raw.strip():
            return _error(400, "a JSON body is required") if required else {}
        try:
            data = json.loads(raw)
        except ValueError:
            return _error(400, "the body is not valid JSON")
        if not isinstance(data, dict):
            return _error(400, "the body must be a JSON object")
        return data

    async def _api_streams(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        return _json({"streams": self.stream_rows()})

    def validate_stream(self, body: dict[str, Any]) -> tuple[Any, list[str]]:
        """(StreamConfig, []) or (None, problems): the same checks as a ``streams`` entry of the config."""
        from daemon.config import ConfigError, validate_config

        defaults = self.cfg.stream_defaults
        defaults = defaults.model_dump(mode="json", exclude_unset=True) if hasattr(defaults, "model_dump") else dict(defaults)
        data = {"streams": [body], "stream_defaults": defaults,
                "bundle": {"path": str(self.cfg.bundle.resolved_path()), "verify": False}}
        try:
            cfg = validate_config(data, "stream")
        except ConfigError as e:
            return None, [_clean(p.removeprefix("streams.0.")) for p in e.problems]
        return cfg.streams[0], []

    async def _api_add_stream(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        body = await self._body(request, required=True)
        if isinstance(body, web.Response):
            return body
        d = self.daemon
        if d is None or not d.ready():
            return _error(503, "the daemon is not running (starting or shutting down)")
        sc, problems = self.validate_stream(body)
        if sc is None:
            return _error(422, "invalid stream", problems=problems)
        if any(getattr(s, "stream_id", None) == sc.id for s in d.sources()):
            return _error(409, f"stream {sc.id} exists (DELETE /api/v1/streams/{sc.id} first)")
        from daemon.sources.av import AvSource
        from daemon.types import StreamState

        src = AvSource(sc.id, sc.url, self.metrics, sc.source)
        d.add_source(src)
        self._removed.discard(sc.id)
        log.info("stream %s added through the control API", sc.id, extra={"url": src.display_url})
        deadline = time.monotonic() + self.open_wait_s
        while src.state == StreamState.STARTING and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if src.state == StreamState.FAILED:
            reason = _clean(src.last_error or "failed")
            await d.remove_source(sc.id)
            return _error(422, "the stream could not be opened", reason=reason)
        row = next((r for r in self.stream_rows() if r["id"] == sc.id), {"id": sc.id})
        return _json({"stream": row}, 201, headers={"Location": f"/api/v1/streams/{quote(sc.id)}"})

    async def _api_remove_stream(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        sid = request.match_info["id"]
        d = self.daemon
        if d is None or not any(getattr(s, "stream_id", None) == sid for s in d.sources()):
            return _error(404, "unknown stream")
        await d.remove_source(sid)
        self._removed.add(sid)
        log.info("stream %s removed through the control API", sid)
        return _json({"removed": sid})

    async def _api_ack(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        body = await self._body(request, required=False)
        if isinstance(body, web.Response):
            return body
        note = body.get("note", "")
        if not isinstance(note, str) or len(note) > 500:
            return _error(422, "note must be a string of at most 500 characters")
        eid = request.match_info["id"]
        s = self.store.get(eid)
        if s is None:
            return _error(404, "unknown event")
        if not s.event.get("alert"):
            return _error(422, "this event is not an alert")
        ack = self.store.ack(eid, note)
        await self.store.flush()
        return _json({"event": eid, "ack": ack})


def _read_small(p: Path) -> bytes | None:
    try:
        if p.stat().st_size > MAX_CROP:
            return None
        return p.read_bytes()
    except OSError:
        return None
