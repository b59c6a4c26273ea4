"""trainer.evaluate / trainer.calibrate: every metric cross-checked against scikit-learn or by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from trainer import calibrate as cal
from trainer import evaluate as ev


@pytest.fixture
def synth():
    rng = np.random.default_rng(0)
    n_vid, per = 40, 6
    vlab = np.r_[np.zeros(n_vid // 2), np.ones(n_vid // 2)].astype(int)
    videos = np.repeat([f"v{i:02d}" for i in range(n_vid)], per)
    labels = np.repeat(vlab, per)
    scores = 1 / (1 + np.exp(-(rng.normal(0, 1, labels.size) + 1.2 * labels)))
    frames = np.tile(np.arange(per), n_vid)
    return videos, labels, scores, frames


def test_auc_ap_acc_match_sklearn(synth):
    _, y, s, _ = synth
    assert ev.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert ev.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert ev.accuracy(y, s, 0.5) == pytest.approx(np.mean((s >= 0.5) == y))
    assert 0.5 < ev.auc(y, s) < 1.0


def test_eer_hand_computed():
    # ROC points (0,0) (0,.5) (.5,.5) (.5,1) (1,1): 1 - x crosses the curve at x = 0.5
    y, s = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]
    e, _ = ev.eer(y, s)
    assert e == pytest.approx(0.5, abs=1e-9)
    # perfectly separated -> 0; perfectly inverted -> 1
    assert ev.eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])[0] == pytest.approx(0.0, abs=1e-9)
    assert ev.eer([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])[0] == pytest.approx(1.0, abs=1e-9)
    # 3 reals, 3 fakes, one overlap each side: ROC (0,0)(0,1/3)(0,2/3)(1/3,2/3)(1/3,1)(..): EER = 1/3
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.7, 0.6, 0.8, 0.9]
    assert ev.eer(y, s)[0] == pytest.approx(1 / 3, abs=1e-9)


def test_eer_matches_interpolated_reference(synth):
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq

    _, y, s, _ = synth
    fpr, tpr, _ = roc_curve(y, s)
    ref = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)  # DiffusionFake's code
    e, thr = ev.eer(y, s)
    assert e == pytest.approx(ref, abs=1e-6)
    # at the EER threshold FPR and FNR are both close to the EER
    fpr_t = np.mean(s[y == 0] >= thr)
    fnr_t = np.mean(s[y == 1] < thr)
    assert abs(fpr_t - e) < 0.05 and abs(fnr_t - e) < 0.05
    # DeepfakeBench's vertex variant is close but not the same definition
    assert abs(ev.eer_vertex(y, s) - e) < 0.05


def test_video_aggregation_mean_and_sbi():
    videos = ["a", "a", "a", "a", "b", "b"]
    frames = [0, 0, 1, 1, 0, 1]
    labels = [1, 1, 1, 1, 0, 0]
    scores = [0.2, 0.8, 0.6, 0.4, 0.3, 0.5]
    ids, vy, vs = ev.video_scores(videos, labels, scores)
    assert list(ids) == ["a", "b"] and list(vy) == [1, 0]
    assert vs == pytest.approx([0.5, 0.4])
    ids, vy, vs = ev.video_scores(videos, labels, scores, frames=frames, sbi=True)
    assert vs == pytest.approx([(0.8 + 0.6) / 2, 0.4])  # max over faces per frame, then mean
    with pytest.raises(ev.EvalError, match="both real and fake"):
        ev.video_scores(["a", "a"], [0, 1], [0.1, 0.2])


def test_binarised_auc_is_best_balanced_accuracy(synth):
    videos, y, s, _ = synth
    _, vy, vs = ev.video_scores(videos, y, s)
    b = ev.binarised_auc(vy, vs)
    # hand: best (TPR + TNR) / 2 over all thresholds
    best = max((np.mean(vs[vy == 1] >= t) + np.mean(vs[vy == 0] < t)) / 2 for t in np.unique(vs))
    assert b == pytest.approx(best, abs=1e-9)
    assert b != pytest.approx(ev.auc(vy, vs), abs=1e-6)  # not the same number as the true AUC


def test_single_class_gives_nan_and_empty_raises():
    y, s = [0, 0, 0], [0.1, 0.5, 0.9]
    assert math.isnan(ev.auc(y, s))
    assert math.isnan(ev.eer(y, s)[0])
    assert math.isnan(ev.average_precision(y, s))
    assert math.isnan(ev.binarised_auc(y, s))
    assert ev.accuracy(y, s, 0.5) == pytest.approx(1 / 3)
    assert ev.average_precision([1, 1], [0.2, 0.3]) == pytest.approx(1.0)
    with pytest.raises(ev.EvalError, match="no scores"):
        ev.auc([], [])
    with pytest.raises(ev.EvalError, match="differ in length"):
        ev.auc([0, 1], [0.2])
    with pytest.raises(ev.EvalError, match="NaN"):
        ev.auc([0, 1], [0.2, float("nan")])


def test_report_files(synth, tmp_path):
    videos, y, s, frames = synth
    sets = [
        ev.ScoreSet("setA", s, y, videos, frames=frames, method="anl"),
        ev.ScoreSet("only real", s[y == 0], y[y == 0], videos[y == 0], kind="fakeness"),
    ]
    p = sets[0].save_npz(tmp_path / "a.npz")
    back = ev.ScoreSet.load_npz(p)
    assert back.name == "setA" and np.array_equal(back.scores, s) and back.frames is not None
    rows = ev.write_report(sets, tmp_path / "rep", threshold=0.6)
    assert rows[0]["frame_auc"] == pytest.approx(roc_auc_score(y, s))
    assert rows[0]["acc@cal"] == pytest.approx(np.mean((s >= 0.6) == y))
    assert not math.isnan(rows[0]["video_auc_sbi"])
    assert math.isnan(rows[1]["frame_auc"]) and math.isnan(rows[1]["acc@0.5"])
    out = tmp_path / "rep"
    for f in ("metrics.md", "metrics.csv", "metrics.json", "roc_setA.png", "hist_setA.png", "hist_only_real.png"):
        assert (out / f).stat().st_size > 0, f
    md = (out / "metrics.md").read_text()
    assert "setA" in md and ev.EER_VARIANT in md
    assert (out / "roc_setA.png").read_bytes()[:4] == b"\x89PNG"


def test_calibration_thresholds(synth):
    _, y, s, _ = synth
    real = s[y == 0]
    for target in (0.0, 0.01, 0.05, 0.2):
        t = cal.threshold_at_fpr(real, target)
        assert np.mean(real >= t) <= target + 1e-12
        # smallest such threshold: the largest real below t would be flagged one step lower
        below = real[real < t]
        if below.size:
            assert np.mean(real >= below.max()) > target
    # ties: five equal reals, target 0.5 -> none of them may be flagged
    assert np.mean(np.full(5, 0.3) >= cal.threshold_at_fpr(np.full(5, 0.3), 0.5)) == 0.0
    t = cal.threshold_youden(y, s)
    fpr, tpr, thr = roc_curve(y, s)
    assert t == pytest.approx(thr[np.argmax(tpr - fpr)])
    assert cal.threshold_eer(y, s) == pytest.approx(ev.eer(y, s)[1])
    assert cal.calibrate(y, s, mode="fpr", target_fpr=0.05) == cal.threshold_at_fpr(real, 0.05)
    with pytest.raises(ev.EvalError, match="both real and fake"):
        cal.threshold_youden([0, 0], [0.1, 0.2])
    with pytest.raises(ev.EvalError, match="unknown calibration mode"):
        cal.calibrate(y, s, mode="magic")


def test_temporal_stats():
    # five real videos, two pairs each; video mean log-likelihoods -10, -12, -11, -9, -30
    ll = np.array([-9.0, -11.0, -12.0, -12.0, -10.0, -12.0, -9.0, -9.0, -29.0, -31.0])
    vids = np.repeat(["a", "b", "c", "d", "e"], 2)
    st = cal.temporal_stats(ll, vids, target_fpr=0.2)
    assert st["loglik_real_mean"] == pytest.approx(ll.mean())
    assert st["loglik_real_std"] == pytest.approx(ll.std(ddof=1))
    assert st["n_videos"] == 5 and st["n_pairs"] == 10
    video_fakeness = np.array([10.0, 12.0, 11.0, 9.0, 30.0])
    # at most 1 of 5 real videos (the outlier) reaches the threshold, and the next one just misses it
    assert np.sum(video_fakeness >= st["threshold"]) <= 1
    assert 12.0 < st["threshold"] <= 30.0
    with pytest.raises(ev.EvalError):
        cal.temporal_stats([], [])
