"""DiffFake (methods.md §4): pseudo-fake-trained embedder + Gaussian-mixture anomaly model over frame pairs.

Stage 1 (:func:`train_difffake_backbone`): an :class:`~detectors.models.Embedder` is trained as a 2-class
classifier (real = 0, pseudo-fake = 1, project convention; the official code inverts it) on DiffFake
pseudo-fakes of REAL crops only. SAM over SGD (the released recipe) or AdamW, by config.

Stage 2 (:func:`fit_difffake_gmm`): the frozen embedder embeds frames of real videos/tracks; pairs are
formed per video with :func:`make_pairs` (random frames, seconds apart), combined with
:func:`detectors.difffake.combine` ((a-b)^2, row-L2-normalised) and a 3-component full-covariance GMM
(k-means init, 250 EM iterations) is fitted; it is served by :class:`detectors.difffake.GmmScorer`.

Scoring: a video's score = mean pair log-likelihood (higher = more real); fakeness = -score.
Calibration: threshold = a percentile of real validation fakeness; the mean/std of real pair
log-likelihoods go into the bundle for the daemon's standardisation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from detectors.difffake import GmmScorer, combine
from detectors.models import Embedder, build_embedder
from trainer import train_loop as tl

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- stage 1
def difffake_losses(model: Embedder, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    logits = model.classify(x)
    loss = F.cross_entropy(logits, y.long())
    acc = (logits.argmax(1) == y.long()).float().mean()
    return {"total": loss, "ce": loss, "acc": acc.detach()}


@torch.no_grad()
def _val_auc(model: Embedder, loader: DataLoader, device) -> float:
    model.eval()
    ys, ss = [], []
    for batch in loader:
        x, y = tl.pair_batch_xy(tl.unpack_pair_batch(batch), device)
        ss.append(torch.softmax(model.classify(x).float(), 1)[:, 1].cpu().numpy())
        ys.append(y.cpu().numpy())
    return tl.binary_auc(np.concatenate(ys), np.concatenate(ss))


def init_backbone_from(model: Embedder, checkpoint: str | Path) -> None:
    """Copy the backbone of a frame-model checkpoint (ANL / DiffusionFake: ``detector.backbone.*``) or of another
    DiffFake checkpoint (``backbone.*``) into ``model``: the frame detector's encoder, fine-tuned on
    pseudo-fakes, becomes the DiffFake embedder (``model.init_from``; with ``train.steps: 0`` no stage-1
    training happens at all). A backbone of another architecture is an error naming the file."""
    ck = tl.load_checkpoint(checkpoint)
    sd = ck["state_dict"]
    for prefix in ("detector.backbone.", "backbone."):
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if sub:
            break
    else:
        raise tl.ConfigError(f"{checkpoint}: model.init_from needs a checkpoint with a backbone (detector.backbone.* or backbone.*)")
    try:
        model.backbone.load_state_dict(sub, strict=True)
    except RuntimeError as e:
        raise tl.ConfigError(f"{checkpoint}: its backbone does not fit {model.backbone.name!r} ({str(e).splitlines()[0]})") from None
    log.info("DiffFake embedder initialised from the backbone of %s", checkpoint)


def train_difffake_backbone(cfg: Mapping, dataset: Dataset | None = None, val_dataset: Dataset | None = None) -> Path:
    """Stage 1; return the checkpoint path (``<out_dir>/<run>/checkpoint.pt``; ``best.pt`` = best val AUC)."""
    t0 = time.time()
    gen = tl.seed_everything(int(cfg["seed"]))
    device = tl.pick_device(cfg["device"])
    m = cfg["model"]
    size = int(m["image_size"])
    dataset, val_dataset = tl.default_pair_datasets(cfg, dataset, val_dataset, size)
    model = build_embedder(m["backbone"], float(m["dropout"]), m.get("backbone_weights") or None,
                                    pretrained=m.get("pretrained") or None).to(device).train()
    if m.get("init_from"):
        init_backbone_from(model, m["init_from"])
    s = tl.setup_training(cfg, model.parameters(), dataset, val_dataset, gen, "difffake", device)
    extra = {"embedding_dim": model.dim, "image_size": size}
    return tl.run_training(
        s, model, model.parameters(),
        batch=lambda raw: tl.pair_batch_xy(tl.unpack_pair_batch(raw), device),
        losses=lambda xy: difffake_losses(model, *xy),
        val_auc=lambda: _val_auc(model, s.val_loader, device),
        save=lambda path, **kw: tl.save_checkpoint(path, "difffake", model, cfg, **kw, **extra),
        what="DiffFake stage-1", device=device, t0=t0)


def load_embedder(checkpoint: str | Path) -> Embedder:
    """The stage-1 embedder of a DiffFake checkpoint (what the bundle exports as ``embed.onnx``)."""
    ck = tl.load_checkpoint(checkpoint, "difffake")
    m = ck["config"]["model"]
    model = build_embedder(m["backbone"], float(m["dropout"]))
    model.load_state_dict(ck["state_dict"])
    return model.eval()


# ----------------------------------------------------------------------------------------------- stage 2
def _g(cfg: Mapping) -> Mapping:
    """Stage-2 functions take either the full difffake config or just its ``gmm`` block."""
    return cfg["gmm"] if "gmm" in cfg else cfg


def sample_frames(n: int, max_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``max_frames`` of ``n`` frames (a random subset, in order) when there are more."""
    if max_frames <= 0 or n <= max_frames:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_frames, replace=False))


