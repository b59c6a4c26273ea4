"""FaceForensics++ (Deepfakes, Face2Face, FaceSwap, NeuralTextures, FaceShifter) — methods.md §6.1.

Raw layout from the official download script::

    <root>/[FaceForensics++/]
      original_sequences/youtube/<comp>/videos/000.mp4 ...           real
      manipulated_sequences/<Method>/<comp>/videos/A_B.mp4 ...       fake (frames of A, identity of B)
      train.json val.json test.json   (or splits/{train,val,test}.json)

``<comp>`` is ``raw`` (alias ``c0``), ``c23`` or ``c40``. Split files are JSON lists of id pairs
``[["953", "974"], ...]``: the pair puts real A, real B and every fake ``A_B`` / ``B_A`` in that split.
Instead of ``videos/*.mp4`` a compression folder may hold frame folders (``<comp>/<video>/*.png``
or ``<comp>/frames/<video>/*.png``, the DiffusionFake / DeepfakeBench extracted layouts).
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.data.records import (
    IMAGE_EXTS,
    SPLITS,
    DatasetLayoutError,
    VideoRecord,
    check_unique,
    child_ci,
    find_root,
    list_files,
    log_counts,
    make_uid,
    natural_key,
    require_dir,
    videos_in,
)

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
COMPRESSIONS = ("raw", "c23", "c40")


def _comp_dir(parent: Path, compression: str) -> Path | None:
    names = ["raw", "c0"] if compression in ("raw", "c0") else [compression]
    for n in names:
        p = child_ci(parent, n)
        if p is not None and p.is_dir():
            return p
    return None


def _items(comp_dir: Path) -> list[tuple[str, Path | None, tuple[Path, ...] | None]]:
    """(stem, video_path, frame_paths) for every video or frame folder under a compression folder."""
    vids = videos_in(comp_dir)
    if vids:
        return [(v.stem, v, None) for v in vids]
    frames_root = child_ci(comp_dir, "frames") or comp_dir
    out = []
    for d in sorted((d for d in frames_root.iterdir() if d.is_dir()), key=natural_key):
        imgs = list_files(d, IMAGE_EXTS)
        if imgs:
            out.append((d.name, None, tuple(imgs)))
    return out


def load_ffpp_splits(root: Path) -> dict[str, str]:
    """Map video id (e.g. ``"953"``) -> split name, from the official split JSONs in root, root/splits or the parent."""
    root = Path(root)
    where = [root, root / "splits", root.parent, root.parent / "splits"]
    found: dict[str, Path] = {}
    for split in SPLITS:
        for d in where:
            p = child_ci(d, f"{split}.json") if d.is_dir() else None
            if p is not None and p.is_file():
                found[split] = p
                break
    if len(found) != len(SPLITS):
        missing = [s for s in SPLITS if s not in found]
        raise DatasetLayoutError(
            f"{root}: FF++ split file(s) {', '.join(s + '.json' for s in missing)} not found in "
            f"{root} or {root / 'splits'} (expected the official JSON lists of id pairs [[\"953\",\"974\"], ...])"
        )
    id_split: dict[str, str] = {}
    for split, p in found.items():
        try:
            pairs = json.loads(p.read_text())
            ok = isinstance(pairs, list) and all(isinstance(q, list) and len(q) == 2 for q in pairs)
        except json.JSONDecodeError as e:
            raise DatasetLayoutError(f"{p}: not valid JSON ({e})") from e
        if not ok:
            raise DatasetLayoutError(f"{p}: expected a JSON list of 2-element id lists like [[\"953\",\"974\"], ...]")
        for a, b in pairs:
            for vid in (str(a), str(b)):
                prev = id_split.setdefault(vid, split)
                if prev != split:
                    raise DatasetLayoutError(f"{p}: video id {vid} is in both {prev} and {split}")
    return id_split


def _ff_root(root: Path) -> Path:
    r = find_root(Path(root), ["original_sequences", "manipulated_sequences"], ["FaceForensics++", "FF++", "FaceForensics"])
    if r is None:
        raise DatasetLayoutError(
            f"{root}: not a FaceForensics++ folder (expected original_sequences/ and manipulated_sequences/ here "
            f"or under FaceForensics++/)"
        )
    return r


def read_ffpp(
    root: str | Path,
    compression: str = "c23",
    methods: tuple[str, ...] | list[str] | None = FFPP_METHODS[:4],
    splits: tuple[str, ...] = SPLITS,
    include_real: bool = True,
    dataset: str = "FF++",
) -> list[VideoRecord]:
    """Records of FF++ youtube originals + the given manipulation ``methods`` at ``compression``.

    Methods that are absent from ``manipulated_sequences`` are an error (name them or pass a
    shorter list). Videos whose id is in no split file are skipped and counted in the log.
    """
    if compression not in (*COMPRESSIONS, "c0"):
        raise ValueError(f"compression must be one of raw/c0/c23/c40, got {compression!r}")
    for s in splits:
        if s not in SPLITS:
            raise ValueError(f"unknown split {s!r} (expected one of {SPLITS})")
    root = _ff_root(root)
    id_split = load_ffpp_splits(root)
    comp_name = "c0" if compression in ("raw", "c0") else compression
    dataset = f"{dataset}-{comp_name}"
    records: list[VideoRecord] = []
    skipped = 0

    if include_real:
        yt = require_dir(require_dir(root, "original_sequences", "FF++ originals"), "youtube", "the 1000 real youtube videos")
        cd = _comp_dir(yt, compression)
        if cd is None:
            raise DatasetLayoutError(f"{yt}: no {compression} folder (expected {yt}/{compression}/videos/*.mp4)")
        items = _items(cd)
        if not items:
            raise DatasetLayoutError(f"{cd}: no videos or frame folders (expected {cd}/videos/000.mp4 ...)")
        for stem, vp, fp in items:
            split = id_split.get(stem)
            if split is None:
                skipped += 1
                continue
            if split in splits:
                rel = (vp or fp[0].parent).relative_to(root)
                records.append(VideoRecord(dataset, split, make_uid(dataset, 0, rel), 0, "real", vp, fp, identity=stem))

    man = require_dir(root, "manipulated_sequences", "FF++ manipulated videos") if methods else None
    for m in methods or ():
        md = child_ci(man, m)
        if md is None:
            raise DatasetLayoutError(f"{man / m}: manipulation method folder not found (expected one of {FFPP_METHODS})")
        cd = _comp_dir(md, compression)
        if cd is None:
            raise DatasetLayoutError(f"{md}: no {compression} folder (expected {md}/{compression}/videos/A_B.mp4)")
        for stem, vp, fp in _items(cd):
            parts = stem.split("_")
            if len(parts) != 2:
                raise DatasetLayoutError(f"{vp or fp[0].parent}: FF++ fake name must be <target>_<source> like 000_003")
            a, b = parts
            split = id_split.get(a)
            if split is None or id_split.get(b) != split:
                skipped += 1
                continue
            if split in splits:
                rel = (vp or fp[0].parent).relative_to(root)
                records.append(VideoRecord(dataset, split, make_uid(dataset, 1, rel), 1, md.name, vp, fp,
                                           identity=a, extra={"target": a, "source": b}))
    log_counts(dataset, root, records, skipped)
    return check_unique(records)


def _actor(stem: str) -> str:
    return stem.split("__")[0].split("_")[0]


def read_dfd(root: str | Path, compression: str = "c23", dataset: str = "DFD") -> list[VideoRecord]:
    """Google/Jigsaw DeepFakeDetection inside an FF++ tree: real ``actors`` + fake ``DeepFakeDetection``.

    No official split: every record has split ``test``. identity = the actor id before ``_``/``__``.
    """
    root = _ff_root(root)
    comp_name = "c0" if compression in ("raw", "c0") else compression
    dataset = f"{dataset}-{comp_name}"
    records: list[VideoRecord] = []
    sides = (
        (0, "real", require_dir(require_dir(root, "original_sequences", "FF++ originals"), "actors", "DFD real actor videos")),
        (1, "DeepFakeDetection", require_dir(require_dir(root, "manipulated_sequences", "FF++ manipulated videos"),
                                             "DeepFakeDetection", "DFD fake videos")),
    )
    for label, method, d in sides:
        cd = _comp_dir(d, compression)
        if cd is None:
            raise DatasetLayoutError(f"{d}: no {compression} folder (expected {d}/{compression}/videos/*.mp4)")
        for stem, vp, fp in _items(cd):
            rel = (vp or fp[0].parent).relative_to(root)
            records.append(VideoRecord(dataset, "test", make_uid(dataset, label, rel), label, method, vp, fp, identity=_actor(stem)))
    log_counts(dataset, root, records)
    return check_unique(records)


def read_faceshifter(root: str | Path, compression: str = "c23", splits: tuple[str, ...] = ("test",)) -> list[VideoRecord]:
    """FaceShifter (FF++ naming and splits): FF++ real videos of ``splits`` + FaceShifter fakes."""
    return read_ffpp(root, compression, methods=("FaceShifter",), splits=splits)
