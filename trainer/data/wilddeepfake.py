"""WildDeepfake — methods.md §6.5.

Distributed as ``deepfake_in_the_wild/{real_train,real_test,fake_train,fake_test}/<k>.tar.gz``; each
archive unpacks to ``<k>/{real|fake}/<sequence>/<frame>.png`` (224x224 face crops, one folder per face
sequence). This reader needs the archives unpacked in place (next to or instead of the .tar.gz)::

    <root>/[deepfake_in_the_wild/]real_train/<k>/real/<seq>/<frame>.png   (inner real|fake level optional)

Unit = face sequence; video_uid = WildDeepfake/<label>/<top>/<k>/<inner>/<seq>. identity = the archive
(one archive ~ one source video) so identity-disjoint re-splits keep an archive together.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.records import (
    IMAGE_EXTS,
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

TOPS = (("real_train", 0, "train"), ("real_test", 0, "test"), ("fake_train", 1, "train"), ("fake_test", 1, "test"))


def read_wilddeepfake(root: str | Path, splits: tuple[str, ...] = ("train", "test"), dataset: str = "WildDeepfake") -> list[VideoRecord]:
    root0 = Path(root)
    root = find_root(root0, [t for t, _, _ in TOPS], ["deepfake_in_the_wild", "WildDeepfake"])
    if root is None:
        raise DatasetLayoutError(f"{root0}: not a WildDeepfake folder (expected real_train/, real_test/, fake_train/, fake_test/)")
    records: list[VideoRecord] = []
    mismatched = 0
    for top, label, split in TOPS:
        td = child_ci(root, top)
        if td is None:
            raise DatasetLayoutError(f"{root / top}: folder not found (expected unpacked WildDeepfake archives <k>/{'fake' if label else 'real'}/<seq>/*.png)")
        if split not in splits:
            continue
        archives = sorted((d for d in td.iterdir() if d.is_dir()), key=natural_key)
        if not archives:
            if any(p.name.endswith((".tar.gz", ".tgz", ".tar")) for p in td.iterdir()):
                raise DatasetLayoutError(f"{td}: only .tar.gz archives found; unpack them in place first (tar xzf <k>.tar.gz)")
            raise DatasetLayoutError(f"{td}: empty (expected unpacked archives <k>/<real|fake>/<seq>/*.png)")
        for arch in archives:
            inner_dirs = [d for d in arch.iterdir() if d.is_dir() and d.name.lower() in ("real", "fake")]
            seq_parents = inner_dirs or [arch]
            for sp in seq_parents:
                if sp is not arch and (sp.name.lower() == "fake") != bool(label):
                    mismatched += 1  # the top folder decides (methods.md §6.5 cross-check)
                for seq in sorted((d for d in sp.iterdir() if d.is_dir()), key=natural_key):
                    frames = list_files(seq, IMAGE_EXTS)
                    if not frames:
                        continue
                    rel = seq.relative_to(root)
                    records.append(VideoRecord(dataset, split, make_uid(dataset, label, rel), label,
                                               "wild" if label else "real", frame_paths=tuple(frames),
                                               identity=f"{top}/{arch.name}"))
    if mismatched:
        import logging

        logging.getLogger("fakewatch.trainer.data").warning(
            "%s: %d inner real/fake folders disagree with their top folder (top folder label kept)", root, mismatched)
    log_counts(dataset, root, records)
    return check_unique(records)