def make_pairs(frames: int | Sequence, K: int = 8, rng: np.random.Generator | None = None, *,
               k: int | None = None) -> np.ndarray:
    """Pair indices (P, 2) over the frames of ONE video (methods.md §4.3).

    With n > 2K frames: n - K random "base" frames, the other K form the partner pool; otherwise a random
    half is the base and the rest the pool. Each base frame is paired with one random pool frame
    (≈ n - K pairs). ``frames``: a count or a sequence (only its length is used). ``k`` = alias of ``K``.
    """
    K = int(k) if k is not None else int(K)
    rng = rng if rng is not None else np.random.default_rng(0)
    n = int(frames) if isinstance(frames, (int, np.integer)) else len(frames)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    perm = rng.permutation(n)
    if n > 2 * K:
        base, pool = perm[: n - K], perm[n - K:]
    else:
        half = n // 2
        base, pool = perm[:half], perm[half:]
    partners = pool[rng.integers(0, len(pool), size=len(base))]
    return np.stack([base, partners], axis=1).astype(np.int64)


def _track_tensor(track, size: int) -> torch.Tensor:
    """A track as (n,3,S,S) float [-1,1]: a tensor, a uint8 (n,H,W,3) array, or a list of image paths."""
    if isinstance(track, torch.Tensor):
        x = tl.to_model_range(track)
    elif isinstance(track, np.ndarray):
        if track.ndim != 4 or track.shape[-1] != 3:
            raise ValueError(f"expected (n, H, W, 3) uint8 crops, got {track.shape}")
        x = tl.to_model_range(torch.from_numpy(np.ascontiguousarray(track)).permute(0, 3, 1, 2))
    else:
        paths = list(track)
        if not paths:
            return torch.zeros(0, 3, size, size)
        x = torch.stack([tl.load_image(p, size) for p in paths])
    return tl.resize_batch(x, size)


@torch.no_grad()
def embed_tracks(embedder: torch.nn.Module, tracks: Sequence, size: int, batch_size: int = 64,
                 device: str | torch.device = "cpu", max_frames: int = 0, seed: int = 0) -> list[np.ndarray]:
    """Embed every track (one video / identity track each) -> list of (n_i, D) float32 arrays."""
    embedder = embedder.to(device).eval()
    rng = np.random.default_rng(seed)
    out = []
    for tr in tracks:
        x = _track_tensor(tr, size)
        x = x[torch.from_numpy(sample_frames(x.shape[0], max_frames, rng))]
        embs = [embedder(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, x.shape[0], batch_size)]
        out.append(torch.cat(embs).numpy() if embs else np.zeros((0, 0), np.float32))
    return out


