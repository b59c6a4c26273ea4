"""ANL — Attention-guided Noise Learning (methods.md §2.3; a proposal built from the paper's abstract).

Training graph (all choices are config switches under ``anl:``):

* detector = :class:`~detectors.models.FrameDetector` (backbone -> GAP -> dropout -> Linear), the only
  inference path (``attention_mode: reweight`` additionally keeps the noise head at inference);
* a train-only *noise head*: 1x1 conv -> FiLM from a Stable-Diffusion-style time embedding -> k x
  [nearest up x2, 3x3 conv, GroupNorm, SiLU] -> 3x3 conv to the frozen model's noise shape (4 x S/8 x S/8 for
  SD latents, 3 x P x P for a pixel prior of side P);
* a frozen diffusion model (:mod:`trainer.diffusion`) gives the noise target: ``eps_D`` (its ε estimate,
  default), ``eps`` (the true noise) or ``residual`` (ε_D - ε);
* attention A = softmax over feature positions of the pooled energy of the predicted noise; modes
  ``align`` (KL(A || A_cls) + entropy bonus on the classifier's CAM-like map; default), ``reweight``
  (pool with weights 1 + A) and ``erase`` (zero the top-k% positions of A in the feature map);
* ``regulariser: off`` = same backbone and schedule, plain BCE (the ablation baseline).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from detectors.models import FrameDetector, build_frame_detector
from trainer import train_loop as tl
from trainer.diffusion import load_diffusion_for

log = logging.getLogger(__name__)

TARGETS = ("eps_D", "eps", "residual")
ATTENTION_MODES = ("align", "reweight", "erase")


class TimeEmbedding(nn.Module):
    """sinusoidal(t, dim) -> Linear(dim -> hidden) -> SiLU -> Linear(hidden -> hidden) (SD style)."""

    def __init__(self, dim: int = 320, hidden: int = 1280):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        from diffusers.models.embeddings import get_timestep_embedding

        e = get_timestep_embedding(t.float().reshape(-1), self.dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        return self.mlp(e.to(self.mlp[0].weight.dtype))


class NoiseHead(nn.Module):
    """Feature map (N,C,h,w) + timestep -> predicted noise (N, out_channels, H, W)."""

    def __init__(self, in_channels: int, feat_size: int, out_shape: tuple[int, int, int], channels: int = 256,
                 time_dim: int = 320, time_hidden: int = 1280, groups: int = 32):
        super().__init__()
        self.out_shape = tuple(int(s) for s in out_shape)
        out_c, out_h, _ = self.out_shape
        self.inp = nn.Conv2d(in_channels, channels, 1)
        self.temb = TimeEmbedding(time_dim, time_hidden)
        self.film = nn.Linear(time_hidden, 2 * channels)
        n_up = max(0, math.ceil(math.log2(max(1.0, out_h / max(1, feat_size)))))
        g = math.gcd(groups, channels)
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1),
                          nn.GroupNorm(g, channels), nn.SiLU()) for _ in range(n_up))
        self.out = nn.Conv2d(channels, out_c, 3, padding=1)

    def forward(self, f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(f)
        scale, shift = self.film(self.temb(t)).chunk(2, dim=1)
        h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        for up in self.ups:
            h = up(h)
        if tuple(h.shape[-2:]) != self.out_shape[1:]:
            h = F.interpolate(h, size=self.out_shape[1:], mode="bilinear", align_corners=False)
        return self.out(h)


def noise_attention(eps_hat: torch.Tensor, grid: tuple[int, int], tau: float = 1.0) -> torch.Tensor:
    """Channel-mean energy of predicted noise, average-pooled to ``grid``, softmax over positions -> (N, h*w)."""
    a = eps_hat.float().pow(2).mean(dim=1, keepdim=True)
    a = F.adaptive_avg_pool2d(a, grid).flatten(1)
    return torch.softmax(a / tau, dim=1)


def cam_distribution(f: torch.Tensor) -> torch.Tensor:
    """Classifier-side spatial map: softmax over positions of the channel mean of F -> (N, h*w)."""
    return torch.softmax(f.float().mean(dim=1).flatten(1), dim=1)


class ReweightedDetector(nn.Module):
    """Inference graph for ``attention_mode: reweight``: pool F with weights (1 + A) from the noise head at a fixed t."""

    def __init__(self, detector: FrameDetector, head: NoiseHead, t: int, tau: float):
        super().__init__()
        self.detector, self.head, self.tau = detector, head, tau
        self.register_buffer("t", torch.tensor([int(t)]), persistent=False)

    @staticmethod
    def pool(f: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        w = (1.0 + a).unsqueeze(1)  # (N,1,hw)
        ff = f.flatten(2)
        return (ff * w).sum(-1) / w.sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.detector.features(x)
        a = noise_attention(self.head(f, self.t.expand(x.shape[0])), tuple(f.shape[-2:]), self.tau)
        return self.detector.fc(self.pool(f, a))


class ANLModel(nn.Module):
    """Detector + train-only noise head. ``export_module()`` gives the inference graph."""

    def __init__(self, cfg: Mapping, noise_shape: tuple[int, int, int] | None):
        super().__init__()
        m, a = cfg["model"], cfg["anl"]
        self.detector = build_frame_detector(m["backbone"], float(m["dropout"]), m.get("backbone_weights") or None,
                                    pretrained=m.get("pretrained") or None)
        self.mode = a["attention_mode"]
        self.tau = float(a["tau"])
        self.infer_t = int(a["infer_t"])
        self.head: NoiseHead | None = None
        if noise_shape is not None:
            size = int(m["image_size"])
            with torch.no_grad():
                feat = self.detector.features(torch.zeros(1, 3, size, size)).shape[-1]
            self.head = NoiseHead(self.detector.channels, feat, noise_shape, int(a["head_channels"]),
                                  int(a["time_dim"]), int(a["time_hidden"]), int(a["groups"]))

    def export_module(self) -> nn.Module:
        if self.mode == "reweight" and self.head is not None:
            return ReweightedDetector(self.detector, self.head, self.infer_t, self.tau)
        return self.detector


def check_config(cfg: Mapping) -> None:
    a = cfg["anl"]
    if a["target"] not in TARGETS:
        raise tl.ConfigError(f"anl.target must be one of {TARGETS}, got {a['target']!r}")
    if a["attention_mode"] not in ATTENTION_MODES:
        raise tl.ConfigError(f"anl.attention_mode must be one of {ATTENTION_MODES}, got {a['attention_mode']!r}")
    if a["regulariser"] not in ("on", "off", True, False):
        raise tl.ConfigError(f"anl.regulariser must be on or off, got {a['regulariser']!r}")
    if a["regulariser"] in ("on", True) and not cfg["diffusion"]["folder"]:
        raise tl.ConfigError("anl.regulariser is on but diffusion.folder is empty (a local diffusers folder is needed)")


def _regulariser_on(cfg: Mapping) -> bool:
    return cfg["anl"]["regulariser"] in ("on", True)


def anl_losses(model: ANLModel, diff, x: torch.Tensor, y: torch.Tensor, cfg: Mapping,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One training step's losses (``total`` plus its parts) for a batch x in [-1,1], y in {0,1}."""
    a = cfg["anl"]
    det = model.detector
    f = det.features(x)
    out: dict[str, torch.Tensor] = {}
    if model.head is None or diff is None:  # regulariser off: plain BCE
        logit = det.head(f)[:, 0]
        out["cls"] = F.binary_cross_entropy_with_logits(logit, y)
        out["total"] = out["cls"]
        return out
    n = x.shape[0]
    dev = x.device
    # frozen model target (no grad)
    with torch.no_grad():
        xin = x if diff.kind == "latent" else tl.resize_batch(x, int(diff.unet.config.sample_size))
        if diff.kind == "latent" and a.get("diffusion_image_size"):
            xin = tl.resize_batch(x, int(a["diffusion_image_size"]))
        z0 = diff.encode(xin)
        if a.get("fixed_t") is not None:
            t = torch.full((n,), int(a["fixed_t"]), dtype=torch.long, device=dev)
        else:
            t = diff.sample_timesteps(n, int(a["t_min"]), int(a["t_max"]), generator=generator, device=dev)
        eps = torch.randn(z0.shape, generator=generator).to(dev)
        eps_d = diff.predict_noise(diff.q_sample(z0, t, eps), t)
        target = {"eps_D": eps_d, "eps": eps, "residual": eps_d - eps}[a["target"]]
    eps_hat = model.head(f, t)
    if eps_hat.shape != target.shape:
        raise RuntimeError(f"noise head output {tuple(eps_hat.shape)} != diffusion target {tuple(target.shape)}")
    grid = tuple(f.shape[-2:])
    att = noise_attention(eps_hat, grid, model.tau)
    if bool(a["detach_attention"]):
        att = att.detach()
    mode = model.mode
    if mode == "align":
        logit = det.head(f)[:, 0]
        cam = cam_distribution(f)
        log_cam = torch.log(cam.clamp_min(1e-12))
        out["att"] = (att * (torch.log(att.clamp_min(1e-12)) - log_cam)).sum(1).mean()
        out["entropy"] = -(cam * log_cam).sum(1).mean()
    elif mode == "reweight":
        pooled = ReweightedDetector.pool(f, att)
        logit = det.fc(det.dropout(pooled))[:, 0]
    else:  # erase: zero the top-k% attended positions, classifier must use the rest
        k = max(1, int(round(float(a["erase_fraction"]) * att.shape[1])))
        top = att.topk(k, dim=1).indices
        keep = torch.ones_like(att).scatter(1, top, 0.0).view(n, 1, *grid)
        logit = det.head(f * keep.to(f.dtype))[:, 0]
    out["cls"] = F.binary_cross_entropy_with_logits(logit, y)
    out["noise"] = F.mse_loss(eps_hat.float(), target.float())
    total = out["cls"] + float(a["lambda_noise"]) * out["noise"]
    if mode == "align":
        total = total + float(a["lambda_att"]) * out["att"] - float(a["entropy_gamma"]) * out["entropy"]
    out["total"] = total
    return out


