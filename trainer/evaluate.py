"""Evaluation metrics, tables and plots (methods.md §7).

Conventions (methods.md §0): label 1 = fake, 0 = real; every score is a *fakeness* (higher = more
fake). DiffFake log-likelihoods (higher = more real) are negated before they reach this module.

Metrics per test set (:func:`evaluate_set`):

- ``frame_auc``   ROC AUC over all frame (or, for DiffFake, pair) scores against their video label.
- ``video_auc``   ROC AUC over videos, a video's score = mean of its frame scores (DeepfakeBench).
- ``video_auc_sbi`` SBI-style: per frame the max over its faces, then the mean over frames; only
  when frame indices are given (otherwise NaN). The SBI "box area >= 1/2 of the largest" face filter
  happens at detection time and is not repeated here.
- ``eer``         interpolated-ROC EER: the root of ``1 - x - TPR(x)`` on the linearly interpolated
  ROC (scipy ``brentq``; DiffusionFake's variant). ``eer_vertex`` is DeepfakeBench's variant (FPR at
  the ROC vertex minimising ``|FNR - FPR|``), reported beside it; ``eer_variant`` names the first.
- ``ap``          scikit-learn ``average_precision_score`` (step-wise), fake positive.
- ``acc@0.5``     fraction correct with "fake iff score >= 0.5" (only for probability scores).
- ``acc@cal``     the same at a threshold calibrated on validation data (trainer.calibrate).
- ``binarised_auc`` DiffFake's published-code quirk (methods.md §4.4): real = positive, binarise the
  video scores at the Youden threshold, then ROC AUC of the 0/1 predictions (= best balanced
  accuracy). Reported separately from, never instead of, ``video_auc``.

Edge cases: a set with a single class (only reals or only fakes) has no ROC; ``auc``, ``eer``,
``binarised_auc`` are then NaN (and ``ap`` NaN when there are no fakes), with a warning logged.
Accuracies stay defined. Empty input raises :class:`EvalError`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EER_VARIANT = "interpolated-roc-brentq"
COLUMNS = (
    "frame_auc",
    "video_auc",
    "tpr@1%fpr",
    "video_tpr@1%fpr",
    "video_auc_sbi",
    "eer",
    "eer_vertex",
    "ap",
    "acc@0.5",
    "acc@cal",
    "binarised_auc",
)


class EvalError(ValueError):
    """Scores or labels that cannot be evaluated (empty, mismatched lengths, mixed video labels)."""


# --------------------------------------------------------------------------------------------
# elementary metrics


def _check(labels: np.ndarray | Sequence, scores: np.ndarray | Sequence) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.size == 0:
        raise EvalError("no scores to evaluate")
    if y.shape != s.shape:
        raise EvalError(f"labels and scores differ in length ({y.size} vs {s.size})")
    if not np.isin(y, (0, 1)).all():
        raise EvalError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(s).all():
        raise EvalError(f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    return y, s


def _two_classes(y: np.ndarray, what: str) -> bool:
    if y.min() == y.max():
        log.warning("%s: only %s samples, metric undefined -> NaN", what, "fake" if y[0] else "real")
        return False
    return True


def auc(labels, scores) -> float:
    """ROC AUC (fake positive); NaN with a warning when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y, s = _check(labels, scores)
    if not _two_classes(y, "auc"):
        return math.nan
    return float(roc_auc_score(y, s))


def eer(labels, scores) -> tuple[float, float]:
    """Interpolated-ROC EER and its threshold: root of ``1 - x - TPR(x)`` (brentq), DiffusionFake's variant.

    Returns ``(eer, threshold)``; NaNs when only one class is present.
    """
    from scipy.optimize import brentq
    from sklearn.metrics import roc_curve

    y, s = _check(labels, scores)
    if not _two_classes(y, "eer"):
        return math.nan, math.nan
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    # np.interp needs increasing x; for vertical ROC segments (equal FPR) it takes the last point,
    # i.e. the top of the segment, which is what the interpolated curve is at that FPR.
    value = float(brentq(lambda x: 1.0 - x - np.interp(x, fpr, tpr), 0.0, 1.0))
    finite = np.isfinite(thr)
    threshold = float(np.interp(value, fpr[finite], thr[finite]))
    return value, threshold


def eer_vertex(labels, scores) -> float:
    """DeepfakeBench's EER variant: FPR at the ROC vertex minimising ``|FNR - FPR|``."""
    from sklearn.metrics import roc_curve

    y, s = _check(labels, scores)
    if not _two_classes(y, "eer_vertex"):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s)
    return float(fpr[np.nanargmin(np.abs((1 - tpr) - fpr))])


