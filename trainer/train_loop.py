"""The training loop every method runs (:func:`run_training`) and what it needs: configs, seeding, AdamW + cosine,
SAM, checkpoints, progress, pair batches. Run folders: :mod:`trainer.runs`.

Configs are nested dicts read from YAML. Every method has a default file ``trainer/configs/<method>.yaml``
that lists every hyper-parameter; a user file or ``key.sub=value`` overrides are merged on top and any
key that is not in the defaults is refused (so a typo never silently falls back to a default).
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from trainer.runs import RunFolder

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A configuration file or override is malformed or names an unknown key."""


# ----------------------------------------------------------------------------------------------- configs
def _merge(base: dict, over: Mapping, where: str, strict: bool) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if strict and k not in out:
            raise ConfigError(f"unknown config key {where}{k!r} (known: {sorted(out)})")
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, f"{where}{k}.", strict)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def parse_override(item: str) -> dict:
    """``a.b=3`` -> ``{"a": {"b": 3}}`` (the value is parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, val = item.split("=", 1)
    out: dict = {}
    cur = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = yaml.safe_load(val)
    return out


def load_config(method: str | Path, path: str | Path | Mapping | None = None,
                overrides: Iterable[str | Mapping] = ()) -> dict:
    """Defaults <- file or mapping ``path`` <- ``overrides``; unknown keys raise ConfigError. The defaults are
    ``trainer/configs/<method>.yaml`` for a name, or the YAML file ``method`` itself for a path (a registered
    method's ``config``)."""
    cfg = _read_yaml(method if isinstance(method, Path) else CONFIG_DIR / f"{method}.yaml")
    if path is not None:
        user = dict(path) if isinstance(path, Mapping) else _read_yaml(path)
        user.pop("extends", None)
        cfg = _merge(cfg, user, "", strict=True)
    for o in overrides:
        cfg = _merge(cfg, parse_override(o) if isinstance(o, str) else o, "", strict=True)
    return cfg


# ----------------------------------------------------------------------------------------------- basics
def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def count_params(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def cycle(loader: Iterable) -> Iterator:
    """Repeat a finite loader forever (training is counted in steps, not epochs); datasets with
    ``set_epoch`` (fresh pseudo-fakes every epoch) are told the epoch number."""
    epoch = 0
    while True:
        ds = getattr(loader, "dataset", None)
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        n = 0
        for item in loader:
            n += 1
            yield item
        if n == 0:
            raise ValueError("training data is empty")
        epoch += 1


# ----------------------------------------------------------------------------------------------- optim
def make_optimizer(params, cfg: Mapping) -> torch.optim.Optimizer:
    """AdamW (default), Adam or SGD from ``cfg`` keys name/lr/weight_decay/betas/momentum; SAM wraps it when sam.enabled."""
    name = cfg.get("name", "adamw").lower()
    lr = float(cfg["lr"])
    wd = float(cfg.get("weight_decay", 0.0))
    if name == "adamw":
        base_cls, kw = torch.optim.AdamW, {"lr": lr, "weight_decay": wd, "betas": tuple(cfg.get("betas", (0.9, 0.999)))}
    elif name == "adam":
        base_cls, kw = torch.optim.Adam, {"lr": lr, "weight_decay": wd, "betas": tuple(cfg.get("betas", (0.9, 0.999)))}
    elif name == "sgd":
        base_cls, kw = torch.optim.SGD, {"lr": lr, "weight_decay": wd, "momentum": float(cfg.get("momentum", 0.9))}
    else:
        raise ConfigError(f"unknown optimizer {name!r} (expected adamw, adam or sgd)")
    sam = cfg.get("sam") or {}
    if sam.get("enabled", False):
        return SAM(params, base_cls, rho=float(sam.get("rho", 0.05)), adaptive=bool(sam.get("adaptive", False)), **kw)
    return base_cls(params, **kw)


def make_scheduler(opt: torch.optim.Optimizer, total_steps: int, cfg: Mapping) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then ``cosine`` decay to ``min_lr_ratio`` (default), ``constant``, or ``linear_tail``
    (constant until ``tail_start`` fraction of training, then linear to 0: the SBI/DiffFake recipe)."""
    kind = cfg.get("schedule", "cosine")
    warm = int(cfg.get("warmup_steps", 0))
    floor = float(cfg.get("min_lr_ratio", 0.0))
    tail = float(cfg.get("tail_start", 0.75))
    total = max(1, int(total_steps))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if kind == "constant":
            return 1.0
        prog = min(1.0, (step - warm) / max(1, total - warm))
        if kind == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * prog))
        if kind == "linear_tail":
            return 1.0 if prog < tail else max(0.0, (1 - prog) / max(1e-9, 1 - tail))
        raise ConfigError(f"unknown lr schedule {kind!r} (expected cosine, constant or linear_tail)")

    base = opt.base_optimizer if isinstance(opt, SAM) else opt
    sched = torch.optim.lr_scheduler.LambdaLR(base, f)
    return sched


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimisation (Foret et al. 2021) around any base optimizer.

    Use :meth:`step` with a closure that recomputes the loss and calls ``backward``::

        loss = loss_fn(); loss.backward(); opt.step(lambda: (opt.zero_grad(), loss_fn().backward()))
    """

    def __init__(self, params, base_cls: type[torch.optim.Optimizer], rho: float = 0.05, adaptive: bool = False, **kw):
        if rho < 0:
            raise ValueError(f"SAM rho must be >= 0, got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **kw))
        self.base_optimizer = base_cls(self.param_groups, **kw)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        norms = [((torch.abs(p) if g["adaptive"] else 1.0) * p.grad).norm(2)
                 for g in self.param_groups for p in g["params"] if p.grad is not None]
        return torch.norm(torch.stack(norms), 2) if norms else torch.tensor(0.0)

    @torch.no_grad()
    def first_step(self) -> None:
        scale_den = self._grad_norm() + 1e-12
        for g in self.param_groups:
            scale = g["rho"] / scale_den
            for p in g["params"]:
                if p.grad is None:
                    continue
                e = (torch.pow(p, 2) if g["adaptive"] else 1.0) * p.grad * scale.to(p)
                p.add_(e)
                self.state[p]["e_w"] = e

    @torch.no_grad()
    def second_step(self) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                e = self.state[p].pop("e_w", None)
                if e is not None:
                    p.sub_(e)
        self.base_optimizer.step()

    def step(self, closure=None):  # type: ignore[override]
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss and calls backward()")
        self.first_step()
        with torch.enable_grad():
            closure()
        self.second_step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)


# ----------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, method: str, model: nn.Module, cfg: Mapping, **extra: Any) -> Path:
    """Write ``{"method", "config", "state_dict", **extra}`` atomically (tmp file + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    torch.save({"method": method, "config": dict(cfg), "state_dict": model.state_dict(), **extra}, tmp)
    os.replace(tmp, p)
    return p


def load_checkpoint(path: str | Path, method: str | None = None) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    ck = torch.load(str(p), map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or "state_dict" not in ck:
        raise ValueError(f"{p}: not a fakewatch checkpoint (no state_dict)")
    if method is not None and ck.get("method") != method:
        raise ValueError(f"{p}: checkpoint is for method {ck.get('method')!r}, expected {method!r}")
    return ck


def progress(total: int, desc: str, enabled: bool = True):
    """tqdm progress bar (disabled when not on a terminal or when ``enabled`` is false)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False)


# ----------------------------------------------------------------------------------------------- data helpers
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] -> float [-1,1] (the (x/255-0.5)/0.5 normalisation); float tensors pass unchanged."""
    if x.dtype == torch.uint8:
        return x.float().div(127.5).sub(1.0)
    return x.float()


def list_images(dirs: Iterable[str | Path], max_images: int = 0) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        p = Path(d)
        if not p.is_dir():
            raise FileNotFoundError(f"image folder not found: {p}")
        files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS)
    if max_images:
        files = files[:max_images]
    return files


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """Image file -> (3, size, size) float tensor in [-1, 1] (bilinear resize when ``size`` is given)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8).copy()
    return to_model_range(torch.from_numpy(a).permute(2, 0, 1))


