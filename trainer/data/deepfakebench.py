"""DeepfakeBench processed layout + dataset JSON — methods.md §6.8.

DeepfakeBench ships every dataset pre-processed as aligned 256x256 face frames (32 per video) plus
81-point landmarks, described by one JSON per dataset::

    <root>/datasets/rgb/<Dataset>/.../<sub>/frames/<video>/<n>.png      (landmarks/<video>/<n>.npy, masks/...)
    <root>/preprocessing/dataset_json/<Dataset>.json

JSON: ``{"<Dataset>": {"<label name>": {"train"|"val"|"test": {[<compression> ->] {"<video>": {"label":
"<label name>", "frames": [paths...], ...}}}}}}``; the compression level (``c23``, ``c40``, ...) exists only
for FF++-derived sets. Frame paths in the JSON may be relative to ``<root>`` (``./datasets/rgb/...``),
relative to the rgb folder (``Celeb-DF-v2/Celeb-real/frames/...``), use Windows separators, or be
absolute paths from the machine that wrote them (the part after the last ``rgb`` folder is used).

One :class:`VideoRecord` per video (frame_paths = its frames, natural order). The frames are already
aligned face crops: ``extra["crops_given"] = True`` (prepare with ``crops_given=True``), and
``extra["landmarks"]`` holds the matching ``.npy`` paths (None where absent). video_uid =
``<Dataset>/<real|fake>/<frame folder relative to rgb/<Dataset>, without the 'frames' level>``.
A video listed under several splits (DeepfakeBench lists Celeb-DF test videos under train, val and
test) becomes one record in the most held-out of them (test > val > train).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from trainer.data.records import (
    SPLITS,
    DatasetLayoutError,
    VideoRecord,
    check_unique,
    child_ci,
    log_counts,
    make_uid,
    natural_key,
)

log = logging.getLogger("fakewatch.trainer.data")

# label name -> 0/1 (DeepfakeBench train/test config label_dict, methods.md §6.8)
LABELS: dict[str, int] = {
    "FF-real": 0, "DFD_real": 0, "CelebDFv1_real": 0, "CelebDFv2_real": 0, "DFDCP_Real": 0, "DFDC_Real": 0,
    "DF_real": 0, "UADFV_Real": 0,
    "FF-DF": 1, "FF-F2F": 1, "FF-FS": 1, "FF-NT": 1, "FF-FH": 1, "DFD_fake": 1, "CelebDFv1_fake": 1,
    "CelebDFv2_fake": 1, "DFDCP_FakeA": 1, "DFDCP_FakeB": 1, "DFDC_Fake": 1, "DF_fake": 1, "UADFV_Fake": 1,
}
# FF++-derived sets: the JSON has a compression level under each split
FFPP_SETS = ("FaceForensics++", "FF-DF", "FF-F2F", "FF-FS", "FF-NT", "FaceShifter", "DeepFakeDetection")
# sets whose video names start with the (target) identity: 000_003, id0_id1_0000, 01_02__scene__x
IDENTITY_PREFIX_SETS = FFPP_SETS + ("Celeb-DF-v1", "Celeb-DF-v2")
FF_METHODS = {"FF-DF": "Deepfakes", "FF-F2F": "Face2Face", "FF-FS": "FaceSwap", "FF-NT": "NeuralTextures",
              "FF-FH": "FaceShifter"}
HELD_OUT_ORDER = {"test": 0, "val": 1, "train": 2}


def _find_json(root: Path, *names: str) -> Path:
    tried = [d / f"{n}.json" for n in dict.fromkeys(names)
             for d in (root / "preprocessing" / "dataset_json", root / "dataset_json", root)]
    name = names[-1]
    for p in tried:
        if p.is_file():
            return p
    raise DatasetLayoutError(f"{root}: no dataset JSON for {name!r} (tried {', '.join(str(t) for t in tried)}; "
                             "expected DeepfakeBench's preprocessing/dataset_json/<Dataset>.json)")


def _find_rgb(root: Path) -> Path:
    for parts in (("datasets", "rgb"), ("rgb",)):
        cur: Path | None = root
        for p in parts:
            cur = child_ci(cur, p) if cur is not None else None
        if cur is not None and cur.is_dir():
            return cur
    raise DatasetLayoutError(f"{root}: folder datasets/rgb not found (expected DeepfakeBench's "
                             "datasets/rgb/<Dataset>/.../frames/<video>/<n>.png; or pass rgb_dir=)")


def _only_dataset(root: Path, json_path: str | Path | None) -> str:
    if json_path is not None:
        return Path(json_path).stem
    d = root / "preprocessing" / "dataset_json"
    names = sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []
    if len(names) != 1:
        raise DatasetLayoutError(f"{d}: pass dataset=<name> (reader arg) to choose a dataset JSON "
                                 f"(found {', '.join(names) or 'none'})")
    return names[0]


def _resolve(raw: str, root: Path, rgb: Path) -> Path | None:
    """A JSON frame path -> an existing file, or None (see the module docstring for the accepted forms)."""
    s = str(raw).replace("\\", "/")
    pp = PurePosixPath(s)
    cands: list[Path] = []
    if pp.is_absolute():
        cands.append(Path(s))
    else:
        cands += [root / s, rgb / s]
    parts = [p for p in pp.parts if p not in ("/", ".")]
    low = [p.lower() for p in parts]
    if "rgb" in low:  # .../datasets/rgb/<Dataset>/... from anywhere: re-root under our rgb folder
        k = len(low) - 1 - low[::-1].index("rgb")
        cands.append(rgb.joinpath(*parts[k + 1:]))
    for c in cands:
        if c.is_file():
            return c
    return None


def _uid_rel(frame_dir: Path, ds_dir: Path, rgb: Path, fallback: str) -> str:
    for base in (ds_dir, rgb):
        try:
            rel = frame_dir.relative_to(base)
        except ValueError:
            continue
        return "/".join(p for p in rel.parts if p.lower() != "frames")
    return fallback


def _split_name(name: str, compression: str) -> tuple[str, str]:
    """``FF-DF_c40`` -> (``FF-DF``, ``c40``) as DeepfakeBench's config names do; others unchanged."""
    base, _, suffix = name.rpartition("_")
    if base in FFPP_SETS and suffix.lower() in ("c0", "raw", "c23", "c40"):
        return base, suffix.lower()
    return name, compression