def average_precision(labels, scores) -> float:
    """Step-wise AP (scikit-learn), fake positive; NaN when there are no fakes."""
    from sklearn.metrics import average_precision_score

    y, s = _check(labels, scores)
    if y.sum() == 0:
        log.warning("ap: no fake samples, metric undefined -> NaN")
        return math.nan
    return float(average_precision_score(y, s))


def accuracy(labels, scores, threshold: float) -> float:
    """Fraction correct with the rule "fake iff score >= threshold"."""
    y, s = _check(labels, scores)
    if not math.isfinite(threshold):
        return math.nan
    return float(np.mean((s >= threshold).astype(np.int64) == y))


def tpr_at_fpr(labels, scores, fpr: float = 0.01) -> float:
    """Share of fakes flagged at the threshold that flags a fraction ``fpr`` of the reals (the reals'
    ``1 - fpr`` quantile, strictly above); NaN without both classes."""
    y, s = _check(labels, scores)
    if not _two_classes(y, "TPR@FPR"):
        return math.nan
    thr = float(np.quantile(s[y == 0], 1.0 - fpr))
    return float((s[y == 1] > thr).mean())


def binarised_auc(labels, scores) -> float:
    """DiffFake's evaluation quirk (methods.md §4.4), reproduced faithfully.

    The published code labels reals 1, uses log-likelihood (higher = real), picks the threshold
    maximising TPR - FPR, binarises the scores at it and computes ROC AUC of the 0/1 predictions.
    Here ``scores`` are fakeness (= -log-likelihood) and ``labels`` fake = 1, so both are flipped first.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y, s = _check(labels, scores)
    if not _two_classes(y, "binarised_auc"):
        return math.nan
    y_real, s_real = 1 - y, -s
    fpr, tpr, thr = roc_curve(y_real, s_real)
    t = thr[int(np.argmax(tpr - fpr))]
    return float(roc_auc_score(y_real, (s_real >= t).astype(np.int64)))


# --------------------------------------------------------------------------------------------
# aggregation


def video_scores(videos, labels, scores, frames=None, sbi: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate per-frame (per-face) scores to videos.

    ``sbi=False``: video score = mean of all its scores. ``sbi=True``: per (video, frame) the max over
    faces, then the mean over frames (needs ``frames``). Returns ``(video_ids, labels, scores)``
    sorted by video id. A video whose rows disagree on the label is an error.
    """
    v = np.asarray(videos).astype(str).ravel()
    y, s = _check(labels, scores)
    if v.shape != y.shape:
        raise EvalError(f"videos and scores differ in length ({v.size} vs {y.size})")
    if sbi:
        if frames is None:
            raise EvalError("SBI-style aggregation needs frame indices")
        f = np.asarray(frames).astype(np.int64).ravel()
        if f.shape != y.shape:
            raise EvalError(f"frames and scores differ in length ({f.size} vs {y.size})")
        keys = np.char.add(np.char.add(v, "\x00"), f.astype(str))
        _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        fmax = np.full(first.size, -np.inf)
        np.maximum.at(fmax, inv, s)
        v, y, s = v[first], y[first], fmax
    ids, inv = np.unique(v, return_inverse=True)
    counts = np.bincount(inv)
    mean = np.bincount(inv, weights=s) / counts
    lab_sum = np.bincount(inv, weights=y)
    mixed = (lab_sum != 0) & (lab_sum != counts)
    if mixed.any():
        raise EvalError(f"video {ids[np.argmax(mixed)]!r} has both real and fake labels")
    return ids, (lab_sum > 0).astype(np.int64), mean


# --------------------------------------------------------------------------------------------
# one test set


