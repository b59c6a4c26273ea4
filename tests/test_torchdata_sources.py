"""DiffusionFake data path: pseudo-fake source/target images, detector-only augmentation, weight targets."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from detectors import samples
from trainer import train_loop as tl
from trainer.runs import read_metrics
from trainer.diffusion import build_tiny_sd, load_frozen_diffusion
from trainer.diffusionfake import (_branch_images, prepare_train_dataset, train_diffusionfake, unpack_batch,
                                   weight_targets)
from trainer.landmarks import mean_shape
from trainer.pseudofakes import (PseudoFakeConfig, blend, blend_faces, blend_faces_parts, make_pseudo_fake,
                                 make_pseudo_fake_parts)
from trainer.torchdata import AugmentConfig, CropItem, DetectorAugment, PseudoFakePairs, collate_pairs

torch.set_num_threads(1)
NO_AUG = PseudoFakeConfig(post_augment=False)
ALWAYS = AugmentConfig(p_hflip=1.0, p_rotate=1.0, p_rrc=1.0, p_hflip2=0.0, p_gray=1.0, p_noise=1.0)


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return cv2.resize(samples.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def other() -> np.ndarray:
    return cv2.resize(samples.hanks(), (128, 128), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def crop_items(tmp_path_factory, crop, other) -> list[CropItem]:
    d = tmp_path_factory.mktemp("crops")
    items = []
    for i, img in enumerate([crop, other, np.ascontiguousarray(crop[:, ::-1]), np.ascontiguousarray(other[::-1])]):
        p = d / f"{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        items.append(CropItem(path=p, video_uid=f"v{i}", identity=f"id{i % 2}"))
    return items


# ------------------------------------------------------------------------------------ pseudofakes parts


def test_sbi_parts_are_the_blended_images(crop):
    lm = mean_shape(128)
    for seed in range(4):
        p = make_pseudo_fake_parts(crop, lm, np.random.default_rng(seed), NO_AUG)
        assert np.array_equal(p.fake, blend(p.source, p.target, p.mask))  # fake = mask*source + (1-mask)*target
        assert np.array_equal(p.real, p.target) and np.array_equal(p.fake, p.fake_clean)
        assert not np.array_equal(p.source, p.target)  # one of them was transformed / jittered
    # same draws and output as the 3-tuple API, post-augmentation included
    cfg = PseudoFakeConfig(post_p_jpeg=1.0)
    r, f, m = make_pseudo_fake(crop, lm, np.random.default_rng(9), cfg)
    p = make_pseudo_fake_parts(crop, lm, np.random.default_rng(9), cfg)
    assert np.array_equal(r, p.real) and np.array_equal(f, p.fake) and np.array_equal(m, p.mask)
    # the reconstruction images are the pre-augmentation ones (JPEG at p=1 changed the detector pair)
    assert not np.array_equal(p.fake, p.fake_clean)
    assert np.array_equal(p.fake_clean, blend(p.source, p.target, p.mask))


def test_blend_faces_parts_source_is_the_donor(crop, other):
    lm = mean_shape(128)
    p = blend_faces_parts(crop, other, lm, np.random.default_rng(2), NO_AUG)
    r, f, _ = blend_faces(crop, other, lm, np.random.default_rng(2), NO_AUG)
    assert np.array_equal(r, p.real) and np.array_equal(f, p.fake)
    assert np.array_equal(p.target, crop) and np.array_equal(p.fake, blend(p.source, p.target, p.mask))
    # the donor (other identity) is much closer to `other` than to the target crop
    d_other = np.abs(p.source.astype(int) - other).mean()
    d_crop = np.abs(p.source.astype(int) - crop).mean()
    assert d_other < d_crop


# ------------------------------------------------------------------------------------ augmentation


def test_detector_augment_ops(crop):
    flip = DetectorAugment(AugmentConfig(p_hflip=1.0, p_rotate=0, p_rrc=0, p_hflip2=0, p_gray=0, p_noise=0))
    assert np.array_equal(flip(crop, np.random.default_rng(0)), crop[:, ::-1])
    off = DetectorAugment(AugmentConfig(p_hflip=0, p_rotate=0, p_rrc=0, p_hflip2=0, p_gray=0, p_noise=0))
    assert np.array_equal(off(crop, np.random.default_rng(0)), crop)
    aug = DetectorAugment(ALWAYS)
    a = aug(crop, np.random.default_rng(3))
    assert a.shape == crop.shape and a.dtype == np.uint8
    assert np.array_equal(a, aug(crop, np.random.default_rng(3)))  # pure function of the generator
    g = DetectorAugment(AugmentConfig(p_hflip=0, p_rotate=0, p_rrc=0, p_hflip2=0, p_gray=1.0, p_noise=0))(
        crop, np.random.default_rng(0))
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
    assert DetectorAugment.from_spec(False) is None and DetectorAugment.from_spec(None) is None
    assert DetectorAugment.from_spec(True).cfg == AugmentConfig()
    assert DetectorAugment.from_spec({"p_gray": 0.5}).cfg.p_gray == 0.5
    with pytest.raises(ValueError, match="unknown augmentation keys"):
        DetectorAugment({"p_grey": 0.5})


def test_reconstruction_images_unaugmented_input_augmented(crop_items):
    plain = PseudoFakePairs(crop_items, size=64, cfg=NO_AUG, seed=4, branches=True)
    aug = plain.with_options(augment=ALWAYS)
    assert plain.augment is None and aug.augment is not None  # off by default, copy leaves the original alone
    for i in range(len(crop_items)):
        a, p = aug[i], plain[i]
        assert set(a) == {"real", "fake", "source", "target", "real_clean", "fake_clean"}
        for k in ("source", "target", "real_clean", "fake_clean"):
            assert a[k].shape == (3, 64, 64) and torch.equal(a[k], p[k]), k  # never augmented
        assert not torch.equal(a["real"], p["real"]) and not torch.equal(a["fake"], p["fake"])
        # unaugmented detector input = the clean images (no post-blend augmentation in NO_AUG)
        assert torch.allclose(p["real"], p["real_clean"], atol=1e-6) and torch.allclose(p["fake"], p["fake_clean"], atol=1e-6)
        assert torch.equal(p["real_clean"], p["target"])
        assert -1.0 <= float(a["source"].min()) and float(a["source"].max()) <= 1.0
    # default items stay (real, fake) tuples; dict items collate like pairs
    t = PseudoFakePairs(crop_items, size=64, cfg=NO_AUG, seed=4)[0]
    assert isinstance(t, tuple) and torch.equal(t[1], plain[0]["fake"])
    x, y = collate_pairs([plain[0], plain[1]])
    assert x.shape == (4, 3, 64, 64) and y.tolist() == [0, 0, 1, 1]


def test_blend_kind_branches(crop_items):
    ds = PseudoFakePairs(crop_items, size=64, cfg=NO_AUG, seed=0, kind="blend", branches=True)
    it = ds[0]
    # source = another identity's face: far from the real frame, unlike SBI's altered copy of itself
    assert float((it["source"] - it["target"]).abs().mean()) > 0.1


# ------------------------------------------------------------------------------------ DiffusionFake use


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "sd")


def _batch(ds, n=2):
    return unpack_batch(default_collate([ds[i] for i in range(n)]))


def test_branch_images_and_weight_targets(crop_items, sd):
    ds = PseudoFakePairs(crop_items, size=32, cfg=NO_AUG, seed=1, branches=True, augment=ALWAYS)
    pb = _batch(ds)
    assert {"real_clean", "fake_clean", "source", "target"} <= set(pb)
    imgs = _branch_images(pb)
    assert torch.equal(imgs["target"], torch.cat([pb["real_clean"], pb["target"]]))
    assert torch.equal(imgs["source"], torch.cat([pb["real_clean"], pb["source"]]))
    assert not torch.equal(imgs["target"][:2], pb["real"])  # not the augmented detector input
    diff = load_frozen_diffusion(sd)
    with torch.no_grad():
        z = {b: diff.encode(v) for b, v in imgs.items()}
        s = weight_targets(diff, pb, z, "cpu")
        assert torch.equal(s["target"][:2], torch.ones(2)) and torch.equal(s["source"][:2], torch.ones(2))
        assert all(0 < float(v) <= 1.0 + 1e-6 for b in s for v in s[b][2:])
        # a fake identical to its source branch image scores (cos 1 + 1) / 2 = 1
        same = dict(pb, fake_clean=pb["source"])
        s1 = weight_targets(diff, same, z, "cpu")
        assert torch.allclose(s1["source"], torch.ones(4), atol=1e-5)
        assert float(s1["target"][2:].min()) < 1.0 - 1e-4


def test_train_diffusionfake_on_pseudo_fake_pairs(crop_items, sd, tmp_path):
    cfg = tl.load_config("diffusionfake", tl.CONFIG_DIR / "diffusionfake.tiny.yaml",
                         [f"out_dir={tmp_path / 'runs'}", f"diffusion.folder={sd}", "train.steps=2"])
    ds = PseudoFakePairs(crop_items, size=32, seed=0)
    prepared = prepare_train_dataset(ds, cfg)
    assert prepared.branches and prepared.augment is not None and not ds.branches
    off = prepare_train_dataset(ds, {**cfg, "diffusionfake": {**cfg["diffusionfake"], "detector_augment": False}})
    assert off.augment is None
    ck = train_diffusionfake(cfg, ds)
    rows = read_metrics(ck.parent)
    assert len(rows) == 2 and all(np.isfinite(r["total"]) and 0 <= r["w_source"] < 1 for r in rows)
    # batches of the prepared dataset through a DataLoader carry the clean images
    pb = unpack_batch(next(iter(DataLoader(prepared, batch_size=2))))
    assert pb["source"].shape == pb["real"].shape == (2, 3, 32, 32)
