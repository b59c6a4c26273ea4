"""trainer.export: ONNX export + parity (fp32 and fp16) + bundle assembly read back by the daemon's path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detectors.bundle import BundleError, FrameModelSpec, TemporalModelSpec, load_bundle
from detectors.difffake import GmmScorer, combine
from detectors.models import build_embedder, build_frame_detector
from detectors.runtime import OrtRuntime, select_runtime
from trainer import export as ex

SIZE = 64


def _frame_model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_frame_detector("tiny_cnn", width=16)
    with torch.no_grad():  # a head with weight: logits of order 1-10, so parity is not trivially tiny numbers
        m.fc.weight.mul_(1000.0)
    return m.eval()


def _embedder() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_embedder("tiny_cnn", width=16).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    fm, em = _frame_model(), _embedder()
    fi = ex.export_model(fm, out, SIZE, kind="frame", fp16=True)
    ei = ex.export_model(em, out, SIZE, kind="embed", fp16=False)
    return out, fm, em, fi, ei


def test_export_frame_parity(exported):
    out, fm, _, fi, _ = exported
    assert fi["exporter"] in ("dynamo", "torchscript") and fi["opset"] >= 17
    assert fi["max_abs_err"] <= 1e-4
    rt = OrtRuntime(out / "frame.onnx")
    assert rt.input_name == "input" and rt.output_name == "logit"
    x = torch.randn(5, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = fm(x).numpy()
    got = rt.run(x.numpy())
    assert got.shape == (5, 1)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert np.abs(ref).max() > 0.5  # the comparison is not between near-zero numbers


def test_export_fp16_variant(exported):
    out, fm, _, fi, _ = exported
    import onnx

    m16 = onnx.load(str(out / "frame.fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m16.graph.initializer)
    assert m16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # IO kept float32
    assert 0 < fi["fp16_max_abs_err"] <= ex.FP16_TOL
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = fm(x).numpy()
    np.testing.assert_allclose(OrtRuntime(out / "frame.fp16.onnx").run(x.numpy()), ref, atol=ex.FP16_TOL)


def test_export_embedder_parity(exported):
    out, _, em, _, ei = exported
    assert ei["max_abs_err"] <= 1e-4
    rt = OrtRuntime(out / "embed.onnx")
    assert rt.output_name == "embedding"
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = em(x).numpy()
    np.testing.assert_allclose(rt.run(x.numpy()), ref, atol=1e-4, rtol=0)


def test_parity_fails_above_tolerance(exported):
    out, _, _, _, _ = exported
    other = _frame_model()
    with torch.no_grad():
        other.fc.bias.add_(1.0)  # a different model than the one exported
    with pytest.raises(ex.ExportError, match="exceeds tolerance"):
        ex.parity(other, out / "frame.onnx", SIZE, batch_sizes=(2,))


def test_torchscript_fallback_exporter(tmp_path):
    info = ex.export_onnx(_embedder(), tmp_path / "e.onnx", SIZE, "embedding", dynamo=False)
    assert info["exporter"] == "torchscript"
    assert ex.parity(_embedder(), tmp_path / "e.onnx", SIZE, batch_sizes=(1, 2)) <= 1e-4


def test_check_onnx_rejects_bad_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ex.ExportError, match="bad.onnx"):
        ex.check_onnx(bad)


def test_build_bundle_roundtrip_and_daemon_scoring(exported, tmp_path):
    out, fm, em, fi, ei = exported
    rng = np.random.default_rng(0)
    d = 32  # tiny_cnn width 16 -> 32 channels
    x = combine(rng.normal(size=(300, d)), rng.normal(size=(300, d)))
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(2, covariance_type="full", random_state=0).fit(x)
    b = ex.build_bundle(
        tmp_path / "bundle",
        frame=ex.FrameArtifact(out / "frame.onnx", FrameModelSpec(method="anl", backbone="tiny_cnn", input_size=SIZE,
                                                                  threshold=0.7), fp16=out / "frame.fp16.onnx"),
        temporal=ex.TemporalArtifact(out / "embed.onnx", TemporalModelSpec(method="difffake", backbone="tiny_cnn",
                                                                           input_size=SIZE),
                                     gmm=GmmScorer.from_sklearn(gmm).to_arrays()),
        name="test", version="1", provenance={"data": "synthetic"}, metrics={"val": {"auc": 0.5}},
    )
    loaded = load_bundle(tmp_path / "bundle")
    m = loaded.manifest
    assert m.frame.threshold == 0.7 and m.frame.fp16_file == "frame.fp16.onnx"
    assert set(m.files) == {"frame.onnx", "frame.fp16.onnx", "embed.onnx", "gmm.npz"}
    assert {"torch", "onnx", "onnxruntime"} <= set(m.versions)
    assert m.provenance == {"data": "synthetic"} and b.version_string == "test@1"

    # daemon-side scoring path: normalise uint8 crops, run via select_runtime (CPU here), GMM from arrays
    crops = rng.integers(0, 256, size=(4, SIZE, SIZE, 3), dtype=np.uint8)
    batch = m.frame.normalisation.apply(crops)
    rt = select_runtime(loaded.frame_onnx, prefer="cpu")
    with torch.no_grad():
        ref = fm(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(rt.run(batch), ref, atol=1e-4)
    emb = select_runtime(loaded.embed_onnx, prefer="cpu").run(m.temporal.normalisation.apply(crops))
    scorer = GmmScorer.from_arrays(loaded.load_gmm())
    ll = scorer.score_samples(combine(emb[:2], emb[2:]))
    np.testing.assert_allclose(ll, gmm.score_samples(combine(emb[:2], emb[2:])), rtol=1e-6, atol=1e-6)

    # the serving scorers (detectors.inference, used by the daemon and the trainer) load the bundle and agree with torch
    from detectors.inference import Embedder as BundleEmbedder
    from detectors.inference import FrameScorer

    probs = FrameScorer(loaded, runtime_prefer="cpu")(list(crops))
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-ref[:, 0].astype(np.float64))), atol=1e-5)
    with torch.no_grad():
        emb_ref = em(torch.from_numpy(m.temporal.normalisation.apply(crops))).numpy()
    np.testing.assert_allclose(BundleEmbedder(loaded, runtime_prefer="cpu").embed_raw(list(crops)), emb_ref, atol=1e-4)

    # corrupting a file is caught by the hash check, naming it
    with open(tmp_path / "bundle" / "frame.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match="frame.onnx"):
        load_bundle(tmp_path / "bundle")
    raw = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert raw["frame"]["input_size"] == SIZE


def test_build_bundle_needs_a_model(tmp_path):
    with pytest.raises(ex.ExportError, match="needs a frame model"):
        ex.build_bundle(tmp_path / "b")


def test_exported_onnx_carries_no_build_machine_paths(exported):
    """The dynamo exporter records Python stack traces (with local file paths) per node; export strips them."""
    import onnx

    out, *_ = exported
    for f in ("frame.onnx", "embed.onnx"):
        m = onnx.load(str(out / f))
        assert all(len(n.metadata_props) == 0 for n in m.graph.node), f
        assert b"site-packages" not in (out / f).read_bytes()
