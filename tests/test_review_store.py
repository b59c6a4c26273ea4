"""The recent-verdicts store (daemon/review/store.py): bounds, retention, SQLite across restarts, the CLI."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from daemon.cli import main
from daemon.events import VerdictEvent
from daemon.review.store import ReviewStoreConfig, VerdictStore, query_db


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def event(stream: str, track: int, seq: int, *, kind: str = "update", score: float = 0.3, alert: str | None = None,
          at: float | None = None, verdict: str | None = None) -> dict:
    at = time.time() if at is None else at
    v = verdict or ("fake" if score >= 0.6 else "real" if score < 0.4 else "uncertain")
    e = VerdictEvent(stream, track, kind, 0, seq, 0.0, seq / 5, seq, score, v, alert,
                     {"frame": score, "frame_prob": score, "temporal": None, "peak": score}, {},
                     {"alerts": [alert] if alert else []}, emitted_at=at)
    return e.to_dict()


def test_memory_bound_by_count_drops_oldest_events_their_tracks_and_acks():
    store = VerdictStore(ReviewStoreConfig(max_events=10))
    ids = []
    for i in range(25):
        e = event("cam1", i, 10, alert="threshold" if i == 3 else None)  # one track per event
        ids.append(e["id"])
        assert store.add(e)
        if i == 3:
            assert store.ack(e["id"], "seen") is not None
    assert len(store) == 10
    assert store.get(ids[0]) is None and store.get(ids[14]) is None and store.get(ids[15]) is not None
    assert store.ack_of(ids[3]) is None  # the ack went with its event
    assert {t.track for t in store.tracks(limit=100)} == set(range(15, 25))
    assert [s.id for s in store.events(limit=3)] == ids[:-4:-1]  # newest first


def test_replayed_event_ids_are_stored_once():
    store = VerdictStore()
    e = event("cam1", 1, 5)
    assert store.add(e) is True
    assert store.add(dict(e)) is False
    assert len(store) == 1


async def test_an_id_replayed_by_a_later_run_moves_to_that_run(tmp_path):
    """A restarted daemon that re-analyses a file from its start emits the previous run's ids."""
    cfg = ReviewStoreConfig(db=tmp_path / "review.db")
    a = VerdictStore(cfg)
    a.open()
    first = event("cam1", 1, 3, kind="start")
    e = event("cam1", 1, 9, score=0.9, alert="threshold")
    a.add(first)
    a.add(e)
    a.ack(e["id"], "seen")
    await a.flush()
    a.close()
    b = VerdictStore(cfg)
    b.open()
    again = dict(e, emitted_at=time.time() + 5)
    assert b.add(again) is True
    await b.flush()
    assert b.get(e["id"]).run == b.run and len(b) == 2
    # the old run's track keeps what was not replayed (its latest event is now the start)
    assert [(t.key, t.latest) for t in b.tracks()] == [((b.run, "cam1", 1), e["id"]), ((a.run, "cam1", 1), first["id"])]
    assert b.ack_of(e["id"])["note"] == "seen"
    assert b.add(dict(again)) is False
    b.close()
    rows = query_db(tmp_path / "review.db")
    assert [r["id"] for r in rows] == [first["id"], e["id"]]
    assert rows[1]["emitted_at"] == again["emitted_at"] and rows[1]["ack"]["note"] == "seen"


def test_age_retention_in_memory_and_filters():
    clock = Clock()
    store = VerdictStore(ReviewStoreConfig(max_age_s=60), clock=clock)
    old = event("cam1", 1, 5, at=clock.t - 120, alert="threshold", score=0.9)
    store.add(old)
    assert store.get(old["id"]) is None  # already too old when it arrived
    a = event("cam1", 2, 5, at=clock.t, alert="spike", score=0.9)
    b = event("cam2", 3, 5, at=clock.t, score=0.1)
    store.add(a)
    store.add(b)
    assert [s.id for s in store.events(alerts_only=True)] == [a["id"]]
    assert [s.id for s in store.events(stream="cam2")] == [b["id"]]
    assert [s.id for s in store.events(verdict="fake")] == [a["id"]]
    store.ack(a["id"])
    assert store.events(alerts_only=True, open_only=True) == []
    assert [t.track for t in store.tracks(verdict="real")] == [3]
    clock.t += 61
    store.prune()
    assert len(store) == 0 and store.tracks() == []


