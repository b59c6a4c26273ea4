"""A tiny latent autoencoder for reconstruction pseudo-fakes (trainer only; never in a bundle).

Whole-image generators (latent diffusion, GAN-like decoders) leave the upsampling fingerprints of their
latent decoder over the whole face. Round-tripping a *real* face through such a decoder (encode ->
decode) gives a fake-like image with those artefacts and the real content, made from real images only
(the idea behind reconstruction-trained detectors such as DRCT and AEROBLADE).

The module below follows the weight layout of TAEF2 (``../shared/models/taef2``: MIT, a distillation of
FLUX.2's VAE into about 1.34 M parameters per half; see its README and KEYS.txt): a sequential stack of
3x3 convolutions, three stride-2 stages and residual blocks ``N.conv.{0,2,4}``; the three blocks at the
latent resolution (last three of the encoder, first three of the decoder) have a 1x1 bottleneck
``N.pool.{0,1,3}`` (1x1 conv to 4x the width, GroupNorm with 4 groups, ReLU, 1x1 conv back) added to
their input. Images are RGB in [0, 1]; latents are 32 x H/8 x W/8; the decoder soft-clamps its input to
+-3 and its output is clipped to [0, 1].

:func:`load_autoencoder` takes the folder holding ``taef2_encoder.pth`` and ``taef2_decoder.pth`` (a local
path; nothing is downloaded) and fails with a message naming the file when a tensor is missing or of the
wrong shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WIDTH = 64
LATENT = 32


class ResBlock(nn.Module):
    """relu(body(x') + x') with x' = x + bottleneck(x) when the block has a bottleneck."""

    def __init__(self, width: int = WIDTH, bottleneck: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1))
        self.pool: nn.Module | None = None
        if bottleneck:
            wide = 4 * width
            self.pool = nn.Sequential(nn.Conv2d(width, wide, 1, bias=False), nn.GroupNorm(4, wide), nn.ReLU(),
                                      nn.Conv2d(wide, width, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


class SoftClamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3.0 * torch.tanh(x / 3.0)


def _down() -> nn.Conv2d:
    return nn.Conv2d(WIDTH, WIDTH, 3, stride=2, padding=1, bias=False)


def _up() -> list[nn.Module]:
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False)]


def build_encoder() -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, WIDTH, 3, padding=1), ResBlock()]
    for stage in range(3):
        layers += [_down(), *(ResBlock(bottleneck=stage == 2) for _ in range(3))]
    layers.append(nn.Conv2d(WIDTH, LATENT, 3, padding=1))
    return nn.Sequential(*layers)


def build_decoder() -> nn.Sequential:
    layers: list[nn.Module] = [SoftClamp(), nn.Conv2d(LATENT, WIDTH, 3, padding=1), nn.ReLU()]
    for stage in range(3):
        layers += [*(ResBlock(bottleneck=stage == 0) for _ in range(3)), *_up()]
    layers += [ResBlock(), nn.Conv2d(WIDTH, 3, 3, padding=1)]
    return nn.Sequential(*layers)


class LatentAutoencoder(nn.Module):
    """encode: (N,3,H,W) in [0,1] -> (N,32,H/8,W/8); decode: back to [0,1]. H, W multiples of 8."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = build_encoder()
        self.decoder = build_decoder()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def reconstruct_uint8(self, imgs: np.ndarray, latent_noise: float = 0.0,
                          generator: torch.Generator | None = None) -> np.ndarray:
        """RGB uint8 (N,H,W,3) or (H,W,3) -> the round trip, same shape; sides padded to a multiple of 8
        (reflect) and cropped back. ``latent_noise`` > 0 adds N(0, sigma^2) to the latent before decoding
        (the decoder then invents details: a stronger, less faithful regeneration)."""
        single = imgs.ndim == 3
        a = imgs[None] if single else imgs
        x = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float().div_(255.0)
        h, w = x.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        z = self.encode(x)
        if latent_noise > 0:
            z = z + latent_noise * torch.randn(z.shape, generator=generator, dtype=z.dtype)
        y = self.decode(z)[..., :h, :w]
        out = y.mul(255.0).round_().clamp_(0, 255).byte().permute(0, 2, 3, 1).numpy()
        return out[0] if single else out


FILES = {"encoder": "taef2_encoder.pth", "decoder": "taef2_decoder.pth"}


def _load_half(module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"autoencoder weights not found: {path} (expected the TAEF2 layout, see ../shared/models/taef2)")
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable torch state dict ({type(e).__name__}: {e})") from None
    want = module.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(want[k].shape)}" for k in want
             if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: weights do not fit the TAEF2-layout {type(module).__name__} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}, shape mismatches {wrong[:3]})")
    module.load_state_dict({k: v.float() for k, v in sd.items()})


def load_autoencoder(folder: str | Path, threads: int | None = None) -> LatentAutoencoder:
    """The autoencoder with the weights of ``folder`` (``taef2_encoder.pth`` + ``taef2_decoder.pth``), eval mode."""
    folder = Path(folder)
    ae = LatentAutoencoder()
    _load_half(ae.encoder, folder / FILES["encoder"])
    _load_half(ae.decoder, folder / FILES["decoder"])
    return ae.eval().requires_grad_(False)


def provenance(folder: str | Path) -> dict:
    """Manifest entry for the weights used (file names + sha256, licence from the folder's LICENSE)."""
    import hashlib

    folder = Path(folder)
    files = {k: {"file": v, "sha256": hashlib.sha256((folder / v).read_bytes()).hexdigest()} for k, v in FILES.items()}
    lic = (folder / "LICENSE").read_text(errors="replace").splitlines()[0].strip() if (folder / "LICENSE").is_file() else None
    return {"name": "TAEF2 (tiny autoencoder of the FLUX.2 latent space)", "source": "madebyollin/taesd@5cccb12",
            "licence": "MIT" if lic and "MIT" in lic else lic, "files": files,
            "use": "training only: reconstruction pseudo-fakes; not part of the bundle"}
