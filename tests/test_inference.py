"""detectors.inference: the one bundle inference path, served by the daemon and used by the trainer's
evaluation and calibration (split to the runtime's max batch, runtimes closed)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detectors import inference
from detectors.bundle import load_bundle
from detectors.inference import Embedder, FrameScorer
from detectors.runtime import Runtime, RuntimeError_
from trainer.torchdata import CropItem


class CappedRuntime(Runtime):
    """A real runtime behind a fixed batch profile, like a TensorRT engine: larger batches are refused."""

    def __init__(self, inner: Runtime, max_batch: int, log: list):
        self.inner, self.max_batch, self.name = inner, max_batch, f"capped-{inner.name}"
        self.batches: list[int] = []
        self.closed = False
        log.append(self)

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.closed:
            raise RuntimeError_("closed")
        if len(batch) > self.max_batch:
            raise RuntimeError_(f"batch {len(batch)} above the profile max {self.max_batch}")
        self.batches.append(len(batch))
        return self.inner.run(batch)

    def close(self) -> None:
        self.closed = True
        self.inner.close()


@pytest.fixture
def capped(monkeypatch):
    """Every runtime the scorers open is capped at batch 3; returns the list of runtimes opened."""
    opened: list[CappedRuntime] = []
    real = inference.select_runtime

    def select(*a, **kw):
        return CappedRuntime(real(*a, **kw), 3, opened)

    monkeypatch.setattr(inference, "select_runtime", select)
    return opened


def _crops(n: int, seed: int = 0, shift: int = 0) -> list[np.ndarray]:
    from detectors import samples

    base = cv2.resize(samples.astronaut(), (96, 96), interpolation=cv2.INTER_AREA).astype(int)
    rng = np.random.default_rng(seed)
    return [np.clip(base + rng.integers(-25, 25, base.shape) + shift, 0, 255).astype(np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def crop_items(tmp_path_factory) -> list[CropItem]:
    """Prepared-crop items: 4 real and 3 (brighter) fake videos of 4 crops each, as PNG files."""
    root = tmp_path_factory.mktemp("crops")
    items = []
    for label, n_videos in ((0, 4), (1, 3)):
        for v in range(n_videos):
            for f, crop in enumerate(_crops(4, seed=10 * label + v, shift=60 * label)):
                p = root / f"{label}_{v}_{f}.png"
                cv2.imwrite(str(p), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
                items.append(CropItem(path=p, label=label, video_uid=f"{label}-v{v}", dataset="gen",
                                      method="real" if label == 0 else "swap", frame=f))
    return items


def test_scorers_split_batches_to_the_runtime_max_batch(tiny_bundle_dir, capped):
    bundle = load_bundle(tiny_bundle_dir)
    crops = _crops(8)
    with FrameScorer(bundle, "cpu") as fs, Embedder(bundle, "cpu") as em:
        probs, emb = fs.probabilities(crops), em.embed_raw(crops)
    assert [rt.batches for rt in capped] == [[3, 3, 2], [3, 3, 2]]
    assert all(rt.closed for rt in capped)  # the with block closed both runtimes
    with FrameScorer(bundle, "cpu") as ref_fs, Embedder(bundle, "cpu") as ref_em:
        ref_fs.runtime, ref_em.runtime = ref_fs.runtime.inner, ref_em.runtime.inner  # uncapped: one batch of 8
        np.testing.assert_allclose(probs, ref_fs.probabilities(crops), atol=1e-6)
        np.testing.assert_allclose(emb, ref_em.embed_raw(crops), atol=1e-5)
        assert ref_fs(crops) == pytest.approx(list(probs), abs=1e-6)  # the micro-batcher's list form
    assert probs.dtype == np.float64 and emb.shape == (8, 16)


def test_close_is_idempotent_and_a_closed_runtime_refuses_work(tiny_bundle_dir):
    from detectors.runtime import OrtRuntime

    bundle = load_bundle(tiny_bundle_dir)
    fs = FrameScorer(bundle, "cpu")
    fs.close()
    fs.close()
    with pytest.raises(RuntimeError_, match="closed"):
        fs.probabilities(_crops(1))
    with OrtRuntime(bundle.frame_onnx) as rt:  # a runtime is a context manager too
        assert rt.run(np.zeros((2, 3, 64, 64), np.float32)).shape == (2, 1)
    with pytest.raises(RuntimeError_, match="closed"):
        rt.run(np.zeros((1, 3, 64, 64), np.float32))


def test_eval_batch_above_the_runtime_max_batch_and_runtimes_closed(tiny_bundle_dir, crop_items, capped, tmp_path):
    from trainer.bundle_scores import evaluate_bundle

    bundle = load_bundle(tiny_bundle_dir)
    rows = evaluate_bundle(bundle, crop_items, tmp_path, batch=8)
    assert {r["model"] for r in rows} == {"frame", "temporal"}
    assert all(r["n_videos"] == 7 for r in rows)
    assert capped and all(rt.closed for rt in capped)
    assert max(b for rt in capped for b in rt.batches) == 3  # eval batches of 8 reached the runtime as <= 3
    # the same numbers as the serving scorer on the same crops, one crop at a time
    from trainer.bundle_scores import read_crops

    with np.load(tmp_path / "scores_frame_gen.npz") as z:
        scores, videos = z["scores"], z["videos"]
    with FrameScorer(bundle, "cpu") as fs:
        one_by_one = np.array([fs.probabilities(read_crops([it.path]))[0] for it in crop_items])
    np.testing.assert_allclose(scores, one_by_one, atol=1e-6)
    assert list(videos) == [it.video_uid for it in crop_items]
    assert len(json.loads((tmp_path / "metrics_all.json").read_text())) == len(rows) == 2


def test_calibration_and_fusion_score_with_the_serving_path(tiny_bundle_dir, crop_items, capped):
    from trainer import calibrate as cal

    bundle = load_bundle(tiny_bundle_dir)
    c = cal.calibrate_bundle(bundle, crop_items, target_fpr=0.25, batch=8)
    assert c["frame_calibration"]["n_real_crops"] == 16
    assert c["temporal_calibration"]["n_videos"] == 4
    with FrameScorer(bundle, "cpu") as fs:
        from trainer.bundle_scores import frame_probabilities

        p = frame_probabilities(fs, [it.path for it in crop_items if it.label == 0], batch=5)
    # at most 25 % of the real crops reach the calibrated threshold
    assert (p >= c["frame_calibration"]["threshold"]).mean() <= 0.25
    f = cal.fit_fusion(bundle, crop_items, batch=8, min_videos=3)
    assert set(f["components"]) == {"frame", "temporal"}
    assert f["components"]["frame"]["n_real_videos"] == 4 and f["components"]["frame"]["n_fake_videos"] == 3
    assert all(rt.closed for rt in capped) and max(b for rt in capped for b in rt.batches) == 3
    from trainer.evaluate import EvalError

    with pytest.raises(EvalError, match="real and fake"):
        cal.fit_fusion(bundle, [it for it in crop_items if it.label == 0])
    with pytest.raises(EvalError, match="no real crops"):
        cal.calibrate_bundle(bundle, [it for it in crop_items if it.label == 1])


def test_daemon_and_trainer_import_the_same_scorers():
    import ast

    root = Path(__file__).resolve().parents[1]
    assert not (root / "daemon" / "scoring.py").exists()
    src = (root / "daemon" / "models.py").read_text()  # where the daemon loads its bundle models
    mods = {n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)}
    assert "detectors.inference" in mods
    # no trainer module runs a bundle's ONNX models past the scorers (it would pick its own runtime)
    for f in sorted((root / "trainer").rglob("*.py")):
        assert "select_runtime" not in f.read_text(), f
    tree = ast.parse((root / "trainer" / "bundle_scores.py").read_text())
    assert "detectors.inference" in {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