def read_deepfakebench(root: str | Path, dataset: str | None = None, splits: tuple[str, ...] = SPLITS, compression: str = "c23",
                       json_path: str | Path | None = None, rgb_dir: str | Path | None = None,
                       label_map: Mapping[str, int] | None = None) -> list[VideoRecord]:
    """Records of DeepfakeBench dataset ``dataset`` (its JSON name, e.g. ``Celeb-DF-v2``, ``FF-DF``, ``FF-DF_c40``).

    root: the DeepfakeBench folder (``datasets/rgb/`` + ``preprocessing/dataset_json/``); ``json_path`` /
    ``rgb_dir`` override either. dataset None: the only JSON in the dataset_json folder (else an error listing them). compression: the level key of FF++-derived sets (``c23`` default).
    label_map: extra or overriding label names -> 0/1 (defaults: :data:`LABELS`). Videos whose frames
    are missing on disk are skipped (logged); none found at all -> :class:`DatasetLayoutError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: folder not found (expected a DeepfakeBench folder with datasets/rgb/ "
                                 "and preprocessing/dataset_json/)")
    if dataset is None:
        dataset = _only_dataset(root, json_path)
    name, comp = _split_name(dataset, compression)
    jp = Path(json_path) if json_path is not None else _find_json(root, dataset, name)
    if not jp.is_file():
        raise DatasetLayoutError(f"{jp}: dataset JSON not found")
    rgb = Path(rgb_dir) if rgb_dir is not None else _find_rgb(root)
    if not rgb.is_dir():
        raise DatasetLayoutError(f"{rgb}: rgb folder not found (expected <rgb>/<Dataset>/.../frames/<video>/*.png)")
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ValueError(f"unknown split(s) {bad} (expected some of {SPLITS})")
    labels = {**LABELS, **(label_map or {})}
    try:
        info = json.loads(jp.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetLayoutError(f"{jp}: not a readable JSON file ({e})") from e
    if not isinstance(info, dict) or name not in info or not isinstance(info[name], dict):
        found = sorted(info) if isinstance(info, dict) else type(info).__name__
        raise DatasetLayoutError(f"{jp}: no top-level key {name!r} (found {found}; expected "
                                 '{"<Dataset>": {"<label name>": {"train|val|test": ...}}})')
    ds_dir = child_ci(rgb, name) or rgb / name
    is_ff = name in FFPP_SETS
    chosen: dict[tuple[str, str], tuple[str, str, dict]] = {}  # (label name, video) -> (split, video, info)
    overlaps = 0
    for label_name, by_split in info[name].items():
        if not isinstance(by_split, dict):
            raise DatasetLayoutError(f"{jp}: {name}/{label_name} is not a mapping of splits")
        for split in splits:
            videos = by_split.get(split)
            if videos is None:
                continue
            if is_ff:
                if comp not in videos:
                    raise DatasetLayoutError(f"{jp}: {name}/{label_name}/{split} has no compression level {comp!r} "
                                             f"(found {sorted(videos)})")
                videos = videos[comp]
            if not isinstance(videos, dict):
                raise DatasetLayoutError(f"{jp}: {name}/{label_name}/{split} is not a mapping of videos")
            for video, vinfo in videos.items():
                key = (label_name, video)
                if key in chosen:
                    overlaps += 1
                    if HELD_OUT_ORDER[split] >= HELD_OUT_ORDER[chosen[key][0]]:
                        continue
                chosen[key] = (split, video, vinfo)
    records: list[VideoRecord] = []
    missing = 0
    first_missing = ""
    for (label_name, _), (split, video, vinfo) in chosen.items():
        lname = vinfo.get("label", label_name) if isinstance(vinfo, dict) else label_name
        if lname not in labels:
            raise DatasetLayoutError(f"{jp}: label {lname!r} of video {video!r} is not a known label name "
                                     f"(known: {', '.join(sorted(labels))}; pass label_map= to add it)")
        label = int(labels[lname])
        raw = vinfo.get("frames") if isinstance(vinfo, dict) else None
        if not raw:
            missing += 1
            first_missing = first_missing or f"{video} (no frames listed)"
            continue
        frames = [_resolve(f, root, rgb) for f in raw]
        if any(f is None for f in frames):
            missing += 1
            first_missing = first_missing or f"{raw[frames.index(None)]}"
            continue
        paths = tuple(sorted((f for f in frames if f is not None), key=natural_key))
        lms = tuple(_landmark_of(p) for p in paths)
        rel = _uid_rel(paths[0].parent, ds_dir, rgb, f"{lname}/{video}")
        method = "real" if label == 0 else FF_METHODS.get(lname, lname)
        ident = str(video).split("_")[0] if name in IDENTITY_PREFIX_SETS else str(video)
        extra: dict[str, Any] = {"crops_given": True, "label_name": lname, "video": str(video),
                                 "landmarks": lms if any(x is not None for x in lms) else None}
        if is_ff:
            extra["compression"] = comp
        records.append(VideoRecord(name, split, make_uid(name, label, rel), label, method, frame_paths=paths,
                                   identity=ident, extra=extra))
    if chosen and not records:
        raise DatasetLayoutError(f"{jp}: none of the {len(chosen)} listed videos has its frames on disk under {rgb} "
                                 f"(first missing: {first_missing}; expected <rgb>/{name}/.../frames/<video>/<n>.png)")
    if missing:
        log.warning("%s: %d of %d listed videos skipped (frames missing; first: %s)", jp, missing, len(chosen), first_missing)
    if overlaps:
        log.info("%s: %d videos listed under several splits kept once, in the most held-out split", jp, overlaps)
    log_counts(name, rgb, records)
    return check_unique(records)


def _landmark_of(frame: Path) -> Path | None:
    """``.../frames/<video>/<n>.png`` -> ``.../landmarks/<video>/<n>.npy`` when that file exists."""
    parts = list(frame.parts)
    low = [p.lower() for p in parts]
    if "frames" not in low:
        return None
    k = len(low) - 1 - low[::-1].index("frames")
    parts[k] = "landmarks"
    p = Path(*parts).with_suffix(".npy")
    return p if p.is_file() else None