def train_anl(cfg: Mapping, dataset: Dataset | None = None, val_dataset: Dataset | None = None) -> Path:
    """Train ANL (or the plain-BCE ablation); return the checkpoint path (``<out_dir>/<run>/checkpoint.pt``).

    ``dataset`` / ``val_dataset`` yield (real, fake) pairs (see :func:`trainer.train_loop.unpack_pair_batch`);
    by default they are built from ``cfg['data']`` with ``trainer.torchdata.PseudoFakePairs``.
    """
    check_config(cfg)
    t0 = time.time()
    gen = tl.seed_everything(int(cfg["seed"]))
    device = tl.pick_device(cfg["device"])
    dataset, val_dataset = tl.default_pair_datasets(cfg, dataset, val_dataset)
    diff = load_diffusion_for(cfg, device) if _regulariser_on(cfg) else None
    size = int(cfg["model"]["image_size"])
    noise_shape = None
    if diff is not None:
        if diff.kind == "latent":
            noise_shape = diff.latent_shape(int(cfg["anl"].get("diffusion_image_size") or size))
        else:
            noise_shape = diff.latent_shape(int(diff.unet.config.sample_size))
    model = ANLModel(cfg, noise_shape).to(device).train()
    s = tl.setup_training(cfg, [p for p in model.parameters() if p.requires_grad], dataset, val_dataset, gen,
                          "anl", device)
    extra = {"noise_shape": noise_shape, "image_size": size}
    return tl.run_training(
        s, model, model.parameters(),
        batch=lambda raw: tl.pair_batch_xy(tl.unpack_pair_batch(raw), device),
        losses=lambda xy: anl_losses(model, diff, *xy, cfg),
        val_auc=lambda: tl.binary_auc(*tl.predict_logits(model.export_module(), s.val_loader, device)),
        save=lambda path, **kw: tl.save_checkpoint(path, "anl", model, cfg, **kw, **extra),
        what="ANL", device=device, t0=t0)


def load_anl(checkpoint: str | Path) -> ANLModel:
    """Rebuild the ANL model from a checkpoint (no diffusion model needed)."""
    ck = tl.load_checkpoint(checkpoint, "anl")
    ns = ck.get("noise_shape")
    model = ANLModel(ck["config"], tuple(ns) if ns else None)
    model.load_state_dict(ck["state_dict"])
    return model.eval()
