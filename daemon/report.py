"""What the commands print: the per-identity verdict table and its score legend, the status of
every input of a scan, a bundle's manifest summary, one-line errors (``fakewatch: error: ...``).

Nothing here builds or runs the daemon (that is :mod:`daemon.runner`); :class:`CollectSink` only
keeps the events a report is made from.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.events import VerdictEvent
from daemon.sinks.base import Sink


def err(msg: str) -> None:
    """One error line on stderr: ``fakewatch: error: msg``."""
    print(f"fakewatch: error: {msg}", file=sys.stderr, flush=True)


class CollectSink(Sink):
    """Keeps every event in memory (for the report tables of ``scan`` and ``demo``)."""

    name = "report"

    def __init__(self, on_event: Callable[[VerdictEvent], None] | None = None):
        self.events: list[VerdictEvent] = []
        self.on_event = on_event

    async def emit(self, events: list[VerdictEvent]) -> None:
        self.events.extend(events)
        if self.on_event:
            for e in events:
                self.on_event(e)


@dataclass
class IdentityRow:
    stream: str
    track: int
    frames: int
    first: float
    last: float
    frame_score: float | None
    temporal_score: float | None
    score: float
    verdict: str
    alerts: set[str] = field(default_factory=set)


def identity_rows(events: list[VerdictEvent]) -> list[IdentityRow]:
    """One row per (stream, track): the latest event's scores (the ``end`` event when there is one)."""
    rows: dict[tuple[str, int], IdentityRow] = {}
    for e in sorted(events, key=lambda e: (e.stream_id, e.track_id, e.seq_last, e.event == "end")):
        key = (e.stream_id, e.track_id)
        prev = rows.get(key)
        row = IdentityRow(
            e.stream_id, e.track_id, e.frames, e.pts_first, e.pts_last, e.scores.get("frame"),
            e.scores.get("temporal"), e.score, e.verdict, set(prev.alerts) if prev else set(),
        )
        if e.alert:
            row.alerts.add(e.alert)
        rows[key] = row
    return list(rows.values())


def score_legend(fusion: Any = None) -> str:
    """What the score columns mean, with the configured weights and thresholds (daemon/fusion.py)."""
    if fusion is None:
        from daemon.fusion import FusionConfig

        fusion = FusionConfig()
    fusion = fusion.resolve()  # no-op when the weights are set (build_daemon sets the bundle's)
    wf, wt = fusion.frame_weight, fusion.temporal_weight
    hi, lo = fusion.threshold_high, fusion.threshold_low
    return (
        "scores 0..1, higher = more likely manipulated. frame: the frame model (calibrated, 0.5 = the bundle's "
        "threshold; smoothed over the track). temporal: DiffFake over pairs of the track's faces seconds apart "
        f"(- until a pair exists). fused: ({wf:g} frame + {wt:g} temporal) / weights of the scores present. "
        f"verdict: fake once fused >= {hi:g} (until it falls below {lo:g}), real below {lo:g}, uncertain in "
        f"between or before {fusion.min_frames} scored frames. first s / last s: stream time in seconds."
    )


