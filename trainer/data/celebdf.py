"""Celeb-DF v2 — methods.md §6.2.

Layout::

    <root>/[Celeb-DF-v2/]
      Celeb-real/[videos/]id<k>_<nnnn>.mp4          real
      YouTube-real/[videos/]<nnnnn>.mp4             real   (also spelt Youtube-real)
      Celeb-synthesis/[videos/]id<a>_id<b>_<nnnn>.mp4   fake
      List_of_testing_videos.txt                    "<flag> <folder>/<file>.mp4", flag 1 = real

Listed videos get split ``test``; every other video ``train`` (no official val split).
"""

from __future__ import annotations

import logging
from pathlib import Path

from trainer.data.records import (
    DatasetLayoutError,
    VideoRecord,
    check_unique,
    child_ci,
    find_root,
    log_counts,
    make_uid,
    videos_in,
)

log = logging.getLogger("fakewatch.trainer.data")

FOLDERS = (("Celeb-real", 0, "real"), ("YouTube-real", 0, "real"), ("Celeb-synthesis", 1, "Celeb-synthesis"))
TEST_LIST = "List_of_testing_videos.txt"


def _identity(folder: str, stem: str) -> str:
    if folder.lower().startswith("youtube"):
        return f"yt{stem}"
    return stem.split("_")[0]  # id<k> (for fakes: the target identity whose video was used)


def read_test_list(path: Path) -> dict[str, int]:
    """Parse the test list: ``{"<folder>/<file>" (lower-case): label (1 fake / 0 real)}``."""
    out: dict[str, int] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise DatasetLayoutError(f"{path}:{i}: expected '<flag 0|1> <folder>/<file>.mp4', got {line!r}")
        out[parts[1].lower()] = 1 - int(parts[0])
    return out


def read_celebdf(root: str | Path, splits: tuple[str, ...] = ("train", "test"), dataset: str = "CelebDF-v2",
                 require_test_list: bool = True) -> list[VideoRecord]:
    """Records of Celeb-DF v2. ``splits`` selects ``train`` (not listed) and/or ``test`` (listed)."""
    root0 = Path(root)
    root = find_root(root0, ["Celeb-real", "Celeb-synthesis"], ["Celeb-DF-v2", "Celeb-DF", "CelebDF-v2"])
    if root is None:
        raise DatasetLayoutError(
            f"{root0}: not a Celeb-DF v2 folder (expected Celeb-real/, YouTube-real/, Celeb-synthesis/ and {TEST_LIST})"
        )
    tl = child_ci(root, TEST_LIST)
    if tl is None:
        if require_test_list:
            raise DatasetLayoutError(f"{root / TEST_LIST}: test list not found (expected '<flag> <folder>/<file>.mp4' lines)")
        test = {}
    else:
        test = read_test_list(tl)
    records: list[VideoRecord] = []
    seen_test: set[str] = set()
    mismatched = 0
    for name, label, method in FOLDERS:
        d = child_ci(root, name)
        if d is None:
            if name == "YouTube-real":
                log.warning("%s: no YouTube-real folder", root)
                continue
            raise DatasetLayoutError(f"{root / name}: folder not found (expected Celeb-DF v2 {method} videos)")
        for v in videos_in(d):
            key = f"{d.name}/{v.name}".lower()
            listed = test.get(key)
            if listed is not None:
                seen_test.add(key)
                if listed != label:
                    mismatched += 1
            split = "test" if listed is not None else "train"
            if split not in splits:
                continue
            rel = v.relative_to(root)
            records.append(VideoRecord(dataset, split, make_uid(dataset, label, rel), label, method, v,
                                       identity=_identity(d.name, v.stem)))
    if mismatched:
        log.warning("%s: %d test-list flags disagree with their folder (folder label kept)", tl, mismatched)
    missing = set(test) - seen_test
    if missing:
        log.warning("%s: %d listed videos not found on disk (e.g. %s)", tl, len(missing), sorted(missing)[0])
    log_counts(dataset, root, records)
    return check_unique(records)