@dataclass
class ScoreSet:
    """Per-frame (or per-pair) fakeness scores of one test set.

    ``kind``: ``probability`` (sigmoid outputs, ACC@0.5 defined) or ``fakeness`` (any real-valued
    score, e.g. -log-likelihood for DiffFake). ``frames`` (frame index within its video) enables the
    SBI-style video score; rows sharing (video, frame) are the faces of one frame.
    """

    name: str
    scores: np.ndarray
    labels: np.ndarray
    videos: np.ndarray
    frames: np.ndarray | None = None
    kind: str = "probability"
    method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def save_npz(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = {"scores": self.scores, "labels": self.labels, "videos": np.asarray(self.videos).astype(str)}
        if self.frames is not None:
            arrays["frames"] = self.frames
        np.savez(path, **arrays, name=self.name, kind=self.kind, method=self.method)
        return path

    @classmethod
    def load_npz(cls, path: str | Path) -> ScoreSet:
        try:
            with np.load(path) as z:
                return cls(
                    name=str(z["name"]),
                    scores=z["scores"],
                    labels=z["labels"],
                    videos=z["videos"],
                    frames=z["frames"] if "frames" in z else None,
                    kind=str(z["kind"]),
                    method=str(z["method"]),
                )
        except (OSError, KeyError, ValueError) as e:
            raise EvalError(f"{path}: not a score file written by ScoreSet.save_npz ({e})") from e


def evaluate_set(ss: ScoreSet, threshold: float | None = None) -> dict[str, Any]:
    """All §7 metrics for one score set; ``threshold`` is the calibrated one (ACC@cal)."""
    y, s = _check(ss.labels, ss.scores)
    vid, vy, vs = video_scores(ss.videos, y, s)
    row: dict[str, Any] = {
        "set": ss.name,
        "method": ss.method,
        "n_frames": int(y.size),
        "n_videos": int(vid.size),
        "n_real_videos": int((vy == 0).sum()),
        "n_fake_videos": int((vy == 1).sum()),
        "frame_auc": auc(y, s),
        "video_auc": auc(vy, vs),
        "tpr@1%fpr": tpr_at_fpr(y, s, 0.01),
        "video_tpr@1%fpr": tpr_at_fpr(vy, vs, 0.01),
        "video_auc_sbi": math.nan,
        "eer_variant": EER_VARIANT,
    }
    if ss.frames is not None:
        _, sy, sv = video_scores(ss.videos, y, s, frames=ss.frames, sbi=True)
        row["video_auc_sbi"] = auc(sy, sv)
    row["eer"], row["eer_threshold"] = eer(y, s)
    row["eer_vertex"] = eer_vertex(y, s)
    row["ap"] = average_precision(y, s)
    row["acc@0.5"] = accuracy(y, s, 0.5) if ss.kind == "probability" else math.nan
    row["threshold"] = math.nan if threshold is None else float(threshold)
    row["acc@cal"] = accuracy(y, s, threshold) if threshold is not None else math.nan
    # DiffFake's quirk is a video-level number; computed for every method, it is only *comparable*
    # to the DiffFake paper.
    row["binarised_auc"] = binarised_auc(vy, vs)
    log.info("%s: EER variant %s (DeepfakeBench vertex variant in eer_vertex)", ss.name, EER_VARIANT)
    return row


# --------------------------------------------------------------------------------------------
# reports


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def write_table(rows: list[dict[str, Any]], out_dir: str | Path, stem: str = "metrics") -> tuple[Path, Path]:
    """Markdown + CSV table, rows = test sets, columns = methods.md §7.3 (+ counts)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_col = ["model"] if any("model" in r for r in rows) else []
    cols = ["set", "method", *model_col, "n_videos", "n_frames", *COLUMNS, "threshold"]
    md = out / f"{stem}.md"
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
        *("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows),
        "",
        f"Scores: fake = positive, higher = more fake. EER: {EER_VARIANT} (eer_vertex: DeepfakeBench's ROC-vertex "
        "variant). video_auc: mean of frame scores per video; video_auc_sbi: max over faces per frame, then mean. "
        "binarised_auc: DiffFake's published-code quirk (ROC AUC of Youden-binarised video scores), not an AUC of scores.",
    ]
    md.write_text("\n".join(lines) + "\n")
    cp = out / f"{stem}.csv"
    with open(cp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return md, cp


def plot_set(ss: ScoreSet, out_dir: str | Path) -> list[Path]:
    """ROC curves (frame and video level) and a real-vs-fake score histogram, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ss.name)
    y, s = _check(ss.labels, ss.scores)
    _, vy, vs = video_scores(ss.videos, y, s)
    paths = []

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for lab, yy, sc in (("frame", y, s), ("video (mean)", vy, vs)):
        if yy.min() != yy.max():
            fpr, tpr, _ = roc_curve(yy, sc)
            ax.plot(fpr, tpr, label=f"{lab} AUC={auc(yy, sc):.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC — {ss.name}", xlim=(0, 1), ylim=(0, 1))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    p = out / f"roc_{safe}.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.histogram_bin_edges(s, bins=40)
    for lab, name in ((0, "real"), (1, "fake")):
        if (y == lab).any():
            ax.hist(s[y == lab], bins=bins, alpha=0.55, label=f"{name} (n={int((y == lab).sum())})")
    ax.set(xlabel="fakeness score" if ss.kind != "probability" else "fake probability", ylabel="count", title=f"scores — {ss.name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = out / f"hist_{safe}.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)
    return paths


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    return v


def write_report(sets: list[ScoreSet], out_dir: str | Path, threshold: float | None = None) -> list[dict[str, Any]]:
    """Evaluate every set, write ``metrics.md``, ``metrics.csv``, ``metrics.json`` and per-set PNGs."""
    out = Path(out_dir)
    rows = [evaluate_set(ss, threshold) for ss in sets]
    write_table(rows, out)
    for ss in sets:
        plot_set(ss, out)
    (out / "metrics.json").write_text(
        json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], indent=2) + "\n"
    )
    return rows