class ImageFolderDataset(torch.utils.data.Dataset):
    """Plain image files (real face crops) -> (3, S, S) tensors in [-1, 1], optional random h-flip."""

    def __init__(self, files: list[Path], size: int, hflip: bool = False):
        if not files:
            raise ValueError("no images found")
        self.files, self.size, self.hflip = files, int(size), hflip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = load_image(self.files[i], self.size)
        if self.hflip and random.random() < 0.5:
            x = x.flip(-1)
        return x


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


# ----------------------------------------------------------------------------------------------- pair batches
def unpack_pair_batch(batch) -> dict[str, torch.Tensor]:
    """A collated batch of (real, fake) pairs -> dict ``real``, ``fake`` (+ ``source``/``target`` when given).

    Accepted item shapes: ``(real, fake)``, ``(real, fake, source, target)`` or a dict with those keys
    (``source`` / ``target``: the two images blended into the fake, e.g. SBI's transformed copy and the
    original frame). Tensors are converted to float [-1, 1] (uint8 input is scaled).
    """
    if isinstance(batch, Mapping):
        out = {k: to_model_range(batch[k]) for k in ("real", "fake", "source", "target") if k in batch}
    elif isinstance(batch, (list, tuple)) and len(batch) in (2, 3, 4):
        out = {"real": to_model_range(batch[0]), "fake": to_model_range(batch[1])}
        if len(batch) == 4:
            out["source"], out["target"] = to_model_range(batch[2]), to_model_range(batch[3])
    else:
        raise ValueError("pair batches must be (real, fake), (real, fake, source, target) or a dict with those keys")
    if "real" not in out or "fake" not in out:
        raise ValueError("pair batch lacks 'real' or 'fake'")
    return out


