"""The validation set of real-world fakes (``../shared/data/fakes_dev``; read its README).

Layout: ``labels.csv`` (``path,label,generator,family,source,kind,group``) and ``regions.csv``
(``path,layout,fake_region,real_region``) for side-by-side clips (DeepFaceLive: real source on the left,
swap on the right). One record per file; ``method`` = the generator family; ``identity`` = the ``group``
(files sharing one real source or swap identity). A side-by-side video gives two records: the fake
region (label 1) and the real region (label 0, method ``real``) of the same clip, so the set also holds
matched reals. ``extra["region"]`` (``left_half`` / ``right_half``) tells :mod:`trainer.prepare` which part
of each frame to search for the face.

**Validation and model choice only: never train on it** (the numbers would stop meaning "generalises to
generators never seen").
"""

from __future__ import annotations

import csv
from pathlib import Path

from trainer.data.records import DatasetLayoutError, VideoRecord, check_unique, log_counts, make_uid

REGIONS = ("left_half", "right_half", "full")


def read_fakes_dev(root: str | Path, dataset: str = "fakes_dev", families: list[str] | None = None,
                   matched_reals: bool = True) -> list[VideoRecord]:
    root = Path(root)
    labels = root / "labels.csv"
    if not labels.is_file():
        raise DatasetLayoutError(f"{root}: no labels.csv (expected the fakes_dev layout: labels.csv, regions.csv)")
    regions: dict[str, dict[str, str]] = {}
    if (root / "regions.csv").is_file():
        with open(root / "regions.csv", newline="") as f:
            regions = {r["path"]: r for r in csv.DictReader(f)}
    out: list[VideoRecord] = []
    with open(labels, newline="") as f:
        for r in csv.DictReader(f):
            fam = r["family"]
            if families is not None and fam not in families:
                continue
            p = root / r["path"]
            if not p.is_file():
                raise DatasetLayoutError(f"{p}: listed in labels.csv but missing")
            label = 1 if r["label"].strip().lower() == "fake" else 0
            is_video = r["kind"].strip().lower() == "video"
            reg = regions.get(r["path"])
            kw = {"video_path": p} if is_video else {"frame_paths": (p,)}
            ident = r.get("group") or r["path"]
            method = fam if label else "real"
            if reg is not None:
                fake_region, real_region = reg["fake_region"], reg["real_region"]
                if fake_region not in REGIONS or real_region not in REGIONS:
                    raise DatasetLayoutError(f"{root / 'regions.csv'}: unknown region for {r['path']}: {reg}")
                out.append(VideoRecord(dataset, "test", make_uid(dataset, label, r["path"]), label, method,
                                       identity=ident, extra={"region": fake_region, "family": fam}, **kw))
                if matched_reals:
                    out.append(VideoRecord(dataset, "test", make_uid(dataset, 0, f"{r['path']}#{real_region}"), 0, "real",
                                           identity=ident, extra={"region": real_region, "family": fam}, **kw))
            else:
                out.append(VideoRecord(dataset, "test", make_uid(dataset, label, r["path"]), label, method,
                                       identity=ident, extra={"family": fam}, **kw))
    if not out:
        raise DatasetLayoutError(f"{root}: no records (families={families})")
    log_counts(dataset, root, out)
    return check_unique(out)
