"""trainer/soup.py: batch-norm folding keeps the function, ONNX frame models import exactly, soups average.

Real timm EfficientNet-Lite0 (random init, 64 px: the shipped architecture, TF "same" padding, ReLU6 inside
timm's BatchNormAct2d) and real ONNX exports through the project's exporter; no mocks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import train_loop as tl
from trainer.anl import ANLModel, load_anl
from trainer.cli import main as train_main
from trainer.soup import SoupError, conv_bn_pairs, fold_batchnorm_, import_frame_onnx_, soup_checkpoints

torch.set_num_threads(1)
SIZE = 64


def _cfg(seed: int, backbone: str = "tf_efficientnet_lite0") -> dict:
    return tl.load_config("anl", None, [f"seed={seed}", f"model.backbone={backbone}", f"model.image_size={SIZE}",
                                        "model.pretrained=", "anl.regulariser=off"])


def _perturbed(seed: int, backbone: str = "tf_efficientnet_lite0") -> ANLModel:
    """A model whose batch norms have non-trivial statistics and affine parameters (as after training)."""
    torch.manual_seed(seed)
    m = ANLModel(_cfg(seed, backbone), None)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m.eval()


def _ckpt(tmp_path, seed: int, backbone: str = "tf_efficientnet_lite0"):
    m = _perturbed(seed, backbone)
    return tl.save_checkpoint(tmp_path / f"s{seed}-{backbone}.pt", "anl", m, _cfg(seed, backbone)), m


def _x(n: int = 3) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (n, 3, SIZE, SIZE)).astype(np.float32))


def test_fold_keeps_the_function_and_makes_batch_norms_identity():
    m = _perturbed(0).detector
    x = _x()
    with torch.no_grad():
        ref = m(x)
        _, pairs = conv_bn_pairs(m, SIZE)
        assert len(pairs) > 40  # every conv of Lite0 is followed by a batch norm
        fold_batchnorm_(m, SIZE)
        got = m(x)
    assert float((got - ref).abs().max()) < 1e-4
    bn = dict(m.named_modules())[pairs[0][1]]
    assert torch.all(bn.weight == 1) and torch.all(bn.running_mean == 0)
    assert not torch.allclose(bn.bias, torch.zeros_like(bn.bias))  # the shift lives here now


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_frame_imports_exactly(tmp_path, dynamo):
    from trainer.export import export_onnx

    src = _perturbed(0).detector
    onnx_path = export_onnx(src, tmp_path / "frame.onnx", SIZE, "logit", dynamo=dynamo)["path"]
    dst = _perturbed(5).detector  # other weights, same architecture
    err = import_frame_onnx_(dst, onnx_path, SIZE)
    assert err < 1e-4
    with torch.no_grad():
        assert float((dst(_x()) - src(_x())).abs().max()) < 1e-4


def test_onnx_of_another_architecture_is_refused_by_name(tmp_path):
    from trainer.export import export_onnx

    onnx_path = export_onnx(_perturbed(0, "tiny_cnn").detector, tmp_path / "tiny.onnx", SIZE, "logit",
                            dynamo=False)["path"]
    with pytest.raises(SoupError, match=r"tiny\.onnx: .*Conv"):
        import_frame_onnx_(_perturbed(1).detector, onnx_path, SIZE)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(SoupError, match=r"junk\.onnx: not a readable ONNX model"):
        import_frame_onnx_(_perturbed(1).detector, tmp_path / "junk.onnx", SIZE)


def test_soup_is_the_folded_average_and_loads_as_a_checkpoint(tmp_path):
    from trainer.export import export_onnx

    p0, m0 = _ckpt(tmp_path, 0)
    p1, m1 = _ckpt(tmp_path, 1)
    p2, m2 = _ckpt(tmp_path, 2)
    onnx2 = export_onnx(m2.detector, tmp_path / "m2.onnx", SIZE, "logit", dynamo=False)["path"]
    rec = soup_checkpoints([p0, p1], tmp_path / "soup.pt", onnx_frames=[onnx2])
    assert [("checkpoint" in r, "onnx" in r) for r in rec["members"]] == [(True, False), (True, False), (False, True)]
    soup = load_anl(tmp_path / "soup.pt").detector
    folded = [fold_batchnorm_(m.detector, SIZE) for m in (m0, m1, m2)]
    for name, p in soup.named_parameters():
        want = torch.stack([dict(f.named_parameters())[name] for f in folded]).mean(0)
        assert torch.allclose(p, want, atol=1e-6), name
    ck = tl.load_checkpoint(tmp_path / "soup.pt", "anl")
    assert ck["config"]["soup"]["members"][0]["seed"] == 0
    # a soup of one model with itself is that model
    same = soup_checkpoints([p0, p0], tmp_path / "same.pt")
    assert len(same["members"]) == 2
    with torch.no_grad():
        assert float((load_anl(tmp_path / "same.pt").detector(_x()) - _perturbed(0).detector(_x())).abs().max()) < 1e-4


def test_regulariser_on_and_off_members_average_the_detector_and_keep_the_template_head(tmp_path):
    """An ANL regulariser-on checkpoint carries a train-only noise head that off-arm checkpoints lack: the soup
    averages the inference graph of both and takes the head from the template, whichever arm that is."""
    cfg_on = tl.load_config("anl", None, ["seed=5", "model.backbone=tf_efficientnet_lite0", f"model.image_size={SIZE}",
                                          "model.pretrained=",
                                          "anl.regulariser=on", "anl.head_channels=8", "anl.groups=4"])
    torch.manual_seed(5)
    on = ANLModel(cfg_on, (3, 16, 16))
    with torch.no_grad():
        for mod in on.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_var.uniform_(0.5, 2.0)
                mod.bias.uniform_(-0.2, 0.2)
    on.eval()
    p_on = tl.save_checkpoint(tmp_path / "on.pt", "anl", on, cfg_on, noise_shape=(3, 16, 16))
    p_off, off = _ckpt(tmp_path, 1)
    folded = [fold_batchnorm_(m.detector, SIZE) for m in (on, off)]
    for order in ((p_on, p_off), (p_off, p_on)):
        out = tmp_path / f"soup-{order[0].stem}.pt"
        rec = soup_checkpoints(list(order), out)
        soup = load_anl(out)
        assert (soup.head is not None) == (order[0] == p_on)  # the template's structure
        assert rec["train_only_from_template"] == (len(list(on.head.state_dict())) if order[0] == p_on else 0)
        for name, p in soup.detector.named_parameters():
            want = torch.stack([dict(f.named_parameters())[name] for f in folded]).mean(0)
            assert torch.allclose(p, want, atol=1e-6), name
        if soup.head is not None:
            for name, p in soup.head.named_parameters():
                assert torch.equal(p, dict(on.head.named_parameters())[name]), name


def test_soup_cli_bad_members_exit_2_with_the_file_named(tmp_path, capsys):
    p0, _ = _ckpt(tmp_path, 0)
    ptiny, _ = _ckpt(tmp_path, 1, "tiny_cnn")
    runs = tmp_path / "runs"
    assert train_main(["--runs", str(runs), "soup", str(p0), str(ptiny), "--out", str(tmp_path / "s.pt")]) == 2
    assert "tiny_cnn" in capsys.readouterr().err
    assert train_main(["--runs", str(runs), "soup", str(p0), "--out", str(tmp_path / "s.pt")]) == 2
    assert "at least two members" in capsys.readouterr().err
    missing = tmp_path / "missing.pt"
    assert train_main(["--runs", str(runs), "soup", str(p0), str(missing), "--out", str(tmp_path / "s.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert train_main(["--runs", str(runs), "soup", str(p0), str(p0), "--out", str(tmp_path / "s.pt")]) == 0
    # failed runs leave run folders too: read the one this run printed
    folder = next(x.split(": ", 1)[1] for x in capsys.readouterr().out.splitlines() if x.startswith("run folder: "))
    metrics = json.loads((Path(folder) / "metrics.json").read_text())
    assert metrics["kind"] == "uniform"
