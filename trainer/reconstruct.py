"""Reconstruction pseudo-fakes, computed once per crop: ``fakewatch-train reconstruct``.

For each prepared real crop of the chosen splits, write

* ``recon/<key>.png``: the crop round-tripped through the latent autoencoder (:mod:`trainer.autoencoder`):
  the same face with a latent decoder's upsampling fingerprint all over it;
* ``regen/<key>.png`` (when ``latent_noise`` > 0): the decoder's output from the crop's latent plus
  Gaussian noise of std ``latent_noise``: the decoder re-invents texture (a crude partial regeneration
  in the latent space, at the crop's own resolution);

and ``index.json``: ``{crop path: {"recon": file, "regen": file}}``. :class:`trainer.torchdata.PseudoFakePairs`
reads the index (``recon_index=``) for its ``recon`` / ``regen`` kinds; the real half of such a pair is the
crop itself, so the only difference the detector can learn is the generator's trace.

Crops are processed in a seeded random order and the index is rewritten every ``flush_every`` crops, so an
interrupted run leaves a usable random subset and a rerun resumes. The autoencoder runs through ONNX Runtime
(about 2x faster than torch eager on these CPUs); its fp32 output matches torch to ~1e-5.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

log = logging.getLogger("fakewatch.trainer.reconstruct")


def _key(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:16]


def _export(ae, folder: Path, size: int) -> tuple[Path, Path]:
    import torch

    enc, dec = folder / "encoder.onnx", folder / "decoder.onnx"
    if not enc.is_file():
        x = torch.zeros(1, 3, size, size)
        torch.onnx.export(ae.encoder, (x,), str(enc), dynamo=False, input_names=["x"], output_names=["z"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "z": {0: "n", 2: "h8", 3: "w8"}})
    if not dec.is_file():
        z = torch.zeros(1, 32, size // 8, size // 8)
        torch.onnx.export(ae.decoder, (z,), str(dec), dynamo=False, input_names=["z"], output_names=["y"],
                          dynamic_axes={"z": {0: "n", 2: "h8", 3: "w8"}, "y": {0: "n", 2: "h", 3: "w"}})
    return enc, dec


def load_index(folder: str | Path) -> dict[str, dict[str, str]]:
    """``{crop path: {"recon": abs path, "regen": abs path}}`` of a reconstruct output folder."""
    folder = Path(folder)
    p = folder / "index.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no reconstruction index (run fakewatch-train reconstruct first)")
    raw = json.loads(p.read_text())
    return {k: {kind: str(folder / f) for kind, f in v.items()} for k, v in raw["items"].items()}


def reconstruct_crops(rows: Sequence[dict[str, Any]], out: str | Path, ae_folder: str | Path,
                      latent_noise: float = 0.35, threads: int = 1, seed: int = 0, batch: int = 8,
                      flush_every: int = 64, limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Write recon/regen images for manifest ``rows`` (real crops) into ``out``; returns a summary."""
    import onnxruntime as ort

    from trainer.autoencoder import load_autoencoder, provenance

    out = Path(out)
    (out / "recon").mkdir(parents=True, exist_ok=True)
    if latent_noise > 0:
        (out / "regen").mkdir(parents=True, exist_ok=True)
    ae = load_autoencoder(ae_folder)
    first = cv2.imread(str(rows[0]["path"]))
    if first is None:
        raise FileNotFoundError(f"{rows[0]['path']}: crop image missing or unreadable")
    enc_p, dec_p = _export(ae, out, first.shape[0] - first.shape[0] % 8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    enc = ort.InferenceSession(str(enc_p), so, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(dec_p), so, providers=["CPUExecutionProvider"])
    idx_path = out / "index.json"
    index: dict[str, dict[str, str]] = json.loads(idx_path.read_text())["items"] if idx_path.is_file() else {}
    order = np.random.default_rng(seed).permutation(len(rows))
    todo = [rows[i] for i in order if str(rows[i]["path"]) not in index]
    if limit is not None:
        todo = todo[:max(0, int(limit) - len(index))]
    meta = {"autoencoder": provenance(ae_folder), "latent_noise": latent_noise, "seed": seed}

    def flush() -> None:
        tmp = idx_path.with_name(f".index.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({**meta, "items": index}))
        os.replace(tmp, idx_path)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="reconstruct", disable=not progress, mininterval=10)
    done_since = 0
    for b0 in range(0, len(todo), batch):
        chunk = todo[b0:b0 + batch]
        imgs, keep = [], []
        for r in chunk:
            im = cv2.imread(str(r["path"]), cv2.IMREAD_COLOR)
            if im is None:
                log.warning("%s: unreadable, skipped", r["path"])
                continue
            imgs.append(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
            keep.append(r)
        if not imgs:
            continue
        shapes = {im.shape for im in imgs}
        groups = [[i for i, im in enumerate(imgs) if im.shape == s] for s in shapes]
        for g in groups:
            a = np.stack([imgs[i] for i in g])
            h, w = a.shape[1:3]
            ph, pw = (-h) % 8, (-w) % 8
            x = a.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
            if ph or pw:
                x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect")
            z = enc.run(None, {"x": x})[0]
            outs = {"recon": dec.run(None, {"z": z})[0]}
            if latent_noise > 0:
                rng = np.random.default_rng([seed, b0])
                outs["regen"] = dec.run(None, {"z": (z + latent_noise * rng.standard_normal(z.shape)).astype(np.float32)})[0]
            for kind, y in outs.items():
                y = np.clip(np.round(y[:, :, :h, :w] * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
                for j, i in enumerate(g):
                    r = keep[i]
                    name = f"{kind}/{_key(str(r['path']))}.png"
                    cv2.imwrite(str(out / name), cv2.cvtColor(y[j], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
                    index.setdefault(str(r["path"]), {})[kind] = name
        bar.update(len(chunk))
        done_since += len(chunk)
        if done_since >= flush_every:
            flush()
            done_since = 0
    bar.close()
    flush()
    return {"out": str(out), "items": len(index), "latent_noise": latent_noise, "autoencoder": meta["autoencoder"]}
