"""A bundle's scores on prepared crops, through the serving scorers (:mod:`detectors.inference`).

Evaluation (:func:`evaluate_bundle`, metrics from :mod:`trainer.evaluate`) and calibration
(:mod:`trainer.calibrate`) score crop files written by ``fakewatch-train prepare`` with exactly what the
daemon runs: the same preprocessing, runtime selection, batching (split to the runtime's max batch),
sigmoid, embeddings and GMM. Crops are read ``batch`` at a time; the scorers are opened by :func:`open_scorers` and closed when
its ``with`` block ends.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from detectors.bundle import Bundle
from detectors.inference import Embedder, FrameScorer
from trainer.evaluate import EvalError

log = logging.getLogger("fakewatch.trainer")


def load_items(data: str | Path, splits: Sequence[str] | None = None) -> list:
    """Crop items (``trainer.torchdata.CropItem`` + ``frame``) of a prepared folder, of ``splits`` (None = all)."""
    from trainer.prepare import load_manifest
    from trainer.torchdata import crop_items

    p = Path(data)
    if not (p / "manifest.jsonl").is_file():
        raise EvalError(f"{p / 'manifest.jsonl'}: missing (expected a folder written by 'fakewatch-train prepare')")
    try:
        rows = [r for r in load_manifest(p) if splits is None or r.get("split", "all") in splits]
        items = crop_items(rows)
        for it, r in zip(items, rows):
            it.frame = int(r.get("frame", 0))  # frame index within its video (SBI-style video score)
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise EvalError(f"{p / 'manifest.jsonl'}: malformed ({e})") from e
    if not items:
        raise EvalError(f"{p / 'manifest.jsonl'}: no crops{' in split(s) ' + ','.join(splits) if splits else ''}")
    return items


def read_crops(paths: Sequence[Path]) -> list[np.ndarray]:
    """Crop files -> RGB uint8 arrays (what the face pipeline hands the scorers)."""
    import cv2

    out = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise EvalError(f"{p}: crop image missing or unreadable")
        out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return out


@contextmanager
def open_scorers(bundle: Bundle, runtime: str = "cpu") -> Iterator[tuple[FrameScorer | None, Embedder | None]]:
    """The bundle's frame scorer and embedder (None for a model it lacks), closed on exit."""
    with ExitStack() as stack:
        m = bundle.manifest
        frame = stack.enter_context(FrameScorer(bundle, runtime)) if m.frame is not None else None
        embed = stack.enter_context(Embedder(bundle, runtime)) if m.temporal is not None else None
        yield frame, embed


def _chunks(paths: Sequence[Path], batch: int, desc: str) -> Iterator[list[np.ndarray]]:
    from tqdm.auto import tqdm

    for i in tqdm(range(0, len(paths), batch), desc=desc, leave=False, disable=not sys.stderr.isatty()):
        yield read_crops(paths[i:i + batch])


def frame_probabilities(scorer: FrameScorer, paths: Sequence[Path], batch: int = 32) -> np.ndarray:
    """Fake probability per crop file, float64."""
    parts = [scorer.probabilities(c) for c in _chunks(paths, batch, "frame")]
    return np.concatenate(parts) if parts else np.zeros(0, np.float64)


