"""The latent autoencoder (TAEF2 layout) and the reconstruction pseudo-fakes built with it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detectors import samples
from trainer.autoencoder import LatentAutoencoder, load_autoencoder
from trainer.reconstruct import load_index, reconstruct_crops
from trainer.torchdata import AugmentConfig, CropItem, DetectorAugment, PseudoFakePairs

TAEF2 = Path(__file__).resolve().parents[2] / "shared" / "models" / "taef2"


def test_layout_matches_the_published_key_listing():
    ae = LatentAutoencoder()
    # KEYS.txt of ../shared/models/taef2: 79 tensors each, 1,338,528 (encoder) / 1,338,499 (decoder) parameters
    assert sum(p.numel() for p in ae.encoder.parameters()) == 1_338_528
    assert sum(p.numel() for p in ae.decoder.parameters()) == 1_338_499
    assert len(ae.encoder.state_dict()) == len(ae.decoder.state_dict()) == 79
    z = ae.encode(torch.rand(1, 3, 64, 96))
    assert z.shape == (1, 32, 8, 12)
    assert ae.decode(z).shape == (1, 3, 64, 96)


def _random_weights(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    ae = LatentAutoencoder()
    torch.save({k: v.half() for k, v in ae.encoder.state_dict().items()}, folder / "taef2_encoder.pth")
    torch.save({k: v.half() for k, v in ae.decoder.state_dict().items()}, folder / "taef2_decoder.pth")
    return folder


def test_bad_weight_files_name_the_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="taef2_encoder.pth"):
        load_autoencoder(tmp_path)
    d = _random_weights(tmp_path / "w")
    sd = torch.load(d / "taef2_decoder.pth", weights_only=True)
    sd.pop("19.weight")
    torch.save(sd, d / "taef2_decoder.pth")
    with pytest.raises(ValueError, match=r"taef2_decoder.pth: weights do not fit.*missing \['19.weight'\]"):
        load_autoencoder(d)


@pytest.mark.data
def test_real_weights_reconstruct_a_face_faithfully_and_noise_regenerates():
    if not (TAEF2 / "taef2_encoder.pth").is_file():
        pytest.skip(f"TAEF2 weights not present at {TAEF2}")
    ae = load_autoencoder(TAEF2)
    face = cv2.resize(samples.astronaut()[0:300, 100:400], (256, 256), interpolation=cv2.INTER_AREA)
    rec = ae.reconstruct_uint8(face)
    regen = ae.reconstruct_uint8(face, latent_noise=0.35, generator=torch.Generator().manual_seed(0))
    psnr = cv2.PSNR(face, rec)
    assert psnr > 30.0, psnr  # the folder's README: ~34.5 dB on a 256 px face; random weights give ~10 dB
    assert cv2.PSNR(face, regen) < psnr - 2.0
    assert not np.array_equal(rec, face)


def _crops(folder: Path, n: int = 3) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img = np.roll(cv2.resize(samples.astronaut(), (64, 64), interpolation=cv2.INTER_AREA), 5 * i, axis=1)
        p = folder / f"{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rows.append({"path": p, "label": 0, "split": "train"})
    return rows


def test_reconstruct_writes_an_index_resumes_and_honours_the_limit(tmp_path: Path):
    w = _random_weights(tmp_path / "w")
    rows = _crops(tmp_path / "crops")
    out = tmp_path / "recon"
    r1 = reconstruct_crops(rows, out, w, latent_noise=0.5, limit=2, progress=False)
    assert r1["items"] == 2
    r2 = reconstruct_crops(rows, out, w, latent_noise=0.5, progress=False)
    assert r2["items"] == 3
    idx = load_index(out)
    assert set(idx) == {str(r["path"]) for r in rows}
    meta = json.loads((out / "index.json").read_text())
    assert meta["latent_noise"] == 0.5 and meta["autoencoder"]["files"]["encoder"]["sha256"]
    for e in idx.values():
        rec, regen = cv2.imread(e["recon"]), cv2.imread(e["regen"])
        assert rec.shape == regen.shape == (64, 64, 3) and not np.array_equal(rec, regen)
    # ONNX Runtime output = the torch module's output (to rounding)
    ae = load_autoencoder(w)
    src = cv2.cvtColor(cv2.imread(str(rows[0]["path"])), cv2.COLOR_BGR2RGB)
    ref = ae.reconstruct_uint8(src)
    got = cv2.cvtColor(cv2.imread(idx[str(rows[0]["path"])]["recon"]), cv2.COLOR_BGR2RGB)
    assert np.abs(ref.astype(int) - got.astype(int)).max() <= 1


def test_recon_pairs_use_the_reconstruction_as_the_fake(tmp_path: Path):
    rows = _crops(tmp_path / "crops", 4)
    items = [CropItem(path=r["path"], identity=f"id{i}", video_uid=f"v{i}") for i, r in enumerate(rows)]
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    index = {}
    for r in rows[:2]:  # only two crops are covered
        img = cv2.imread(str(r["path"]))
        p = rec_dir / f"{Path(r['path']).stem}.png"
        cv2.imwrite(str(p), cv2.GaussianBlur(img, (5, 5), 2))
        index[str(r["path"])] = {"recon": str(p)}
    ds = PseudoFakePairs(items, size=64, kind="recon", recon_index=index, p_recon_local=0.0, seed=3)
    assert ds.recon_coverage() == 0.5
    for i in range(4):
        p = ds.sample_parts(i)
        # the real half is a covered crop itself, the fake its (blurred) reconstruction, for every index
        assert any(np.array_equal(p.real, cv2.cvtColor(cv2.imread(str(r["path"])), cv2.COLOR_BGR2RGB)) for r in rows[:2])
        assert not np.array_equal(p.real, p.fake) and float(p.mask.min()) == 1.0
    local = PseudoFakePairs(items, size=64, kind="recon", recon_index=index, p_recon_local=1.0, seed=3)
    p = local.sample_parts(0)
    assert np.array_equal(p.fake[p.mask == 0], p.real[p.mask == 0]) and 0 < float(p.mask.mean()) < 1
    with pytest.raises(ValueError, match="needs recon_index"):
        PseudoFakePairs(items, size=64, kind="mix", mix_weights={"sbi": 1, "regen": 1})
    with pytest.raises(ValueError, match="mix_weights must map"):
        PseudoFakePairs(items, size=64, kind="mix", mix_weights={"sbi": 1, "gan": 1})


def test_camera_augmentation_changes_images_deterministically():
    img = cv2.resize(samples.astronaut(), (96, 96), interpolation=cv2.INTER_AREA)
    aug = DetectorAugment({"p_hflip": 0, "p_rotate": 0, "p_rrc": 0, "p_hflip2": 0, "p_gray": 0, "p_noise": 0,
                           "p_color": 1, "p_resize": 1, "p_blur": 1, "p_jpeg": 1, "jpeg_quality": [30, 30]})
    a = aug(img, np.random.default_rng(1))
    b = aug(img, np.random.default_rng(1))
    c = aug(img, np.random.default_rng(2))
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert cv2.PSNR(img, a) < 30
    # all camera keys default to off: older configs keep their exact behaviour
    off = AugmentConfig()
    assert off.p_color == off.p_resize == off.p_blur == off.p_jpeg == 0.0
