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
from detectors.runtime import select_runtime


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


def test_manifest_states_pretrained_weights_fusion_and_training_tools(bundle):
    man = json.loads((bundle.root / "manifest.json").read_text())
    pre = man["provenance"]["pretrained"]
    assert pre["licence"] == "Apache-2.0" and len(pre["sha256"]) == 64 and pre["arch"] == bundle.manifest.frame.backbone
    ae = man["provenance"]["reconstruction_autoencoder"]["autoencoder"]
    assert ae["licence"] == "MIT" and "training only" in ae["use"]
    f = bundle.manifest.fusion
    assert f["frame_weight"] + f["temporal_weight"] == pytest.approx(1.0, abs=1e-3)
    for name, c in f["components"].items():  # a weight > 0 only for a component measured on enough videos
        w = f[f"{name}_weight"]
        assert w == 0 or (c["n_real_videos"] >= 5 and c["n_fake_videos"] >= 5 and c["video_auc"] > 0.55)


def test_frame_model_scores_self_blended_fakes_above_their_real(bundle, face_crop):
    """The shipped detector separates a face from its own self-blended pseudo-fakes (the training recipe on a
    face that is in no training split: scikit-image's astronaut)."""
    from trainer.landmarks import mean_shape
    from trainer.pseudofakes import PseudoFakeConfig, make_pseudo_fake

    fr = bundle.manifest.frame
    rt = select_runtime(bundle.frame_onnx, prefer="cpu", threads=1)
    lm = mean_shape(face_crop.shape[0])
    fakes = [make_pseudo_fake(face_crop, lm, np.random.default_rng(s), PseudoFakeConfig(post_augment=False))[1]
             for s in range(8)]
    logits = np.asarray(rt.run(model_input([face_crop, *fakes], fr.input_size, fr.normalisation))).reshape(-1)
    assert np.median(logits[1:]) > logits[0], logits


def _bundle_data_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "default_bundle_data.py"
    spec = importlib.util.spec_from_file_location("default_bundle_data", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_readme_is_the_manifest_plus_docs_default_bundle(bundle, tmp_path):
    """The bundle README is generated (manifest metrics and commands + docs/default-bundle.md): the shipped one must
    be what the generator writes today, so an edit of the docs without a README refresh fails here."""
    import shutil
    from pathlib import Path

    mod = _bundle_data_module()
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.root, copy)
    notes = Path(__file__).resolve().parents[1] / "docs" / "default-bundle.md"
    out = mod.cmd_readme(copy, notes)
    fix = "benchmarks/default_bundle_data.py readme detectors/bundles/default --notes docs/default-bundle.md"
    assert (copy / "README.md").read_text() == (bundle.root / "README.md").read_text(), f"stale README: run {fix}"
    assert out["files"] == json.loads((bundle.root / "manifest.json").read_text())["files"]
    load_bundle(copy)  # sha256 of every file (the rewritten README included) still verifies


def test_readme_refuses_a_bundle_that_was_never_finalized(bundle, tmp_path):
    import shutil

    mod = _bundle_data_module()
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.root, copy)
    man = json.loads((copy / "manifest.json").read_text())
    del man["metrics"]["eval"]
    (copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(SystemExit, match="not finalized"):
        mod.cmd_readme(copy, None)


def _round_candidate(root, name, aucs, keeps_up):
    ev = root / f"eval-{name}"
    ev.mkdir()
    rows = [{"model": "frame", "set": f"fakes_dev/family{i}", "frame_auc": a} for i, a in enumerate(aucs)]
    rows += [{"model": "frame", "set": "heldout/sbi", "frame_auc": 0.99}, {"model": "fused", "set": "fakes_dev/x",
                                                                           "frame_auc": 1.0}]
    (ev / "metrics_all.json").write_text(json.dumps(rows))
    bench = root / f"bench-{name}.json"
    bench.write_text(json.dumps({"keeps_up": keeps_up}))
    return name, ev, bench


def test_choose_takes_the_best_candidate_that_keeps_up_and_clears_the_bar(tmp_path, capsys):
    mod = _bundle_data_module()
    slow = _round_candidate(tmp_path, "slow", [0.99] * 6, keeps_up=False)  # best AUC, too slow: never the choice
    a = _round_candidate(tmp_path, "a", [0.90, 0.90, 0.90, 0.90, 0.90, 0.70], keeps_up=True)  # mean 0.8667
    b = _round_candidate(tmp_path, "b", [0.88] * 6, keeps_up=True)
    out = mod.cmd_choose([slow, a, b], min_mean=0.85)
    assert out["choice"] == "b" and [r["keeps_up"] for r in out["candidates"]] == [False, True, True]
    assert abs(out["candidates"][1]["mean"] - 5.2 / 6) < 1e-9 and out["candidates"][1]["worst"] == 0.70
    assert "choice: b" in capsys.readouterr().out
    assert mod.cmd_choose([slow, a, b], min_mean=0.89)["choice"] is None  # b's mean is below the bar
    assert mod.cmd_choose([a], min_mean=0.85, min_worst=0.75)["choice"] is None  # a's worst family is below the bar
    assert mod.cmd_choose([slow], min_mean=0.5)["choice"] is None
    assert "no candidate that keeps up live" in capsys.readouterr().out
    five = _round_candidate(tmp_path, "five", [0.9] * 5, keeps_up=True)
    with pytest.raises(SystemExit, match="5 fakes_dev/\\* sets, expected 6"):
        mod.cmd_choose([five], min_mean=0.5)
    assert mod.main(["choose", "--candidate", f"b={b[1]},{b[2]}", "--min-mean", "0.8"]) == 0
    with pytest.raises(SystemExit):
        mod.main(["choose", "--candidate", f"b={b[1]}", "--min-mean", "0.8"])