def print_identity_table(events: list[VerdictEvent], title: str = "per-identity verdicts", console=None,
                         fusion: Any = None, empty: str = "no face tracks were confirmed") -> None:
    """The per-identity table (one row per track) with the score legend under it."""
    from rich.table import Table

    console = console or make_console()
    rows = identity_rows(events)
    t = Table(title=title, caption=score_legend(fusion) if rows else empty, caption_justify="left")
    for col, just in (
        ("stream", "left"), ("track", "right"), ("frames", "right"), ("first s", "right"), ("last s", "right"),
        ("frame", "right"), ("temporal", "right"), ("fused", "right"), ("verdict", "left"),
        ("alerts", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    for r in rows:
        colour = {"fake": "bold red", "real": "green"}.get(r.verdict, "yellow")
        t.add_row(
            r.stream, str(r.track), str(r.frames), f"{r.first:.2f}", f"{r.last:.2f}", f(r.frame_score),
            f(r.temporal_score), f(r.score), f"[{colour}]{r.verdict}[/]", ",".join(sorted(r.alerts)) or "-",
        )
    console.print(t)


@dataclass
class InputStatus:
    input: str  # as given (redacted when shown)
    status: str  # ok | no faces | failed: reason
    tracks: int


def input_statuses(inputs: list[str], ids: dict[str, str], rejected: dict[str, str], failed: dict[str, str],
                   events: list[VerdictEvent]) -> list[InputStatus]:
    """One status per input, in the order given: ``ok`` (face tracks found), ``no faces`` (read to the
    end, no track confirmed) or ``failed: reason`` (rejected before the run, or the source failed)."""
    from daemon.sources.base import redact_url

    tracks: dict[str, set[int]] = {}
    for e in events:
        tracks.setdefault(e.stream_id, set()).add(e.track_id)
    pending = list(ids.items())  # (stream id, input) in the order of the inputs that were accepted
    out = []
    for item in inputs:
        sid = pending.pop(0)[0] if pending and pending[0][1] == item else None
        n = len(tracks.get(sid, ())) if sid else 0
        why = rejected.get(item) if sid is None else failed.get(sid)
        if why is not None:
            status = f"failed: {_without_input(item, why)}"
        else:
            status = "ok" if n else "no faces"
        out.append(InputStatus(redact_url(item), status, n))
    return out


def _without_input(item: str, why: str) -> str:
    """``why`` without a leading copy of the input (``/x.mp4: not a readable video`` -> ``not a readable video``)."""
    from daemon.sources.base import redact_url

    for shown in (redact_url(item), str(Path(item).expanduser())):
        if why.startswith(shown + ": "):
            return why[len(shown) + 2:]
        if why.endswith(": " + shown):  # "file not found: /x.mp4"
            return why[: -len(shown) - 2]
    return why


def input_lines(statuses: list[InputStatus]) -> list[tuple[str, str]]:
    """(kind, line) per input: ``ok  PATH (2 face tracks)``, ``no faces  PATH``, ``failed  PATH: reason``."""
    out = []
    for st in statuses:
        kind, _, reason = st.status.partition(": ") if st.status.startswith("failed") else (st.status, "", "")
        tail = f": {reason}" if reason else f" ({st.tracks} face track{'s' if st.tracks != 1 else ''})" if st.tracks else ""
        out.append((kind, f"  {kind:<8}  {st.input}{tail}"))
    return out


def print_input_table(statuses: list[InputStatus], console=None) -> None:
    """Every input on one line with its status (plain lines: long paths and reasons are never cut)."""
    from rich.text import Text

    console = console or make_console()
    n_ok = sum(st.status.startswith("ok") for st in statuses)
    console.print()
    console.print(f"inputs: {len(statuses)}, {n_ok} ok, "
                  f"{sum(st.status.startswith('no faces') for st in statuses)} without faces, "
                  f"{sum(st.status.startswith('failed') for st in statuses)} failed", markup=False, highlight=False)
    for kind, line in input_lines(statuses):
        style = "green" if kind == "ok" else "yellow" if kind.startswith("no faces") else "bold red"
        console.print(Text(line, style=style), soft_wrap=True)


def make_console():
    """A rich console; wide enough for the report tables when stdout is not a terminal."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def input_error(item: str, why: str) -> None:
    """One line per bad input (the reason may already start with the redacted input)."""
    from daemon.sources.base import redact_url

    shown = redact_url(item)
    named = shown in why or str(Path(item).expanduser()) in why  # (e.g. "file not found: /x.mp4")
    err(why if named else f"{shown}: {why}")


def print_bundle_info(root: Path, bundle: Any, verified: bool, console=None) -> None:
    """A bundle's manifest summary (``fakewatch bundle-info``)."""
    from rich.table import Table

    m = bundle.manifest
    console = console or make_console()
    t = Table(title=f"bundle {m.name}@{m.version}  ({root})", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    t.add_row("format", str(m.format_version))
    t.add_row("created", m.created or "-")
    t.add_row("crop", f"{m.crop.size}px, scale {m.crop.scale}, {m.crop.template}")
    if m.frame:
        fr = m.frame
        t.add_row("frame model", f"{fr.method} / {fr.backbone}, input {fr.input_size}, threshold {fr.threshold:.4g}, "
                  f"file {fr.file}{' (+fp16)' if fr.fp16_file else ''}, v{fr.version}")
    if m.temporal:
        tm = m.temporal
        t.add_row("temporal model", f"{tm.method} / {tm.backbone}, input {tm.input_size}, combination {tm.combination}, "
                  f"threshold {tm.threshold:.4g}, files {tm.file} + {tm.gmm_file}, v{tm.version}")
    for k, v in sorted(m.metrics.items()):
        t.add_row(f"metric {k}", _short(v))
    for k, v in sorted(m.provenance.items()):
        t.add_row(f"provenance {k}", _short(v))
    for k, v in sorted(m.versions.items()):
        t.add_row(f"version {k}", str(v))
    t.add_row("files", ", ".join(f"{rel} ({(root / rel).stat().st_size / 1e6:.1f} MB)" for rel in sorted(m.files)))
    t.add_row("verified", "sha256 ok" if verified else "not checked (--no-verify)")
    console.print(t)


def _short(v: Any, n: int = 100) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= n else s[: n - 1] + "…"
