"""Build a tiny but REAL model bundle for tests (seconds on a CPU, no downloads).

* frame model: a 3-layer CNN (random init, fixed seed) exported to ONNX, input ``input``
  (N, 3, S, S), output ``logit`` (N, 1), dynamic batch;
* embedding model: a small CNN exported to ONNX, output ``embedding`` (N, D), dynamic batch;
* DiffFake GMM: fitted with scikit-learn on pair vectors ``combine(a, b)`` of embeddings of real
  aligned face crops (CenterFace + ``align_face`` on frames of the packaged astronaut photo and
  group photo), pairs of one identity, calibration statistics from the same pairs;
* written with :func:`detectors.bundle.write_bundle`, so hashes and manifest are the real thing.

The frame model is untrained: its output is some deterministic function of the crop. The bundle's
frame threshold is set to the median probability on the real crops, so real faces read around 0.5
(uncertain-ish) — tests check plumbing, not accuracy.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

INPUT_SIZE = 64
EMBED_DIM = 16


def _export(model, path: Path, output_name: str) -> None:
    import torch

    model.eval()
    x = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
    buf = io.BytesIO()
    torch.onnx.export(
        model, (x,), buf, input_names=["input"], output_names=[output_name],
        dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}}, opset_version=17, dynamo=False,
    )
    path.write_bytes(buf.getvalue())


def _models():
    import torch
    from torch import nn

    torch.manual_seed(0)
    frame = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1),
    )
    embed = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(8, EMBED_DIM, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(EMBED_DIM * 4, EMBED_DIM),
    )
    return frame, embed


def real_crops(n_frames: int = 10, face_pipeline=None) -> list[list[np.ndarray]]:
    """Aligned 256 px crops per identity (CenterFace + align_face on packaged real photos)."""
    from detectors import samples

    if face_pipeline is None:
        from detectors.faces.centerface import CenterFaceDetector
        from detectors.faces.pipeline import FacePipeline

        face_pipeline = FacePipeline(CenterFaceDetector())
    per_identity: list[list[np.ndarray]] = []
    frames = samples.moving_frames(samples.astronaut(), n_frames, (480, 270))
    per_identity.append([obs[0].crop for obs in face_pipeline.process_many(frames) if obs])
    # the group photo: each face is one identity; small pan/zoom gives natural variation
    group = list(samples.moving_frames(samples.group_photo(), max(3, n_frames // 3), (960, 664), zoom=1.05, seed=1))
    tracks: dict[int, list[np.ndarray]] = {}
    for obs in face_pipeline.process_many(group):
        for o in obs:
            cx = float(o.face.box[0] + o.face.box[2]) / 2
            tracks.setdefault(int(cx // 120), []).append(o.crop)
    per_identity += [v for v in tracks.values() if len(v) >= 3]
    return per_identity


_BUILT: dict[int, Path] = {}


def build_tiny_bundle(root: str | Path, seed: int = 0, face_pipeline=None) -> Path:
    """Write the bundle into ``root`` (created) and return the folder (``face_pipeline``: reuse one).

    Built once per seed and test process; later calls copy that bundle (identical files), which
    keeps the suite fast while every test still gets its own folder.
    """
    import shutil

    done = _BUILT.get(seed)
    if done is not None and (done / "manifest.json").is_file():
        root = Path(root)
        shutil.copytree(done, root, dirs_exist_ok=True)
        return root
    out = _build_tiny_bundle(root, seed, face_pipeline)
    _BUILT[seed] = Path(out)
    return Path(out)


def _build_tiny_bundle(root: str | Path, seed: int = 0, face_pipeline=None) -> Path:
    import onnxruntime as ort
    from sklearn.mixture import GaussianMixture

    from detectors.bundle import FrameModelSpec, Manifest, Normalisation, TemporalModelSpec, write_bundle
    from detectors.difffake import combine
    from detectors.inference import prepare

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    frame, embed = _models()
    tmp = root / ".build"
    tmp.mkdir(exist_ok=True)
    _export(frame, tmp / "frame.onnx", "logit")
    _export(embed, tmp / "embed.onnx", "embedding")

    norm = Normalisation()
    ids = real_crops(face_pipeline=face_pipeline)
    if not ids or sum(len(v) for v in ids) < 8:
        raise RuntimeError("tiny bundle: too few real face crops found in the packaged photos")
    emb_sess = ort.InferenceSession(str(tmp / "embed.onnx"), providers=["CPUExecutionProvider"])
    frame_sess = ort.InferenceSession(str(tmp / "frame.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    pairs, probs = [], []
    for crops in ids:
        x = prepare(crops, INPUT_SIZE, norm)
        e = emb_sess.run(["embedding"], {"input": x})[0]
        logits = frame_sess.run(["logit"], {"input": x})[0][:, 0]
        probs.extend(1 / (1 + np.exp(-logits)))
        n = len(e)
        i, j = rng.integers(0, n, 8 * n), rng.integers(0, n, 8 * n)
        keep = i != j
        pairs.append(combine(e[i[keep]], e[j[keep]]))
    xp = np.concatenate(pairs)
    gmm = GaussianMixture(2, covariance_type="full", reg_covar=1e-3, max_iter=250, random_state=seed).fit(xp)
    ll = gmm.score_samples(xp)
    np.savez(tmp / "gmm.npz", weights=gmm.weights_, means=gmm.means_, precisions_cholesky=gmm.precisions_cholesky_)

    manifest = Manifest(
        name="tiny-test",
        version="1",
        frame=FrameModelSpec(
            method="plain", backbone="tinycnn", input_size=INPUT_SIZE, normalisation=norm,
            threshold=float(np.median(probs)), version="1",
        ),
        temporal=TemporalModelSpec(
            method="difffake", backbone="tinycnn", input_size=INPUT_SIZE, normalisation=norm,
            pair_gap_s=[0.3, 10.0],
            # fakeness threshold well beyond the real pairs (the 0.5th percentile of real log-likelihoods)
            threshold=float(-np.percentile(ll, 0.5)),
            loglik_real_mean=float(ll.mean()), loglik_real_std=float(max(ll.std(), 1e-6)), version="1",
        ),
        provenance={"note": "tests/tiny_bundle.py: random-init CNNs, GMM on embeddings of packaged real photos"},
        metrics={"pairs": int(len(xp)), "identities": len(ids)},
    )
    write_bundle(root, manifest, {
        "frame.onnx": tmp / "frame.onnx", "embed.onnx": tmp / "embed.onnx", "gmm.npz": tmp / "gmm.npz",
    })
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return root


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    print(build_tiny_bundle(sys.argv[1] if len(sys.argv) > 1 else "tiny-bundle"))
