"""A small pixel-space DDPM face prior (``fakewatch-train prior``) and SDEdit-style regeneration.

:func:`train_prior` trains a diffusers ``UNet2DModel`` (a few M parameters at 64 px) with ε-prediction on
real aligned face crops and writes a diffusers folder in the DDPMPipeline layout (``unet/``,
``scheduler/``, ``model_index.json``) plus ``provenance.json``. :func:`trainer.diffusion.load_frozen_diffusion`
loads it as a pixel-space frozen model for ANL.

:func:`regenerate` partially noises real faces to step ``strength * T`` and denoises them back with the
prior (DDIM): the results keep pose/identity but carry the prior's generator fingerprint, which makes an
UNSEEN-GENERATOR test set for detectors trained on face swaps / pseudo-fakes.
"""

from __future__ import annotations

import copy
import json
import logging
import platform
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from trainer import train_loop as tl
from trainer.runs import RunFolder

log = logging.getLogger(__name__)


def build_prior_unet(mcfg: Mapping):
    from diffusers import UNet2DModel

    chans = tuple(int(c) for c in mcfg["block_out_channels"])
    att = set(int(i) for i in mcfg.get("attention_levels", []))
    down = tuple("AttnDownBlock2D" if i in att else "DownBlock2D" for i in range(len(chans)))
    up = tuple("AttnUpBlock2D" if (len(chans) - 1 - i) in att else "UpBlock2D" for i in range(len(chans)))
    return UNet2DModel(sample_size=int(mcfg["image_size"]), in_channels=3, out_channels=3,
                       layers_per_block=int(mcfg["layers_per_block"]), block_out_channels=chans,
                       down_block_types=down, up_block_types=up, norm_num_groups=int(mcfg["norm_num_groups"]))


def build_scheduler(scfg: Mapping):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=int(scfg["num_train_timesteps"]), beta_schedule=scfg["beta_schedule"],
                         beta_start=float(scfg["beta_start"]), beta_end=float(scfg["beta_end"]),
                         prediction_type=scfg["prediction_type"])


def _save_prior(out: Path, unet, scheduler, provenance: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / "unet")
    scheduler.save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "DDPMPipeline", "_diffusers_version": _version("diffusers"),
        "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"]}, indent=2))
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
    return out


