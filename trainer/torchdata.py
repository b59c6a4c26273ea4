"""PyTorch datasets over prepared face crops (output of :func:`trainer.prepare.prepare`).

- :class:`PseudoFakePairs`: real crops -> ``(real, fake)`` tensor pairs made on the fly
  (SBI / DiffFake / cross-identity blends, :mod:`trainer.pseudofakes`); use
  :func:`collate_pairs` so a batch is half real (label 0), half fake (label 1) (methods.md §5.6).
  With ``branches=True`` an item is a dict that also holds DiffusionFake's reconstruction images
  (``source``, ``target``, ``real_clean``, ``fake_clean``; un-augmented, [-1, 1]); with
  ``augment`` (:class:`DetectorAugment`) only the detector inputs ``real`` / ``fake`` are augmented.
- :class:`LabeledCrops`: crops with their dataset label, for evaluation (``items[i].video_uid``
  groups frames into videos).
- :func:`split_by_identity`: identity-disjoint train/val/test split.

Randomness is a pure function of ``(seed, epoch, index)``, so results do not depend on the number
of DataLoader workers; call :meth:`PseudoFakePairs.set_epoch` each epoch for fresh fakes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import cv2
import numpy as np
import torch

from torch.utils.data import Dataset

from detectors.bundle import Normalisation
from detectors.preprocess import resize_crop  # the serving resize: no train/serve skew
from trainer.landmarks import Landmarker, TemplateLandmarker, build_landmarker
from trainer.pseudofakes import PseudoFake, PseudoFakeConfig, blend_faces_parts, make_pseudo_fake_parts

PairKind = Literal["sbi", "difffake", "blend", "recon", "regen", "mix"]
KINDS = ("sbi", "difffake", "blend", "recon", "regen", "mix")


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
    return torch.from_numpy(norm.apply(resize_crop(img, size)[None])[0])


# ------------------------------------------------------------------------------------------------ #
# detector-input augmentation (DiffusionFake, methods.md §3.2)


@dataclass
class AugmentConfig:
    """DiffusionFake's train augmentation of the detector input (released albumentations pipeline, §3.2).

    Applied to the resized crop, in this order: horizontal flip (p ``p_hflip``), rotation by
    U(-``rotate_limit``, +``rotate_limit``) degrees (p ``p_rotate``, reflected border), RandomResizedCrop
    back to the same size with area scale ``rrc_scale`` and aspect ``rrc_ratio`` (p ``p_rrc``), a second
    horizontal flip (p ``p_hflip2``), grayscale (p ``p_gray``), Gaussian noise with variance
    U(``noise_var``) in uint8 units (p ``p_noise``; albumentations' default 10-50).

    Camera-pipeline keys (real-domain robustness; all off by default so older configs are unchanged),
    applied after the geometric ones, drawn independently for the real and the fake of a pair so neither
    compression nor sensor noise can tell them apart: colour jitter (p ``p_color``: brightness /
    contrast +-``color_strength``, saturation +-``color_strength``, gamma 1+-``color_strength``/2),
    down-and-up resize by U(``resize_scale``) with a random interpolation (p ``p_resize``), Gaussian blur
    with sigma U(``blur_sigma``) (p ``p_blur``), JPEG at quality U(``jpeg_quality``) (p ``p_jpeg``; after
    the noise, as a camera would).
    """

    p_hflip: float = 0.5
    p_rotate: float = 0.5
    rotate_limit: float = 30.0
    p_rrc: float = 0.5
    rrc_scale: tuple[float, float] = (0.5, 1.0)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    p_hflip2: float = 0.5
    p_gray: float = 0.1
    p_noise: float = 0.1
    noise_var: tuple[float, float] = (10.0, 50.0)
    p_color: float = 0.0
    color_strength: float = 0.2
    p_resize: float = 0.0
    resize_scale: tuple[float, float] = (0.4, 0.9)
    p_blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    p_jpeg: float = 0.0
    jpeg_quality: tuple[int, int] = (40, 95)

    def to_dict(self) -> dict:
        return asdict(self)


class DetectorAugment:
    """Randomised cv2/numpy augmentation of one uint8 RGB image (see :class:`AugmentConfig`).

    All randomness comes from the ``numpy.random.Generator`` passed to :meth:`__call__`, so datasets
    keep their ``(seed, epoch, index)`` determinism. Output has the input's shape and dtype.
    """

    def __init__(self, cfg: AugmentConfig | dict | None = None) -> None:
        if isinstance(cfg, dict):
            unknown = set(cfg) - set(AugmentConfig.__dataclass_fields__)
            if unknown:
                raise ValueError(f"unknown augmentation keys {sorted(unknown)} (known: {sorted(AugmentConfig.__dataclass_fields__)})")
            cfg = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
        self.cfg = cfg or AugmentConfig()

    @classmethod
    def from_spec(cls, spec: Any) -> DetectorAugment | None:
        """Config value -> augmenter: false/None/"none" -> None; true/"diffusionfake" -> defaults; dict -> overrides."""
        if spec is None or spec is False or (isinstance(spec, str) and spec.lower() in ("none", "off", "")):
            return None
        if spec is True or (isinstance(spec, str) and spec.lower() == "diffusionfake"):
            return cls()
        if isinstance(spec, dict):
            return cls(spec)
        if isinstance(spec, (AugmentConfig, DetectorAugment)):
            return spec if isinstance(spec, DetectorAugment) else cls(spec)
        raise ValueError(f"augment must be false, true, 'diffusionfake' or a mapping of AugmentConfig keys, got {spec!r}")

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        h, w = img.shape[:2]
        if rng.random() < c.p_hflip:
            img = img[:, ::-1]
        if rng.random() < c.p_rotate:
            ang = rng.uniform(-c.rotate_limit, c.rotate_limit)
            m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), ang, 1.0)
            img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT_101)
        if rng.random() < c.p_rrc:
            img = self._random_resized_crop(img, rng)
        if rng.random() < c.p_hflip2:
            img = img[:, ::-1]
        if rng.random() < c.p_gray:
            g = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
            img = np.repeat(g[..., None], 3, axis=2)
        if rng.random() < c.p_color:
            img = self._color(img, rng)
        if rng.random() < c.p_resize:
            f = rng.uniform(*c.resize_scale)
            small = (max(8, int(round(w * f))), max(8, int(round(h * f))))
            down = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)[int(rng.integers(3))]
            up = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_NEAREST)[int(rng.integers(3))]
            img = cv2.resize(cv2.resize(np.ascontiguousarray(img), small, interpolation=down), (w, h), interpolation=up)
        if rng.random() < c.p_blur:
            img = cv2.GaussianBlur(np.ascontiguousarray(img), (0, 0), float(rng.uniform(*c.blur_sigma)))
        if rng.random() < c.p_noise:
            std = math.sqrt(rng.uniform(*c.noise_var))
            img = np.clip(img.astype(np.float32) + rng.normal(0.0, std, img.shape).astype(np.float32), 0, 255).astype(np.uint8)
        if rng.random() < c.p_jpeg:
            q = int(rng.integers(int(c.jpeg_quality[0]), int(c.jpeg_quality[1]) + 1))
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok:
                img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        return np.ascontiguousarray(img)

    def _color(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        k = float(self.cfg.color_strength)
        x = img.astype(np.float32) / 255.0
        x = x * (1.0 + rng.uniform(-k, k)) + rng.uniform(-k, k) / 2  # contrast-ish gain + brightness offset
        grey = x.mean(axis=2, keepdims=True)
        x = grey + (x - grey) * (1.0 + rng.uniform(-k, k))  # saturation
        x = np.clip(x, 0.0, 1.0) ** (1.0 + rng.uniform(-k, k) / 2)  # gamma
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)

    def _random_resized_crop(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """torchvision's RandomResizedCrop sampling (10 tries, then the central crop), resized back to (H, W)."""
        c = self.cfg
        h, w = img.shape[:2]
        area = h * w
        log_r = (math.log(c.rrc_ratio[0]), math.log(c.rrc_ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*c.rrc_scale)
            ar = math.exp(rng.uniform(*log_r))
            cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
            if 0 < cw <= w and 0 < ch <= h:
                y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
                break
        else:
            cw, ch, y0, x0 = w, h, 0, 0
        crop = np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw])
        return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)


