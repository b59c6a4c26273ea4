"""Temporal (DiffFake streaming state) and fusion (scores, hysteresis, alerts, events)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.mixture import GaussianMixture

from daemon.events import event_id
from daemon.fusion import FusionConfig, Observation, StreamFusion, calibrate_frame
from daemon.temporal import StreamTemporal, TemporalConfig, TemporalModel
from detectors.bundle import TemporalModelSpec
from detectors.difffake import GmmScorer, combine

DIM = 8


def _identity_walk(n: int, seed: int, jitter: float = 0.02) -> np.ndarray:
    """Embeddings of one 'real' identity: a fixed point plus small natural noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=DIM)
    return (base + jitter * rng.normal(size=(n, DIM))).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> TemporalModel:
    rng = np.random.default_rng(0)
    pairs = []
    for ident in range(30):
        e = _identity_walk(12, ident)
        i, j = rng.integers(0, 12, 40), rng.integers(0, 12, 40)
        keep = i != j
        pairs.append(combine(e[i[keep]], e[j[keep]]))
    x = np.concatenate(pairs)
    gmm = GaussianMixture(2, covariance_type="full", random_state=0, reg_covar=1e-5).fit(x)
    ll = gmm.score_samples(x)
    spec = TemporalModelSpec(
        method="difffake", backbone="test", pair_gap_s=[0.5, 6.0],
        loglik_real_mean=float(ll.mean()), loglik_real_std=float(ll.std()),
        threshold=float(-np.percentile(ll, 5)),
    )
    return TemporalModel(spec, GmmScorer.from_sklearn(gmm), TemporalConfig(sample_fps=2.0, horizon_s=8.0,
                                                                           pairs_per_sample=3, window_s=4.0))


def _feed(st: StreamTemporal, track: int, emb: np.ndarray, fps: float = 10.0):
    out = []
    for i, e in enumerate(emb):
        pts = i / fps
        if st.wants_sample(track, pts):
            out.append((pts, st.add(track, pts, e)))
    return out


def test_sampling_rate_and_pair_gaps(model: TemporalModel):
    st = StreamTemporal(model, "cam")
    emb = _identity_walk(120, 1)
    results = _feed(st, 7, emb)  # 12 s at 10 fps
    pts_sampled = [p for p, _ in results]
    # ~2 samples per second, never adjacent frames
    assert 20 <= len(pts_sampled) <= 26
    assert min(np.diff(pts_sampled)) >= 0.45
    # the first sample(s) cannot form pairs (no older sample within the gap); later ones do
    assert results[0][1].new_pairs == 0 and results[0][1].score is None
    assert results[-1][1].new_pairs == 3 and results[-1][1].score is not None
    # ring buffer keeps only the horizon
    t = st.tracks[7]
    assert t.samples[-1][0] - t.samples[0][0] <= 8.0


def test_partners_respect_trained_gap(model: TemporalModel):
    st = StreamTemporal(model, "cam")
    seen: list[float] = []
    real_loglik = model.loglik

    # wrap: record the gap of every partner chosen
    def loglik(newest, partners, _st=st):
        t = _st.tracks[1]
        for p in partners:
            for pts, e in t.samples:
                if e is p or np.array_equal(e, p):
                    seen.append(_st._now - pts)
                    break
        return real_loglik(newest, partners)

    model_loglik = model.loglik
    model.loglik = loglik  # type: ignore[method-assign]
    try:
        emb = _identity_walk(150, 3)
        for i, e in enumerate(emb):
            pts = i / 10.0
            st._now = pts  # type: ignore[attr-defined]
            if st.wants_sample(1, pts):
                st.add(1, pts, e)
    finally:
        model.loglik = model_loglik  # type: ignore[method-assign]
    assert len(seen) > 20
    assert min(seen) >= 0.5 - 1e-9 and max(seen) <= 6.0 + 1e-9
    assert len({round(g, 3) for g in seen}) > 3  # varied gaps, like training