def test_timeline_is_bounded_by_thinning_and_keeps_its_whole_span():
    store = VerdictStore(ReviewStoreConfig(timeline_points=10, timeline_interval_s=0.1))
    for i in range(200):
        store.add_point("cam1", 1, i * 0.2, 0.4, None if i < 50 else 0.6, 0.45)
    t = store.track_info((store.run, "cam1", 1))
    assert t is not None and 5 <= len(t.points) <= 11
    assert t.points[0][0] == 0.0 and t.points[-1][0] == pytest.approx(199 * 0.2)
    assert t.gap > 0.1  # spacing doubled with every thinning
    # a point closer than the track's spacing updates the newest slot instead of adding one
    n = len(t.points)
    assert store.add_point("cam1", 1, 199 * 0.2 + 0.01, 0.4, 0.6, 0.55) is False
    assert len(t.points) == n and t.points[-1][3] == 0.55


async def test_sqlite_store_survives_a_restart(tmp_path):
    db = tmp_path / "review.db"
    cfg = ReviewStoreConfig(db=db, timeline_points=10)
    a = VerdictStore(cfg)
    a.open()
    start = event("cam1", 1, 3, kind="start", score=0.5)
    alert = event("cam1", 1, 9, score=0.9, alert="threshold")
    a.add_point("cam1", 1, 0.6, 0.5, None, 0.5)  # points may arrive before their track's first event
    a.add(start)
    for i in range(40):
        a.add_point("cam1", 1, 0.8 + i * 0.25, 0.6, 0.7, 0.65)
    a.add(alert)
    assert a.ack(alert["id"], "checked") is not None
    await a.flush()
    a.close()

    b = VerdictStore(cfg)
    assert b.run != a.run
    b.open()
    assert b.persistent and len(b) == 2
    assert b.get(alert["id"]).run == a.run  # the track keeps the identity of the run that saw it
    assert b.ack_of(alert["id"])["note"] == "checked"
    t = b.track_info((a.run, "cam1", 1))
    ta = a.track_info((a.run, "cam1", 1))
    # the db was thinned like memory (same slots; the db keeps each slot's first value, memory its newest)
    assert t is not None and len(t.points) == len(ta.points) and t.points[0] == ta.points[0]
    assert all(0 <= m[0] - d[0] < ta.gap for d, m in zip(t.points, ta.points, strict=True))
    assert [s.id for s in b.events(alerts_only=True)] == [alert["id"]]
    b.add(event("cam1", 1, 4, kind="start"))  # the new run's track 1 is another identity
    await b.flush()
    assert {k.key for k in b.tracks()} == {(a.run, "cam1", 1), (b.run, "cam1", 1)}
    b.close()

    rows = query_db(db)
    assert [r["seq_last"] for r in rows] == [3, 9, 4]  # oldest first
    assert rows[1]["ack"]["note"] == "checked" and "ack" not in rows[0]
    assert [r["id"] for r in query_db(db, alerts_only=True)] == [alert["id"]]
    assert [r["seq_last"] for r in query_db(db, limit=2)] == [9, 4]


async def test_sqlite_retention_by_count_and_age(tmp_path):
    clock = Clock()
    db = tmp_path / "review.db"
    cfg = ReviewStoreConfig(db=db, max_events=10, db_max_events=10, max_age_s=3600)
    s = VerdictStore(cfg, clock=clock)
    s.open()
    for i in range(30):
        s.add(event("cam1", i, 1, at=clock.t))
    await s.flush()
    s.close()
    s = VerdictStore(cfg, clock=clock)
    s.open()  # prunes on open
    s.close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 10
    assert [r[0] for r in con.execute("SELECT track FROM events ORDER BY seq")] == list(range(20, 30))
    con.close()
    clock.t += 7200  # everything is now older than max_age_s
    s = VerdictStore(cfg, clock=clock)
    s.open()
    assert len(s) == 0
    s.close()
    assert query_db(db) == []


async def test_fakewatch_verdicts_db_prints_json_lines(tmp_path, capsys):
    db = tmp_path / "review.db"
    s = VerdictStore(ReviewStoreConfig(db=db))
    s.open()
    s.add(event("cam1", 1, 3, score=0.2))
    s.add(event("cam2", 2, 4, score=0.9, alert="threshold"))
    await s.flush()
    s.close()
    assert main(["verdicts", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["stream_id"] for x in lines] == ["cam1", "cam2"]
    assert main(["verdicts", "--db", str(db), "--alerts", "--stream", "cam2"]) == 0
    assert [json.loads(x)["alert"] for x in capsys.readouterr().out.splitlines()] == ["threshold"]
    assert main(["verdicts", "--db", str(db), "--verdict", "real", "--max", "5"]) == 0
    assert [json.loads(x)["track_id"] for x in capsys.readouterr().out.splitlines()] == [1]
    assert main(["verdicts", "--db", str(tmp_path / "missing.db")]) == 1
    assert "review db not found" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()  # a read never creates the file
