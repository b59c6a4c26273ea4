"""The recent-verdicts store behind the review page (and ``fakewatch verdicts --db``).

* In memory: the newest ``max_events`` verdict events (and nothing older than ``max_age_s``),
  indexed by event id, plus per track a score timeline (frame, temporal, fused over stream time)
  and the moderators' acknowledgements. Everything is bounded: events by count and age, tracks by
  the events that still mention them, timeline points per track by ``timeline_points`` (when a
  track's timeline is full every other point is dropped and the spacing doubles, so a long track
  keeps its whole history at a coarser resolution).
* Optionally persisted to SQLite (``db``; stdlib ``sqlite3``, WAL): events, timeline points and
  acknowledgements survive a restart. On open the newest events are loaded back into memory.
  The file keeps at most ``db_max_events`` events and nothing older than ``max_age_s``. Writes run
  in one writer thread, never on the event loop.

A track is identified by ``(run, stream, track)``: ``run`` is a fresh id per daemon start, so a
restarted daemon whose tracker counts from 1 again never merges two identities into one timeline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from daemon.config_base import StrictModel

log = logging.getLogger("fakewatch.review")

SCHEMA_VERSION = 1
EVENT_ID_LEN = 32


class ReviewStoreConfig(StrictModel):
    max_events: int = Field(5000, ge=10, le=1_000_000, description="verdict events kept in memory for the review page (newest)")
    max_age_s: float | None = Field(
        7 * 86400.0, gt=0, description="events (and their timelines) older than this are dropped, in memory and in the db; null = no age limit"
    )
    db: Path | None = Field(None, description="SQLite file: events, timelines and acknowledgements survive restarts; null = memory only")
    db_max_events: int = Field(100_000, ge=10, description="events kept in the SQLite file (the oldest are pruned)")
    timeline_points: int = Field(600, ge=10, le=100_000, description="score points kept per track (a full timeline is thinned 2:1)")
    timeline_interval_s: float = Field(0.2, ge=0, description="least stream time between two timeline points of a track")

    @field_validator("db")
    @classmethod
    def _parent_exists(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is None:
            return v
        v = Path(v).expanduser()
        if (info.context or {}).get("check_paths", True) and not v.parent.is_dir():
            raise ValueError(f"folder of the review db does not exist: {v.parent}")
        return v


TrackKey = tuple[str, str, int]  # (run, stream, track)


@dataclass
class Stored:
    seq: int
    run: str
    event: dict[str, Any]
    crop_stat: tuple[int, int] | None = None  # (mtime_ns, size) of the evidence crop when this event was stored

    @property
    def id(self) -> str:
        return self.event["id"]

    @property
    def key(self) -> TrackKey:
        return (self.run, self.event["stream_id"], int(self.event["track_id"]))


@dataclass
class TrackInfo:
    key: TrackKey
    points: list[tuple[float, float | None, float | None, float]] = field(default_factory=list)  # (pts, frame, temporal, fused)
    gap: float = 0.0  # least stream time between points (doubles on each thinning)
    anchor: float = 0.0  # stream time at which the newest point's slot began
    n_events: int = 0
    latest: str | None = None  # id of the newest event
    crop_event: str | None = None  # id of the newest event that carries an evidence crop
    alerts: list[str] = field(default_factory=list)  # ids of its alert events, oldest first
    updated: float = 0.0  # wall time of the last change

    @property
    def stream(self) -> str:
        return self.key[1]

    @property
    def track(self) -> int:
        return self.key[2]


_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    run TEXT NOT NULL,
    stream TEXT NOT NULL,
    track INTEGER NOT NULL,
    kind TEXT NOT NULL,
    verdict TEXT NOT NULL,
    alert TEXT,
    score REAL NOT NULL,
    pts REAL NOT NULL,
    emitted_at REAL NOT NULL,
    crop_mtime INTEGER,
    crop_size INTEGER,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_track ON events (run, stream, track);
CREATE INDEX IF NOT EXISTS events_time ON events (emitted_at);
CREATE TABLE IF NOT EXISTS points (
    run TEXT NOT NULL, stream TEXT NOT NULL, track INTEGER NOT NULL,
    pts REAL NOT NULL, frame REAL, temporal REAL, fused REAL NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS points_track ON points (run, stream, track, pts);
CREATE TABLE IF NOT EXISTS acks (event_id TEXT PRIMARY KEY, at REAL NOT NULL, note TEXT NOT NULL DEFAULT '');
"""


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection to a review db (``readonly``: for ``fakewatch verdicts --db``; never creates the file)."""
    if readonly:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"review db not found: {p}")
        con = sqlite3.connect(f"file:{p.resolve()}?mode=ro", uri=True, timeout=10)
    else:
        con = sqlite3.connect(str(path), timeout=10, check_same_thread=False, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.executescript(_DDL)
        con.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row and row[0] != str(SCHEMA_VERSION):
            con.close()
            raise ValueError(f"review db {path}: schema version {row[0]} is not {SCHEMA_VERSION}")
    return con


class VerdictStore:
    """Bounded recent verdicts, timelines and acknowledgements (see the module doc).

    Every method is called on the event loop except the private ``_db_*`` ones, which run in the
    store's single writer thread.
    """

    def __init__(self, cfg: ReviewStoreConfig | None = None, clock=time.time):
        self.cfg = cfg or ReviewStoreConfig()
        self.clock = clock
        self.run = uuid.uuid4().hex[:12]
        self._events: OrderedDict[str, Stored] = OrderedDict()  # id -> stored, oldest first
        self._tracks: dict[TrackKey, TrackInfo] = {}
        self._acks: dict[str, dict[str, Any]] = {}
        self._seq = 0
        self._con: sqlite3.Connection | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[tuple] = []  # db operations not yet handed to the writer
        self._writes_since_prune = 0
        self._last_prune = 0.0

    # --- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open (create) the SQLite file when one is configured and load its newest events."""
        if self.cfg.db is None or self._con is not None:
            return
        self._con = connect(self.cfg.db)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="review-db")
        self._db_prune(self.clock())
        self._load()

    def close(self) -> None:
        """Write what is pending and close the file (synchronous; call after the last ``flush``)."""
        if self._con is None:
            return
        batch, self._pending = self._pending, []
        assert self._writer is not None
        self._writer.submit(self._db_write, batch).result()
        self._writer.shutdown(wait=True)
        self._con.close()
        self._con = None
        self._writer = None

    async def flush(self) -> None:
        """Hand the pending writes to the writer thread and wait for them (no-op without a db)."""
        if self._con is None or not self._pending:
            return
        batch, self._pending = self._pending, []
        await asyncio.get_running_loop().run_in_executor(self._writer, self._db_write, batch)

    @property
    def persistent(self) -> bool:
        return self._con is not None

    # --- writes ----------------------------------------------------------------------------------------
    def add(self, event: dict[str, Any], crop_stat: tuple[int, int] | None = None, run: str | None = None) -> bool:
        """Store one event (``VerdictEvent.to_dict()``); False when this run already stored its id (a replay).

        Event ids are deterministic, so a restarted daemon that analyses the same frames again (a file
        from its start, a Kafka replay after a crash) emits the ids of the previous run: such an event
        moves to the new run (its track is the live one now); an acknowledgement stays with the id.
        """
        eid = event.get("id")
        run = run or self.run
        if not isinstance(eid, str):
            return False
        old = self._events.get(eid)
        if old is not None:
            if old.run == run:
                return False
            ack = self._acks.get(eid)
            self._evict(old)
            if ack is not None:
                self._acks[eid] = ack
        self._seq += 1
        s = Stored(self._seq, run, event, crop_stat)
        self._insert(s)
        if self._con is not None:
            self._pending.append(("event", s))
        self._trim()
        return True

    def _insert(self, s: Stored) -> None:
        self._events[s.id] = s
        t = self._track(s.key)
        t.n_events += 1
        t.latest = s.id
        t.updated = max(t.updated, float(s.event.get("emitted_at") or 0.0))
        if s.event.get("evidence", {}).get("crop"):
            t.crop_event = s.id
        if s.event.get("alert"):
            t.alerts.append(s.id)

    def _track(self, key: TrackKey) -> TrackInfo:
        t = self._tracks.get(key)
        if t is None:
            t = self._tracks[key] = TrackInfo(key, gap=self.cfg.timeline_interval_s)
        return t

    def add_point(self, stream: str, track: int, pts: float, frame: float | None, temporal: float | None,
                  fused: float) -> bool:
        """One timeline point of a track of this run.

        A point closer than the track's spacing to the newest slot replaces that slot's value (so the
        newest score is always shown) and returns False; otherwise it opens a new slot (True).
        """
        t = self._track((self.run, stream, int(track)))
        p = (float(pts), _r(frame), _r(temporal), float(round(fused, 6)))
        t.updated = self.clock()
        if t.points and 0 <= pts - t.anchor < t.gap:
            t.points[-1] = p  # the newest slot shows the newest value (the db keeps the slot's first value)
            return False
        t.points.append(p)
        t.anchor = float(pts)
        if self._con is not None:
            self._pending.append(("point", t.key, p, t.updated))
        if len(t.points) > self.cfg.timeline_points:
            self._thin(t)
        return True

    def _thin(self, t: TrackInfo) -> None:
        last = t.points[-1]
        t.points = t.points[::2]
        if t.points[-1] != last:
            t.points.append(last)
        t.gap = max(t.gap * 2, 1e-3)
        if self._con is not None:
            self._pending.append(("thin", t.key))

    def ack(self, event_id: str, note: str = "") -> dict[str, Any] | None:
        """Acknowledge a stored event (idempotent: a second ack keeps the first time); None if unknown."""
        if event_id not in self._events:
            return None
        a = self._acks.get(event_id)
        if a is None:
            a = self._acks[event_id] = {"at": self.clock(), "note": note}
            if self._con is not None:
                self._pending.append(("ack", event_id, a["at"], note))
        return dict(a)

    # --- retention -------------------------------------------------------------------------------------
    def _trim(self) -> None:
        now = self.clock()
        min_time = None if self.cfg.max_age_s is None else now - self.cfg.max_age_s
        while self._events:
            oldest = next(iter(self._events.values()))
            too_many = len(self._events) > self.cfg.max_events
            too_old = min_time is not None and float(oldest.event.get("emitted_at") or 0.0) < min_time
            if not (too_many or too_old):
                break
            self._evict(oldest)
        if self._con is not None:
            self._writes_since_prune += 1
            if self._writes_since_prune >= 500 or now - self._last_prune >= 60:
                self._writes_since_prune = 0
                self._last_prune = now
                self._pending.append(("prune", now))

    def prune(self) -> None:
        """Apply the age limit now (also called periodically by the review app)."""
        self._trim()
        if self.cfg.max_age_s is not None:  # tracks that only have (old) timeline points
            old = self.clock() - self.cfg.max_age_s
            for key in [k for k, t in self._tracks.items() if t.n_events == 0 and t.updated < old]:
                del self._tracks[key]

    def _evict(self, s: Stored) -> None:
        del self._events[s.id]
        self._acks.pop(s.id, None)
        t = self._tracks.get(s.key)
        if t is None:
            return
        t.n_events -= 1
        if s.id in t.alerts:
            t.alerts.remove(s.id)
        if t.n_events <= 0:
            del self._tracks[s.key]
            return
        if t.latest == s.id or t.crop_event == s.id:  # (an event that moved to a later run)
            rest = [o for o in self._events.values() if o.key == s.key]
            if t.latest == s.id:
                t.latest = rest[-1].id if rest else None
            if t.crop_event == s.id:
                t.crop_event = next((o.id for o in reversed(rest) if o.event.get("evidence", {}).get("crop")), None)

    # --- reads -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._events)

    def get(self, event_id: str) -> Stored | None:
        return self._events.get(event_id)

    def ack_of(self, event_id: str) -> dict[str, Any] | None:
        a = self._acks.get(event_id)
        return dict(a) if a else None

    def events(self, stream: str | None = None, verdict: str | None = None, alerts_only: bool = False,
               open_only: bool = False, limit: int = 100) -> list[Stored]:
        """Newest first, filtered by stream, verdict (at the time of the event), alerts, unacknowledged."""
        out = []
        for s in reversed(self._events.values()):
            e = s.event
            if stream and e.get("stream_id") != stream:
                continue
            if verdict and e.get("verdict") != verdict:
                continue
            if alerts_only and not e.get("alert"):
                continue
            if open_only and s.id in self._acks:
                continue
            out.append(s)
            if len(out) >= limit:
                break
        return out

    def track_info(self, key: TrackKey) -> TrackInfo | None:
        return self._tracks.get(key)

    def tracks(self, stream: str | None = None, verdict: str | None = None, limit: int = 24) -> list[TrackInfo]:
        """Tracks with at least one event, the most recently updated first (filters use the latest verdict)."""
        out = []
        for t in self._tracks.values():
            if t.latest is None or (stream and t.stream != stream):
                continue
            if verdict and self._events[t.latest].event.get("verdict") != verdict:
                continue
            out.append(t)
        out.sort(key=lambda t: (self._events[t.latest].seq if t.latest else 0), reverse=True)
        return out[:limit]

    def track_events(self, key: TrackKey) -> list[Stored]:
        return [s for s in self._events.values() if s.key == key]

    def stream_ids(self) -> list[str]:
        return sorted({t.stream for t in self._tracks.values()})

    # --- SQLite (writer thread) ------------------------------------------------------------------------
    def _db_write(self, batch: list[tuple]) -> None:
        con = self._con
        if con is None or not batch:
            return
        try:
            con.execute("BEGIN")
            for op in batch:
                kind = op[0]
                if kind == "event":
                    s: Stored = op[1]
                    e = s.event
                    mt, sz = s.crop_stat if s.crop_stat else (None, None)
                    con.execute("DELETE FROM events WHERE id = ? AND run <> ?", (s.id, s.run))  # moved to this run
                    con.execute(
                        "INSERT OR IGNORE INTO events (id, run, stream, track, kind, verdict, alert, score, pts, "
                        "emitted_at, crop_mtime, crop_size, json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (s.id, s.run, e["stream_id"], int(e["track_id"]), e["event"], e["verdict"], e.get("alert"),
                         float(e["score"]), float(e["pts_last"]), float(e.get("emitted_at") or 0.0), mt, sz,
                         json.dumps(e, separators=(",", ":"), sort_keys=True, default=str)),
                    )
                elif kind == "point":
                    (run, stream, track), p, at = op[1], op[2], op[3]
                    con.execute("INSERT INTO points (run, stream, track, pts, frame, temporal, fused, at) "
                                "VALUES (?,?,?,?,?,?,?,?)", (run, stream, track, *p, at))
                elif kind == "thin":  # the same 2:1 thinning as in memory (keep 1st, 3rd, ... and the last)
                    con.execute(
                        "DELETE FROM points WHERE rowid IN (SELECT rowid FROM (SELECT rowid, ROW_NUMBER() OVER "
                        "(ORDER BY rowid) AS rn, COUNT(*) OVER () AS n FROM points WHERE run=? AND stream=? AND track=?) "
                        "WHERE rn % 2 = 0 AND rn < n)", op[1])
                elif kind == "ack":
                    con.execute("INSERT OR IGNORE INTO acks (event_id, at, note) VALUES (?,?,?)", op[1:4])
                elif kind == "prune":
                    self._db_prune_in_tx(op[1])
            con.execute("COMMIT")
        except sqlite3.Error as e:
            log.error("review db write failed: %s", e)
            try:
                con.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _db_prune(self, now: float) -> None:
        assert self._con is not None
        self._con.execute("BEGIN")
        self._db_prune_in_tx(now)
        self._con.execute("COMMIT")

    def _db_prune_in_tx(self, now: float) -> None:
        con = self._con
        assert con is not None
        if self.cfg.max_age_s is not None:
            cutoff = now - self.cfg.max_age_s
            con.execute("DELETE FROM events WHERE emitted_at < ?", (cutoff,))
            con.execute("DELETE FROM points WHERE at < ?", (cutoff,))
        row = con.execute("SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?",
                          (self.cfg.db_max_events,)).fetchone()
        if row is not None:
            con.execute("DELETE FROM events WHERE seq <= ?", (row[0],))
        # timelines and acks of tracks/events that are gone (points younger than a minute may precede
        # their track's first event in the same batch: keep those)
        con.execute("DELETE FROM points WHERE at < ? AND NOT EXISTS (SELECT 1 FROM events e WHERE e.run = points.run "
                    "AND e.stream = points.stream AND e.track = points.track)", (now - 60,))
        con.execute("DELETE FROM acks WHERE event_id NOT IN (SELECT id FROM events)")

    def _load(self) -> None:
        """The newest ``max_events`` events of the file, their tracks' timelines and acks, into memory."""
        con = self._con
        assert con is not None
        rows = con.execute("SELECT run, json, crop_mtime, crop_size FROM events ORDER BY seq DESC LIMIT ?",
                           (self.cfg.max_events,)).fetchall()
        for run, text, mt, sz in reversed(rows):
            try:
                e = json.loads(text)
            except ValueError:
                continue
            self._seq += 1
            self._insert(Stored(self._seq, run, e, (mt, sz) if mt is not None else None))
        for key, t in self._tracks.items():
            pts = con.execute("SELECT pts, frame, temporal, fused FROM points WHERE run=? AND stream=? AND track=? "
                              "ORDER BY rowid", key).fetchall()
            t.points = [tuple(p) for p in pts]  # type: ignore[misc]
            while len(t.points) > self.cfg.timeline_points:
                t.points = t.points[::2]
                t.gap = max(t.gap * 2, 1e-3)
        if self._events:
            ids = list(self._events)
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                for eid, at, note in con.execute(
                        f"SELECT event_id, at, note FROM acks WHERE event_id IN ({','.join('?' * len(chunk))})", chunk):
                    self._acks[eid] = {"at": at, "note": note}
        log.info("review store: %d events loaded from %s", len(self._events), self.cfg.db)


