"""DiffusionFake (methods.md §3): guided frozen Stable Diffusion as a training-only regulariser.

The detector's feature map feeds two branches (paper "target" = the frame video A, paper "source" = the
identity video B; for SBI pseudo-fakes: the original frame and its altered, blended-in copy; for reals both
are the image itself). Per branch: stride-2 transposed convs up to the latent grid -> Feature Filter
(channel attention, spatial attention, MHSA, conv) -> added after the input conv of a trainable
ControlNet-style copy of the frozen UNet encoder (``diffusers.ControlNetModel.from_unet``, hint stack
replaced by identity) -> zero-conv residuals, each multiplied by the branch's weight-module scalar, go
into the frozen UNet, which must predict the noise of that branch's noisy latent.

Loss = BCE + λs·L2(ε, ε̂_source) + λt·L2(ε, ε̂_target) + MSE(W_s, score_s) + MSE(W_t, score_t), where the
weight targets are (cos + 1)/2 between VAE latents of the un-augmented fake and of each branch image
(1 for reals), computed online with the frozen VAE (``weight_targets: online``) or fixed to 1 (``ones``).

Data: the project's :class:`~trainer.torchdata.PseudoFakePairs` are switched to ``branches=True`` (items
carry ``source`` / ``target`` = the two images blended into each pseudo-fake, plus un-augmented
``real_clean`` / ``fake_clean``) and, with ``diffusionfake.detector_augment``, the detector input alone
gets the §3.2 augmentation (flip, rotate ±30°, RandomResizedCrop 0.5-1, gray, noise); reconstruction
images and weight targets always use the clean images.

Only the encoder + GAP + Linear (a :class:`~detectors.models.FrameDetector`) is exported.
The same code path runs a tiny test SD folder and a real SD 1.5 folder.
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


class FeatureFilter(nn.Module):
    """Conv3x3 -> channel attention -> spatial attention -> MHSA (q from SiLU(h), k/v from h) -> Conv3x3 to ``out``."""

    def __init__(self, channels: int, out_channels: int, heads: int = 4, reduction: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"filter channels {channels} must be divisible by heads {heads}")
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.chan = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, max(1, channels // reduction), 1),
                                  nn.ReLU(), nn.Conv2d(max(1, channels // reduction), channels, 1), nn.Sigmoid())
        self.spat = nn.Sequential(nn.Conv2d(channels, 1, 3, padding=1), nn.Sigmoid())
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        a = F.silu(h)
        h = h * self.chan(a)
        h = h * self.spat(a)
        n, c, hh, ww = h.shape
        q = a.flatten(2).transpose(1, 2)
        kv = h.flatten(2).transpose(1, 2)
        h = self.attn(q, kv, kv, need_weights=False)[0].transpose(1, 2).reshape(n, c, hh, ww)
        return self.out(h)


class WeightModule(nn.Module):
    """Conv3x3 chain (no activations, as released) -> GAP -> Linear -> Linear -> sigmoid: a per-sample scalar."""

    def __init__(self, channels: int, widths: tuple[int, ...] = (1024, 512, 256, 128)):
        super().__init__()
        *convs, hidden = widths
        layers: list[nn.Module] = []
        c = channels
        for w in convs:
            layers.append(nn.Conv2d(c, w, 3, padding=1))
            c = w
        self.convs = nn.Sequential(*layers)
        self.mlp = nn.Sequential(nn.Linear(c, hidden), nn.Linear(hidden, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(self.convs(f).mean(dim=(2, 3))))[:, 0]


class Upsampler(nn.Module):
    """k x ConvTranspose(k4, s2, p1, no bias, no activation) from the feature grid to the latent grid."""

    def __init__(self, cin: int, cout: int, n: int, out_size: int):
        super().__init__()
        layers = [nn.ConvTranspose2d(cin if i == 0 else cout, cout, 4, 2, 1, bias=False) for i in range(n)]
        self.body = nn.Sequential(*layers) if layers else nn.Conv2d(cin, cout, 1, bias=False)
        self.out_size = int(out_size)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        h = self.body(f)
        if h.shape[-1] != self.out_size:
            h = F.interpolate(h, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return h


class DiffusionFakeModel(nn.Module):
    """Everything trainable: detector, two upsamplers + filters + weight modules, and the guide copy."""

    BRANCHES = ("target", "source")

    def __init__(self, cfg: Mapping, latent_size: int, inject_channels: int, guide: nn.Module | None):
        super().__init__()
        m, d = cfg["model"], cfg["diffusionfake"]
        self.detector = build_frame_detector(m["backbone"], float(m["dropout"]), m.get("backbone_weights") or None,
                                    pretrained=m.get("pretrained") or None)
        c = self.detector.channels
        size = int(m["image_size"])
        with torch.no_grad():
            feat = self.detector.features(torch.zeros(1, 3, size, size)).shape[-1]
        n_up = max(0, round(math.log2(max(1, latent_size) / feat)))
        cu = int(d["upsample_channels"] or c)
        self.up = nn.ModuleDict({b: Upsampler(c, cu, n_up, latent_size) for b in self.BRANCHES})
        self.filter = nn.ModuleDict({b: FeatureFilter(cu, inject_channels, int(d["filter_heads"]),
                                                      int(d["filter_reduction"])) for b in self.BRANCHES})
        widths = tuple(int(w) for w in d["weight_widths"])
        self.weight = nn.ModuleDict({b: WeightModule(c, widths) for b in self.BRANCHES})
        self.guide = guide

    def export_module(self) -> FrameDetector:
        return self.detector


def _branch_images(pb: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reconstruction images per branch for (reals, fakes), never the augmented detector input when the
    data gives clean copies: reals -> ``real_clean`` (else ``real``) in both branches; fakes -> ``target`` /
    ``source`` when given (for SBI pseudo-fakes the two blended images), else the real frame they were
    made from (``real_clean`` / ``real``)."""
    real = pb.get("real_clean", pb["real"])
    tgt = pb.get("target", real)
    src = pb.get("source", real)
    return {"target": torch.cat([real, tgt]), "source": torch.cat([real, src])}


