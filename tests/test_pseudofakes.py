"""Pseudo-fakes (golden statistics with fixed seeds), landmarkers and the torch datasets over crops."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from detectors import samples
from detectors.bundle import Normalisation
from detectors.faces.align import crop_template
from trainer.landmarks import DlibLandmarker, TemplateLandmarker, mean_shape
from trainer.pseudofakes import (
    HULL_TYPES,
    MASK_TYPES,
    PseudoFakeConfig,
    blend,
    blend_faces,
    choose_mask_type,
    landmark_mask,
    make_pseudo_fake,
)
from trainer.torchdata import CropItem, LabeledCrops, PseudoFakePairs, collate_pairs

NO_AUG = PseudoFakeConfig(post_augment=False)

# Golden ranges (template landmarks on a 256 crop): area fraction of the landmark hull, and of
# the final blend mask (> 0) over seeds 0..11. Measured, then widened by a margin.
HULL_AREA = {"dfl_full": (0.235, 0.26), "components": (0.235, 0.26), "extended": (0.255, 0.28),
             "facehull": (0.24, 0.27), "eyes": (0.095, 0.115), "mouth": (0.078, 0.095), "lower_head": (0.15, 0.17)}
BLEND_AREA = {"dfl_full": (0.12, 0.38), "components": (0.12, 0.38), "extended": (0.13, 0.40), "facehull": (0.12, 0.48),
              "eyes": (0.03, 0.19), "mouth": (0.02, 0.17), "lower_head": (0.06, 0.27)}


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """An aligned-looking 256 crop: astronaut portrait resized (texture everywhere, so blends show)."""
    return cv2.resize(samples.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def lm68() -> np.ndarray:
    return mean_shape(256)


def test_template_landmarks_geometry(crop):
    lm = TemplateLandmarker().landmarks(crop)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    t = crop_template(256)
    # eye centres and mouth corners near the 5-point template the crops are aligned to
    assert np.abs(lm[36:42].mean(0) - t[0]).max() < 6 and np.abs(lm[42:48].mean(0) - t[1]).max() < 6
    assert np.abs(lm[48] - t[3]).max() < 8 and np.abs(lm[54] - t[4]).max() < 8
    assert lm[8, 1] > lm[57, 1] > lm[33, 1] > lm[27, 1] > lm[19, 1]  # chin below mouth below nose below brows
    assert lm[0, 0] < lm[36, 0] < lm[45, 0] < lm[16, 0]
    # follows the 5 points: shifting them shifts every landmark; scaling the crop scales them
    shifted = TemplateLandmarker().landmarks(crop, t + [5.0, -3.0])
    assert np.allclose(shifted - lm, [5.0, -3.0], atol=1e-3)
    small = TemplateLandmarker().landmarks(np.zeros((128, 128, 3), np.uint8))
    assert np.allclose(small, lm / 2, atol=1e-3)


def test_dlib_landmarker_optional(crop):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    face = samples.astronaut()
    from detectors.faces.factory import FacesConfig, build_face_pipeline

    obs = build_face_pipeline(FacesConfig(embed=False)).process(face)
    lm = DlibLandmarker().landmarks(obs[0].crop)
    assert lm.shape == (68, 2)
    assert np.abs(lm - TemplateLandmarker().landmarks(obs[0].crop)).mean() < 15


@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_golden_mask_area_and_locality(crop, lm68, mask_type):
    lo, hi = HULL_AREA[mask_type]
    hull = landmark_mask((256, 256), lm68, mask_type)
    assert lo <= (hull > 0).mean() <= hi
    blo, bhi = BLEND_AREA[mask_type]
    changed = 0
    for seed in range(12):
        real, fake, mask = make_pseudo_fake(crop, lm68, np.random.default_rng(seed), NO_AUG, mask_type=mask_type)
        assert real.shape == fake.shape == crop.shape and real.dtype == fake.dtype == np.uint8
        assert mask.shape == (256, 256) and mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
        assert blo <= (mask > 0).mean() <= bhi, (seed, (mask > 0).mean())
        # outside the mask the fake IS the real, pixel for pixel (before post-augmentation)
        assert np.array_equal(fake[mask == 0], real[mask == 0])
        # the mask stays where its landmark hull is (jitter: <= 3 % shift + 5 % scale, elastic ~1 px)
        ys, xs = np.nonzero(mask)
        hy, hx = np.nonzero(hull)
        assert np.hypot(xs.mean() - hx.mean(), ys.mean() - hy.mean()) < 20
        inside = mask > 0.5 * mask.max()
        changed += int(np.abs(fake.astype(int) - real.astype(int))[inside].mean() > 2.0)
    assert changed == 12  # the blend visibly changes the inside


def test_deterministic_and_seed_sensitive(crop, lm68):
    cfg = PseudoFakeConfig()
    a = make_pseudo_fake(crop, lm68, np.random.default_rng(7), cfg)
    b = make_pseudo_fake(crop, lm68, np.random.default_rng(7), cfg)
    c = make_pseudo_fake(crop, lm68, np.random.default_rng(8), cfg)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_blend_ratio_statistics(crop, lm68):
    maxima = Counter()
    for seed in range(60):
        _, _, mask = make_pseudo_fake(crop, lm68, np.random.default_rng(seed), NO_AUG, mask_type="dfl_full")
        maxima[round(float(mask.max()), 2)] += 1
    assert set(maxima) <= {0.25, 0.5, 0.75, 1.0}
    assert 18 <= maxima[1.0] <= 42  # p(1) = 1/2
    s = np.full((4, 4, 3), 200, np.uint8)
    t = np.full((4, 4, 3), 100, np.uint8)
    m = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    out = blend(s, t, m)
    assert np.array_equal(out[..., 0], np.rint(100 + 100 * m).astype(np.uint8))


def test_post_augment_same_params(crop, lm68):
    # pointwise post-augmentation (no JPEG) keeps real == fake outside the mask: same parameters on both
    cfg = PseudoFakeConfig(post_p_rgb_shift=1.0, post_p_hsv=1.0, post_p_brightness_contrast=1.0, post_p_jpeg=0.0)
    real, fake, mask = make_pseudo_fake(crop, lm68, np.random.default_rng(3), cfg)
    _, _, mask0 = make_pseudo_fake(crop, lm68, np.random.default_rng(3), NO_AUG)
    assert np.array_equal(fake[mask == 0], real[mask == 0])
    plain, _, _ = make_pseudo_fake(crop, lm68, np.random.default_rng(3), NO_AUG)
    assert not np.array_equal(real, plain)  # the augmentation did something
    jp = PseudoFakeConfig(post_p_rgb_shift=0, post_p_hsv=0, post_p_brightness_contrast=0, post_p_jpeg=1.0,
                          post_jpeg_quality=(40, 40))
    r2, f2, m2 = make_pseudo_fake(crop, lm68, np.random.default_rng(3), jp)
    far = cv2.dilate((m2 > 0).astype(np.uint8), np.ones((49, 49), np.uint8)) == 0
    assert np.array_equal(f2[far], r2[far])  # JPEG is blockwise: identical away from the mask


def test_difffake_mask_distribution():
    cfg = PseudoFakeConfig.difffake()
    assert cfg.post_augment is False
    rng = np.random.default_rng(0)
    c = Counter(choose_mask_type("difffake", rng, cfg) for _ in range(1200))
    full = sum(c[h] for h in HULL_TYPES)
    assert 520 <= full <= 680
    for local in ("eyes", "mouth", "lower_head"):
        assert 150 <= c[local] <= 250
    assert set(Counter(choose_mask_type("sbi", rng, cfg) for _ in range(200))) == set(HULL_TYPES)


def test_config_validation():
    with pytest.raises(ValueError, match="hull type"):
        PseudoFakeConfig(hull_types=("star",))
    with pytest.raises(ValueError, match="odd"):
        PseudoFakeConfig(blur_kernel_1=(4, 24))
    with pytest.raises(ValueError, match="68, 2"):
        make_pseudo_fake(np.zeros((64, 64, 3), np.uint8), np.zeros((5, 2)), np.random.default_rng(0))


def test_blend_faces(crop, lm68):
    other = cv2.resize(samples.hanks(), (256, 256), interpolation=cv2.INTER_CUBIC)
    real, fake, mask = blend_faces(crop, other, lm68, np.random.default_rng(1), NO_AUG, mask_type="dfl_full")
    assert np.array_equal(real, crop)
    assert np.array_equal(fake[mask == 0], crop[mask == 0])
    inside = mask > 0.9 * mask.max()
    assert np.abs(fake.astype(int) - crop.astype(int))[inside].mean() > 5
    # colour transfer: the blended-in face keeps the target's mean colour (roughly)
    assert np.abs(fake[inside].mean(0) - crop[inside].mean(0)).max() < 25
    r2, f2, _ = blend_faces(crop, other, lm68, np.random.default_rng(1), NO_AUG, source_landmarks68=lm68 + 4)
    assert f2.shape == crop.shape


# ------------------------------------------------------------------------------------------------ torch datasets


@pytest.fixture(scope="module")
def crop_files(tmp_path_factory, crop) -> list[CropItem]:
    d = tmp_path_factory.mktemp("crops")
    srcs = [crop, cv2.resize(samples.hanks(), (256, 256)), np.ascontiguousarray(crop[:, ::-1])]
    items = []
    for i, img in enumerate(srcs * 2):
        p = d / f"{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        items.append(CropItem(path=p, label=i % 2, video_uid=f"v{i % 3}", identity=f"id{i % 3}"))
    return items


def _run(ds, workers: int):
    dl = DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=collate_pairs, shuffle=False)
    return [(x.clone(), y.clone()) for x, y in dl]


@pytest.mark.parametrize("kind", ["sbi", "difffake", "mix"])
def test_pseudo_fake_pairs_workers(crop_files, kind):
    ds = PseudoFakePairs(crop_files, size=128, normalisation=Normalisation(), seed=5, kind=kind)
    b0 = _run(ds, 0)
    b2 = _run(ds, 2)
    assert len(b0) == 2
    x, y = b0[0]
    assert x.shape == (6, 3, 128, 128) and x.dtype == torch.float32
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    # same tensors whatever the number of workers; fakes differ from their reals
    assert all(torch.equal(a[0], b[0]) for a, b in zip(b0, b2))
    assert float((x[3:] - x[:3]).abs().mean()) > 0
    ds.set_epoch(1)
    assert not torch.equal(ds[0][1], b0[0][0][3])


def test_pseudo_fake_pairs_blend_and_landmarker(crop_files):
    ds = PseudoFakePairs([c.path for c in crop_files[:3]], size=64, kind="blend", landmarker=TemplateLandmarker(), seed=1)
    real, fake = ds[0]
    assert real.shape == fake.shape == (3, 64, 64)
    r, f, m = ds.sample(1)
    assert np.array_equal(f[m == 0], r[m == 0])
    with pytest.raises(ValueError):
        PseudoFakePairs([], size=64)


def test_labeled_crops(crop_files):
    norm = Normalisation(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    ds = LabeledCrops(crop_files, size=96, normalisation=norm)
    labels = []
    for workers in (0, 2):
        dl = DataLoader(ds, batch_size=4, num_workers=workers)
        xs, ys = zip(*dl)
        labels.append(torch.cat(ys).tolist())
        assert torch.cat(xs).shape == (6, 3, 96, 96)
    assert labels[0] == labels[1] == [c.label for c in crop_files]
    raw = cv2.cvtColor(cv2.imread(str(crop_files[0].path)), cv2.COLOR_BGR2RGB)
    expect = (cv2.resize(raw, (96, 96), interpolation=cv2.INTER_AREA)[..., 0] / 255.0 - 0.485) / 0.229
    assert np.allclose(ds[0][0][0].numpy(), expect, atol=1e-5)


def test_grid_on_real_faces(shared_data: Path, tmp_path: Path):
    """Masks from template landmarks sit on real aligned faces (the face pipeline finds the face inside)."""
    from detectors.faces.factory import FacesConfig, build_face_pipeline

    pipe = build_face_pipeline(FacesConfig(embed=False))
    files = sorted((shared_data / "faces" / "congress_gpo").glob("*.jpg"))[:3]
    for i, f in enumerate(files):
        img = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        obs = pipe.process(img)
        assert obs, f
        c = obs[0].crop
        lm = TemplateLandmarker().landmarks(c)
        _, fake, mask = make_pseudo_fake(c, lm, np.random.default_rng(i), NO_AUG, mask_type="dfl_full")
        # re-detecting on the crop finds the face where the mask is
        again = pipe.process(c)
        assert again
        x1, y1, x2, y2 = again[0].face.box
        ys, xs = np.nonzero(mask > 0.5 * mask.max())
        assert x1 - 10 <= xs.mean() <= x2 + 10 and y1 - 10 <= ys.mean() <= y2 + 10
