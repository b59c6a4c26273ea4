"""Per-stream face tracker: synthetic motion, lifecycle, snapshots, and real video through CenterFace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from daemon.tracking import Tracker, TrackerConfig, TrackUpdate, iou_matrix
from detectors.faces.types import Face


def face(x: float, y: float, size: float = 80.0, emb: np.ndarray | None = None, score: float = 0.9) -> Face:
    return Face(
        box=np.array([x, y, x + size, y + size], np.float32),
        score=score,
        kps=np.zeros((5, 2), np.float32),
        embedding=None if emb is None else emb.astype(np.float32),
    )


def unit(rng: np.random.Generator, d: int = 64) -> np.ndarray:
    v = rng.standard_normal(d)
    return v / np.linalg.norm(v)


def ids_by_face(u: TrackUpdate) -> dict[int, int]:
    return dict(u.assignments)


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], float)
    m = iou_matrix(a, b)
    np.testing.assert_allclose(m, [[1.0, 50 / 150], [0.0, 0.0]])


def test_confirmed_after_min_hits_and_tentative_not_reported():
    tr = Tracker(TrackerConfig(min_hits=3))
    u1 = tr.update(0, 0.0, [face(100, 100)])
    u2 = tr.update(1, 0.04, [face(104, 100)])
    assert u1 == TrackUpdate() and u2 == TrackUpdate()
    u3 = tr.update(2, 0.08, [face(108, 100)])
    assert u3.started == [1] and u3.assignments == [(0, 1)] and u3.ended == []
    u4 = tr.update(3, 0.12, [face(112, 100)])
    assert u4.started == [] and u4.assignments == [(0, 1)]
    assert tr.active_ids() == [1]
    info = tr.info(1)
    assert info is not None and info.hits == 4 and info.first_seq == 0 and info.last_seq == 3


def test_ends_after_max_misses_analysed_frames():
    tr = Tracker(TrackerConfig(min_hits=1, max_misses=4))
    assert tr.update(0, 0.0, [face(100, 100)]).started == [1]
    ended_at = None
    for k in range(1, 10):
        u = tr.update(k, k * 0.2, [])
        if u.ended:
            assert u.ended == [1]
            ended_at = k
            break
    assert ended_at == 4
    assert tr.active_ids() == [] and len(tr) == 0


def test_lost_track_is_refound_within_max_misses():
    tr = Tracker(TrackerConfig(min_hits=1, max_misses=5))
    tr.update(0, 0.0, [face(100, 100)])
    tr.update(1, 0.1, [])
    tr.update(2, 0.2, [])
    u = tr.update(3, 0.3, [face(106, 102)])
    assert u.assignments == [(0, 1)] and u.started == [] and u.ended == []


def test_max_lost_seconds():
    tr = Tracker(TrackerConfig(min_hits=1, max_misses=100, max_lost_s=1.0))
    tr.update(0, 0.0, [face(100, 100)])
    assert tr.update(10, 0.5, []).ended == []
    assert tr.update(30, 1.2, []).ended == [1]


def test_tentative_track_dropped_silently():
    tr = Tracker(TrackerConfig(min_hits=3, tentative_max_misses=1))
    tr.update(0, 0.0, [face(100, 100)])
    u = tr.update(1, 0.1, [])
    assert u == TrackUpdate() and len(tr) == 0
    assert tr.end_all() == []


def _crossing(n: int, with_emb: bool, seed: int = 0):
    """Two faces moving in opposite directions on nearly the same row; they cross mid-clip."""
    rng = np.random.default_rng(seed)
    ea, eb = unit(rng), unit(rng)
    for k in range(n):
        xa, xb = 40 + 20 * k, 40 + 20 * (n - 1 - k)
        noise = lambda: unit(rng) * 0.3  # noqa: E731
        fa = face(xa, 100, emb=(ea + noise()) if with_emb else None)
        fb = face(xb, 112, emb=(eb + noise()) if with_emb else None)
        yield k, ([fa, fb] if k % 2 == 0 else [fb, fa]), (0 if k % 2 == 0 else 1)


@pytest.mark.parametrize("with_emb", [True, False])
def test_crossing_paths_keep_ids(with_emb):
    tr = Tracker(TrackerConfig(min_hits=2))
    a_ids, b_ids = set(), set()
    for k, faces, a_index in _crossing(30, with_emb):
        u = tr.update(k, k / 10, faces)
        got = ids_by_face(u)
        if k >= 1:
            assert len(got) == 2, f"frame {k}: {u}"
            a_ids.add(got[a_index])
            b_ids.add(got[1 - a_index])
        assert u.ended == []
    assert len(a_ids) == 1 and len(b_ids) == 1 and a_ids != b_ids


def test_embedding_gate_refuses_overlapping_stranger():
    rng = np.random.default_rng(1)
    ea, eb = unit(rng), unit(rng)
    tr = Tracker(TrackerConfig(min_hits=1))
    assert tr.update(0, 0.0, [face(100, 100, emb=ea)]).started == [1]
    # same place, different person: not the same track
    u = tr.update(1, 0.1, [face(102, 100, emb=eb)])
    assert u.assignments == [(0, 2)] and u.started == [2]


def test_relink_of_lost_track_by_embedding():
    rng = np.random.default_rng(2)
    ea = unit(rng)
    tr = Tracker(TrackerConfig(min_hits=1, max_misses=10))
    tr.update(0, 0.0, [face(50, 50, emb=ea)])
    for k in (1, 2, 3):
        tr.update(k, k / 10, [])
    # reappears far away (no overlap) with the same identity: re-linked, not a new track
    u = tr.update(4, 0.4, [face(500, 300, emb=ea + 0.1 * unit(rng))])
    assert u.assignments == [(0, 1)] and u.started == []
    # without embeddings the same jump would start a new track
    tr2 = Tracker(TrackerConfig(min_hits=1, max_misses=10))
    tr2.update(0, 0.0, [face(50, 50)])
    assert tr2.update(1, 0.1, [face(500, 300)]).started == [2]


def test_max_tracks_bound_evicts_lost_then_refuses():
    tr = Tracker(TrackerConfig(min_hits=1, max_tracks=2, max_misses=50))
    tr.update(0, 0.0, [face(0, 0), face(200, 0)])
    assert tr.active_ids() == [1, 2]
    # track 1 goes missing; a third face arrives: the lost track is ended to make room
    u = tr.update(1, 0.1, [face(200, 0), face(400, 0)])
    assert u.ended == [1] and u.started == [3] and len(tr) == 2
    # all held tracks are live: a further face is not tracked
    u = tr.update(2, 0.2, [face(200, 0), face(400, 0), face(600, 0)])
    assert u.started == [] and len(tr) == 2 and sorted(i for _, i in u.assignments) == [2, 3]


def test_ids_are_monotonic_and_end_all():
    tr = Tracker(TrackerConfig(min_hits=1, max_misses=1))
    tr.update(0, 0.0, [face(0, 0)])
    assert tr.update(1, 0.1, []).ended == [1]
    assert tr.update(2, 0.2, [face(0, 0)]).started == [2]  # never reuses an id
    tr.update(3, 0.3, [face(0, 0), face(300, 0)])
    assert sorted(tr.end_all()) == [2, 3]
    assert len(tr) == 0 and tr.update(4, 0.4, [face(0, 0)]).started == [4]


def test_snapshot_roundtrip_continues_ids():
    cfg = TrackerConfig(min_hits=2)
    frames = list(_crossing(20, with_emb=True, seed=3))
    ref = Tracker(cfg)
    ref_out = [ref.update(k, k / 10, fs) for k, fs, _ in frames]

    first = Tracker(cfg)
    for k, fs, _ in frames[:10]:
        first.update(k, k / 10, fs)
    snap = json.loads(json.dumps(first.state_dict()))  # must be JSON-serialisable as is
    restored = Tracker(cfg)
    restored.load_state_dict(snap)
    out = [restored.update(k, k / 10, fs) for k, fs, _ in frames[10:]]
    assert out == ref_out[10:]
    # a new face after the restore gets the next id, not a reused one
    u = restored.update(20, 2.0, [face(900, 900)])
    u = restored.update(21, 2.1, [face(900, 900)])
    assert u.started == [3]


def test_bad_snapshot_and_config_are_refused():
    with pytest.raises(ValueError, match="version"):
        Tracker().load_state_dict({"version": 99})
    with pytest.raises(ValueError, match="malformed"):
        Tracker().load_state_dict({"version": 1, "tracks": [{"key": 1}], "next_id": 1, "next_key": 1, "step": 0})
    with pytest.raises(ValidationError):
        TrackerConfig(min_hits=0)
    with pytest.raises(ValidationError):
        TrackerConfig(unknown=1)


# ---------------------------------------------------------------- real video


def _decode(path: Path, every: int = 1, limit: int | None = None):
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        n = 0
        for i, fr in enumerate(c.decode(s)):
            if i % every:
                continue
            yield i, float(fr.time or 0.0), fr.to_ndarray(format="rgb24")
            n += 1
            if limit is not None and n >= limit:
                return


@pytest.fixture(scope="module")
def pipeline():
    from detectors.faces.centerface import CenterFaceDetector
    from detectors.faces.pipeline import FacePipeline

    return FacePipeline(CenterFaceDetector(det_max_side=384), crop_size=128)  # faces are large: 384 is plenty


def _run(pipeline, frames, cfg: TrackerConfig):
    tr = Tracker(cfg)
    started, ended, assigned, n = [], [], [], 0
    for seq, pts, img in frames:
        obs = pipeline.process(img)
        u = tr.update(seq, pts, [o.face for o in obs])
        started += u.started
        ended += u.ended
        assigned.append([tid for _, tid in u.assignments])
        n += 1
    ended += tr.end_all()
    return started, ended, assigned, n


def test_moving_astronaut_clip_is_one_track(pipeline, sample_clip):
    cfg = TrackerConfig(min_hits=3)
    started, ended, assigned, n = _run(pipeline, _decode(sample_clip, every=2), cfg)
    assert n == 25
    assert started == [1] and ended == [1]
    # every analysed frame after confirmation carries exactly that track
    assert assigned[: cfg.min_hits - 1] == [[]] * (cfg.min_hits - 1)
    assert all(a == [1] for a in assigned[cfg.min_hits - 1 :])


@pytest.mark.parametrize(
    "rel", ["videos/video_retalking_examples/1.mp4", "videos/liveportrait_driving/d12.mp4"]
)
def test_shared_videos_give_one_stable_track(pipeline, shared_data, rel):
    path = shared_data / rel
    if not path.is_file():
        pytest.skip(f"{rel} not in shared data")
    cfg = TrackerConfig(min_hits=3)
    # every 5th frame (5-6 analysed fps): the head moves a lot between analysed frames
    started, ended, assigned, n = _run(pipeline, _decode(path, every=5, limit=30), cfg)
    assert n >= 20
    assert started == [1] and ended == [1]
    covered = sum(1 for a in assigned if a == [1])
    assert covered >= n - (cfg.min_hits - 1) - 1