def pair_vectors(emb: np.ndarray, K: int = 8, combination: str = "sq", rng: np.random.Generator | None = None,
                 differential: bool = True) -> np.ndarray:
    """Combined, row-normalised pair vectors of one track (or normalised single embeddings if not differential)."""
    emb = np.asarray(emb, dtype=np.float64)
    if not differential:
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    idx = make_pairs(len(emb), K, rng)
    if len(idx) == 0:
        return np.zeros((0, emb.shape[1] if emb.ndim == 2 else 0))
    return combine(emb[idx[:, 0]], emb[idx[:, 1]], combination)


def fit_gmm_on_embeddings(embeddings: Sequence[np.ndarray], cfg: Mapping) -> GmmScorer:
    """Stage-2 GMM from per-track embeddings (the difffake config or its ``gmm`` block)."""
    cfg = _g(cfg)
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(int(cfg["seed"]))
    vecs = [pair_vectors(e, int(cfg["pair_k"]), cfg["combination"], rng, bool(cfg["differential"]))
            for e in embeddings if len(e) >= 2]
    X = np.concatenate([v for v in vecs if len(v)]) if vecs else np.zeros((0, 0))
    k = int(cfg["n_components"])
    if len(X) < k:
        raise ValueError(f"only {len(X)} pair vectors from {len(embeddings)} tracks; need at least {k} for the GMM")
    gmm = GaussianMixture(n_components=k, covariance_type=cfg["covariance_type"], init_params=cfg["init_params"],
                          max_iter=int(cfg["max_iter"]), reg_covar=float(cfg["reg_covar"]),
                          random_state=int(cfg["seed"]))
    gmm.fit(X)
    if not gmm.converged_:
        log.warning("GMM did not converge in %d iterations (%d vectors of %d dims)", cfg["max_iter"], *X.shape)
    return GmmScorer.from_sklearn(gmm)


def fit_difffake_gmm(embedder: torch.nn.Module, tracks: Sequence, cfg: Mapping) -> GmmScorer:
    """Embed real ``tracks`` (each: the frames of one video / identity track) and fit the GMM.

    ``cfg``: the full difffake config (uses ``model.image_size``, ``gmm``, ``device``).
    """
    device = tl.pick_device(cfg["device"])
    g = cfg["gmm"]
    embs = embed_tracks(embedder, tracks, int(cfg["model"]["image_size"]), int(g["batch_size"]), device,
                        int(g["frames_per_video"]), int(g["seed"]))
    return fit_gmm_on_embeddings(embs, g)


def track_logliks(scorer: GmmScorer, emb: np.ndarray, cfg: Mapping, rng: np.random.Generator | None = None) -> np.ndarray:
    """Pair log-likelihoods of one track's embeddings."""
    cfg = _g(cfg)
    rng = rng if rng is not None else np.random.default_rng(int(cfg["seed"]))
    v = pair_vectors(emb, int(cfg["pair_k"]), cfg["combination"], rng, bool(cfg["differential"]))
    return scorer.score_samples(v) if len(v) else np.zeros(0)


def score_tracks(scorer: GmmScorer, embeddings: Sequence[np.ndarray], cfg: Mapping) -> np.ndarray:
    """Fakeness per track = -(mean pair log-likelihood); NaN for tracks with fewer than 2 frames."""
    cfg = _g(cfg)
    rng = np.random.default_rng(int(cfg["seed"]))
    out = []
    for e in embeddings:
        ll = track_logliks(scorer, e, cfg, rng)
        out.append(-float(ll.mean()) if len(ll) else float("nan"))
    return np.asarray(out)


@dataclass
class DiffFakeCalibration:
    threshold: float           # fakeness above this = fake
    percentile: float          # of real validation fakeness
    loglik_real_mean: float    # pair log-likelihood statistics on real validation tracks
    loglik_real_std: float
    n_tracks: int
    n_pairs: int