def embeddings(embedder: Embedder, paths: Sequence[Path], batch: int = 32) -> np.ndarray:
    """Raw DiffFake embedding per crop file, (N, D) float32."""
    parts = [embedder.embed_raw(c) for c in _chunks(paths, batch, "embed")]
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def temporal_video_logliks(bundle: Bundle, embedder: Embedder, items: list, batch: int = 32, seed: int = 0,
                           k: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: (video uid, label, log-likelihood) for the bundle's DiffFake model over prepared crops.

    Pairs are drawn per video with :func:`trainer.difffake.make_pairs` (one generator seeded ``seed``,
    videos in sorted order), combined as the manifest says and scored by the bundle's GMM.
    """
    from detectors.difffake import GmmScorer, combine
    from trainer.difffake import make_pairs

    spec = bundle.manifest.temporal
    tracks: dict[str, list] = {}
    for it in items:
        tracks.setdefault(it.video_uid, []).append(it)
    pairable = [uid for uid in sorted(tracks) if len(tracks[uid]) >= 2]
    if len(pairable) < len(tracks):  # single images (face datasets) have no pairs: one line, not one per image
        single = sorted(set(tracks) - set(pairable))
        log.info("DiffFake: %d of %d videos/tracks have fewer than 2 crops and give no pairs (e.g. %s)",
                 len(single), len(tracks), ", ".join(single[:3]))
    flat = [it for uid in pairable for it in tracks[uid]]  # only crops that can pair are embedded
    emb = embeddings(embedder, [it.path for it in flat], batch) if flat else None
    scorer = GmmScorer.from_arrays(bundle.load_gmm())
    rng = np.random.default_rng(seed)
    vids, labels, lls = [], [], []
    start = 0
    for uid in pairable:
        n = len(tracks[uid])
        pairs = make_pairs(n, rng=rng, k=k)
        if len(pairs):
            ll = scorer.score_samples(combine(emb[start + pairs[:, 0]], emb[start + pairs[:, 1]], spec.combination))
            vids += [uid] * len(ll)
            labels += [tracks[uid][0].label] * len(ll)
            lls.append(ll)
        start += n
    return np.asarray(vids), np.asarray(labels, np.int64), (np.concatenate(lls) if lls else np.zeros(0))


# --------------------------------------------------------------------------------------------
# evaluation: a bundle on prepared test data


def group_test_sets(items: list, group_by: str = "dataset") -> dict[str, list]:
    """Test sets of crop items: per dataset, or (``dataset+method``) each fake method against all reals of its
    dataset (the FF++ per-manipulation protocol)."""
    groups: dict[str, list] = {}
    if group_by == "dataset":
        for it in items:
            groups.setdefault(it.dataset or "data", []).append(it)
        return groups
    by_ds: dict[str, list] = {}
    for it in items:
        by_ds.setdefault(it.dataset or "data", []).append(it)
    for ds, its in by_ds.items():
        reals = [it for it in its if it.label == 0]
        methods = sorted({it.method for it in its if it.label == 1})
        for m in methods or ["real"]:
            groups[f"{ds}/{m}"] = reals + [it for it in its if it.label == 1 and it.method == m]
    return groups


def evaluate_bundle(bundle, items: list, out_dir: Path, group_by: str = "dataset", batch: int = 32,
                    runtime: str = "cpu", seed: int = 0,
                    models: Sequence[str] = ("frame", "temporal")) -> list[dict[str, Any]]:
    """Score every test set with the bundle's serving scorers, write per set and model the score arrays (``scores_<model>_<set>.npz``), tables and plots, and ``metrics_all.json``.

    ``models``: which of the bundle's models to score (a model the bundle lacks is skipped either way)."""
    from trainer.evaluate import ScoreSet, write_report, write_table
    from trainer.runs import plain

    rows: list[dict[str, Any]] = []
    m = bundle.manifest
    with open_scorers(bundle, runtime) as (frame, embed):
        frame = frame if "frame" in models else None
        embed = embed if "temporal" in models else None
        for name, its in group_test_sets(items, group_by).items():
            safe = name.replace("/", "_")
            if frame is not None:
                probs = frame_probabilities(frame, [it.path for it in its], batch)
                ss = ScoreSet(name, probs, np.array([it.label for it in its]), np.array([it.video_uid for it in its]),
                              frames=np.array([int(getattr(it, "frame", 0)) for it in its]),
                              kind="probability", method=m.frame.method)
                ss.save_npz(out_dir / f"scores_frame_{safe}.npz")
                rows += [dict(r, model="frame") for r in write_report([ss], out_dir / "frame" / safe, m.frame.threshold)]
            if embed is not None:
                vids, labels, ll = temporal_video_logliks(bundle, embed, its, batch, seed)
                if ll.size:
                    ss = ScoreSet(name, -ll, labels, vids, kind="fakeness", method=m.temporal.method)
                    ss.save_npz(out_dir / f"scores_temporal_{safe}.npz")
                    rows += [dict(r, model="temporal")
                             for r in write_report([ss], out_dir / "temporal" / safe, m.temporal.threshold)]
    write_table(rows, out_dir)
    (out_dir / "metrics_all.json").write_text(json.dumps(plain(rows), indent=2) + "\n")
    return rows
