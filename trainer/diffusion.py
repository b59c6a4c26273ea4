"""Frozen diffusion models from LOCAL diffusers folders, behind one interface (training-time only).

Two kinds are recognised (methods.md §2.3, §3.4):

* ``latent``: a Stable-Diffusion-style folder: ``unet/`` (UNet2DConditionModel), ``vae/`` (AutoencoderKL),
  ``scheduler/``, optionally ``text_encoder/`` + ``tokenizer/``. The text condition is the empty-prompt
  embedding, computed once (needs the optional ``transformers`` package) or read from
  ``empty_prompt.safetensors`` in the folder, or zeros of the right shape when neither is available.
* ``pixel``: a pixel-space UNet2DModel (+ scheduler), as written by :mod:`trainer.prior` (DDPMPipeline
  layout ``unet/`` + ``scheduler/``), or a bare UNet2DModel folder with ``config.json`` (+ ``scheduler_config.json``).

Nothing is ever fetched from the hub: the argument must be an existing folder and everything is loaded
with ``local_files_only=True``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


class DiffusionFolderError(ValueError):
    """The folder is missing or does not hold a diffusion model of the expected kind."""


def _class_name(cfg_path: Path) -> str | None:
    if not cfg_path.is_file():
        return None
    try:
        return json.loads(cfg_path.read_text()).get("_class_name")
    except (OSError, json.JSONDecodeError):
        return None


@dataclass
class FolderLayout:
    kind: str  # "latent" | "pixel"
    unet_sub: str | None  # subfolder of the UNet, None = the folder itself
    scheduler_sub: str | None
    has_scheduler: bool
    has_text: bool


def inspect_folder(folder: str | Path) -> FolderLayout:
    """Work out which kind of diffusers model ``folder`` holds; raise DiffusionFolderError otherwise."""
    root = Path(folder)
    expected = ("a Stable-Diffusion-style folder (unet/ UNet2DConditionModel + vae/ AutoencoderKL + scheduler/) "
                "or a pixel-space UNet2DModel folder (unet/ or config.json, + scheduler)")
    if not root.is_dir():
        raise DiffusionFolderError(f"diffusion model folder not found: {root} (must be a local folder, never a hub id)")
    unet_cls = _class_name(root / "unet" / "config.json")
    unet_sub: str | None = "unet"
    if unet_cls is None:
        unet_cls, unet_sub = _class_name(root / "config.json"), None
    if unet_sub is None and unet_cls is None:
        raise DiffusionFolderError(f"{root}: no unet/config.json or config.json found; expected {expected}")
    sched_sub: str | None = "scheduler"
    has_sched = (root / "scheduler" / "scheduler_config.json").is_file()
    if not has_sched and (root / "scheduler_config.json").is_file():
        has_sched, sched_sub = True, None
    if unet_cls == "UNet2DConditionModel":
        vae_cls = _class_name(root / "vae" / "config.json")
        if vae_cls != "AutoencoderKL":
            raise DiffusionFolderError(f"{root}: UNet2DConditionModel found but vae/ is {vae_cls or 'missing'}; "
                                       f"expected an AutoencoderKL in vae/")
        has_text = (root / "text_encoder" / "config.json").is_file() and (root / "tokenizer").is_dir()
        return FolderLayout("latent", unet_sub, sched_sub, has_sched, has_text)
    if unet_cls == "UNet2DModel":
        if (root / "vqvae").is_dir() or (root / "vae").is_dir():
            raise DiffusionFolderError(f"{root}: latent UNet2DModel (with a VQ/KL autoencoder) is not supported; "
                                       f"expected {expected}")
        return FolderLayout("pixel", unet_sub, sched_sub, has_sched, False)
    raise DiffusionFolderError(f"{root}: holds a {unet_cls!r}, not a diffusion UNet; expected {expected}")


class FrozenDiffusion(nn.Module):
    """A frozen diffusion model with a uniform interface for ANL and DiffusionFake.

    Attributes: ``kind`` ("latent"/"pixel"), ``alphas_cumprod`` (T,), ``num_train_timesteps``,
    ``prediction_type`` ("epsilon"/"v_prediction"/"sample"; always converted to ε by
    :meth:`predict_noise`), ``scaling_factor`` (VAE latent scale; 1 for pixel space).
    """

    def __init__(self, unet: nn.Module, scheduler, vae: nn.Module | None = None,
                 text_embedding: torch.Tensor | None = None, vae_sample: str = "mean", folder: str = ""):
        super().__init__()
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.kind = "latent" if vae is not None else "pixel"
        self.folder = folder
        self.scheduler = scheduler
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.prediction_type = str(scheduler.config.get("prediction_type", "epsilon"))
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.detach().clone().float(), persistent=False)
        self.scaling_factor = float(vae.config.scaling_factor) if vae is not None else 1.0
        if vae_sample not in ("mean", "sample"):
            raise ValueError(f"vae_sample must be 'mean' or 'sample', got {vae_sample!r}")
        self.vae_sample = vae_sample
        if self.kind == "latent":
            if text_embedding is None:
                raise ValueError("a latent (Stable-Diffusion-style) model needs a text embedding")
            self.register_buffer("text_embedding", text_embedding.detach().float(), persistent=False)
        else:
            self.text_embedding = None
        self.conditional = self.kind == "latent"

    # -- shapes --------------------------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def downscale(self) -> int:
        """Pixel size / latent size (8 for SD; 1 for pixel space)."""
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """Shape (C, h, w) of :meth:`encode` output for a square image of side ``image_size``."""
        if image_size % self.downscale:
            raise ValueError(f"image size {image_size} must be a multiple of {self.downscale} for {self.folder}")
        s = image_size // self.downscale
        return (self.latent_channels, s, s)

    # -- forward process -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (N,3,H,W) -> model space: VAE latents * scaling factor, or x itself (pixel)."""
        if self.vae is None:
            return x
        x = x.to(next(self.vae.parameters()).dtype)
        dist = self.vae.encode(x).latent_dist
        z = dist.mean if self.vae_sample == "mean" else dist.sample()
        return (z * self.scaling_factor).float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return z
        z = z.to(next(self.vae.parameters()).dtype) / self.scaling_factor
        return self.vae.decode(z).sample.float()

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod.to(like.device)[t.long().to(like.device)]
        return a.view(-1, *([1] * (like.dim() - 1))).to(like.dtype)

    def q_sample(self, z: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps."""
        a = self._abar(t, z)
        return a.sqrt() * z + (1 - a).sqrt() * eps

    def sample_timesteps(self, n: int, t_min: int = 0, t_max: int | None = None,
                         generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        hi = self.num_train_timesteps - 1 if t_max is None else min(int(t_max), self.num_train_timesteps - 1)
        lo = max(0, int(t_min))
        if lo > hi:
            raise ValueError(f"empty timestep range [{t_min}, {t_max}]")
        return torch.randint(lo, hi + 1, (n,), generator=generator).to(device or self.alphas_cumprod.device)

    # -- denoiser ------------------------------------------------------------------------------------
    def _to_eps(self, out: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return out
        a = self._abar(t, z_t)
        if self.prediction_type == "v_prediction":
            return a.sqrt() * out + (1 - a).sqrt() * z_t
        if self.prediction_type == "sample":
            return (z_t - a.sqrt() * out) / (1 - a).sqrt()
        raise ValueError(f"unsupported prediction_type {self.prediction_type!r} in {self.folder}")

    def unet_eps(self, z_t: torch.Tensor, t: torch.Tensor, down_residuals=None, mid_residual=None) -> torch.Tensor:
        """ε estimate WITH autograd (frozen weights; gradients flow to the inputs/residuals)."""
        dtype = next(self.unet.parameters()).dtype
        if self.conditional:
            cond = self.text_embedding.to(z_t.device, dtype).expand(z_t.shape[0], -1, -1)
            kw = {}
            if down_residuals is not None:
                kw["down_block_additional_residuals"] = [r.to(dtype) for r in down_residuals]
                kw["mid_block_additional_residual"] = mid_residual.to(dtype)
            out = self.unet(z_t.to(dtype), t, encoder_hidden_states=cond, **kw).sample
        else:
            if down_residuals is not None:
                raise ValueError(f"{self.folder}: control residuals need a Stable-Diffusion-style (latent) model")
            out = self.unet(z_t.to(dtype), t).sample
        return self._to_eps(out.float(), z_t, t)

    @torch.no_grad()
    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε_D(z_t, t) of the frozen model (no grad), with the empty-prompt condition for SD."""
        return self.unet_eps(z_t, t)

    def unet_encoder_copy(self) -> nn.Module:
        """Trainable ControlNet-style copy of the UNet encoder (weights copied, zero-initialised output convs).

        Its hint-conv stack is replaced by identity: the caller passes a feature map of shape
        (N, block_out_channels[0], h, w) as ``controlnet_cond``, which is added to the output of the copy's
        input conv (methods.md §3.3).
        """
        if self.kind != "latent":
            raise DiffusionFolderError(f"{self.folder}: the guide module needs a Stable-Diffusion-style model "
                                       f"(UNet2DConditionModel), this one is pixel-space")
        from diffusers import ControlNetModel

        cn = ControlNetModel.from_unet(self.unet, load_weights_from_unet=True)
        cn.controlnet_cond_embedding = nn.Identity()
        return cn.float().requires_grad_(True).train()

    @property
    def first_block_channels(self) -> int:
        return int(self.unet.config.block_out_channels[0])


def _empty_prompt(root: Path, layout: FolderLayout, unet, mode: str, seq_len: int) -> torch.Tensor:
    dim = int(unet.config.cross_attention_dim)
    cached = root / "empty_prompt.safetensors"
    if mode in ("auto", "file") and cached.is_file():
        from safetensors.torch import load_file

        emb = load_file(str(cached))["embedding"]
        return emb if emb.dim() == 3 else emb[None]
    if mode == "file":
        raise DiffusionFolderError(f"{root}: text_condition 'file' but {cached.name} is missing")
    if mode in ("auto", "encoder") and layout.has_text:
        try:
            from transformers import AutoTokenizer, CLIPTextModel  # optional dependency
        except ImportError:
            if mode == "encoder":
                raise DiffusionFolderError(f"{root}: text_condition 'encoder' needs the 'transformers' package") from None
        else:
            tok = AutoTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
            enc = CLIPTextModel.from_pretrained(root / "text_encoder", local_files_only=True).eval()
            ids = tok([""], padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
            with torch.no_grad():
                return enc(ids)[0].float()
    if mode == "encoder":
        raise DiffusionFolderError(f"{root}: text_condition 'encoder' but no text_encoder/ + tokenizer/")
    if mode not in ("auto", "zeros"):
        raise ValueError(f"text_condition must be auto, encoder, file or zeros, got {mode!r}")
    if mode == "auto":
        log.warning("%s: no usable text encoder; using a zero text condition of shape (1, %d, %d)", root, seq_len, dim)
    return torch.zeros(1, seq_len, dim)


def write_empty_prompt(folder: str | Path, embedding: torch.Tensor | None = None) -> Path:
    """Store the empty-prompt text embedding as ``<folder>/empty_prompt.safetensors`` (read by ``text_condition``
    auto/file), so machines without ``transformers`` use the real condition. Without ``embedding`` it is
    computed from the folder's text encoder (needs ``transformers``)."""
    from safetensors.torch import save_file

    root = Path(folder)
    if embedding is None:
        layout = inspect_folder(root)
        if layout.kind != "latent":
            raise DiffusionFolderError(f"{root}: not a Stable-Diffusion-style folder")
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(str(root), subfolder="unet", local_files_only=True,
                                                    low_cpu_mem_usage=False)
        embedding = _empty_prompt(root, layout, unet, "encoder", 77)
    out = root / "empty_prompt.safetensors"
    save_file({"embedding": embedding.detach().float().contiguous().cpu()}, str(out))
    return out


def load_frozen_diffusion(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                          expect: str | None = None, text_condition: str = "auto", seq_len: int = 77,
                          vae_sample: str = "mean") -> FrozenDiffusion:
    """Load a local diffusers folder as a :class:`FrozenDiffusion`.

    ``expect``: ``"latent"`` or ``"pixel"`` to refuse the other kind with a clear error (``None`` = any).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UNet2DModel

    root = Path(folder)
    layout = inspect_folder(root)
    if expect is not None and layout.kind != expect:
        want = {"latent": "a Stable-Diffusion-style folder (UNet2DConditionModel + AutoencoderKL)",
                "pixel": "a pixel-space UNet2DModel folder"}[expect]
        raise DiffusionFolderError(f"{root}: holds a {layout.kind} diffusion model; expected {want}")
    sub = {"subfolder": layout.unet_sub} if layout.unet_sub else {}
    if layout.has_scheduler:
        ssub = {"subfolder": layout.scheduler_sub} if layout.scheduler_sub else {}
        # any scheduler config (PNDM, DDIM, ...) -> DDPM with the same betas; only alphas_cumprod is used
        scheduler = DDPMScheduler.from_pretrained(str(root), local_files_only=True, **ssub)
    else:
        log.warning("%s: no scheduler config; assuming DDPM 1000 steps, linear betas", root)
        scheduler = DDPMScheduler(num_train_timesteps=1000)
    if layout.kind == "latent":
        unet = UNet2DConditionModel.from_pretrained(str(root), local_files_only=True, torch_dtype=dtype,
                                                    low_cpu_mem_usage=False, **sub)
        vae = AutoencoderKL.from_pretrained(str(root), subfolder="vae", local_files_only=True, torch_dtype=dtype,
                                            low_cpu_mem_usage=False)
        emb = _empty_prompt(root, layout, unet, text_condition, seq_len)
        fd = FrozenDiffusion(unet, scheduler, vae, emb, vae_sample=vae_sample, folder=str(root))
    else:
        unet = UNet2DModel.from_pretrained(str(root), local_files_only=True, torch_dtype=dtype,
                                                    low_cpu_mem_usage=False, **sub)
        fd = FrozenDiffusion(unet, scheduler, None, None, folder=str(root))
    return fd.to(device)


# ----------------------------------------------------------------------------------------------- test helpers
def load_diffusion_for(cfg: Mapping, device: torch.device) -> FrozenDiffusion:
    """The frozen diffusion model of a method config's ``diffusion`` block (``folder``, ``dtype`` (fp16 only on
    CUDA), ``expect``, ``text_condition``, ``vae_sample``) on ``device``."""
    d = cfg["diffusion"]
    dtype = torch.float16 if (d["dtype"] == "fp16" and device.type == "cuda") else torch.float32
    return load_frozen_diffusion(d["folder"], device=device, dtype=dtype, expect=d.get("expect") or None,
                                 text_condition=d["text_condition"], vae_sample=d["vae_sample"])


def build_tiny_sd(folder: str | Path, sample_size: int = 8, cross_dim: int = 32, seed: int = 0) -> Path:
    """Write a tiny random Stable-Diffusion-style folder (UNet2DConditionModel + AutoencoderKL + DDPM
    scaled-linear scheduler; no text encoder) for tests and smoke runs. The VAE downsamples by 2 (latent side = pixel/2)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    root = Path(folder)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_dim,
        attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=4, norm_num_groups=8, layers_per_block=1)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    sched.save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDPMScheduler"]}))
    return root


def build_tiny_pixel(folder: str | Path, sample_size: int = 16, seed: int = 0) -> Path:
    """Write a tiny random pixel-space UNet2DModel + DDPMScheduler folder (DDPMPipeline layout)."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    root = Path(folder)
    unet = UNet2DModel(sample_size=sample_size, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(16, 32), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)
    unet.save_pretrained(root / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"]}))
    return root
