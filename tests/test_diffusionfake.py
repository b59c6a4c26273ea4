"""DiffusionFake on a tiny Stable-Diffusion-style folder: losses, training steps, guide/zero-convs, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors.models import FrameDetector, export_module
from trainer import train_loop as tl
from trainer.runs import read_metrics
from trainer.diffusion import DiffusionFolderError, build_tiny_pixel, build_tiny_sd, load_frozen_diffusion
from trainer.diffusionfake import (DiffusionFakeModel, FeatureFilter, build_model, diffusionfake_losses,
                                   load_diffusionfake_detector, train_diffusionfake)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("df") / "sd")


def _cfg(tmp_path, folder, *over):
    return tl.load_config("diffusionfake", tl.CONFIG_DIR / "diffusionfake.tiny.yaml",
                          [f"out_dir={tmp_path / 'runs'}", f"diffusion.folder={folder}", *over])


def _batch(n=2):
    data = tl.SyntheticPairs(n, 32)
    return tl.unpack_pair_batch(torch.utils.data.default_collate([data[i] for i in range(n)]))


def test_feature_filter_shape():
    out = FeatureFilter(32, 16, heads=4)(torch.randn(2, 32, 8, 8))
    assert out.shape == (2, 16, 8, 8)


def test_losses_and_weight_targets(sd, tmp_path):
    cfg = _cfg(tmp_path, sd)
    diff = load_frozen_diffusion(sd)
    model = build_model(cfg, diff)
    assert isinstance(model, DiffusionFakeModel)
    losses = diffusionfake_losses(model, diff, _batch(), cfg, "cpu", generator=torch.Generator().manual_seed(0))
    for k in ("cls", "rec_source", "rec_target", "w_source", "w_target", "total"):
        assert torch.isfinite(losses[k]), k
    assert 0 < float(losses["rec_source"].detach()) and 0 <= float(losses["w_target"].detach()) < 1
    losses["total"].backward()
    # zero convs start at zero, so only they (not yet the filters) receive the reconstruction gradient
    zc = model.guide.controlnet_down_blocks[0].weight
    assert float(zc.detach().abs().sum()) == 0.0 and zc.grad is not None and float(zc.grad.abs().sum()) > 0
    assert model.weight["source"].mlp[1].weight.grad.abs().sum() > 0
    # frozen SD receives no gradient
    assert all(p.grad is None for p in diff.unet.parameters())


def test_train_steps_then_filters_get_gradient_and_export(sd, tmp_path):
    cfg = _cfg(tmp_path, sd, "train.steps=3")
    ck = train_diffusionfake(cfg, tl.SyntheticPairs(6, 32))
    metrics = read_metrics(ck.parent)
    assert len(metrics) == 3 and all(np.isfinite(m["total"]) for m in metrics)
    det = load_diffusionfake_detector(ck)
    assert isinstance(det, FrameDetector)
    assert det(torch.zeros(3, 3, 32, 32)).shape == (3, 1)
    # reload the full model: zero convs have moved, so the filters now get gradient through the frozen UNet
    diff = load_frozen_diffusion(sd)
    model = build_model(cfg, diff)
    model.load_state_dict(tl.load_checkpoint(ck, "diffusionfake")["state_dict"])
    assert float(model.guide.controlnet_down_blocks[0].weight.detach().abs().sum()) > 0
    diffusionfake_losses(model, diff, _batch(), cfg, "cpu")["total"].backward()
    assert float(model.filter["target"].out.weight.grad.abs().sum()) > 0
    assert isinstance(export_module(model), FrameDetector)


def test_needs_a_latent_sd_folder(tmp_path):
    px = build_tiny_pixel(tmp_path / "px")
    with pytest.raises(DiffusionFolderError, match="Stable-Diffusion-style"):
        train_diffusionfake(_cfg(tmp_path, px), tl.SyntheticPairs(2, 32))
    with pytest.raises(tl.ConfigError, match="diffusion.folder"):
        train_diffusionfake(_cfg(tmp_path, ""), tl.SyntheticPairs(2, 32))


def test_empty_prompt_file_is_used(tmp_path):
    from trainer.diffusion import write_empty_prompt

    sd = build_tiny_sd(tmp_path / "sd")
    emb = torch.randn(1, 77, 32)
    write_empty_prompt(sd, emb)
    fd = load_frozen_diffusion(sd)  # text_condition auto -> the file
    assert torch.equal(fd.text_embedding, emb)
    assert float(load_frozen_diffusion(sd, text_condition="zeros").text_embedding.abs().sum()) == 0.0
    with pytest.raises(DiffusionFolderError, match="transformers|text_encoder"):
        load_frozen_diffusion(sd, text_condition="encoder")