def test_deterministic_and_snapshot_roundtrip(model: TemporalModel):
    emb = _identity_walk(100, 5)
    a = StreamTemporal(model, "cam")
    b = StreamTemporal(model, "cam")
    ra = _feed(a, 3, emb)
    rb = _feed(b, 3, emb)
    assert [r.mean_loglik for _, r in ra] == [r.mean_loglik for _, r in rb]
    # another stream/track id draws other partners (per-track RNG), same data
    c = StreamTemporal(model, "other")
    rc = _feed(c, 3, emb)
    assert [r.mean_loglik for _, r in rc] != [r.mean_loglik for _, r in ra]

    # snapshot halfway, restore into a fresh state (through JSON), continue: identical to uninterrupted
    half = StreamTemporal(model, "cam")
    for i in range(50):
        pts = i / 10.0
        if half.wants_sample(3, pts):
            half.add(3, pts, emb[i])
    snap = json.loads(json.dumps(half.state_dict()))
    resumed = StreamTemporal(model, "cam")
    resumed.load_state_dict(snap)
    out = []
    for i in range(50, 100):
        pts = i / 10.0
        if resumed.wants_sample(3, pts):
            out.append(resumed.add(3, pts, emb[i]).mean_loglik)
    assert out == [r.mean_loglik for p, r in ra if p >= 5.0 - 1e-9]
    with pytest.raises(ValueError, match="version"):
        resumed.load_state_dict({"version": 99})


def test_fake_identity_scores_higher(model: TemporalModel):
    real = _identity_walk(120, 11)
    rng = np.random.default_rng(9)
    # 'fake': the change between frames is concentrated in a few features (a generator's
    # artefact), unlike the isotropic natural change the GMM was fitted on
    mask = np.full(DIM, 0.2, np.float32)
    mask[0] = 10.0
    fake = (real.mean(0) + 0.02 * rng.normal(size=(120, DIM)) * mask).astype(np.float32)
    s_real = _feed(StreamTemporal(model, "s"), 1, real)[-1][1].score
    s_fake = _feed(StreamTemporal(model, "s"), 1, fake)[-1][1].score
    assert s_real is not None and s_fake is not None
    assert s_real < 0.5 < s_fake


def test_temporal_config_validation():
    with pytest.raises(ValidationError):
        TemporalConfig(pair_gap_s=(5.0, 1.0))
    with pytest.raises(ValidationError):
        TemporalConfig(bogus=1)


# fusion ------------------------------------------------------------------------------------------

def _run(fusion: StreamFusion, probs: list[float], fps: float = 5.0, track: int = 1, start_at: int = 0):
    events = []
    for i, p in enumerate(probs):
        fusion.observe(track, Observation(seq=i, pts=i / fps, frame_prob=p))
        if i == start_at:
            ev = fusion.start(track)
        else:
            ev = fusion.maybe_update(track)
        if ev is not None:
            events.append(ev)
    return events


def test_calibrate_frame_maps_threshold_to_half():
    assert calibrate_frame(0.2, 0.2) == pytest.approx(0.5)
    assert calibrate_frame(0.0, 0.2) == 0.0 and calibrate_frame(1.0, 0.2) == 1.0
    assert calibrate_frame(0.1, 0.2) < 0.5 < calibrate_frame(0.3, 0.2)


def test_hysteresis_and_verdicts():
    cfg = FusionConfig(frame_ema_alpha=1.0, min_frames=1, threshold_high=0.7, threshold_low=0.3,
                       spike_delta=0.99, update_interval_s=100)
    f = StreamFusion("cam", cfg, frame_threshold=0.5)
    # score sequence (alpha=1 -> score = calibrated prob = prob with threshold 0.5)
    probs = [0.1, 0.5, 0.8, 0.5, 0.35, 0.2, 0.5]
    verdicts = []
    for i, p in enumerate(probs):
        verdicts.append(f.observe(1, Observation(i, i * 0.2, frame_prob=p)).verdict)
    assert verdicts == ["real", "uncertain", "fake", "fake", "fake", "real", "uncertain"]


def test_min_frames_keeps_uncertain():
    f = StreamFusion("cam", FusionConfig(min_frames=4, frame_ema_alpha=1.0))
    vs = [f.observe(1, Observation(i, i * 0.2, frame_prob=0.99)).verdict for i in range(5)]
    assert vs == ["uncertain"] * 3 + ["fake", "fake"]


