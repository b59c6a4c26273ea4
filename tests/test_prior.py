"""Pixel DDPM prior: trains a few steps on generated crops, saves a loadable diffusers folder, regenerates."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from trainer import train_loop as tl
from trainer.runs import read_metrics
from trainer.diffusion import DiffusionFolderError, build_tiny_sd, load_frozen_diffusion
from trainer.prior import regenerate, train_prior

torch.set_num_threads(1)


def _faces(folder, n=8, size=24):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8) + rng.integers(0, 60, 3, dtype=np.uint8)
        disc = (yy - size / 2) ** 2 / 1.3 + (xx - size / 2) ** 2 < (size / 3) ** 2
        img[disc] = (200, 160, 130)
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior")
    cfg = tl.load_config("prior", tl.CONFIG_DIR / "prior.tiny.yaml",
                         [f"out_dir={root / 'prior'}", f"data.image_dirs=[{_faces(root / 'faces')}]",
                          "train.steps=6"])
    return train_prior(cfg)


def test_prior_trains_and_saves_loadable_folder(prior_dir):
    prov = json.loads((prior_dir / "provenance.json").read_text())
    assert prov["steps"] == 6 and np.isfinite(prov["final_loss"])
    assert prov["data"]["n_images"] == 8
    metrics = read_metrics(prior_dir / "train")
    assert len(metrics) == 6 and all(np.isfinite(m["loss"]) for m in metrics)
    fd = load_frozen_diffusion(prior_dir, expect="pixel")
    assert fd.kind == "pixel" and fd.num_train_timesteps == 1000
    assert fd.latent_shape(16) == (3, 16, 16)
    x = torch.zeros(2, 3, 16, 16)
    t = torch.tensor([10, 500])
    assert fd.predict_noise(fd.q_sample(x, t, torch.randn_like(x)), t).shape == x.shape


def test_regenerate_changes_images_more_with_strength(prior_dir):
    fd = load_frozen_diffusion(prior_dir)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    weak = regenerate(x, fd, strength=0.05, steps=10, seed=1)
    strong = regenerate(x, fd, strength=0.9, steps=10, seed=1)
    assert weak.shape == x.shape and torch.isfinite(weak).all()
    assert weak.min() >= -1 and weak.max() <= 1
    assert (strong - x).abs().mean() > (weak - x).abs().mean()
    with pytest.raises(ValueError, match="strength"):
        regenerate(x, fd, strength=0.0)


def test_unknown_config_key_is_refused():
    with pytest.raises(tl.ConfigError, match="unknown config key"):
        tl.load_config("prior", overrides=["train.stepz=3"])


def test_wrong_kind_folder_errors(tmp_path):
    sd = build_tiny_sd(tmp_path / "sd")
    with pytest.raises(DiffusionFolderError, match="expected a pixel-space"):
        regenerate(torch.zeros(1, 3, 16, 16), sd)
    with pytest.raises(DiffusionFolderError, match="not found"):
        load_frozen_diffusion(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    with pytest.raises(DiffusionFolderError, match="junk.*AutoencoderKL"):
        load_frozen_diffusion(tmp_path / "junk")
