"""Decision thresholds and temporal statistics for a bundle's manifest.

All thresholds use the rule "fake iff score >= threshold" on fakeness scores (higher = more fake;
for DiffFake fakeness = -mean log-likelihood).

- :func:`threshold_at_fpr`  from validation *reals* only: the smallest threshold whose false-positive
  rate on those reals is <= ``target_fpr`` (the operating point of a daemon that must rarely flag a
  real person; needs no fakes, so it also works for DiffFake's real-only training).
- :func:`threshold_youden`  from reals + fakes: maximises TPR - FPR.
- :func:`threshold_eer`     from reals + fakes: the interpolated-ROC EER point (trainer.evaluate.eer).
- :func:`fusion_weights`    how the daemon weighs frame and temporal evidence (manifest ``fusion``): each
  component's weight is its validation video AUC minus 0.5 (normalised), 0 when it was not measured on
  at least ``min_videos`` real and fake videos or is within ``margin`` of chance.
- :func:`temporal_stats`    DiffFake: mean/std of real validation video log-likelihoods and the
  fakeness threshold at the target FPR, i.e. the fields ``threshold``, ``loglik_real_mean``,
  ``loglik_real_std`` of :class:`detectors.bundle.TemporalModelSpec`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainer.evaluate import EvalError, _check, eer


def threshold_at_fpr(real_scores, target_fpr: float = 0.01) -> float:
    """Smallest threshold t with mean(real_scores >= t) <= target_fpr (ties handled exactly)."""
    s = np.sort(np.asarray(real_scores, dtype=np.float64).ravel())[::-1]
    if s.size == 0:
        raise EvalError("threshold_at_fpr: no real validation scores")
    if not np.isfinite(s).all():
        raise EvalError("threshold_at_fpr: NaN or infinite scores")
    if not 0.0 <= target_fpr < 1.0:
        raise EvalError(f"threshold_at_fpr: target_fpr must be in [0, 1), got {target_fpr}")
    k = int(math.floor(target_fpr * s.size + 1e-9))  # reals allowed at or above the threshold
    # Just above the (k+1)-th largest real: only reals strictly greater than it are flagged (<= k of them).
    return float(np.nextafter(s[k], np.inf))


def threshold_youden(labels, scores) -> float:
    """Threshold maximising TPR - FPR (Youden's J) on labelled validation scores."""
    from sklearn.metrics import roc_curve

    y, s = _check(labels, scores)
    if y.min() == y.max():
        raise EvalError("threshold_youden: validation scores need both real and fake samples")
    fpr, tpr, thr = roc_curve(y, s)
    j = tpr - fpr
    j[~np.isfinite(thr)] = -np.inf  # the (inf) "flag nothing" point is never chosen
    return float(thr[int(np.argmax(j))])


def threshold_eer(labels, scores) -> float:
    """Threshold at the interpolated-ROC equal-error point."""
    y, _ = _check(labels, scores)
    if y.min() == y.max():
        raise EvalError("threshold_eer: validation scores need both real and fake samples")
    return eer(labels, scores)[1]


def calibrate(labels=None, scores=None, real_scores=None, mode: str = "fpr", target_fpr: float = 0.01) -> float:
    """One entry point: ``mode`` = ``fpr`` (reals only), ``youden`` or ``eer`` (reals + fakes)."""
    if mode == "fpr":
        if real_scores is None:
            y, s = _check(labels, scores)
            real_scores = s[y == 0]
        return threshold_at_fpr(real_scores, target_fpr)
    if mode == "youden":
        return threshold_youden(labels, scores)
    if mode == "eer":
        return threshold_eer(labels, scores)
    raise EvalError(f"unknown calibration mode {mode!r} (expected fpr, youden or eer)")


def temporal_stats(pair_logliks, videos, target_fpr: float = 0.05) -> dict[str, Any]:
    """DiffFake bundle fields from the pair log-likelihoods of REAL validation videos.

    ``pair_logliks[i]`` is the GMM log-likelihood of pair i, ``videos[i]`` its video (track) id.
    Returns ``{"threshold", "loglik_real_mean", "loglik_real_std", "target_fpr", "n_videos", "n_pairs"}``:

    - ``threshold`` is on video fakeness (= -mean pair log-likelihood of a video): at most
      ``target_fpr`` of the real validation videos reach it (methods.md §4.4);
    - ``loglik_real_mean`` / ``loglik_real_std`` are pair-level statistics (daemon.temporal scales
      a window's mean pair fakeness by this std, and ``threshold_z`` counts from this mean).
    """
    from trainer.evaluate import video_scores

    ll = np.asarray(pair_logliks, dtype=np.float64).ravel()
    if ll.size == 0:
        raise EvalError("temporal_stats: no real validation log-likelihoods")
    if not np.isfinite(ll).all():
        raise EvalError("temporal_stats: NaN or infinite log-likelihoods")
    vids, _, fakeness = video_scores(videos, np.zeros(ll.size, np.int64), -ll)
    return {
        "threshold": threshold_at_fpr(fakeness, target_fpr),
        "loglik_real_mean": float(ll.mean()),
        "loglik_real_std": float(ll.std(ddof=1)) if ll.size > 1 else 0.0,
        "target_fpr": float(target_fpr),
        "n_videos": int(vids.size),
        "n_pairs": int(ll.size),
    }


def fusion_weights(components: dict[str, dict[str, Any]], min_videos: int = 5, margin: float = 0.05) -> dict[str, Any]:
    """Fusion weights from measured per-component validation numbers.

    ``components``: ``{"frame": {...}, "temporal": {...}}`` (a missing model: absent), each with
    ``video_auc`` (NaN if not computable), ``n_real_videos`` and ``n_fake_videos``. A component gets
    weight ``auc - 0.5`` when measured on >= ``min_videos`` videos of each class and ``auc >= 0.5 +
    margin``, else 0 ("no measured signal gets no weight"); weights are normalised to sum to 1. When no
    component qualifies, the frame model (if any) gets weight 1 and the reason says so.
    """
    raw: dict[str, float] = {}
    why: dict[str, str] = {}
    for name, c in components.items():
        a = float(c.get("video_auc", math.nan))
        nr, nf = int(c.get("n_real_videos", 0)), int(c.get("n_fake_videos", 0))
        if nr < min_videos or nf < min_videos:
            raw[name], why[name] = 0.0, f"not measured: {nr} real / {nf} fake validation videos (< {min_videos})"
        elif not math.isfinite(a) or a < 0.5 + margin:
            raw[name], why[name] = 0.0, f"no signal: validation video AUC {a:.3f} < {0.5 + margin:.2f}"
        else:
            raw[name], why[name] = a - 0.5, f"validation video AUC {a:.3f} on {nr} real / {nf} fake videos"
    total = sum(raw.values())
    if total > 0:
        w = {k: v / total for k, v in raw.items()}
    elif "frame" in components:
        w = {k: (1.0 if k == "frame" else 0.0) for k in components}
        why["frame"] += "; no component qualified, so the frame model decides alone"
    else:
        w = {k: 1.0 / len(components) for k in components}
    return {"frame_weight": round(w.get("frame", 0.0), 4), "temporal_weight": round(w.get("temporal", 0.0), 4),
            "rule": f"weight = validation video AUC - 0.5, normalised; 0 below {min_videos} videos per class or "
                    f"AUC < {0.5 + margin:.2f}", "components": {k: {**components[k], "why": why[k]} for k in components}}


# --------------------------------------------------------------------------------------------
# a bundle's thresholds and fusion, measured with the serving scorers


def calibrate_bundle(bundle, items: list, target_fpr: float = 0.01, batch: int = 32, seed: int = 0,
                     pair_k: int = 8, where: str = "calibration data") -> dict[str, Any]:
    """Thresholds of a (provisional) bundle from prepared crops, scored by :mod:`trainer.bundle_scores` (the
    serving path): ``frame_calibration`` (threshold at ``target_fpr`` on the real crops; ``frame_val`` too
    when the data has fakes) and ``temporal_calibration`` (:func:`temporal_stats` on the real videos). The
    caller copies the thresholds into the final bundle's specs. ``where`` names the data in errors."""
    from trainer.bundle_scores import frame_probabilities, open_scorers, temporal_video_logliks
    from trainer.evaluate import ScoreSet, evaluate_set

    reals = [it for it in items if it.label == 0]
    if not reals:
        raise EvalError(f"{where}: no real crops to calibrate on")
    out: dict[str, Any] = {}
    with open_scorers(bundle) as (frame, embed):
        if frame is not None:
            p = frame_probabilities(frame, [it.path for it in items], batch)
            y = np.array([it.label for it in items])
            thr = threshold_at_fpr(p[y == 0], target_fpr)
            out["frame_calibration"] = {"threshold": thr, "target_fpr": target_fpr, "n_real_crops": int((y == 0).sum())}
            if len(set(y.tolist())) == 2:
                vids = np.array([it.video_uid for it in items])
                out["frame_val"] = evaluate_set(ScoreSet("calibration", p, y, vids), thr)
        if embed is not None:
            vids, _, ll = temporal_video_logliks(bundle, embed, reals, batch, seed, k=pair_k)
            if ll.size == 0:
                raise EvalError(f"{where}: no real video with >= 2 crops to calibrate DiffFake on")
            out["temporal_calibration"] = temporal_stats(ll, vids, target_fpr)
    return out


def fit_fusion(bundle, items: list, batch: int = 32, seed: int = 0, pair_k: int = 8, min_videos: int = 5,
               where: str = "fusion data") -> dict[str, Any]:
    """Manifest ``fusion`` from labeled validation crops (reals + fakes, grouped into videos): each model's
    video AUC measured with the serving scorers, turned into weights by :func:`fusion_weights`."""
    from trainer.bundle_scores import frame_probabilities, open_scorers, temporal_video_logliks
    from trainer.evaluate import auc, video_scores

    labels = np.array([it.label for it in items])
    if len(set(labels.tolist())) < 2:
        raise EvalError(f"{where}: fusion data needs real and fake crops")
    comps: dict[str, dict[str, Any]] = {}
    with open_scorers(bundle) as (frame, embed):
        if frame is not None:
            p = frame_probabilities(frame, [it.path for it in items], batch)
            _, vy, vs = video_scores(np.array([it.video_uid for it in items]), labels, p)
            comps["frame"] = {"video_auc": auc(vy, vs) if len(set(vy.tolist())) == 2 else float("nan"),
                              "n_real_videos": int((vy == 0).sum()), "n_fake_videos": int((vy == 1).sum())}
        if embed is not None:
            vids, vlab, ll = temporal_video_logliks(bundle, embed, items, batch, seed, k=pair_k)
            per: dict[str, list] = {}
            for v, y, x in zip(vids, vlab, ll):
                per.setdefault(v, [int(y), []])[1].append(float(x))
            vy = np.array([y for y, _ in per.values()], int)
            vs = np.array([-np.mean(x) for _, x in per.values()])  # fakeness = -mean pair log-likelihood
            comps["temporal"] = {"video_auc": auc(vy, vs) if vy.size and len(set(vy.tolist())) == 2 else float("nan"),
                                 "n_real_videos": int((vy == 0).sum()), "n_fake_videos": int((vy == 1).sum())}
    return fusion_weights(comps, min_videos)
