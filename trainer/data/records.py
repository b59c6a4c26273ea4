"""Dataset records: one ``VideoRecord`` per source video (or face sequence / image) of a dataset.

Every dataset reader in :mod:`trainer.data` turns a raw distribution layout into a list of
``VideoRecord``. A record points either at a video file (``video_path``) or at an ordered list of
image files (``frame_paths``: a folder of frames, a WildDeepfake face sequence, or a single image).

``video_uid`` is unique across datasets: ``<dataset>/<real|fake>/<path relative to the dataset
root>`` (methods.md §0: never group by the bare folder name).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

log = logging.getLogger("fakewatch.trainer.data")

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".ts"})

LABEL_NAMES = {0: "real", 1: "fake"}
SPLITS = ("train", "val", "test")


class DatasetLayoutError(ValueError):
    """A dataset folder does not have the expected layout (message names the path and what was expected)."""


@dataclass(frozen=True)
class VideoRecord:
    """One unit of evaluation: a video file, a folder of frames, a face sequence or one image.

    label: 1 = fake, 0 = real. split: ``train`` | ``val`` | ``test`` | ``all`` (no official split).
    method: manipulation method (``real`` for real items). identity: optional person/source id used
    for identity-disjoint splits (two records with the same identity must land in the same split).
    """

    dataset: str
    split: str
    video_uid: str
    label: int
    method: str
    video_path: Path | None = None
    frame_paths: tuple[Path, ...] | None = None
    identity: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.label not in (0, 1):
            raise ValueError(f"{self.video_uid}: label must be 0 (real) or 1 (fake), got {self.label!r}")
        if (self.video_path is None) == (self.frame_paths is None):
            raise ValueError(f"{self.video_uid}: exactly one of video_path / frame_paths must be set")
        if self.frame_paths is not None and len(self.frame_paths) == 0:
            raise ValueError(f"{self.video_uid}: frame_paths is empty")

    @property
    def label_name(self) -> str:
        return LABEL_NAMES[self.label]

    @property
    def is_video(self) -> bool:
        return self.video_path is not None


def make_uid(dataset: str, label: int, rel_path: str | Path) -> str:
    """``<dataset>/<real|fake>/<posix relative path>`` (the unique video id of methods.md §0)."""
    rel = Path(rel_path).as_posix().strip("/")
    return f"{dataset}/{LABEL_NAMES[int(label)]}/{rel}"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(uid: str, max_len: int = 96) -> str:
    """A file-system-safe, collision-free folder name for ``uid`` (readable part + 10-hex hash)."""
    h = hashlib.sha1(uid.encode("utf-8")).hexdigest()[:10]
    readable = _UNSAFE.sub("_", uid.replace("/", "__")).strip("._-")
    return f"{readable[-max_len:]}-{h}"


def safe_component(name: str) -> str:
    """``name`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_`` (dataset folder names)."""
    return _UNSAFE.sub("_", name).strip(".") or "_"


# --------------------------------------------------------------------------------------------- #
# file-system helpers (case-insensitive folder matching)


def child_ci(parent: Path, name: str) -> Path | None:
    """The child of ``parent`` whose name equals ``name`` ignoring case (and '-'/'_' vs ' '), or None."""
    if not parent.is_dir():
        return None
    exact = parent / name
    if exact.exists():
        return exact
    want = _norm(name)
    for c in sorted(parent.iterdir()):
        if _norm(c.name) == want:
            return c
    return None


def _norm(s: str) -> str:
    return s.lower().replace("-", "").replace("_", "").replace(" ", "")


def require_dir(parent: Path, name: str, what: str) -> Path:
    """``child_ci`` or a :class:`DatasetLayoutError` naming the path and what was expected there."""
    p = child_ci(parent, name)
    if p is None or not p.is_dir():
        raise DatasetLayoutError(f"{parent / name}: folder not found (expected {what})")
    return p


def find_root(root: Path, marker_names: Iterable[str], wrapper_names: Iterable[str]) -> Path | None:
    """Return ``root`` if it holds one of ``marker_names``, else a ``wrapper_names`` child that does."""
    root = Path(root)
    markers = list(marker_names)
    for cand in [root, *[c for w in wrapper_names if (c := child_ci(root, w)) is not None]]:
        if any(child_ci(cand, m) is not None for m in markers):
            return cand
    return None


def list_files(folder: Path, exts: frozenset[str], recursive: bool = False) -> list[Path]:
    """Files of ``folder`` with one of ``exts`` (case-insensitive), sorted by natural order."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted((p for p in it if p.is_file() and p.suffix.lower() in exts), key=natural_key)


def natural_key(p: Path | str) -> list:
    """Sort key: '2.png' before '10.png'."""
    s = str(p)
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def videos_in(folder: Path) -> list[Path]:
    """Video files in ``folder`` or, if it has one, in its ``videos/`` child (raw FF++/SBI layouts)."""
    v = child_ci(folder, "videos")
    if v is not None and v.is_dir():
        folder = v
    return list_files(folder, VIDEO_EXTS)


# --------------------------------------------------------------------------------------------- #


def summarize(records: Iterable[VideoRecord]) -> dict[str, dict[str, int]]:
    """Counts per split, label, method and dataset."""
    recs = list(records)
    return {
        "total": {"records": len(recs)},
        "split": dict(sorted(Counter(r.split for r in recs).items())),
        "label": dict(sorted(Counter(r.label_name for r in recs).items())),
        "method": dict(sorted(Counter(r.method for r in recs).items())),
        "dataset": dict(sorted(Counter(r.dataset for r in recs).items())),
    }


def log_counts(name: str, root: Path, records: list[VideoRecord], skipped: int = 0) -> None:
    """Log what a reader found (counts per split x label x method), as methods.md §9.10 asks."""
    c = Counter((r.split, r.label_name, r.method) for r in records)
    parts = ", ".join(f"{s}/{lab}/{m}={n}" for (s, lab, m), n in sorted(c.items()))
    log.info("%s at %s: %d records (%s)%s", name, root, len(records), parts or "none",
             f"; {skipped} files not in any split skipped" if skipped else "")


def check_unique(records: list[VideoRecord]) -> list[VideoRecord]:
    seen: set[str] = set()
    for r in records:
        if r.video_uid in seen:
            raise DatasetLayoutError(f"duplicate video_uid {r.video_uid!r}")
        seen.add(r.video_uid)
    return records
