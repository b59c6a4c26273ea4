"""ANL: noise-head shapes for pixel and latent priors, a few training steps, every mode, the plain-BCE ablation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors.models import FrameDetector, export_module
from trainer import train_loop as tl
from trainer.runs import read_metrics
from trainer.anl import ANLModel, anl_losses, load_anl, noise_attention, train_anl
from trainer.diffusion import build_tiny_pixel, build_tiny_sd, load_frozen_diffusion

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("anl")
    return {"latent": build_tiny_sd(root / "sd"), "pixel": build_tiny_pixel(root / "px", sample_size=16)}


def _cfg(tmp_path, folder, *over):
    return tl.load_config("anl", tl.CONFIG_DIR / "anl.tiny.yaml",
                          [f"out_dir={tmp_path / 'runs'}", f"diffusion.folder={folder}", *over])


def test_noise_head_shapes_pixel_and_latent(folders, tmp_path):
    for kind, expected in (("latent", (4, 16, 16)), ("pixel", (3, 16, 16))):
        cfg = _cfg(tmp_path, folders[kind])
        diff = load_frozen_diffusion(folders[kind])
        shape = diff.latent_shape(32) if kind == "latent" else diff.latent_shape(16)
        assert shape == expected
        model = ANLModel(cfg, shape)
        f = model.detector.features(torch.zeros(2, 3, 32, 32))
        out = model.head(f, torch.tensor([5, 300]))
        assert tuple(out.shape) == (2, *expected)
    # SD-sized head: EN-b4-like 8x8 map -> 4x32x32 latent noise
    big = ANLModel(_cfg(tmp_path, folders["latent"], "model.image_size=256", "anl.head_channels=32"), (4, 32, 32))
    assert tuple(big.head(torch.zeros(1, 64, 16, 16), torch.tensor([10])).shape) == (1, 4, 32, 32)


def test_attention_is_a_distribution():
    a = noise_attention(torch.randn(3, 4, 16, 16), (4, 4), tau=0.5)
    assert a.shape == (3, 16)
    assert torch.allclose(a.sum(1), torch.ones(3))


def test_train_latent_prior_align(folders, tmp_path):
    cfg = _cfg(tmp_path, folders["latent"], "train.steps=3")
    ck = train_anl(cfg, tl.SyntheticPairs(8, 32))
    metrics = read_metrics(ck.parent)
    assert len(metrics) == 3
    for m in metrics:
        assert all(np.isfinite(m[k]) for k in ("total", "cls", "noise", "att", "entropy"))
    model = load_anl(ck)
    fresh = ANLModel(cfg, (4, 16, 16))
    changed = [not torch.equal(a, b) for a, b in zip(model.detector.state_dict().values(),
                                                      fresh.detector.state_dict().values())]
    assert any(changed)
    exp = export_module(model)
    assert isinstance(exp, FrameDetector)  # only backbone + head at inference
    assert exp(torch.zeros(2, 3, 32, 32)).shape == (2, 1)


@pytest.mark.parametrize("mode,target", [("reweight", "eps"), ("erase", "residual"), ("align", "eps_D")])
def test_modes_and_targets_one_step(folders, tmp_path, mode, target):
    cfg = _cfg(tmp_path, folders["pixel"], f"anl.attention_mode={mode}", f"anl.target={target}", "anl.fixed_t=100")
    diff = load_frozen_diffusion(folders["pixel"])
    model = ANLModel(cfg, diff.latent_shape(16))
    real, fake, _, _ = tl.SyntheticPairs(4, 32)[0]
    x = torch.stack([real, fake, real, fake])
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    losses = anl_losses(model, diff, x, y, cfg, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(losses["total"]) and losses["noise"] > 0
    losses["total"].backward()
    assert model.head.out.weight.grad is not None and model.head.out.weight.grad.abs().sum() > 0
    out = export_module(model)(x)
    assert out.shape == (4, 1)
    assert (type(export_module(model)).__name__ == "ReweightedDetector") == (mode == "reweight")


def test_regulariser_off_is_plain_bce_and_learns(tmp_path):
    cfg = _cfg(tmp_path, "", "anl.regulariser=off")
    model = ANLModel(cfg, None)
    data = tl.SyntheticPairs(8, 32)
    pb = tl.unpack_pair_batch(torch.utils.data.default_collate([data[i] for i in range(8)]))
    x, y = tl.pair_batch_xy(pb, "cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        losses = anl_losses(model, None, x, y, cfg)
        assert set(losses) == {"cls", "total"}
        first = float(losses["total"].detach()) if first is None else first
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    assert float(anl_losses(model, None, x, y, cfg)["total"].detach()) < first
    ck = train_anl(cfg, data)  # the full loop runs without any diffusion folder
    assert load_anl(ck).head is None


def test_regulariser_on_needs_a_folder(tmp_path):
    with pytest.raises(tl.ConfigError, match="diffusion.folder"):
        train_anl(_cfg(tmp_path, ""), tl.SyntheticPairs(4, 32))