EXTRA_KEYS = ("real_clean", "fake_clean")


def unpack_batch(batch) -> dict[str, torch.Tensor]:
    """:func:`trainer.train_loop.unpack_pair_batch` plus the clean copies DiffusionFake uses when a dict
    batch has them (``real_clean``, ``fake_clean``: un-augmented real / fake, see
    :class:`trainer.torchdata.PseudoFakePairs` with ``branches=True``)."""
    pb = tl.unpack_pair_batch(batch)
    if isinstance(batch, Mapping):
        pb.update({k: tl.to_model_range(batch[k]) for k in EXTRA_KEYS if k in batch})
    return pb


def weight_targets(diff, pb: Mapping[str, torch.Tensor], z: Mapping[str, torch.Tensor], device,
                   rsize: int | None = None) -> dict[str, torch.Tensor]:
    """§3.5 weight targets for the stacked (reals, fakes) batch: reals 1.0; fakes (cos + 1) / 2 between the
    flattened VAE latent of the un-augmented fake (``fake_clean``, else ``fake``) and of each branch image
    (``z[branch]``, latents of :func:`_branch_images`)."""
    n_real = pb["real"].shape[0]
    fake = pb.get("fake_clean", pb["fake"]).to(device)
    zf = diff.encode(tl.resize_batch(fake, int(rsize)) if rsize else fake).flatten(1).float()
    out = {}
    for b, zb in z.items():
        cos = F.cosine_similarity(zf, zb[n_real:].flatten(1).float(), dim=1)
        out[b] = torch.cat([torch.ones(n_real, device=device), ((cos + 1) / 2).to(device)])
    return out


def prepare_train_dataset(dataset: Dataset, cfg: Mapping) -> Dataset:
    """Project pseudo-fake pairs -> the DiffusionFake view of them: items carry the reconstruction images
    (``branches``) and the detector input gets ``diffusionfake.detector_augment`` unless the dataset already
    has an augmentation. Other datasets pass unchanged (they may yield ``(real, fake[, source, target])``)."""
    from trainer.torchdata import PseudoFakePairs

    if not isinstance(dataset, PseudoFakePairs):
        return dataset
    spec = cfg["diffusionfake"].get("detector_augment", False)
    return dataset.with_options(branches=True, augment=spec if dataset.augment is None else "keep")