def _version(pkg: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def train_prior(cfg: Mapping, dataset: Dataset | None = None) -> Path:
    """Train the pixel prior; return the diffusers folder (``cfg['out_dir']``).

    ``dataset`` (optional) yields (3,S,S) tensors in [-1,1] (or uint8), or tuples whose first item is one;
    otherwise images are read from ``cfg['data']['image_dirs']``.
    """
    t0 = time.time()
    gen = tl.seed_everything(int(cfg["seed"]))
    device = tl.pick_device(cfg["device"])
    mcfg, tcfg = cfg["model"], cfg["train"]
    size = int(mcfg["image_size"])
    if dataset is None:
        files = []
        if cfg["data"].get("crops"):  # real crops of a prepared folder (its manifest)
            from trainer.torchdata import crop_items

            files = [it.path for it in crop_items(cfg["data"]["crops"], labels=[0])]
        if cfg["data"]["image_dirs"]:
            files += tl.list_images(cfg["data"]["image_dirs"])
        if int(cfg["data"]["max_images"]):
            files = files[: int(cfg["data"]["max_images"])]
        dataset = tl.ImageFolderDataset(files, size, hflip=bool(cfg["data"]["hflip"]))
        data_desc = {"crops": str(cfg["data"].get("crops") or ""),
                     "image_dirs": [str(d) for d in cfg["data"]["image_dirs"]], "n_images": len(files)}
    else:
        data_desc = {"dataset": type(dataset).__name__, "n_images": len(dataset) if hasattr(dataset, "__len__") else None}
    loader = DataLoader(dataset, batch_size=int(tcfg["batch_size"]), shuffle=True, drop_last=False,
                        num_workers=int(cfg["data"]["workers"]), generator=gen)
    unet = build_prior_unet(mcfg).to(device).train()
    sched = build_scheduler(cfg["scheduler"])
    ema_decay = float(tcfg["ema_decay"])
    ema = copy.deepcopy(unet).eval().requires_grad_(False) if ema_decay > 0 else None
    opt = tl.make_optimizer(unet.parameters(), cfg["optim"])
    steps = int(tcfg["steps"])
    lr_sched = tl.make_scheduler(opt, steps, cfg["optim"])
    abar = sched.alphas_cumprod.to(device)
    out = Path(cfg["out_dir"])
    run = RunFolder(out, "train", cfg, step_log=True)
    bar = tl.progress(steps, "prior", bool(tcfg["progress"]))
    losses: list[float] = []
    it = tl.cycle(loader)
    for step in range(steps):
        x = next(it)
        x = x[0] if isinstance(x, (tuple, list)) else x
        x = tl.resize_batch(tl.to_model_range(x), size).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (x.shape[0],), device=device)
        eps = torch.randn_like(x)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x + (1 - a).sqrt() * eps
        target = eps if sched.config.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x
        loss = torch.nn.functional.mse_loss(unet(xt, t).sample, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        if ema is not None:
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), unet.parameters()):
                    pe.lerp_(p, 1 - ema_decay)
        loss = loss.detach()
        losses.append(float(loss))
        if (step + 1) % int(tcfg["log_every"]) == 0 or step == steps - 1:
            run.log(step + 1, loss=float(loss), lr=lr_sched.get_last_lr()[0])
        se = int(tcfg["save_every"])
        if se and (step + 1) % se == 0 and step + 1 < steps:
            _save_prior(out, (ema or unet), sched, {"status": "partial", "step": step + 1})
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.4f}")
    bar.close()
    run.close()
    prov = {
        "kind": "fakewatch pixel DDPM face prior", "steps": steps, "final_loss": losses[-1] if losses else None,
        "mean_loss_last_10pct": (sum(losses[-max(1, steps // 10):]) / max(1, len(losses[-max(1, steps // 10):]))
                                 if losses else None),
        "params": tl.count_params(unet), "ema_decay": ema_decay, "data": data_desc, "config": dict(cfg),
        "wall_s": round(time.time() - t0, 1), "device": str(device), "torch": torch.__version__,
        "diffusers": _version("diffusers"), "python": platform.python_version(),
    }
    return _save_prior(out, (ema or unet).cpu(), sched, prov)


@torch.no_grad()
def regenerate(images: torch.Tensor, prior, strength: float = 0.3, steps: int = 50, seed: int = 0,
               batch_size: int = 16) -> torch.Tensor:
    """SDEdit-like regeneration: noise real faces to step ``strength * T``, denoise with the prior (DDIM).

    ``images``: (N,3,H,W) in [-1,1] (or uint8); ``prior``: a pixel-space :class:`~trainer.diffusion.FrozenDiffusion`
    or a path to a prior folder. Returns (N,3,H,W) float in [-1,1] at the input size (resized to the prior's
    resolution and back when they differ). ``strength`` in (0, 1]: 0.1 = subtle, 0.5 = heavy.
    """
    from diffusers import DDIMScheduler

    from trainer.diffusion import load_frozen_diffusion

    if not 0.0 < float(strength) <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if isinstance(prior, (str, Path)):
        prior = load_frozen_diffusion(prior, expect="pixel")
    if prior.kind != "pixel":
        raise ValueError(f"regenerate needs a pixel-space prior, got a {prior.kind} model ({prior.folder})")
    device = prior.alphas_cumprod.device
    size = int(prior.unet.config.sample_size)
    x0 = tl.to_model_range(images)
    h, w = x0.shape[-2:]
    ddim = DDIMScheduler.from_config(prior.scheduler.config, prediction_type="epsilon")  # predict_noise gives ε
    ddim.set_timesteps(int(steps))
    t_start = int(round(float(strength) * (prior.num_train_timesteps - 1)))
    ts = [int(t) for t in ddim.timesteps if int(t) <= t_start] or [int(ddim.timesteps[-1])]
    g = torch.Generator().manual_seed(int(seed))
    outs = []
    for i in range(0, x0.shape[0], int(batch_size)):
        x = tl.resize_batch(x0[i:i + batch_size], size).to(device)
        eps = torch.randn(x.shape, generator=g).to(device)
        t0 = torch.full((x.shape[0],), ts[0], device=device, dtype=torch.long)
        x = prior.q_sample(x, t0, eps)
        for t in ts:
            tt = torch.full((x.shape[0],), t, device=device, dtype=torch.long)
            e = prior.predict_noise(x, tt)
            x = ddim.step(e, t, x).prev_sample
        x = x.clamp(-1, 1)
        if (h, w) != (size, size):
            x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        outs.append(x.cpu())
    return torch.cat(outs)
