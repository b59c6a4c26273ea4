"""DFDC (full challenge set) and DFDC-Preview — methods.md §6.3, §6.4.

DFDC::

    <root>/[DFDC/]
      train/dfdc_train_part_<k>/{*.mp4, metadata.json}   {"x.mp4": {"label": "REAL"|"FAKE", "original": "y.mp4", ...}}
      test/{*.mp4, labels.csv}                            columns filename,label (1 = fake)
      (or the SBI layout: videos/*.mp4 + labels.csv = the test set)

DFDC-Preview::

    <root>/[DFDCP/]
      original_videos/<id>/*.mp4, method_A/<id>/<id>_<X>/*.mp4, method_B/...
      dataset.json   {"<relative path>": {"label": "real"|"fake", "set": "train"|"test"}, ...}
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from trainer.data.records import (
    VIDEO_EXTS,
    DatasetLayoutError,
    VideoRecord,
    check_unique,
    child_ci,
    find_root,
    list_files,
    log_counts,
    make_uid,
    natural_key,
)


def _read_labels_csv(path: Path) -> dict[str, int]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = {c.lower(): c for c in reader.fieldnames or []}
        if "filename" not in cols or "label" not in cols:
            raise DatasetLayoutError(f"{path}: expected CSV columns filename,label (got {reader.fieldnames})")
        out = {}
        for row in reader:
            lab = row[cols["label"]].strip()
            if lab not in ("0", "1", "0.0", "1.0"):
                raise DatasetLayoutError(f"{path}: label must be 0/1, got {lab!r} for {row[cols['filename']]}")
            out[row[cols["filename"]].strip()] = int(float(lab))
    return out


def read_dfdc(root: str | Path, splits: tuple[str, ...] = ("test",), dataset: str = "DFDC") -> list[VideoRecord]:
    """DFDC records: ``test`` from test/labels.csv, ``train`` from train/*/metadata.json."""
    root0 = Path(root)
    root = find_root(root0, ["test", "train", "labels.csv"], ["DFDC"])
    if root is None:
        raise DatasetLayoutError(f"{root0}: not a DFDC folder (expected test/labels.csv + test/*.mp4 and/or train/dfdc_train_part_*/metadata.json)")
    records: list[VideoRecord] = []
    skipped = 0
    if "test" in splits:
        td = child_ci(root, "test")
        if td is None and child_ci(root, "labels.csv") is not None:
            td = root  # SBI layout: videos/*.mp4 + labels.csv
        lab_path = child_ci(td, "labels.csv") if td is not None else None
        if lab_path is None:
            raise DatasetLayoutError(f"{root / 'test' / 'labels.csv'}: not found (expected columns filename,label with 1 = fake)")
        labels = _read_labels_csv(lab_path)
        vdir = child_ci(td, "videos") or td
        for v in list_files(vdir, VIDEO_EXTS):
            lab = labels.get(v.name)
            if lab is None:
                skipped += 1
                continue
            rel = v.relative_to(root)
            records.append(VideoRecord(dataset, "test", make_uid(dataset, lab, rel), lab, "DFDC" if lab else "real", v,
                                       identity=v.stem))
    if "train" in splits:
        trd = child_ci(root, "train")
        if trd is None:
            raise DatasetLayoutError(f"{root / 'train'}: not found (expected train/dfdc_train_part_<k>/metadata.json)")
        parts = sorted((p for p in trd.iterdir() if p.is_dir()), key=natural_key)
        if not parts:
            raise DatasetLayoutError(f"{trd}: no dfdc_train_part_* folders")
        for part in parts:
            mp = child_ci(part, "metadata.json")
            if mp is None:
                raise DatasetLayoutError(f"{part / 'metadata.json'}: not found (expected {{\"x.mp4\": {{\"label\": \"REAL\"|\"FAKE\", ...}}}})")
            try:
                meta = json.loads(mp.read_text())
            except json.JSONDecodeError as e:
                raise DatasetLayoutError(f"{mp}: not valid JSON ({e})") from e
            for v in list_files(part, VIDEO_EXTS):
                m = meta.get(v.name)
                if m is None or str(m.get("label", "")).upper() not in ("REAL", "FAKE"):
                    skipped += 1
                    continue
                lab = int(str(m["label"]).upper() == "FAKE")
                orig = m.get("original") or v.name
                rel = v.relative_to(root)
                records.append(VideoRecord(dataset, "train", make_uid(dataset, lab, rel), lab, "DFDC" if lab else "real", v,
                                           identity=f"{part.name}/{Path(orig).stem}"))
    log_counts(dataset, root, records, skipped)
    return check_unique(records)


def read_dfdc_preview(root: str | Path, splits: tuple[str, ...] = ("test",), dataset: str = "DFDCP") -> list[VideoRecord]:
    """DFDC-Preview records from dataset.json (``set`` = train/test; ``label`` = real/fake).

    method = first path component (``real`` for original_videos, else method_A / method_B);
    identity = the actor id folder (second component).
    """
    root0 = Path(root)
    root = find_root(root0, ["dataset.json"], ["DFDCP", "DFDC-Preview", "dfdc_preview"])
    if root is None:
        raise DatasetLayoutError(f"{root0 / 'dataset.json'}: not found (expected a DFDC-Preview folder with dataset.json, original_videos/, method_A/, method_B/)")
    meta_path = child_ci(root, "dataset.json")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetLayoutError(f"{meta_path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise DatasetLayoutError(f"{meta_path}: expected an object keyed by relative video path")
    records: list[VideoRecord] = []
    missing = 0
    for rel, m in sorted(meta.items()):
        label_s = str(m.get("label", "")).lower()
        split = str(m.get("set", "")).lower()
        if label_s not in ("real", "fake") or split not in ("train", "test"):
            raise DatasetLayoutError(f"{meta_path}: entry {rel!r} needs label real|fake and set train|test, got {m!r}")
        if split not in splits:
            continue
        v = root / rel
        if not v.is_file():
            missing += 1
            continue
        lab = int(label_s == "fake")
        parts = Path(rel).parts
        method = "real" if lab == 0 else parts[0]
        records.append(VideoRecord(dataset, split, make_uid(dataset, lab, rel), lab, method, v,
                                   identity=parts[1] if len(parts) > 2 else Path(rel).stem))
    log_counts(dataset, root, records, missing)
    return check_unique(records)
