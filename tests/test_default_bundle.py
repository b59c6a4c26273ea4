"""The bundle shipped in detectors/bundles/default: verified files, provenance, and the models run the way the
daemon runs them (serving face pipeline -> crop -> ONNX Runtime; DiffFake embedding pairs -> GMM)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detectors import samples
from detectors.bundle import default_bundle_path, load_bundle
from detectors.difffake import GmmScorer, combine
from detectors.preprocess import model_input
from detectors.runtime.base import select_runtime


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())  # verify=True: every file's sha256 against the manifest


@pytest.fixture(scope="module")
def face_crop(bundle):
    from detectors.faces.factory import FacesConfig, build_face_pipeline

    spec = bundle.manifest.crop
    pipe = build_face_pipeline(FacesConfig(crop_size=spec.size, crop_scale=spec.scale, threads=1))
    obs = pipe.process(samples.astronaut())
    assert len(obs) == 1
    return obs[0].crop


def test_manifest_carries_provenance_metrics_and_small_files(bundle):
    man = json.loads((bundle.root / "manifest.json").read_text())
    prov = man["provenance"]
    assert any("fakewatch-train" in c for c in prov["commands"])
    videos = prov["data"]["split"]["videos"]
    assert videos["train"] and videos["test"]
    assert not (set(videos["train"]) | set(videos["val"])) & set(videos["test"])  # identity-disjoint test videos
    assert man["metrics"]["eval"], "the shipped bundle must carry its measured test metrics"
    assert 0.0 < bundle.manifest.frame.threshold < 1.0
    total = sum((bundle.root / rel).stat().st_size for rel in man["files"])
    assert total < 50e6, f"default bundle is {total / 1e6:.1f} MB (the daemon must stay real-time on 2 CPU cores)"


def test_frame_model_scores_a_face_batch_invariantly(bundle, face_crop):
    fr = bundle.manifest.frame
    rt = select_runtime(bundle.frame_onnx, prefer="cpu", threads=1)
    one = np.asarray(rt.run(model_input([face_crop], fr.input_size, fr.normalisation))).reshape(-1)
    four = np.asarray(rt.run(model_input([face_crop, face_crop[:, ::-1], face_crop // 2, face_crop], fr.input_size,
                                         fr.normalisation))).reshape(-1)
    assert one.shape == (1,) and four.shape == (4,) and np.all(np.isfinite(four))
    assert abs(one[0] - four[0]) < 1e-4 and abs(four[0] - four[3]) < 1e-4  # dynamic batch, no cross-talk
    assert four[2] != pytest.approx(four[0])  # the input matters


def test_temporal_model_embeds_pairs_for_its_gmm(bundle, face_crop):
    tp = bundle.manifest.temporal
    rt = select_runtime(bundle.embed_onnx, prefer="cpu", threads=1)
    emb = np.asarray(rt.run(model_input([face_crop, face_crop[:, ::-1]], tp.input_size, tp.normalisation)))
    gmm = GmmScorer.from_arrays(bundle.load_gmm())
    assert emb.shape == (2, gmm.dim)
    ll = gmm.score_samples(combine(emb[:1], emb[1:], tp.combination))
    assert ll.shape == (1,) and np.isfinite(ll[0])
