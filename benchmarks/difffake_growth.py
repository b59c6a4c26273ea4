"""How DiffFake's signal grows with the number of real training videos (issue: real videos are its limit).

    .venv/bin/python benchmarks/difffake_growth.py BUNDLE SPLIT FAKES_DEV_PREPARED [--out DIR]

Embeds, once, 32 frames of every real video of ``SPLIT`` (the identity split's 12 train / 2 val / 4 test
videos) and every fake video of the prepared fakes_dev crops with the bundle's DiffFake embedder (the
serving ONNX model), then for n = 2, 4, ..., 12 train videos (``--repeats`` random subsets each) fits the
bundle recipe's GMM (diagonal, 1 component, (a-b)^2 pairs) and scores video fakeness = -mean pair
log-likelihood of the 6 held-out real videos (val + test) against the fakes_dev fake videos (validation
only). Prints and writes a table (AUC mean / min / max over subsets) and ``growth.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("split", type=Path)
    ap.add_argument("fakes", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "difffake-growth")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    from detectors.bundle import load_bundle
    from detectors.difffake import GmmScorer
    from detectors.inference import Embedder
    from trainer.bundle_scores import embeddings
    from trainer.difffake import fit_gmm_on_embeddings, pair_vectors
    from trainer.evaluate import auc
    from trainer.prepare import load_manifest

    b = load_bundle(a.bundle)
    rows = [r for r in load_manifest(a.split) if str(r.get("identity", "")).startswith("videos/")]
    fd = [r for r in load_manifest(a.fakes) if int(r["label"]) == 1]
    groups: dict[tuple[str, str, int], list[Path]] = {}
    for r in rows:
        groups.setdefault((r["split"], r["video_uid"], 0), []).append(Path(r["path"]))
    for r in fd:
        groups.setdefault(("fakes_dev/" + r["method"], r["video_uid"], 1), []).append(Path(r["path"]))
    groups = {k: sorted(v) for k, v in groups.items() if len(v) >= 2}
    keys = sorted(groups)
    flat = [p for k in keys for p in groups[k]]
    with Embedder(b, "cpu") as embedder:
        emb = embeddings(embedder, flat, 32)
    E, i = {}, 0
    for k in keys:
        E[k] = emb[i:i + len(groups[k])]
        i += len(groups[k])
    train = [k for k in keys if k[0] == "train"]
    held_real = [k for k in keys if k[0] in ("val", "test")]
    fakes = [k for k in keys if k[2] == 1]
    cfg = {"seed": 0, "pair_k": 8, "combination": b.manifest.temporal.combination, "differential": True,
           "n_components": 1, "covariance_type": "diag", "init_params": "kmeans", "max_iter": 250, "reg_covar": 1e-6}
    rng = np.random.default_rng(0)
    out: list[dict] = []

    def fakeness(scorer: GmmScorer, e: np.ndarray) -> float:
        v = pair_vectors(e, 8, cfg["combination"], np.random.default_rng(1))
        return float(-scorer.score_samples(v).mean())

    for n in range(2, len(train) + 1, 2):
        aucs = []
        for rep in range(a.repeats if n < len(train) else 1):
            pick = [train[j] for j in rng.choice(len(train), n, replace=False)]
            scorer = fit_gmm_on_embeddings([E[k] for k in pick], cfg)
            y = np.array([0] * len(held_real) + [1] * len(fakes))
            s = np.array([fakeness(scorer, E[k]) for k in held_real + fakes])
            aucs.append(auc(y, s))
        out.append({"train_videos": n, "auc_mean": float(np.mean(aucs)), "auc_min": float(np.min(aucs)),
                    "auc_max": float(np.max(aucs)), "subsets": len(aucs)})
        print(f"n={n:2d}  video AUC {np.mean(aucs):.3f} (min {np.min(aucs):.3f}, max {np.max(aucs):.3f}, {len(aucs)} subsets)",
              flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "growth.json").write_text(json.dumps({"rows": out, "held_out_real_videos": len(held_real),
                                                   "fake_videos": len(fakes), "bundle": str(a.bundle)}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = [r["train_videos"] for r in out]
    ax.plot(xs, [r["auc_mean"] for r in out], "o-")
    ax.fill_between(xs, [r["auc_min"] for r in out], [r["auc_max"] for r in out], alpha=0.2)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("real training videos")
    ax.set_ylabel("video AUC (held-out reals vs fakes_dev)")
    fig.tight_layout()
    fig.savefig(a.out / "growth.png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