def to_model_range(img: np.ndarray, size: int) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 (3, size, size) in [-1, 1] (x / 127.5 - 1): DiffusionFake's
    reconstruction images, whatever the detector's normalisation (torch ops: ~10x faster than numpy here)."""
    x = torch.from_numpy(np.ascontiguousarray(resize_crop(img, size)))
    return x.permute(2, 0, 1).float().div_(127.5).sub_(1.0).contiguous()


class PseudoFakePairs(Dataset):
    """Real crops -> ``(real, fake)`` normalised tensors, a new pseudo-fake at every access.

    crop_paths: crop files or :class:`CropItem` (stored 68 landmarks / 5 crop points are used when present).
    size: model input side (crops are resized after blending). normalisation: the bundle's.
    kind: ``"sbi"`` | ``"difffake"`` | ``"blend"`` (cross-identity, source = a random crop of
    another identity) | ``"mix"`` (draws per item with ``mix_weights`` over sbi/difffake/blend).
    landmarker: a :class:`~trainer.landmarks.Landmarker`, its name or a spec dict ({name: mediapipe, model_path: ...};
        built lazily in each worker).
    branches: items become dicts ``{"real", "fake", "source", "target", "real_clean", "fake_clean"}``:
    ``real`` / ``fake`` are the detector inputs; the rest are DiffusionFake's reconstruction images
    (methods.md §3.2), resized to ``size``, in [-1, 1], never augmented: ``source`` / ``target`` = the two
    images blended into the fake (:class:`~trainer.pseudofakes.PseudoFake`), ``real_clean`` = the real
    before augmentation (= ``target``), ``fake_clean`` = the fake before augmentation (for the
    weight targets of §3.5).
    augment: detector-input augmentation (:meth:`DetectorAugment.from_spec`: None/False = off, the
    default; True = DiffusionFake's §3.2 recipe; a dict overrides :class:`AugmentConfig` keys), drawn
    independently for real and fake, applied after resizing, never to the reconstruction images.
    """

    def __init__(self, crop_paths: Sequence[CropItem | str | Path], size: int = 256,
                 normalisation: Normalisation | None = None, cfg: PseudoFakeConfig | None = None, seed: int = 0,
                 landmarker: Landmarker | str | dict = "template", kind: PairKind = "sbi",
                 mix_weights: dict[str, float] | None = None, branches: bool = False,
                 augment: Any = None, recon_index: str | Path | dict | None = None,
                 p_recon_local: float = 0.3) -> None:
        self.items = [_as_item(p) for p in crop_paths]
        if not self.items:
            raise ValueError("PseudoFakePairs: no crops given")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.size = int(size)
        self.norm = normalisation or Normalisation()
        self.cfg = cfg or (PseudoFakeConfig.difffake() if kind == "difffake" else PseudoFakeConfig())
        self.seed = int(seed)
        self.kind = kind
        self.mix_weights = dict(mix_weights or {"sbi": 0.5, "difffake": 0.4, "blend": 0.1})
        bad = sorted(set(self.mix_weights) - set(KINDS[:-1]))
        if bad or not self.mix_weights or min(self.mix_weights.values()) < 0 or sum(self.mix_weights.values()) <= 0:
            raise ValueError(f"mix_weights must map kinds of {KINDS[:-1]} to weights >= 0 (sum > 0), got {self.mix_weights}")
        self._recon_spec = recon_index
        self.recon: dict[str, dict[str, str]] = {}
        self._load_recon()
        if kind in ("recon", "regen") or (kind == "mix" and (self.mix_weights.get("recon") or self.mix_weights.get("regen"))):
            if recon_index is None:
                raise ValueError(f"kind {kind!r} with recon/regen needs recon_index (fakewatch-train reconstruct output)")
        self.p_recon_local = float(p_recon_local)
        self.branches = bool(branches)
        self.augment = DetectorAugment.from_spec(augment)
        self._landmarker_spec = landmarker
        self._landmarker: Landmarker | None = None if isinstance(landmarker, (str, dict)) else landmarker
        self.epoch = 0
        ids = [it.identity or it.video_uid for it in self.items]
        self._ids = np.asarray(ids, dtype=object)

    def with_options(self, *, branches: bool | None = None, augment: Any = "keep") -> PseudoFakePairs:
        """A shallow copy with ``branches`` and/or ``augment`` changed (same crops, seed and pseudo-fakes)."""
        other = copy.copy(self)
        if branches is not None:
            other.branches = bool(branches)
        if not (isinstance(augment, str) and augment == "keep"):
            other.augment = DetectorAugment.from_spec(augment)
        return other

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._load_recon()  # a reconstruct run may still be adding crops: later epochs see them

    def _load_recon(self) -> None:
        spec = self._recon_spec
        if spec is None:
            return
        if isinstance(spec, dict):
            self.recon = {str(k): v for k, v in spec.items()}
            return
        from trainer.reconstruct import load_index

        self.recon = load_index(spec)

    def _covered(self, kind: str) -> list[int]:
        cache = self.__dict__.setdefault("_covered_cache", {})
        key = (kind, len(self.recon))
        if key not in cache:
            cache[key] = [i for i, it in enumerate(self.items) if kind in self.recon.get(str(it.path), {})]
        return cache[key]

    def recon_coverage(self) -> float:
        """Fraction of this dataset's crops that have reconstructions (recon/regen kinds fall back to SBI)."""
        return sum(str(it.path) in self.recon for it in self.items) / len(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def landmarker(self) -> Landmarker:
        if self._landmarker is None:
            spec = self._landmarker_spec
            self._landmarker = build_landmarker(spec) if isinstance(spec, (str, dict)) else TemplateLandmarker()
        return self._landmarker

    def _landmarks(self, it: CropItem, crop: np.ndarray) -> np.ndarray:
        if it.landmarks68 is not None:
            return it.landmarks68
        return self.landmarker.landmarks(crop, it.kps_crop)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def augment_rng(self, index: int) -> np.random.Generator:
        """Separate stream for the detector augmentation (turning it on does not change the pseudo-fakes)."""
        return np.random.default_rng([self.seed, self.epoch, int(index), 1])

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(real, fake, mask)`` as uint8 crops + float mask (before resizing / normalising)."""
        return self.sample_parts(index).triple()

    def sample_parts(self, index: int) -> PseudoFake:
        """The full :class:`~trainer.pseudofakes.PseudoFake` of item ``index`` (crop size, uint8)."""
        rng = self.rng(index)
        it = self.items[index]
        crop = load_crop(it.path)
        lm = self._landmarks(it, crop)
        kind = self.kind
        if kind == "mix":
            names = list(self.mix_weights)
            w = np.asarray([self.mix_weights[n] for n in names], np.float64)
            kind = str(rng.choice(names, p=w / w.sum()))
        if kind in ("recon", "regen"):
            entry = self.recon.get(str(it.path), {})
            if kind not in entry:
                # this crop has no reconstruction (a partial reconstruct run): take a covered crop instead,
                # so the family keeps its share of the mix whatever the coverage
                covered = self._covered(kind)
                if covered:
                    j = covered[int(rng.integers(len(covered)))]
                    it = self.items[j]
                    crop, entry = load_crop(it.path), self.recon[str(it.path)]
                    lm = self._landmarks(it, crop)
            if kind in entry:
                return self._recon_parts(crop, load_crop(Path(entry[kind])), lm, rng)
            kind = "sbi"  # no reconstruction at all: a self-blend instead
        if kind == "blend":
            others = np.flatnonzero(self._ids != self._ids[index])
            if len(others) > 0:
                j = int(rng.choice(others))
                src = load_crop(self.items[j].path)
                if src.shape != crop.shape:
                    src = cv2.resize(src, crop.shape[1::-1], interpolation=cv2.INTER_AREA)
                return blend_faces_parts(crop, src, lm, rng, self.cfg,
                                         source_landmarks68=self._landmarks(self.items[j], src))
            kind = "sbi"  # a single identity: fall back to self-blending
        return make_pseudo_fake_parts(crop, lm, rng, self.cfg, kind=kind)

    def _recon_parts(self, crop: np.ndarray, rec: np.ndarray, lm: np.ndarray, rng: np.random.Generator) -> PseudoFake:
        """The reconstruction as the fake: whole crop, or (p ``p_recon_local``) blended into the real through a
        soft landmark mask (a locally generated face). The real half is the crop itself."""
        from trainer.pseudofakes import blend, blend_mask, choose_mask_type, landmark_mask

        if rec.shape != crop.shape:
            rec = cv2.resize(rec, crop.shape[1::-1], interpolation=cv2.INTER_AREA)
        if rng.random() < self.p_recon_local:
            hull = landmark_mask(crop.shape[:2], np.asarray(lm, np.float64), choose_mask_type("sbi", rng, self.cfg))
            mask = blend_mask(hull, rng, self.cfg).astype(np.float32)
            fake = blend(rec, crop, mask)
        else:
            mask = np.ones(crop.shape[:2], np.float32)
            fake = rec
        return PseudoFake(crop, fake, mask, rec, crop, fake)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]:
        p = self.sample_parts(index)
        real, fake = resize_crop(p.real, self.size), resize_crop(p.fake, self.size)
        if self.augment is not None:
            arng = self.augment_rng(index)
            real, fake = self.augment(real, arng), self.augment(fake, arng)
        x_real, x_fake = to_tensor(real, self.size, self.norm), to_tensor(fake, self.size, self.norm)
        if not self.branches:
            return x_real, x_fake
        target = to_model_range(p.target, self.size)
        return {"real": x_real, "fake": x_fake, "source": to_model_range(p.source, self.size),
                "target": target, "real_clean": target.clone(), "fake_clean": to_model_range(p.fake_clean, self.size)}


def collate_pairs(batch: list[tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[(real, fake), ...]`` (or dict items with those keys) -> ``(x, y)``: x = reals then fakes
    (2N, 3, S, S), y = N zeros then N ones (float32)."""
    pairs = [(b["real"], b["fake"]) if isinstance(b, dict) else b for b in batch]
    reals = torch.stack([b[0] for b in pairs])
    fakes = torch.stack([b[1] for b in pairs])
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
