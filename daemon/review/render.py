"""Server-side HTML of the review page: escaped text, inline SVG timelines, no templates engine.

Every value that comes from a stream, an event or a request is passed through :func:`esc`; the
SVG uses presentation attributes only (no ``style`` attributes), so the page runs under a strict
Content-Security-Policy (``style-src 'self'``, ``script-src 'self'``).
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

VERDICTS = ("fake", "uncertain", "real")
COLOURS = {"frame": "#1f77b4", "temporal": "#ff7f0e", "fused": "#111111", "hi": "#c62828", "lo": "#2e7d32"}


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def fmt(x: float | None, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def clock(ts: float | None) -> str:
    if not ts:
        return "–"
    lt = time.localtime(ts)
    if time.strftime("%Y-%m-%d", lt) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", lt)
    return time.strftime("%m-%d %H:%M", lt)


def iso(ts: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts or 0))


def page(title: str, body: str, *, run: str, header_meta: str = "", api: bool = False, live_src: str | None = None,
         interval_ms: int = 2000) -> str:
    token = ('<form id="token-form" autocomplete="off"><label class="meta" for="token">API token</label>'
             '<input id="token" type="password" autocomplete="off" placeholder="for acknowledging"></form>') if api else ""
    live = (f' id="live" data-src="{esc(live_src)}" data-run="{esc(run)}" data-interval="{int(interval_ms)}"'
            if live_src else "")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><link rel=\"icon\" href=\"/review/static/favicon.svg\" type=\"image/svg+xml\">"
        "<link rel=\"stylesheet\" href=\"/review/static/review.css\">"
        "<script src=\"/review/static/review.js\" defer></script></head>"
        f"<body data-run=\"{esc(run)}\"><header><h1><a href=\"/review\" class=\"home\">fakewatch review</a></h1>"
        f"<span class=\"meta hmeta\">{header_meta}</span><span class=\"spacer\"></span>"
        f"<span class=\"meta\" id=\"updated\"></span><span id=\"status\" class=\"badge ok\">"
        f"{'live' if live_src else 'static'}</span>{token}</header>"
        f"<main{live}>{body}</main></body></html>\n"
    )


def filters(streams: Sequence[str], stream: str | None, verdict: str | None, open_only: bool) -> str:
    opts = ['<option value="">all streams</option>'] + [
        f'<option value="{esc(s)}"{" selected" if s == stream else ""}>{esc(s)}</option>' for s in streams
    ]
    vopts = ['<option value="">any verdict</option>'] + [
        f'<option value="{v}"{" selected" if v == verdict else ""}>{v}</option>' for v in VERDICTS
    ]
    aopts = [f'<option value=""{"" if open_only else " selected"}>all alerts</option>',
             f'<option value="open"{" selected" if open_only else ""}>not acknowledged</option>']
    return (
        '<form class="filters" method="get" action="/review">'
        f'<label>stream <select name="stream">{"".join(opts)}</select></label>'
        f'<label>verdict <select name="verdict">{"".join(vopts)}</select></label>'
        f'<label>alerts <select name="ack">{"".join(aopts)}</select></label>'
        '<noscript><button type="submit">apply</button></noscript></form>'
    )


def streams_part(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return '<div class="empty">no streams (add one with POST /api/v1/streams)</div>'
    head = ("<tr><th>stream</th><th>state</th><th>url</th><th class=\"num\">analysed fps</th>"
            "<th class=\"num\">faces / frame</th><th class=\"num\">active tracks</th><th class=\"num\">frames</th>"
            "<th>note</th></tr>")
    body = []
    for r in rows:
        body.append(
            f'<tr data-stream="{esc(r["id"])}"><td><b>{esc(r["id"])}</b></td>'
            f'<td><span class="badge {esc(r["state"])}">{esc(r["state"])}</span></td>'
            f'<td class="url" title="{esc(r["url"])}">{esc(r["url"])}</td>'
            f'<td class="num">{fmt(r.get("fps"), 1)}</td><td class="num">{fmt(r.get("faces_per_frame"), 1)}</td>'
            f'<td class="num">{esc(r.get("tracks_active", 0))}</td><td class="num">{esc(r.get("frames", 0))}</td>'
            f'<td class="url">{esc(r.get("error") or ("live" if r.get("live") else "file"))}</td></tr>'
        )
    return f"<table>{head}{''.join(body)}</table>"


def alerts_part(alerts: Sequence[Any], acks: dict[str, dict], api: bool) -> str:
    if not alerts:
        return '<div class="empty">no alerts</div>'
    items = []
    for s in alerts:
        e = s.event
        ack = acks.get(s.id)
        kinds = ", ".join(e.get("evidence", {}).get("alerts") or [e.get("alert")])
        if ack:
            act = f'<span class="badge acked" title="{esc(iso(ack["at"]))}">acknowledged</span>'
        elif api:
            act = f'<span><button type="button" data-ack="{esc(s.id)}">acknowledge</button><span class="msg"></span></span>'
        else:
            act = ""
        items.append(
            f'<li class="{"acked" if ack else "open"}" data-event="{esc(s.id)}" data-stream="{esc(e["stream_id"])}">'
            f'<span class="kind">{esc(e.get("alert"))}</span>'
            f'<a class="what" href="/review/events/{esc(s.id)}">{esc(e["stream_id"])} · track {esc(e["track_id"])}'
            f' <span class="badge {esc(e["verdict"])}">{esc(e["verdict"])}</span></a>{act}'
            f'<span class="sub"><time datetime="{iso(e.get("emitted_at"))}">{clock(e.get("emitted_at"))}</time>'
            f' · fused {fmt(e.get("score"))} · t={fmt(e.get("pts_last"), 1)} s · {esc(kinds)}</span></li>'
        )
    return f'<ol class="alerts">{"".join(items)}</ol>'


def _path(points: Sequence[tuple[float, float | None]], x, y) -> str:
    out, pen = [], False
    for t, v in points:
        if v is None:
            pen = False
            continue
        out.append(f"{'L' if pen else 'M'}{x(t):.1f},{y(v):.1f}")
        pen = True
    return " ".join(out)


def timeline_svg(points: Sequence[tuple[float, float | None, float | None, float]], alerts: Sequence[tuple[float, float, str]],
                 th_high: float, th_low: float, width: int = 560, height: int = 130, marker: float | None = None) -> str:
    """Frame, temporal and fused score over stream time, with the fusion thresholds and alert markers.

    ``points``: (pts, frame, temporal, fused); ``alerts``: (pts, fused, kind); ``marker``: a stream
    time to mark with a vertical line (the event shown on an event page).
    """
    left, right, top, bottom = 26, 6, 6, 18
    w, h = width - left - right, height - top - bottom
    ts = [p[0] for p in points] + [a[0] for a in alerts] + ([marker] if marker is not None else [])
    t0, t1 = (min(ts), max(ts)) if ts else (0.0, 1.0)
    if t1 - t0 < 1e-6:
        t1 = t0 + 1.0

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * w

    def y(v: float) -> float:
        return top + (1.0 - min(max(v, 0.0), 1.0)) * h

    parts = [f'<svg class="timeline" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="score timeline" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="#fafbfd" stroke="#dde"/>']
    for v in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{left - 4}" y="{y(v) + 3:.1f}" font-size="9" fill="#889" text-anchor="end">{v:g}</text>')
    # model thresholds: the frame and temporal scores are calibrated so that each model's own threshold is 0.5
    parts.append(f'<line class="th-model" x1="{left}" x2="{left + w}" y1="{y(0.5):.1f}" y2="{y(0.5):.1f}" '
                 f'stroke="#aab" stroke-dasharray="1 3"><title>model thresholds (calibrated to 0.5)</title></line>')
    for cls, v, col, label in (("th-high", th_high, COLOURS["hi"], "threshold_high"),
                               ("th-low", th_low, COLOURS["lo"], "threshold_low")):
        parts.append(f'<line class="{cls}" x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="{col}" '
                     f'stroke-dasharray="4 3" stroke-width="1"><title>{label} {v:g}</title></line>')
    for name, idx, sw in (("frame", 1, 1.3), ("temporal", 2, 1.3), ("fused", 3, 2.2)):
        d = _path([(p[0], p[idx]) for p in points], x, y)
        if d:
            parts.append(f'<path class="{name}" d="{d}" fill="none" stroke="{COLOURS[name]}" stroke-width="{sw}" '
                         f'stroke-linejoin="round"><title>{name}</title></path>')
    if marker is not None:
        parts.append(f'<line class="now" x1="{x(marker):.1f}" x2="{x(marker):.1f}" y1="{top}" y2="{top + h}" '
                     f'stroke="#556" stroke-width="1.5"><title>this event, {marker:.1f} s</title></line>')
    for t, v, kind in alerts:
        parts.append(f'<circle class="alert" cx="{x(t):.1f}" cy="{y(v):.1f}" r="3.5" fill="{COLOURS["hi"]}" '
                     f'stroke="#fff"><title>{esc(kind)} alert at {t:.1f} s</title></circle>')
    parts.append(f'<text x="{left}" y="{height - 5}" font-size="9" fill="#889">{t0:.1f} s</text>')
    parts.append(f'<text x="{left + w}" y="{height - 5}" font-size="9" fill="#889" text-anchor="end">{t1:.1f} s '
                 f'(stream time)</text></svg>')
    return "".join(parts)


LEGEND = ('<div class="legend"><span><i class="frame"></i>frame</span><span><i class="temporal"></i>temporal</span>'
          '<span><i class="fused"></i>fused</span><span><i class="hi"></i>threshold_high</span>'
          '<span><i class="lo"></i>threshold_low</span></div>')


def crop_html(event_id: str | None, why_none: str) -> str:
    if event_id:
        return (f'<a href="/review/events/{esc(event_id)}"><img class="crop" alt="best evidence crop" '
                f'src="/review/evidence/{esc(event_id)}.jpg" loading="lazy"></a>')
    return f'<div class="crop">{esc(why_none)}</div>'


def track_card(t: Any, latest: dict[str, Any], svg: str, crop: str, live: bool) -> str:
    e = latest
    state = "ended" if e["event"] == "end" else ("active" if live else "earlier run")
    earlier = "" if live else '<span class="badge acked">earlier run</span>'
    return (
        f'<div class="card" data-stream="{esc(t.stream)}" data-track="{esc(t.track)}" data-verdict="{esc(e["verdict"])}">'
        f'<div class="title"><b>{esc(t.stream)} · track {esc(t.track)}</b>'
        f'<span class="badge {esc(e["verdict"])}">{esc(e["verdict"])}</span>'
        f'{earlier}'
        f'<span class="score">fused {fmt(e.get("score"))} · peak {fmt((e.get("scores") or {}).get("peak"))}</span></div>'
        f'{crop}<div>{svg}{LEGEND}</div>'
        f'<div class="facts">{esc(state)} · {esc(e.get("frames"))} frames · {fmt(e.get("pts_first"), 1)}–'
        f'{fmt(e.get("pts_last"), 1)} s · frame {fmt((e.get("scores") or {}).get("frame"))} · temporal '
        f'{fmt((e.get("scores") or {}).get("temporal"))} · <a href="/review/events/{esc(e["id"])}">latest event</a></div></div>'
    )


def tracks_part(cards: Sequence[str]) -> str:
    if not cards:
        return '<div class="empty">no identities yet</div>'
    return f'<div class="cards">{"".join(cards)}</div>'


def dashboard(filters_html: str, parts: dict[str, str], n_alerts: int) -> str:
    return (
        f"{filters_html}"
        f'<section><h2>Streams</h2><div id="streams">{parts["streams"]}</div></section>'
        f'<div class="cols"><section><h2>Alerts <small>newest first</small></h2><div id="alerts">{parts["alerts"]}</div></section>'
        f'<section><h2>Identities <small>score timelines over stream time, best evidence crop</small></h2>'
        f'<div id="tracks">{parts["tracks"]}</div></section></div>'
    )


def event_body(e: dict[str, Any], ack: dict | None, api: bool, svg: str, crop_url: str | None, crop_note: str) -> str:
    img = (f'<img alt="best evidence crop of the track" src="{esc(crop_url)}">' if crop_url
           else f'<div class="crop">{esc(crop_note)}</div>')
    if ack:
        act = f'<span class="badge acked">acknowledged {esc(clock(ack["at"]))}</span>'
    elif api and e.get("alert"):
        act = f'<span><button type="button" data-ack="{esc(e["id"])}">acknowledge</button><span class="msg"></span></span>'
    else:
        act = ""
    pretty = json.dumps(e, indent=2, sort_keys=True, default=str)
    kind = f'<span class="kind">{esc(e.get("alert"))}</span>' if e.get("alert") else ""
    legend = LEGEND.replace("</div>", '<span><i class="now"></i>this event</span></div>')
    back = f'/review?stream={quote(str(e["stream_id"]))}'
    return (
        f'<section><h2>{esc(e["event"])} event · {esc(e["stream_id"])} · track {esc(e["track_id"])} '
        f'<span class="badge {esc(e["verdict"])}">{esc(e["verdict"])}</span> '
        f'{kind} {act}</h2>'
        f'<div class="evidence">{img}<div class="chart">{svg}{legend}<p>fused {fmt(e.get("score"))} at {fmt(e.get("pts_last"), 2)} s'
        f' (stream time) · emitted {esc(clock(e.get("emitted_at")))} · id <code>{esc(e["id"])}</code> · '
        f'<a href="/review/events/{esc(e["id"])}.json">raw JSON</a> · <a href="{esc(back)}">back</a></p></div></div></section>'
        f'<section><h2>Event JSON</h2><pre class="json">{esc(pretty)}</pre></section>'
    )