def diffusionfake_losses(model: DiffusionFakeModel, diff, pb: Mapping[str, torch.Tensor], cfg: Mapping, device,
                         generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    d = cfg["diffusionfake"]
    x, y = tl.pair_batch_xy(pb, device)
    n = x.shape[0]
    f = model.detector.features(x)
    logit = model.detector.head(f)[:, 0]
    out: dict[str, torch.Tensor] = {"cls": F.binary_cross_entropy_with_logits(logit, y)}
    imgs = {k: v.to(device) for k, v in _branch_images(pb).items()}
    rsize = d.get("diffusion_image_size") or None
    with torch.no_grad():
        z = {b: diff.encode(tl.resize_batch(imgs[b], int(rsize)) if rsize else imgs[b]) for b in model.BRANCHES}
        t = diff.sample_timesteps(n, 0, None, generator=generator, device=device)
        eps = torch.randn(z["target"].shape, generator=generator).to(device)  # one ε shared by both branches
        scores = {b: torch.ones(n, device=device) for b in model.BRANCHES}
        if d["weight_targets"] == "online":
            scores = weight_targets(diff, pb, z, device, int(rsize) if rsize else None)
    cond = diff.text_embedding.to(device).expand(n, -1, -1)
    total = out["cls"]
    lam = {"source": float(d["lambda_source"]), "target": float(d["lambda_target"])}
    for b in model.BRANCHES:
        h = model.filter[b](model.up[b](f))
        w = model.weight[b](f)
        zt = diff.q_sample(z[b], t, eps)
        down, mid = model.guide(zt, t, encoder_hidden_states=cond.to(zt.dtype), controlnet_cond=h, return_dict=False)
        wv = w.view(-1, 1, 1, 1)
        eps_hat = diff.unet_eps(zt, t, [r * wv for r in down], mid * wv)
        out[f"rec_{b}"] = (eps_hat - eps).pow(2).flatten(1).mean(1).mean()
        out[f"w_{b}"] = F.mse_loss(w, scores[b])
        out[f"wmean_{b}"] = w.detach().mean()
        total = total + lam[b] * out[f"rec_{b}"] + float(d["lambda_weight"]) * out[f"w_{b}"]
    out["total"] = total
    return out


def build_model(cfg: Mapping, diff) -> DiffusionFakeModel:
    size = int(cfg["model"]["image_size"])
    rsize = int(cfg["diffusionfake"].get("diffusion_image_size") or size)
    latent = diff.latent_shape(rsize)[-1]
    return DiffusionFakeModel(cfg, latent, diff.first_block_channels, diff.unet_encoder_copy())


def train_diffusionfake(cfg: Mapping, dataset: Dataset | None = None, val_dataset: Dataset | None = None) -> Path:
    """Train DiffusionFake; return the checkpoint path (``<out_dir>/<run>/checkpoint.pt``).

    ``dataset`` yields (real, fake[, source, target]) pairs or dicts (see :func:`unpack_batch`); default:
    ``trainer.torchdata.PseudoFakePairs`` from ``cfg['data']``. A ``PseudoFakePairs`` is switched to
    ``branches=True`` and gets ``diffusionfake.detector_augment`` (:func:`prepare_train_dataset`).
    Needs a Stable-Diffusion-style folder.
    """
    if cfg["diffusionfake"]["weight_targets"] not in ("online", "ones"):
        raise tl.ConfigError("diffusionfake.weight_targets must be online or ones")
    if not cfg["diffusion"]["folder"]:
        raise tl.ConfigError("diffusion.folder is empty: DiffusionFake needs a local Stable-Diffusion-style folder")
    t0 = time.time()
    gen = tl.seed_everything(int(cfg["seed"]))
    device = tl.pick_device(cfg["device"])
    dataset, val_dataset = tl.default_pair_datasets(cfg, dataset, val_dataset)
    dataset = prepare_train_dataset(dataset, cfg)
    diff = load_diffusion_for({**cfg, "diffusion": {**cfg["diffusion"], "expect": "latent"}}, device)
    model = build_model(cfg, diff).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    s = tl.setup_training(cfg, params, dataset, val_dataset, gen, "diffusionfake", device)
    return tl.run_training(
        s, model, params,
        batch=unpack_batch,
        losses=lambda pb: diffusionfake_losses(model, diff, pb, cfg, device),
        val_auc=lambda: tl.binary_auc(*tl.predict_logits(model.detector, s.val_loader, device)),
        save=lambda path, **kw: _save(path, model, cfg, **kw),
        what="DiffusionFake", device=device, t0=t0)


def _save(path: Path, model: DiffusionFakeModel, cfg: Mapping, **extra) -> Path:
    """Full state (resumable) unless ``train.save_guide`` is false, then everything but the guide copy."""
    if bool(cfg["train"]["save_guide"]):
        return tl.save_checkpoint(path, "diffusionfake", model, cfg, **extra)
    keep = nn.Module()
    for name in ("detector", "up", "filter", "weight"):
        keep.add_module(name, getattr(model, name))
    return tl.save_checkpoint(path, "diffusionfake", keep, cfg, **extra)


def load_diffusionfake_detector(checkpoint: str | Path) -> FrameDetector:
    """The exported part (encoder + GAP + Linear) from a DiffusionFake checkpoint; no SD folder needed."""
    ck = tl.load_checkpoint(checkpoint, "diffusionfake")
    m = ck["config"]["model"]
    det = build_frame_detector(m["backbone"], float(m["dropout"]))
    sd = {k[len("detector."):]: v for k, v in ck["state_dict"].items() if k.startswith("detector.")}
    det.load_state_dict(sd)
    return det.eval()
