"""DiffFake: stage-1 embedder training (AdamW and SAM), pair formation, GMM fit + scoring, calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors.difffake import GmmScorer
from detectors.models import Embedder, export_module
from trainer import train_loop as tl
from trainer.runs import read_metrics
from trainer.difffake import (calibrate, difffake_losses, fit_difffake_gmm, fit_gmm_on_embeddings, load_embedder,
                              make_pairs, score_tracks, train_difffake_backbone)

torch.set_num_threads(1)


def _cfg(tmp_path, *over):
    return tl.load_config("difffake", tl.CONFIG_DIR / "difffake.tiny.yaml", [f"out_dir={tmp_path / 'runs'}", *over])


def test_make_pairs_follows_the_recipe():
    rng = np.random.default_rng(0)
    p = make_pairs(40, K=8, rng=rng)
    assert p.shape == (32, 2)
    assert len(set(p[:, 0])) == 32 and set(p[:, 1]).isdisjoint(set(p[:, 0]))  # base frames vs partner pool
    assert len(set(p[:, 1])) <= 8
    small = make_pairs(10, K=8, rng=rng)  # n <= 2K: half base, rest pool
    assert small.shape == (5, 2) and set(small[:, 0]).isdisjoint(set(small[:, 1]))
    assert make_pairs(1).shape == (0, 2)


@pytest.mark.parametrize("sam", [False, True])
def test_stage1_trains_and_exports_embedder(tmp_path, sam):
    cfg = _cfg(tmp_path, f"optim.sam.enabled={str(sam).lower()}")
    data = tl.SyntheticPairs(8, 32)
    ck = train_difffake_backbone(cfg, data, val_dataset=tl.SyntheticPairs(4, 32, seed=9))
    metrics = read_metrics(ck.parent)
    assert all(np.isfinite(m["total"]) for m in metrics if "total" in m)
    assert any("val_auc" in m for m in metrics) and (ck.parent / "best.pt").is_file()
    emb = load_embedder(ck)
    from detectors.models import build_embedder

    torch.manual_seed(0)  # the trainer seeds the same way, so this is the initial state
    fresh = build_embedder("tiny_cnn")
    assert isinstance(emb, Embedder)
    assert any(not torch.equal(a, b) for a, b in zip(emb.state_dict().values(), fresh.state_dict().values()))
    out = export_module(emb)(torch.zeros(3, 3, 32, 32))
    assert out.shape == (3, emb.dim) == (3, 64)


def test_stage1_loss_decreases_on_a_fixed_batch(tmp_path):
    from detectors.models import build_embedder

    torch.manual_seed(0)
    model = build_embedder("tiny_cnn")
    data = tl.SyntheticPairs(8, 32)
    x, y = tl.pair_batch_xy(tl.unpack_pair_batch(torch.utils.data.default_collate([data[i] for i in range(8)])), "cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = float(difffake_losses(model, x, y)["total"].detach())
    for _ in range(15):
        loss = difffake_losses(model, x, y)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(difffake_losses(model, x, y)["total"].detach()) < first


def _identity_tracks(rng, n_ids=30, n_frames=16, dim=12, expr_dims=3):
    """Per identity: a fixed vector; frames vary mostly along a few 'expression' dimensions."""
    ids = rng.normal(0, 1.0, (n_ids, dim))
    scale = np.full(dim, 0.02)
    scale[:expr_dims] = 0.4
    return [ids[i] + rng.normal(0, 1, (n_frames, dim)) * scale for i in range(n_ids)]


def test_gmm_scores_identity_swaps_as_more_fake():
    g = tl.load_config("difffake")["gmm"] | {"frames_per_video": 16, "pair_k": 4, "reg_covar": 1e-4}
    rng = np.random.default_rng(0)
    train = _identity_tracks(rng)
    scorer = fit_gmm_on_embeddings(train, g)
    assert isinstance(scorer, GmmScorer) and scorer.dim == 12
    test_real = _identity_tracks(np.random.default_rng(1), n_ids=12)
    # a "swap" track alternates frames of two identities, so pairs straddle identities
    other = _identity_tracks(np.random.default_rng(2), n_ids=12)
    test_fake = [np.where((np.arange(16) % 2 == 0)[:, None], a, b) for a, b in zip(test_real, other)]
    fr = score_tracks(scorer, test_real, g)
    ff = score_tracks(scorer, test_fake, g)
    assert np.all(np.isfinite(fr)) and np.all(np.isfinite(ff))
    assert ff.mean() > fr.mean() and np.median(ff) > np.max(fr)
    cal = calibrate(scorer, test_real, g)
    assert cal.n_tracks == 12 and cal.loglik_real_std > 0
    assert np.mean(fr <= cal.threshold + 1e-9) >= 0.9  # ~95th percentile of real fakeness
    assert np.mean(ff > cal.threshold) > 0.9


def test_fit_difffake_gmm_from_an_embedder_and_image_tracks(tmp_path):
    cfg = _cfg(tmp_path)
    from detectors.models import build_embedder

    torch.manual_seed(0)
    emb = build_embedder("tiny_cnn").eval()
    data = tl.SyntheticPairs(60, 32)
    tracks = [torch.stack([data[i * 12 + j][0] for j in range(12)]) for i in range(5)]
    uint8_track = ((tracks[0].permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    scorer = fit_difffake_gmm(emb, tracks + [uint8_track], cfg)
    assert scorer.dim == emb.dim and len(scorer.weights) == 2
    from trainer.difffake import embed_tracks

    s = score_tracks(scorer, embed_tracks(emb, tracks[:2], 32), cfg)
    assert s.shape == (2,) and np.all(np.isfinite(s))


def test_full_pipeline_writes_gmm_and_calibration(tmp_path):
    """train_difffake = stage 1 + GMM on the training reals' tracks (items grouped by video) + calibration."""
    import json
    from types import SimpleNamespace

    from PIL import Image

    from trainer.difffake import make_pairs, train_difffake

    data = tl.SyntheticPairs(48, 32)
    items = []
    for i in range(48):
        p = tmp_path / f"v{i // 8}" / f"{i % 8:04d}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(((data[i][0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)).save(p)
        items.append(SimpleNamespace(path=p, video_uid=f"v{i // 8}", label=0))

    class WithItems(torch.utils.data.Dataset):
        def __init__(self, its):
            self.items = its

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return data[i]

    cfg = _cfg(tmp_path, "train.steps=2")
    ck = train_difffake(cfg, WithItems(items[:40]), WithItems(items[40:]))
    with np.load(ck.parent / "gmm.npz") as z:
        scorer = GmmScorer.from_arrays({k: z[k] for k in z.files})
    assert scorer.dim == 64
    info = json.loads((ck.parent / "calibration.json").read_text())
    assert info["n_tracks"] == 5 and np.isfinite(info["calibration"]["threshold"])
    assert isinstance(load_embedder(ck), Embedder)
    assert make_pairs(20, rng=np.random.default_rng(0), k=4).shape == (16, 2)  # the CLI's keyword