def pair_batch_xy(pb: Mapping[str, torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack reals then fakes: x (2N,3,S,S), y (2N,) float with 0 = real, 1 = fake."""
    real, fake = pb["real"], pb["fake"]
    x = torch.cat([real, fake]).to(device, non_blocking=True)
    y = torch.cat([torch.zeros(real.shape[0]), torch.ones(fake.shape[0])]).to(device)
    return x, y


def build_pair_dataset(dcfg: Mapping, split: str = "train", size: int = 256, seed: int = 0):
    """The project's pseudo-fake pairs (``trainer.torchdata.PseudoFakePairs``) from a ``data`` config block.

    Real crops come from the prepared crop folder ``dcfg['crops']`` (``trainer.prepare`` output, label 0
    only). The split uses the manifest's split names ``dcfg['splits'][split]`` when any crop carries one of
    them, else an identity-disjoint split (``val_fraction``) of all real crops. ``dcfg['augment']`` (see
    :meth:`trainer.torchdata.DetectorAugment.from_spec`) augments the train split's detector inputs only.
    """
    from trainer.torchdata import PseudoFakePairs, crop_items, split_by_identity

    root = dcfg.get("crops")
    if not root:
        raise ConfigError("data.crops is empty: give a prepared crop folder (fakewatch-train prepare)")
    items = crop_items(root, labels=[0])
    names = list((dcfg.get("splits") or {}).get(split, [split]))
    chosen = [it for it in items if it.split in names]
    if not chosen:
        chosen = split_by_identity(items, float(dcfg.get("val_fraction", 0.1)), 0.0, seed=seed)[split]
    if not chosen:
        raise ValueError(f"{root}: no real crops for split {split!r}")
    return PseudoFakePairs(chosen, size=size, kind=dcfg.get("kind", "sbi"),
                           landmarker=dcfg.get("landmarker", "template"), seed=seed + (0 if split == "train" else 1),
                           augment=dcfg.get("augment") if split == "train" else None,
                           mix_weights=dcfg.get("mix_weights") or None, recon_index=dcfg.get("recon") or None,
                           p_recon_local=float(dcfg.get("p_recon_local", 0.3)))


@torch.no_grad()
def predict_logits(module: nn.Module, loader: DataLoader, device) -> tuple[np.ndarray, np.ndarray]:
    """Labels and fake logits of a frame detector (``module(x)[:, 0]``) over a pair loader (reals then fakes per batch)."""
    module.eval()
    ys, ss = [], []
    for batch in loader:
        x, y = pair_batch_xy(unpack_pair_batch(batch), device)
        ss.append(module(x)[:, 0].float().cpu().numpy())
        ys.append(y.cpu().numpy())
    return np.concatenate(ys), np.concatenate(ss)


def binary_auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def train_step(opt: torch.optim.Optimizer, compute, params, grad_clip: float = 0.0) -> dict[str, torch.Tensor]:
    """One optimisation step. ``compute()`` returns a dict of losses with ``total``; SAM gets a closure
    that recomputes it at the perturbed weights."""
    params = list(params)
    losses = compute()
    opt.zero_grad(set_to_none=True)
    losses["total"].backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if isinstance(opt, SAM):
        def closure():
            opt.zero_grad(set_to_none=True)
            compute()["total"].backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step(closure)
    else:
        opt.step()
    return losses


class SyntheticPairs(torch.utils.data.Dataset):
    """Generated (real, fake, source, target) crops for tests and smoke runs; no files involved.

    real: a smooth random "face" (bright ellipse on a gradient background); fake: the same image with an
    SBI-like blend of a colour-shifted, blurred copy inside the ellipse; source: that altered copy; target: real.
    """

    def __init__(self, n: int = 16, size: int = 32, seed: int = 0):
        self.n, self.size, self.seed = int(n), int(size), int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(self.seed * 100003 + i)
        s = self.size
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        base = torch.rand(3, 1, 1, generator=g) * 0.6 - 0.3 + 0.3 * yy[None] * torch.rand(3, 1, 1, generator=g)
        cx, cy = (torch.rand(2, generator=g) - 0.5) * 0.3
        m = ((((xx - cx) / 0.55) ** 2 + ((yy - cy) / 0.7) ** 2) < 1).float()[None]
        skin = torch.tensor([0.6, 0.3, 0.1])[:, None, None] + 0.1 * torch.randn(3, 1, 1, generator=g)
        tex = 0.08 * torch.randn(1, s, s, generator=g)
        real = (base * (1 - m) + (skin + tex) * m).clamp(-1, 1)
        shift = 0.25 * torch.randn(3, 1, 1, generator=g)
        src = torch.nn.functional.avg_pool2d((real + shift)[None], 3, 1, 1)[0].clamp(-1, 1)
        soft = torch.nn.functional.avg_pool2d(m[None], 5, 1, 2)[0]
        fake = real * (1 - soft) + src * soft
        return real, fake, src, real.clone()


# ----------------------------------------------------------------------------------------------- training setup
def default_pair_datasets(cfg: Mapping, dataset=None, val_dataset=None, size: int | None = None):
    """``(train, val)`` datasets: the given ones, else :func:`build_pair_dataset` from ``cfg['data']``
    (val only when ``data.val`` is set; ``size`` defaults to ``model.image_size``)."""
    size = int(cfg["model"]["image_size"]) if size is None else int(size)
    if dataset is None:
        dataset = build_pair_dataset(cfg["data"], "train", size, int(cfg["seed"]))
    if val_dataset is None and cfg["data"].get("val", False):
        val_dataset = build_pair_dataset(cfg["data"], "val", size, int(cfg["seed"]))
    return dataset, val_dataset


@dataclass
class TrainSetup:
    """Everything a step-counted training loop shares: optimizer + schedule, loaders, run folder, AMP flag,
    progress bar, the endless batch iterator, the checkpoint path and the best/last validation AUC.

    The per-step helpers keep the loop's bookkeeping (schedule step, finite-loss check, logging, validation
    and save cadence, progress) identical across methods; built by :func:`setup_training`.
    """

    name: str
    tcfg: Mapping
    steps: int
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    loader: DataLoader
    val_loader: DataLoader | None
    run: RunFolder
    amp: bool
    bar: Any
    it: Iterator
    ckpt: Path
    best_auc: float = -1.0
    val_auc: float = float("nan")

    def end_step(self, step: int, losses: Mapping[str, torch.Tensor], what: str) -> dict[str, float]:
        """After an optimisation step: advance the schedule, refuse a non-finite loss (``what`` names it in
        the error), log every ``log_every`` steps and at the end; returns the losses as floats."""
        self.sched.step()
        vals = {k: float(v.detach()) for k, v in losses.items()}
        if not math.isfinite(vals["total"]):
            raise FloatingPointError(f"{what} loss became {vals['total']} at step {step + 1}")
        if (step + 1) % int(self.tcfg["log_every"]) == 0 or step == self.steps - 1:
            self.run.log(step + 1, lr=self.sched.get_last_lr()[0], **vals)
        return vals

    def val_due(self, step: int) -> bool:
        """Validate now? (a val loader exists, and every ``val_every`` steps or at the last step)."""
        ve = int(self.tcfg["val_every"])
        return self.val_loader is not None and ((ve and (step + 1) % ve == 0) or step == self.steps - 1)

    def record_val(self, step: int, val_auc: float) -> bool:
        """Log a validation AUC; True when it is the best so far (the caller then writes ``best.pt``)."""
        self.val_auc = val_auc
        self.run.log(step + 1, val_auc=val_auc)
        if val_auc > self.best_auc:
            self.best_auc = val_auc
            return True
        return False

    def save_due(self, step: int) -> bool:
        """Write the periodic checkpoint now? (every ``save_every`` steps; 0 = never)."""
        se = int(self.tcfg["save_every"])
        return bool(se and (step + 1) % se == 0)

    def tick(self, vals: Mapping[str, float]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{vals['total']:.4f}")


def setup_training(cfg: Mapping, model_params, dataset, val_dataset, gen: torch.Generator, name: str,
                   device: torch.device) -> TrainSetup:
    """Optimizer (``cfg['optim']``) over ``model_params`` + schedule over ``train.steps``, the shuffled train
    loader (seeded by ``gen``) and unshuffled val loader, the run folder under ``out_dir``, and progress bar
    ``name``. AMP is on only when ``train.amp`` is set and ``device`` is CUDA."""
    tcfg = cfg["train"]
    opt = make_optimizer(model_params, cfg["optim"])
    steps = int(tcfg["steps"])
    sched = make_scheduler(opt, steps, cfg["optim"])
    workers = int(cfg["data"]["workers"])
    loader = DataLoader(dataset, batch_size=int(tcfg["batch_size"]), shuffle=True, drop_last=True,
                        num_workers=workers, generator=gen)
    val_loader = (DataLoader(val_dataset, batch_size=int(tcfg["batch_size"]), shuffle=False, num_workers=workers)
                  if val_dataset is not None else None)
    run = RunFolder(cfg["out_dir"], cfg.get("run_name") or None, cfg, step_log=True)
    amp = bool(tcfg["amp"]) and device.type == "cuda"
    bar = progress(steps, name, bool(tcfg["progress"]))
    return TrainSetup(name=name, tcfg=tcfg, steps=steps, opt=opt, sched=sched, loader=loader,
                      val_loader=val_loader, run=run, amp=amp, bar=bar, it=cycle(loader),
                      ckpt=run.path / "checkpoint.pt")


def run_training(s: TrainSetup, model: nn.Module, params, batch: Callable[[Any], Any],
                 losses: Callable[[Any], dict[str, torch.Tensor]], val_auc: Callable[[], float],
                 save: Callable[..., Path], what: str, device: torch.device, t0: float) -> Path:
    """The step loop of every method; returns the final checkpoint ``s.ckpt``.

    Per step: ``model.train()``, ``batch(next raw batch)``, ``losses(batch)`` (a dict with ``total``; under
    bf16 autocast when ``s.amp``) optimised by :func:`train_step` (SAM-aware, ``train.grad_clip`` over
    ``params``), then :meth:`TrainSetup.end_step` (schedule, finite-loss check naming ``what``, logging).
    When validation is due, ``val_auc()`` is recorded and a new best is saved as ``best.pt``; every
    ``train.save_every`` steps and at the end ``save(path, **fields)`` writes the checkpoint (fields:
    ``step``, ``val_auc``, and at the end ``wall_s`` since ``t0``). Closes the progress bar and run folder.
    """
    params = list(params)
    clip = float(s.tcfg["grad_clip"])
    for step in range(s.steps):
        model.train()
        b = batch(next(s.it))

        def compute():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.amp):
                return losses(b)

        vals = s.end_step(step, train_step(s.opt, compute, params, clip), what)
        if s.val_due(step) and s.record_val(step, val_auc()):
            save(s.run.path / "best.pt", val_auc=s.val_auc, step=step + 1)
        if s.save_due(step):
            save(s.ckpt, step=step + 1)
        s.tick(vals)
    s.bar.close()
    save(s.ckpt, step=s.steps, val_auc=s.val_auc, wall_s=round(time.time() - t0, 1))
    s.run.close()
    return s.ckpt
