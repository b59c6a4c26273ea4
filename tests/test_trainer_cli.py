"""fakewatch-train end to end on generated crops: prepare -> fit (ANL, DiffFake) -> bundle -> eval, plus bad input.

Training steps run in-process (one torch import); the console entry point itself runs through
subprocess for --help and for eval.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from detectors import samples
from detectors.bundle import load_bundle
from trainer.cli import main

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def _make_dataset(root: Path) -> None:
    """Generic layout: real/<video>/<frame>.png and fake/swap/<video>/<frame>.png (fakes are brighter)."""
    base = cv2.resize(samples.astronaut(), (64, 64), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    for side, n in (("real", 6), ("fake/swap", 4)):
        for v in range(n):
            d = root / side / f"vid{v}"
            d.mkdir(parents=True)
            for f in range(5):
                img = base.astype(int) + rng.integers(-20, 20, base.shape) + (50 if side != "real" else 0)
                cv2.imwrite(str(d / f"{f:03d}.png"), cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    runs = tmp / "runs"
    _make_dataset(tmp / "gen")
    prep = tmp / "prep"
    assert main(["--runs", str(runs), "prepare", "--dataset", "generic", "--root", str(tmp / "gen"), "--out", str(prep),
                 "--crops-given", "--frames", "5"]) == 0
    assert main(["--runs", str(runs), "fit", "--method", "anl", "--config", "trainer/configs/anl.tiny.yaml",
                 "--data", str(prep), "--set", "anl.regulariser=off", "--set", "train.steps=2"]) == 0
    assert main(["--runs", str(runs), "fit", "--method", "difffake", "--config", "trainer/configs/difffake.tiny.yaml",
                 "--data", str(prep), "--set", "train.steps=2"]) == 0
    # the pixel prior, then one ANL step with the regulariser on (frozen prior as the diffusion model)
    assert main(["--runs", str(runs), "prior", "--config", "trainer/configs/prior.tiny.yaml", "--data", str(prep),
                 "--set", "train.steps=2"]) == 0
    prior = next(runs.glob("prior-*/prior"))
    assert main(["--runs", str(tmp / "runs-reg"), "fit", "--method", "anl", "--config", "trainer/configs/anl.tiny.yaml",
                 "--data", str(prep), "--set", f"diffusion.folder={prior}", "--set", "train.steps=1"]) == 0
    # DiffusionFake on a tiny Stable-Diffusion-style folder built from configs (nothing downloaded)
    from trainer.diffusion import build_tiny_sd

    sd = build_tiny_sd(tmp / "sd")
    assert main(["--runs", str(runs), "fit", "--method", "diffusionfake", "--config",
                 "trainer/configs/diffusionfake.tiny.yaml", "--data", str(prep), "--set", f"diffusion.folder={sd}",
                 "--set", "train.steps=1"]) == 0
    anl_ck = next(runs.glob("anl-*/fit/checkpoint.pt"))
    dfk_ck = next(runs.glob("difffake-*/fit/checkpoint.pt"))
    bundle = tmp / "bundle"
    assert main(["--runs", str(runs), "bundle", "--out", str(bundle), "--frame", str(anl_ck), "--difffake", str(dfk_ck),
                 "--calib-data", str(prep), "--calib-split", "", "--target-fpr", "0.2", "--name", "cli-test", "--exporter", "torchscript",
                 "--fusion-data", str(prep), "--fusion-min-videos", "4"]) == 0
    return tmp, runs, prep, bundle


def test_help_lists_every_command():
    r = _cli("--help")
    assert r.returncode == 0
    for cmd in ("prepare", "reconstruct", "prior", "fit", "eval", "export", "bundle", "soup", "combine", "landmark-model"):
        assert cmd in r.stdout


def test_help_has_no_raw_rst_backticks(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "fakewatch-train: prepare data" in out and "`" not in out


def test_run_folders(pipeline):
    _, runs, prep, _ = pipeline
    assert (prep / "manifest.jsonl").is_file()
    rows = [json.loads(x) for x in (prep / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 50 and {r["label"] for r in rows} == {0, 1}
    for kind in ("prepare", "anl", "difffake", "bundle"):
        run = next(runs.glob(f"{kind}-*"))
        for f in ("config.yaml", "log.txt", "metrics.json", "machine.json"):
            assert (run / f).is_file(), (kind, f)
    # what ran the fit: enough to tell whether another run of the same command can agree bit for bit
    import torch

    m = json.loads((next(runs.glob("anl-*")) / "machine.json").read_text())
    assert m["cpu_count"] >= 1 and m["packages"]["torch"] == torch.__version__.split("+")[0]
    assert m["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and m["torch"]["threads"] >= 1
    anl = next(runs.glob("anl-*"))
    import yaml

    resolved = yaml.safe_load((anl / "config.yaml").read_text())
    assert resolved["anl"]["regulariser"] in (False, "off") and resolved["train"]["steps"] == 2  # --set applied
    assert json.loads((anl / "metrics.json").read_text())["output"].endswith("checkpoint.pt")
    assert (next(runs.glob("difffake-*")) / "fit" / "gmm.npz").is_file()
    assert (next(runs.glob("prior-*")) / "prior" / "unet").is_dir()
    reg = next((runs.parent / "runs-reg").glob("anl-*"))
    import yaml

    assert yaml.safe_load((reg / "config.yaml").read_text())["anl"]["regulariser"] in ("on", True)
    assert (reg / "fit" / "checkpoint.pt").is_file()


def test_bundle_manifest(pipeline):
    _, _, _, bundle = pipeline
    b = load_bundle(bundle)
    m = b.manifest
    assert m.name == "cli-test"
    assert m.frame.method == "anl" and m.frame.input_size == 32 and m.frame.fp16_file == "frame.fp16.onnx"
    assert 0.0 < m.frame.threshold < 1.0
    assert m.temporal.method == "difffake" and m.temporal.combination == "sq"
    assert m.temporal.loglik_real_std > 0
    # the machine each model was trained on, from its fit run folder's machine.json
    for part in ("frame", "temporal"):
        assert m.provenance[part]["machine"]["cpu_count"] >= 1 and m.provenance[part]["machine"]["torch"]["threads"] >= 1
    assert m.metrics["frame_export"]["max_abs_err"] <= 1e-4
    assert m.metrics["temporal_calibration"]["n_videos"] == 6
    assert m.provenance["frame"]["sha256"] and "torch" in m.versions
    # the prepared crops were given (--crops-given), not cut by the face pipeline: the default geometry, said so
    assert (m.crop.size, m.crop.scale) == (256, 1.3) and m.provenance["crop"]["source"].startswith("default")


def test_bundle_fusion_weights_come_from_measured_video_aucs(pipeline):
    m = load_bundle(pipeline[3]).manifest
    f = m.fusion
    comps = f["components"]
    assert set(comps) == {"frame", "temporal"}
    assert all(c["n_real_videos"] == 6 and c["n_fake_videos"] == 4 for c in comps.values())
    assert f["frame_weight"] + f["temporal_weight"] == pytest.approx(1.0, abs=1e-3)
    raw = {k: max(0.0, c["video_auc"] - 0.5) if c["video_auc"] >= 0.55 else 0.0 for k, c in comps.items()}
    if sum(raw.values()) > 0:
        assert f["frame_weight"] == pytest.approx(raw["frame"] / sum(raw.values()), abs=1e-3)
    else:
        assert (f["frame_weight"], f["temporal_weight"]) == (1.0, 0.0)
    assert m.metrics["fusion"]["rule"] == f["rule"]


def test_eval_through_console_entry(pipeline):
    tmp, runs, prep, bundle = pipeline
    out = tmp / "eval"
    r = _cli("--runs", str(runs), "eval", "--bundle", str(bundle), "--data", str(prep), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((out / "metrics_all.json").read_text())
    assert {r["model"] for r in rows} == {"frame", "temporal"}
    for r_ in rows:
        assert r_["n_videos"] == 10 and 0.0 <= r_["video_auc"] <= 1.0
    md = (out / "metrics.md").read_text()
    assert "binarised_auc" in md and "| gen |" in md
    assert (out / "frame" / "gen" / "roc_gen.png").is_file() and (out / "temporal" / "gen" / "hist_gen.png").is_file()
    # --models frame: the same frame rows, no temporal model scored; a model name that does not exist is bad input
    assert main(["--runs", str(runs), "eval", "--bundle", str(bundle), "--data", str(prep), "--out", str(tmp / "ev-f"),
                 "--models", "frame"]) == 0
    only = json.loads((tmp / "ev-f" / "metrics_all.json").read_text())
    assert {r["model"] for r in only} == {"frame"} and not (tmp / "ev-f" / "temporal").exists()
    assert only[0]["frame_auc"] == pytest.approx(next(x for x in rows if x["model"] == "frame")["frame_auc"])
    assert main(["--runs", str(runs), "eval", "--bundle", str(bundle), "--data", str(prep), "--models", "frames"]) == 2


def test_export_command(pipeline, tmp_path):
    _, runs, _, _ = pipeline
    ck = next(runs.glob("anl-*/fit/checkpoint.pt"))
    assert main(["--runs", str(runs), "export", "--checkpoint", str(ck), "--out", str(tmp_path / "x"), "--no-fp16",
                 "--exporter", "torchscript"]) == 0
    assert (tmp_path / "x" / "frame.onnx").is_file() and not (tmp_path / "x" / "frame.fp16.onnx").exists()
    # DiffusionFake: only encoder + GAP + Linear is exported (methods.md §3.7)
    dck = next(runs.glob("diffusionfake-*/fit/checkpoint.pt"))
    assert main(["--runs", str(runs), "export", "--checkpoint", str(dck), "--out", str(tmp_path / "d"),
                 "--exporter", "torchscript"]) == 0
    from detectors.runtime import OrtRuntime

    rt = OrtRuntime(tmp_path / "d" / "frame.onnx")
    assert rt.output_name == "logit" and rt.run(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 1)
    assert (tmp_path / "d" / "frame.fp16.onnx").is_file()
    # DiffFake: the embedder is exported as embed.onnx
    fck = next(runs.glob("difffake-*/fit/checkpoint.pt"))
    assert main(["--runs", str(runs), "export", "--checkpoint", str(fck), "--out", str(tmp_path / "f"), "--no-fp16",
                 "--exporter", "torchscript"]) == 0
    assert OrtRuntime(tmp_path / "f" / "embed.onnx").output_name == "embedding"


def test_bad_input_exits_2_naming_the_file(pipeline, tmp_path, capsys):
    tmp, runs, prep, bundle = pipeline
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in bundle.iterdir():
        if f.is_file():
            (corrupt / f.name).write_bytes(f.read_bytes())
    with open(corrupt / "embed.onnx", "ab") as fh:
        fh.write(b"tampered")
    assert main(["--runs", str(runs), "eval", "--bundle", str(corrupt), "--data", str(prep)]) == 2
    err = capsys.readouterr().err
    assert "embed.onnx" in err and "sha256" in err and "Traceback" not in err

    cases = [
        (["eval", "--bundle", str(bundle), "--data", str(tmp_path)], "manifest.jsonl"),
        (["prepare", "--dataset", "generic", "--root", str(tmp_path), "--out", str(tmp_path / "p")], str(tmp_path)),
        (["prepare", "--dataset", "nope", "--root", str(tmp_path), "--out", str(tmp_path / "p")], "unknown dataset"),
        (["fit", "--method", "anl", "--set", "train.no_such_key=1"], "no_such_key"),
        (["fit", "--method", "sbi"], "unknown method 'sbi' (registered: anl, difffake, diffusionfake)"),
        (["export", "--checkpoint", str(prep / "manifest.jsonl"), "--out", str(tmp_path / "e")], "manifest.jsonl"),
        (["bundle", "--out", str(tmp_path / "b")], "--frame"),
    ]
    for argv, needle in cases:
        capsys.readouterr()
        assert main(["--runs", str(runs), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err, (argv, err)


def test_pair_dataset_augments_the_train_split_only(pipeline):
    # data.augment reaches the train pairs (and only them): val AUC and best.pt are measured on clean inputs
    import torch

    from trainer.train_loop import build_pair_dataset

    _, _, prep, _ = pipeline
    dcfg = {"crops": str(prep), "kind": "sbi", "splits": {}, "val_fraction": 0.3,
            "augment": {"p_hflip": 1.0, "p_rotate": 0.0, "p_rrc": 0.0, "p_hflip2": 0.0, "p_gray": 0.0, "p_noise": 0.0}}
    train, val = build_pair_dataset(dcfg, "train", 64, 0), build_pair_dataset(dcfg, "val", 64, 0)
    assert train.augment is not None and val.augment is None
    plain = build_pair_dataset({**dcfg, "augment": False}, "train", 64, 0)
    assert plain.augment is None
    (ra, fa), (rp, fp) = train[0], plain[0]
    # same pseudo-fake draw, detector inputs mirrored (the augmentation has its own random stream)
    assert torch.allclose(ra, rp.flip(-1)) and torch.allclose(fa, fp.flip(-1))
    with pytest.raises(ValueError, match="unknown augmentation keys"):
        build_pair_dataset({**dcfg, "augment": {"p_flip": 1.0}}, "train", 64, 0)


def test_rethreshold_bundle_reproduces_the_calibration_and_moves_only_the_threshold(pipeline, tmp_path):
    """benchmarks/rethreshold_bundle.py: the same serving-path scores as `bundle --calib-data`, so at the bundle's own
    FPR it gives back the shipped threshold; at a higher FPR the threshold is lower and nothing else changes."""
    import importlib.util

    _, _, prep, bundle = pipeline
    spec = importlib.util.spec_from_file_location("rethreshold_bundle", REPO / "benchmarks" / "rethreshold_bundle.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.rethreshold(bundle, tmp_path / "b", prep, None, 0.5)
    shipped = load_bundle(bundle)
    assert out["shipped_target_fpr"] == pytest.approx(0.2)
    assert out["threshold_at_shipped_fpr"] == pytest.approx(shipped.manifest.frame.threshold, abs=1e-9)
    assert out["threshold"] < shipped.manifest.frame.threshold
    moved = load_bundle(tmp_path / "b")
    assert moved.manifest.frame.threshold == pytest.approx(out["threshold"])
    assert moved.version_string.endswith("-fpr50")
    assert (tmp_path / "b" / "frame.onnx").read_bytes() == (bundle / "frame.onnx").read_bytes()


def _frame_logits(bundle_dir: Path, crops: list[np.ndarray]) -> np.ndarray:
    from detectors.inference import FrameScorer

    with FrameScorer(load_bundle(bundle_dir), "cpu") as s:
        p = s.probabilities(crops)
    return np.log(p / (1.0 - p))


def test_combine_is_the_mean_logit_over_members_and_mirror_images(pipeline, tmp_path):
    """`fakewatch-train combine`: the combined graph, run through the serving scorer, equals the mean of the members'
    logits on the crop and on its mirror image, computed independently with the source bundles; the threshold is
    recalibrated on the combined scores; a member with another input size or a file that is not a frame model is
    refused with its name."""
    from trainer.bundle_scores import load_items, read_crops

    tmp, runs, prep, bundle = pipeline
    # a second member: the same tiny recipe with another seed, in its own bundle
    r2 = tmp_path / "runs"
    assert main(["--runs", str(r2), "fit", "--method", "anl", "--config", "trainer/configs/anl.tiny.yaml", "--data",
                 str(prep), "--set", "anl.regulariser=off", "--set", "train.steps=2", "--set", "seed=7"]) == 0
    b2 = tmp_path / "b2"
    assert main(["--runs", str(r2), "bundle", "--out", str(b2), "--frame", str(next(r2.glob("anl-*/fit/checkpoint.pt"))),
                 "--calib-data", str(prep), "--calib-split", "", "--exporter", "torchscript"]) == 0
    out = tmp_path / "combined"
    assert main(["--runs", str(r2), "combine", "--bundle", str(bundle), "--out", str(out), "--member", str(b2),
                 "--hflip", "--calib-data", str(prep), "--calib-split", "", "--target-fpr", "0.2",
                 "--version", "9", "--fusion-data", str(prep), "--fusion-min-videos", "4"]) == 0
    items = load_items(prep)
    crops = read_crops([it.path for it in items[:12]])
    mirrored = [np.ascontiguousarray(c[:, ::-1]) for c in crops]
    ref = np.mean([_frame_logits(b, c) for b in (bundle, b2) for c in (crops, mirrored)], axis=0)
    got = _frame_logits(out, crops)
    assert np.abs(got - ref).max() < 1e-3
    # the flip changes the score of a single member (else the test would not see a missing flip)
    assert np.abs(_frame_logits(bundle, crops) - _frame_logits(bundle, mirrored)).max() > 1e-4
    cb = load_bundle(out)
    rec = cb.manifest.provenance["frame_combination"]
    assert cb.version_string.endswith("@9") and rec["hflip"] and len(rec["members"]) == 2
    assert rec["members"][1]["provenance"]["bundle"] == load_bundle(b2).version_string
    assert rec["parity_max_abs"] < 1e-4 and rec["fusion_refitted"]
    # the fusion was fitted again on the combined model (its own measured frame AUC), not copied
    assert cb.manifest.fusion["fitted_on"].startswith(str(prep)) and cb.manifest.metrics == {"fusion": cb.manifest.fusion}
    from trainer.calibrate import fit_fusion

    again = fit_fusion(cb, load_items(prep), min_videos=4)
    assert cb.manifest.fusion["components"]["frame"]["video_auc"] == pytest.approx(again["components"]["frame"]["video_auc"])
    # the threshold is the 20 % FPR point of the combined model's real scores (serving path)
    from trainer.bundle_scores import frame_probabilities, open_scorers
    from trainer.calibrate import threshold_at_fpr

    reals = [it.path for it in items if it.label == 0]
    with open_scorers(cb) as (frame, _):
        p = frame_probabilities(frame, reals)
    assert cb.manifest.frame.threshold == pytest.approx(threshold_at_fpr(p, 0.2))
    assert cb.manifest.temporal is not None  # the temporal model and fusion come along
    # `fakewatch bench`'s naive baseline matches the combined graph pass for pass (2 networks x 2 views)
    from daemon.bench import frame_passes

    assert frame_passes(cb.manifest) == (4, 2) and frame_passes(load_bundle(bundle).manifest) == (1, 0)
    # a combination of a combined bundle keeps the inner record with its member: 2 x 2 passes + b2's one
    nested = tmp_path / "nested"
    assert main(["--runs", str(r2), "combine", "--bundle", str(out), "--out", str(nested), "--member", str(b2),
                 "--calib-data", str(prep), "--calib-split", "", "--target-fpr", "0.2"]) == 0
    nb = load_bundle(nested)
    inner = nb.manifest.provenance["frame_combination"]["members"]
    assert inner[0]["frame_combination"]["hflip"] and len(inner[0]["frame_combination"]["members"]) == 2
    assert "frame_combination" not in inner[1] and frame_passes(nb.manifest) == (5, 2)
    # the outer graph is the mean logit of its two members (the inner combination counts as one member)
    assert np.abs(_frame_logits(nested, crops) - (_frame_logits(out, crops) + _frame_logits(b2, crops)) / 2).max() < 1e-3
    # bad input: a member of another input size, a file that is not ONNX
    import torch
    from torch import nn

    other = tmp_path / "other.onnx"
    torch.onnx.export(nn.Sequential(nn.Conv2d(3, 1, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval(),
                      (torch.zeros(1, 3, 48, 48),), str(other), input_names=["input"], output_names=["logit"],
                      dynamic_axes={"input": {0: "batch"}, "logit": {0: "batch"}}, opset_version=18, dynamo=False)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    for member, words in ((other, ("different input sizes", "other.onnx (48)")), (junk, ("junk.onnx", "not a valid ONNX"))):
        r = _cli("--runs", str(r2), "combine", "--bundle", str(bundle), "--out", str(tmp_path / "bad"), "--member",
                 str(member), "--calib-data", str(prep), "--calib-split", "")
        assert r.returncode == 2, r.stderr
        assert all(w in r.stderr for w in words), r.stderr


def test_combine_takes_the_temporal_model_of_another_bundle(pipeline, tmp_path):
    """`combine --temporal B`: a frame-only source gets B's DiffFake model byte for byte (embedder, GMM, manifest
    section, training provenance) and a fusion fitted again with it; refused without --fusion-data, from a bundle
    without a temporal model, or when B's crop is not the source's."""
    import hashlib

    tmp, runs, prep, bundle = pipeline
    src = tmp_path / "frame-only"
    anl_ck = next(runs.glob("anl-*/fit/checkpoint.pt"))
    assert main(["--runs", str(tmp_path / "r"), "bundle", "--out", str(src), "--frame", str(anl_ck), "--calib-data",
                 str(prep), "--calib-split", "", "--exporter", "torchscript"]) == 0
    assert load_bundle(src).manifest.temporal is None
    out = tmp_path / "with-temporal"
    assert main(["--runs", str(tmp_path / "r"), "combine", "--bundle", str(src), "--out", str(out), "--hflip",
                 "--calib-data", str(prep), "--calib-split", "", "--temporal", str(bundle), "--fusion-data", str(prep),
                 "--fusion-min-videos", "4", "--name", "renamed", "--version", "3"]) == 0
    tb, cb = load_bundle(bundle), load_bundle(out)
    assert cb.version_string == "renamed@3" and load_bundle(src).manifest.name != "renamed"
    assert cb.manifest.temporal == tb.manifest.temporal
    for f in (tb.manifest.temporal.file, tb.manifest.temporal.gmm_file):
        assert hashlib.sha256(cb.path(f).read_bytes()).digest() == hashlib.sha256(tb.path(f).read_bytes()).digest()
    prov = cb.manifest.provenance
    assert prov["temporal"]["bundle"].startswith(tb.version_string)
    assert prov["temporal"]["checkpoint"] == tb.manifest.provenance["temporal"]["checkpoint"]
    assert prov["frame_combination"]["temporal_from"].startswith(tb.version_string)
    assert "temporal" in cb.manifest.fusion["components"] and prov["frame_combination"]["fusion_refitted"]
    # bad input, each named
    bad_crop = tmp_path / "bad-crop"
    shutil.copytree(bundle, bad_crop)
    m = json.loads((bad_crop / "manifest.json").read_text())
    m["crop"]["scale"] = 1.7
    (bad_crop / "manifest.json").write_text(json.dumps(m))
    for extra, words in ((["--temporal", str(bundle)], ("--temporal needs --fusion-data",)),
                         (["--temporal", str(src), "--fusion-data", str(prep)], ("frame-only", "no temporal model")),
                         (["--temporal", str(bad_crop), "--fusion-data", str(prep)], ("bad-crop", "crop"))):
        r = _cli("--runs", str(tmp_path / "r"), "combine", "--bundle", str(src), "--out", str(tmp_path / "bad"),
                 "--hflip", "--calib-data", str(prep), "--calib-split", "", *extra)
        assert r.returncode == 2, r.stderr
        assert all(w in r.stderr for w in words), r.stderr