def test_alert_threshold_spike_sustained():
    cfg = FusionConfig(frame_ema_alpha=0.5, min_frames=1, threshold_high=0.6, threshold_low=0.4,
                       spike_delta=0.3, sustained_s=2.0, alert_cooldown_s=100, update_interval_s=100)
    f = StreamFusion("cam", cfg, frame_threshold=0.5)
    probs = [0.1] * 5 + [0.95] * 20  # real, then a sudden jump that stays
    events = _run(f, probs, fps=5.0)
    alerts = [(e.event, e.alert, e.seq_last) for e in events if e.alert]
    kinds = [a for _, a, _ in alerts]
    assert "spike" in [k for e in events for k in e.evidence["alerts"]]  # spike on the jump frame
    jump = [e for e in events if e.seq_last == 5]
    assert jump and "spike" in jump[0].evidence["alerts"]
    assert "threshold" in kinds
    sus = [e for e in events if e.alert == "sustained"]
    assert len(sus) == 1  # once per episode
    th = [e for e in events if "threshold" in e.evidence["alerts"]][0]
    assert sus[0].pts_last - th.pts_last >= 2.0 - 1e-9
    assert events[-1].verdict == "fake"


def test_no_alerts_for_real_track_and_event_sequence():
    cfg = FusionConfig(update_interval_s=1.0)
    f = StreamFusion("cam", cfg, frame_threshold=0.5, models={"frame": "tiny@1"})
    events = _run(f, [0.05] * 30, fps=5.0, start_at=2)
    end = f.end(1)
    assert end is not None
    events.append(end)
    kinds = [e.event for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("update") >= 4
    assert all(e.alert is None for e in events)
    assert events[-1].verdict == "real" and events[-1].frames == 30
    assert events[0].models == {"frame": "tiny@1"}
    # deterministic ids: hash of stream, track, kind, last seq and the event's content
    assert events[0].id != event_id("cam", 1, "start", events[0].seq_last)  # content is part of the id
    import dataclasses

    changed = dataclasses.replace(events[0], id="", score=events[0].score + 0.1)
    assert changed.id != events[0].id  # same frame, different verdict content: a different event
    assert dataclasses.replace(events[0], id="").id == events[0].id
    again = StreamFusion("cam", cfg, frame_threshold=0.5, models={"frame": "tiny@1"})
    ev2 = _run(again, [0.05] * 30, fps=5.0, start_at=2)
    ev2.append(again.end(1))
    assert [e.id for e in ev2] == [e.id for e in events]
    assert len({e.id for e in events}) == len(events)
    # updates are spaced by the interval of stream time (or verdict changes)
    ups = [e for e in events if e.event == "update"]
    assert all(b.pts_last - a.pts_last >= 1.0 - 1e-9 or a.verdict != b.verdict for a, b in zip(ups, ups[1:]))


def test_unconfirmed_track_ends_silently_and_snapshot():
    f = StreamFusion("cam", FusionConfig())
    f.observe(5, Observation(0, 0.0, frame_prob=0.9))
    assert f.maybe_update(5) is None  # not started: no updates
    snap = json.loads(json.dumps(f.state_dict()))
    g = StreamFusion("cam", FusionConfig())
    g.load_state_dict(snap)
    assert g.tracks[5].frames == 1
    assert g.end(5) is None and 5 not in g.tracks


def test_temporal_only_and_fused_weights():
    cfg = FusionConfig(frame_weight=1.0, temporal_weight=1.0, frame_ema_alpha=1.0, min_frames=1)
    f = StreamFusion("cam", cfg, frame_threshold=0.5)
    t = f.observe(1, Observation(0, 0.0, frame_prob=None, temporal=0.9))
    assert t.score == pytest.approx(0.9)
    t = f.observe(1, Observation(1, 0.5, frame_prob=0.1, temporal=0.9))
    assert t.score == pytest.approx(0.5)


def test_fusion_config_validation():
    with pytest.raises(ValidationError, match="threshold_low"):
        FusionConfig(threshold_low=0.8, threshold_high=0.5)
    with pytest.raises(ValidationError):
        FusionConfig(frame_weight=0, temporal_weight=0)
