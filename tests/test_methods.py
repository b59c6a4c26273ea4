"""trainer.methods: the explicit registry behind ``fakewatch-train fit --method`` / export / bundle,
and the one training loop every method runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from trainer import methods
from trainer import train_loop as tl
from trainer.methods import MethodError, get_method, load_inference_model, method_names, register_method
from trainer.runs import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def test_builtin_methods_are_registered_with_their_defaults():
    assert method_names() == ["anl", "difffake", "diffusionfake"]
    for name in method_names():
        m = get_method(name)
        assert m.config == tl.CONFIG_DIR / f"{name}.yaml" and m.config.is_file()
        assert callable(m.train) and callable(m.load)
    assert get_method("difffake").output == "embed"
    assert get_method("anl").output == get_method("diffusionfake").output == "frame"


def test_unknown_method_names_the_registered_ones():
    with pytest.raises(MethodError, match=r"unknown method 'sbi' \(registered: anl, difffake, diffusionfake\)"):
        get_method("sbi")


def test_register_refuses_duplicates_and_bad_outputs(monkeypatch):
    method_names()  # the built-ins are registered on the first lookup
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    with pytest.raises(ValueError, match="already registered"):
        register_method("anl", train=print, load=print, config="x.yaml")
    with pytest.raises(ValueError, match="output"):
        register_method("new", train=print, load=print, config="x.yaml", output="logit")
    m = register_method("new", train=print, load=print, config="x.yaml", output="embed")
    assert get_method("new") is m and "new" in method_names()


def test_no_method_lookup_by_name_strings():
    """The registry replaced importlib + getattr(f"train_{method}") and the alias loaders."""
    for f in ("cli.py", "methods.py", "bundling.py"):
        src = (ROOT / "trainer" / f).read_text()
        assert "importlib" not in src and "getattr(mod" not in src, f
    tree = ast.parse((ROOT / "trainer" / "diffusionfake.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "trainer.anl" not in imported  # shared helpers live below both methods
    for f in ("anl.py", "difffake.py", "diffusionfake.py"):
        src = (ROOT / "trainer" / f).read_text()
        assert "tl.run_training(" in src and "for step in range" not in src, f  # one step loop, in train_loop
        assert "trainer.methods" not in src, f  # the registry imports the methods, never the other way round


def test_load_inference_model_gives_the_exported_part(tmp_path):
    cfg = tl.load_config("anl", tl.CONFIG_DIR / "anl.tiny.yaml", [f"out_dir={tmp_path}", "anl.regulariser=off",
                                                                  "train.steps=1"])
    ck = get_method("anl").train(cfg, tl.SyntheticPairs(4, 32))
    method, run_cfg, module = load_inference_model(ck)
    assert method.name == "anl" and run_cfg["model"]["image_size"] == 32
    assert not module.training and module(torch.zeros(2, 3, 32, 32)).shape == (2, 1)
    bad = tmp_path / "not-a-checkpoint.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(MethodError, match="not-a-checkpoint.pt"):
        load_inference_model(bad)
    with pytest.raises(MethodError, match="checkpoint not found"):
        load_inference_model(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    tl.save_checkpoint(other, "sbi", torch.nn.Linear(1, 1), cfg)
    with pytest.raises(MethodError, match=r"other.pt: unknown method 'sbi'"):
        load_inference_model(other)


def test_run_training_bookkeeping(tmp_path):
    """Validation, best.pt, periodic and final checkpoints, metrics rows: the loop all methods share."""
    cfg = tl.load_config("difffake", tl.CONFIG_DIR / "difffake.tiny.yaml",
                         [f"out_dir={tmp_path}", "train.steps=4", "train.val_every=2", "train.save_every=3",
                          "train.log_every=2"])
    gen = tl.seed_everything(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 1))
    s = tl.setup_training(cfg, model.parameters(), tl.SyntheticPairs(8, 32), tl.SyntheticPairs(4, 32, seed=1), gen,
                          "test", torch.device("cpu"))
    aucs = iter([0.6, 0.55])
    saved: list[tuple[str, dict]] = []

    def save(path, **kw):
        saved.append((Path(path).name, kw))
        return tl.save_checkpoint(path, "test", model, cfg, **kw)

    def losses(xy):
        x, y = xy
        return {"total": torch.nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y)}

    ck = tl.run_training(s, model, model.parameters(), batch=lambda raw: tl.pair_batch_xy(tl.unpack_pair_batch(raw), "cpu"),
                         losses=losses, val_auc=lambda: next(aucs), save=save, what="test", device=torch.device("cpu"),
                         t0=0.0)
    assert ck.name == "checkpoint.pt" and ck.parent.parent == tmp_path and (ck.parent / "best.pt").is_file()
    names = [n for n, _ in saved]
    assert names == ["best.pt", "checkpoint.pt", "checkpoint.pt"]  # best at step 2 (0.6), periodic at 3, final
    assert saved[0][1] == {"val_auc": 0.6, "step": 2} and saved[1][1] == {"step": 3}
    assert saved[2][1]["step"] == 4 and saved[2][1]["val_auc"] == 0.55 and "wall_s" in saved[2][1]
    rows = read_metrics(ck.parent)
    assert [r["step"] for r in rows if "total" in r] == [2, 4]
    assert [r["val_auc"] for r in rows if "val_auc" in r] == [0.6, 0.55]


def test_run_training_refuses_a_non_finite_loss(tmp_path):
    cfg = tl.load_config("difffake", tl.CONFIG_DIR / "difffake.tiny.yaml", [f"out_dir={tmp_path}"])
    model = torch.nn.Linear(1, 1)
    s = tl.setup_training(cfg, model.parameters(), tl.SyntheticPairs(8, 32), None, tl.seed_everything(0), "t",
                          torch.device("cpu"))
    with pytest.raises(FloatingPointError, match="toy loss became nan at step 1"):
        tl.run_training(s, model, model.parameters(), batch=lambda raw: raw,
                        losses=lambda b: {"total": model.weight.sum() * float("nan")}, val_auc=lambda: 0.5,
                        save=lambda p, **kw: p, what="toy", device=torch.device("cpu"), t0=0.0)
