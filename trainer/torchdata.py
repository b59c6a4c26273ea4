"""PyTorch datasets over prepared face crops (output of :func:`trainer.prepare.prepare`).

- :class:`PseudoFakePairs`: real crops -> ``(real, fake)`` tensor pairs made on the fly
  (SBI / DiffFake / cross-identity blends, :mod:`trainer.pseudofakes`); use
  :func:`collate_pairs` so a batch is half real (label 0), half fake (label 1) (methods.md §5.6).
- :class:`LabeledCrops`: crops with their dataset label, for evaluation (``items[i].video_uid``
  groups frames into videos).
- :func:`split_by_identity`: identity-disjoint train/val/test split.

Randomness is a pure function of ``(seed, epoch, index)``, so results do not depend on the number
of DataLoader workers; call :meth:`PseudoFakePairs.set_epoch` each epoch for fresh fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from detectors.bundle import Normalisation
from trainer.landmarks import Landmarker, TemplateLandmarker, build_landmarker
from trainer.pseudofakes import PseudoFakeConfig, blend_faces, make_pseudo_fake

PairKind = Literal["sbi", "difffake", "blend", "mix"]


@dataclass
class CropItem:
    """One prepared crop file with what is known about it."""

    path: Path
    label: int = 0
    video_uid: str = ""
    identity: str | None = None
    split: str = "all"
    dataset: str = ""
    method: str = "real"
    kps_crop: np.ndarray | None = None
    landmarks68: np.ndarray | None = None
    frame: int = 0  # frame index within its video
    face: int = 0  # face index within its frame (0 = largest)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CropItem:
        return cls(path=Path(row["path"]), label=int(row.get("label", 0)), video_uid=row.get("video_uid", str(row["path"])),
                   identity=row.get("identity"), split=row.get("split", "all"), dataset=row.get("dataset", ""),
                   method=row.get("method", "real"), frame=int(row.get("frame", 0)), face=int(row.get("face", 0)),
                   kps_crop=None if row.get("kps_crop") is None else np.asarray(row["kps_crop"], np.float32),
                   landmarks68=None if row.get("landmarks68") is None else np.asarray(row["landmarks68"], np.float32))


def crop_items(source: str | Path | Iterable[dict[str, Any]], splits: Sequence[str] | None = None,
               labels: Sequence[int] | None = None, datasets: Sequence[str] | None = None) -> list[CropItem]:
    """CropItems of a prepared folder (its manifest) or of manifest rows, optionally filtered."""
    if isinstance(source, (str, Path)):
        from trainer.prepare import load_manifest

        rows = load_manifest(source)
    else:
        rows = list(source)
    items = [CropItem.from_row(r) for r in rows]
    return [it for it in items if (splits is None or it.split in splits) and (labels is None or it.label in labels)
            and (datasets is None or it.dataset in datasets)]


def _as_item(x: CropItem | str | Path) -> CropItem:
    return x if isinstance(x, CropItem) else CropItem(path=Path(x), video_uid=str(x))


def load_crop(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path}: crop image missing or unreadable")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def to_tensor(img: np.ndarray, size: int, norm: Normalisation) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> normalised float32 (3, size, size)."""
    if img.shape[0] != size or img.shape[1] != size:
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
        img = cv2.resize(img, (size, size), interpolation=interp)
    return torch.from_numpy(norm.apply(img[None])[0])