def calibrate(scorer: GmmScorer, real_val_embeddings: Sequence[np.ndarray], cfg: Mapping) -> DiffFakeCalibration:
    """Threshold at ``cfg['calibration_percentile']`` of real validation track fakeness, plus pair log-lik stats."""
    cfg = _g(cfg)
    rng = np.random.default_rng(int(cfg["seed"]) + 1)
    lls = [track_logliks(scorer, e, cfg, rng) for e in real_val_embeddings]
    lls = [ll for ll in lls if len(ll)]
    if not lls:
        raise ValueError("calibration needs real validation tracks with at least 2 frames")
    fake = np.asarray([-ll.mean() for ll in lls])
    allp = np.concatenate(lls)
    pct = float(cfg["calibration_percentile"])
    return DiffFakeCalibration(float(np.percentile(fake, pct)), pct, float(allp.mean()), float(allp.std()),
                               len(lls), len(allp))


# ----------------------------------------------------------------------------------------------- full pipeline
def tracks_from_items(items: Sequence, min_frames: int = 2) -> dict[str, list[Path]]:
    """Group crop items (``.path``, ``.video_uid``, ``.label``) into real tracks: video uid -> sorted crop paths."""
    out: dict[str, list[Path]] = {}
    for it in items:
        if int(getattr(it, "label", 0)) != 0:
            continue
        out.setdefault(str(getattr(it, "video_uid", "") or it.path), []).append(Path(it.path))
    return {k: sorted(v) for k, v in sorted(out.items()) if len(v) >= min_frames}


def save_gmm(scorer: GmmScorer, path: str | Path) -> Path:
    p = Path(path)
    np.savez(p, **scorer.to_arrays())
    return p


def train_difffake(cfg: Mapping, dataset: Dataset | None = None, val_dataset: Dataset | None = None,
                   tracks: Sequence | None = None, val_tracks: Sequence | None = None) -> Path:
    """Stage 1, then (``gmm.fit_after_training``) stage 2 on real tracks; return the stage-1 checkpoint.

    Stage 2 embeds with the returned (final) checkpoint, on ``tracks`` when given, else the training
    dataset's real crop items grouped by video (``dataset.items``). It writes ``gmm.npz`` and
    ``calibration.json`` (from ``val_tracks`` or the val dataset's items) beside the checkpoint, where
    ``fakewatch-train bundle`` finds them.
    """
    import json
    from dataclasses import asdict

    ck = train_difffake_backbone(cfg, dataset, val_dataset)
    g = cfg["gmm"]
    if not bool(g["fit_after_training"]):
        return ck
    if tracks is None:
        items = getattr(dataset, "items", None)
        if items is None:
            log.warning("no tracks for the DiffFake GMM (dataset has no crop items); stage 2 skipped")
            return ck
        tracks = list(tracks_from_items(items).values())
    if not tracks:
        log.warning("no real track with >= 2 frames for the DiffFake GMM (one image per video?); stage 2 skipped")
        return ck
    if val_tracks is None and val_dataset is not None and getattr(val_dataset, "items", None) is not None:
        val_tracks = list(tracks_from_items(val_dataset.items).values())
    embedder = load_embedder(ck)
    device = tl.pick_device(cfg["device"])
    size = int(cfg["model"]["image_size"])
    embs = embed_tracks(embedder, tracks, size, int(g["batch_size"]), device, int(g["frames_per_video"]), int(g["seed"]))
    scorer = fit_gmm_on_embeddings(embs, g)
    save_gmm(scorer, ck.parent / "gmm.npz")
    info: dict = {"checkpoint": ck.name, "n_tracks": len(embs),
                  "combination": g["combination"], "pair_k": int(g["pair_k"])}
    if val_tracks:
        vembs = embed_tracks(embedder, val_tracks, size, int(g["batch_size"]), device, int(g["frames_per_video"]),
                             int(g["seed"]))
        info["calibration"] = asdict(calibrate(scorer, vembs, g))
    (ck.parent / "calibration.json").write_text(json.dumps(info, indent=2))
    return ck
