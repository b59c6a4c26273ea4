"""Model-bundle format: one folder per model set, read by the daemon, written by the trainer.

Layout::

    <bundle>/
      manifest.json         this module's schema (``format_version`` 1)
      frame.onnx            frame detector (encoder + head): input ``input`` (N,3,S,S) float32, output ``logit`` (N,1)
      frame.fp16.onnx       optional FP16 variant
      embed.onnx            DiffFake embedding model: input ``input`` (N,3,S,S), output ``embedding`` (N,D)
      gmm.npz               DiffFake anomaly model: weights (K,), means (K,D), precisions_cholesky (K,D,D), or (K,D) diagonal
      plans/<key>.plan      optional TensorRT engines, keyed by model hash + TensorRT version + compute capability

Every file named in the manifest is hash-checked (sha256) at load time; a corrupt or incomplete
bundle is refused with a message naming the file and what was expected.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """A bundle folder is missing, incomplete, corrupt or of an unknown format."""


@dataclass
class Normalisation:
    """Pixel normalisation: x_model = (x_uint8 / 255 - mean) / std, per RGB channel."""

    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])

    def apply(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32, normalised."""
        x = crops.astype(np.float32) * (1.0 / 255.0)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass
class CropSpec:
    """How faces are cut from frames (detectors.faces.align); identical for training and serving."""

    size: int = 256
    scale: float = 1.3
    template: str = "arcface5"


@dataclass
class FrameModelSpec:
    method: str  # "anl" | "diffusionfake" | "plain"
    backbone: str
    file: str = "frame.onnx"
    input_size: int = 224
    normalisation: Normalisation = field(default_factory=Normalisation)
    input_name: str = "input"
    output_name: str = "logit"
    threshold: float = 0.5  # calibrated threshold on sigmoid(logit)
    fp16_file: str | None = None
    version: str = "0"


@dataclass
class TemporalModelSpec:
    method: str  # "difffake"
    backbone: str
    file: str = "embed.onnx"
    gmm_file: str = "gmm.npz"
    input_size: int = 224
    normalisation: Normalisation = field(default_factory=Normalisation)
    input_name: str = "input"
    output_name: str = "embedding"
    combination: str = "sq"  # (a-b)^2, rows L2-normalised (methods.md §4.3)
    pair_gap_s: list[float] = field(default_factory=lambda: [0.5, 10.0])  # time gap of training pairs
    # fakeness = -mean log-likelihood; threshold calibrated on real validation identities
    threshold: float = 0.0
    loglik_real_mean: float = 0.0
    loglik_real_std: float = 1.0
    version: str = "0"


@dataclass
class Manifest:
    name: str
    version: str
    crop: CropSpec = field(default_factory=CropSpec)
    frame: FrameModelSpec | None = None
    temporal: TemporalModelSpec | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # how frame and temporal evidence combine (daemon.fusion): frame_weight, temporal_weight, and how they
    # were fitted (per-component validation AUC, counts, rule); {} = the daemon's defaults
    fusion: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = MANIFEST) -> Manifest:
        try:
            if d.get("format_version") != FORMAT_VERSION:
                raise BundleError(
                    f"{where}: format_version {d.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
                )
            d = dict(d)
            d["crop"] = CropSpec(**d.get("crop", {}))
            for key, spec in (("frame", FrameModelSpec), ("temporal", TemporalModelSpec)):
                if d.get(key) is not None:
                    sub = dict(d[key])
                    sub["normalisation"] = Normalisation(**sub.get("normalisation", {}))
                    d[key] = spec(**sub)
            m = cls(**d)
        except BundleError:
            raise
        except (TypeError, KeyError, AttributeError) as e:
            raise BundleError(f"{where}: malformed manifest ({e})") from e
        if m.frame is None and m.temporal is None:
            raise BundleError(f"{where}: a bundle needs a 'frame' model, a 'temporal' model or both")
        return m


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Bundle:
    root: Path
    manifest: Manifest

    def path(self, rel: str) -> Path:
        return self.root / rel

    @property
    def frame_onnx(self) -> Path | None:
        return self.path(self.manifest.frame.file) if self.manifest.frame else None

    @property
    def embed_onnx(self) -> Path | None:
        return self.path(self.manifest.temporal.file) if self.manifest.temporal else None

    def load_gmm(self) -> dict[str, np.ndarray]:
        if self.manifest.temporal is None:
            raise BundleError(f"{self.root}: bundle has no temporal model")
        p = self.path(self.manifest.temporal.gmm_file)
        try:
            with np.load(p) as z:
                g = {k: z[k] for k in ("weights", "means", "precisions_cholesky")}
        except (OSError, KeyError, ValueError) as e:
            raise BundleError(f"{p}: expected an .npz with weights, means, precisions_cholesky ({e})") from e
        k, dim = g["means"].shape
        if g["weights"].shape != (k,) or g["precisions_cholesky"].shape not in ((k, dim, dim), (k, dim)):
            raise BundleError(f"{p}: inconsistent GMM shapes {[v.shape for v in g.values()]}")
        return g

    @property
    def version_string(self) -> str:
        return f"{self.manifest.name}@{self.manifest.version}"


def load_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Load and validate a bundle folder. Raises BundleError with the offending file named."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"{root}: bundle folder not found")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{mpath}: missing (a bundle folder needs {MANIFEST})")
    try:
        raw = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise BundleError(f"{mpath}: expected a JSON object")
    manifest = Manifest.from_dict(raw, str(mpath))
    needed = []
    if manifest.frame:
        needed.append(manifest.frame.file)
    if manifest.temporal:
        needed += [manifest.temporal.file, manifest.temporal.gmm_file]
    for rel in needed:
        if not (root / rel).is_file():
            raise BundleError(f"{root / rel}: missing (named in {MANIFEST})")
        if rel not in manifest.files:
            raise BundleError(f"{mpath}: no sha256 recorded for {rel}")
    if verify:
        for rel, digest in manifest.files.items():
            p = root / rel
            if not p.is_file():
                raise BundleError(f"{p}: missing (listed in {MANIFEST} files)")
            got = sha256_file(p)
            if got != digest:
                raise BundleError(f"{p}: sha256 mismatch (manifest {digest[:12]}…, file {got[:12]}…): corrupt or replaced")
    return Bundle(root=root, manifest=manifest)


def write_bundle(root: str | Path, manifest: Manifest, files: dict[str, Path | bytes]) -> Bundle:
    """Write a bundle: copy/write ``files`` (relative name -> source path or bytes), hash them, write the manifest."""
    import datetime
    import shutil

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for rel, src in files.items():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes | bytearray):
            dst.write_bytes(src)
        elif Path(src).resolve() != dst.resolve():
            shutil.copyfile(src, dst)
    manifest.files = {rel: sha256_file(root / rel) for rel in sorted(files)}
    if not manifest.created:
        manifest.created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    (root / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
    return load_bundle(root)


def default_bundle_path() -> Path:
    """The bundle that ships inside the package (trained on ../shared/data, see its README)."""
    return Path(__file__).parent / "bundles" / "default"