class PseudoFakePairs(Dataset):
    """Real crops -> ``(real, fake)`` normalised tensors, a new pseudo-fake at every access.

    crop_paths: crop files or :class:`CropItem` (stored 68 landmarks / 5 crop points are used when present).
    size: model input side (crops are resized after blending). normalisation: the bundle's.
    kind: ``"sbi"`` | ``"difffake"`` | ``"blend"`` (cross-identity, source = a random crop of
    another identity) | ``"mix"`` (draws per item with ``mix_weights`` over sbi/difffake/blend).
    landmarker: a :class:`~trainer.landmarks.Landmarker` or its name (built lazily in each worker).
    """

    def __init__(self, crop_paths: Sequence[CropItem | str | Path], size: int = 256,
                 normalisation: Normalisation | None = None, cfg: PseudoFakeConfig | None = None, seed: int = 0,
                 landmarker: Landmarker | str = "template", kind: PairKind = "sbi",
                 mix_weights: dict[str, float] | None = None) -> None:
        self.items = [_as_item(p) for p in crop_paths]
        if not self.items:
            raise ValueError("PseudoFakePairs: no crops given")
        if kind not in ("sbi", "difffake", "blend", "mix"):
            raise ValueError(f"kind must be sbi, difffake, blend or mix, got {kind!r}")
        self.size = int(size)
        self.norm = normalisation or Normalisation()
        self.cfg = cfg or (PseudoFakeConfig.difffake() if kind == "difffake" else PseudoFakeConfig())
        self.seed = int(seed)
        self.kind = kind
        self.mix_weights = mix_weights or {"sbi": 0.5, "difffake": 0.4, "blend": 0.1}
        self._landmarker_spec = landmarker
        self._landmarker: Landmarker | None = None if isinstance(landmarker, str) else landmarker
        self.epoch = 0
        ids = [it.identity or it.video_uid for it in self.items]
        self._ids = np.asarray(ids, dtype=object)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def landmarker(self) -> Landmarker:
        if self._landmarker is None:
            spec = self._landmarker_spec
            self._landmarker = build_landmarker(spec) if isinstance(spec, str) else TemplateLandmarker()
        return self._landmarker

    def _landmarks(self, it: CropItem, crop: np.ndarray) -> np.ndarray:
        if it.landmarks68 is not None:
            return it.landmarks68
        return self.landmarker.landmarks(crop, it.kps_crop)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(real, fake, mask)`` as uint8 crops + float mask (before resizing / normalising)."""
        rng = self.rng(index)
        it = self.items[index]
        crop = load_crop(it.path)
        lm = self._landmarks(it, crop)
        kind = self.kind
        if kind == "mix":
            names = list(self.mix_weights)
            w = np.asarray([self.mix_weights[n] for n in names], np.float64)
            kind = str(rng.choice(names, p=w / w.sum()))
        if kind == "blend":
            others = np.flatnonzero(self._ids != self._ids[index])
            if len(others) > 0:
                j = int(rng.choice(others))
                src = load_crop(self.items[j].path)
                if src.shape != crop.shape:
                    src = cv2.resize(src, crop.shape[1::-1], interpolation=cv2.INTER_AREA)
                return blend_faces(crop, src, lm, rng, self.cfg, source_landmarks68=self._landmarks(self.items[j], src))
            kind = "sbi"  # a single identity: fall back to self-blending
        return make_pseudo_fake(crop, lm, rng, self.cfg, kind=kind)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        real, fake, _ = self.sample(index)
        return to_tensor(real, self.size, self.norm), to_tensor(fake, self.size, self.norm)


def collate_pairs(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[(real, fake), ...]`` -> ``(x, y)``: x = reals then fakes (2N, 3, S, S), y = N zeros then N ones (float32)."""
    reals = torch.stack([b[0] for b in batch])
    fakes = torch.stack([b[1] for b in batch])
    n = len(batch)
    return torch.cat([reals, fakes]), torch.cat([torch.zeros(n), torch.ones(n)])


class LabeledCrops(Dataset):
    """Crops with labels for evaluation: item ``i`` -> ``(tensor (3, S, S), label)``; ``items[i]`` has its video_uid."""

    def __init__(self, items: Sequence[CropItem | dict[str, Any]], size: int = 256,
                 normalisation: Normalisation | None = None) -> None:
        self.items = [CropItem.from_row(x) if isinstance(x, dict) else x for x in items]
        if not self.items:
            raise ValueError("LabeledCrops: no crops given")
        self.size = int(size)
        self.norm = normalisation or Normalisation()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        it = self.items[index]
        return to_tensor(load_crop(it.path), self.size, self.norm), int(it.label)


def _identity_of(x: Any) -> str:
    if isinstance(x, dict):
        return str(x.get("identity") or x.get("video_uid") or x["path"])
    ident = getattr(x, "identity", None)
    return str(ident or getattr(x, "video_uid", None) or x)


def split_by_identity(items: Sequence[Any], val_frac: float = 0.1, test_frac: float = 0.1,
                      seed: int = 0) -> dict[str, list[Any]]:
    """Identity-disjoint ``{"train", "val", "test"}`` split of records / crop items / manifest rows.

    Items are grouped by ``identity`` (falling back to ``video_uid``); identities are shuffled with
    ``seed`` and the first ``round(test_frac * n)`` go to test, the next ``round(val_frac * n)`` to
    val, the rest to train. Shared data: one image = one identity (faces/), one video = one identity
    (videos/), which the shared-data reader already encodes.
    """
    if val_frac < 0 or test_frac < 0 or val_frac + test_frac >= 1:
        raise ValueError(f"need 0 <= val_frac, test_frac and val_frac + test_frac < 1, got {val_frac}, {test_frac}")
    ids = sorted({_identity_of(x) for x in items})
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_test, n_val = int(round(test_frac * len(ids))), int(round(val_frac * len(ids)))
    where: dict[str, str] = {}
    for rank, k in enumerate(perm):
        where[ids[k]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    out: dict[str, list[Any]] = {"train": [], "val": [], "test": []}
    for x in items:
        out[where[_identity_of(x)]].append(x)
    return out