def _r(x: float | None) -> float | None:
    return None if x is None else float(round(x, 6))


def crop_stat(path: str | os.PathLike | None) -> tuple[int, int] | None:
    """(mtime_ns, size) of an evidence file, None when it does not exist."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


# --- fakewatch verdicts --db ------------------------------------------------------------------------------


def query_db(path: str | Path, stream: str | None = None, verdict: str | None = None, alerts_only: bool = False,
             since_s: float | None = None, limit: int | None = None, now: float | None = None) -> list[dict[str, Any]]:
    """Events of a review db, oldest first (the newest ``limit`` when given), filtered like the page.

    Each event is its JSON as emitted; acknowledged events carry an extra ``ack`` member
    (``{"at": unix time, "note": ...}``).
    """
    con = connect(path, readonly=True)
    try:
        where, args = [], []
        if stream:
            where.append("e.stream = ?")
            args.append(stream)
        if verdict:
            where.append("e.verdict = ?")
            args.append(verdict)
        if alerts_only:
            where.append("e.alert IS NOT NULL")
        if since_s is not None:
            where.append("e.emitted_at >= ?")
            args.append((now if now is not None else time.time()) - since_s)
        sql = ("SELECT e.json, a.at, a.note FROM events e LEFT JOIN acks a ON a.event_id = e.id"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY e.seq DESC")
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        out = []
        for text, at, note in con.execute(sql, args).fetchall():
            e = json.loads(text)
            if at is not None:
                e["ack"] = {"at": at, "note": note}
            out.append(e)
        out.reverse()
        return out
    finally:
        con.close()


def iter_json_lines(events: Iterable[dict[str, Any]]) -> Iterable[str]:
    for e in events:
        yield json.dumps(e, separators=(",", ":"), sort_keys=True, default=str)
