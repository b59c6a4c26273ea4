"""Generic folders: ``real/`` + ``fake/`` trees of images or videos, and the shared-data layout.

Generic (methods.md §6.6)::

    <root>/real/**   <root>/fake/**      (folder names matched case-insensitively)

Inside each side: every video file is one record; every folder that directly holds images is one
record (a frame sequence) when ``images_as="folders"``, or each image is its own record with
``images_as="files"``; ``"auto"`` (default) uses folders for images inside sub-folders and files for
images lying directly in real/ or fake/. ``method`` = the first sub-folder under fake/ (e.g.
``fake/diffswap/...`` -> ``diffswap``), ``fake`` if none.

Shared data (``../shared/data``, real only)::

    <root>/faces/<subset>/*.jpg     one identity per image  -> one record per image, identity = subset/stem
    <root>/videos/<subset>/*.mp4    one identity per video  -> one record per video, identity = subset/stem
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from trainer.data.records import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    DatasetLayoutError,
    VideoRecord,
    check_unique,
    child_ci,
    list_files,
    log_counts,
    make_uid,
    natural_key,
)

ImagesAs = Literal["auto", "folders", "files"]


def _side_records(root: Path, side: Path, label: int, dataset: str, split: str, images_as: ImagesAs) -> list[VideoRecord]:
    out: list[VideoRecord] = []
    dirs = [side, *sorted((d for d in side.rglob("*") if d.is_dir()), key=natural_key)]
    for d in dirs:
        rel_d = d.relative_to(side)
        method = "real" if label == 0 else (rel_d.parts[0] if rel_d.parts else "fake")
        for v in list_files(d, VIDEO_EXTS):
            rel = v.relative_to(root)
            out.append(VideoRecord(dataset, split, make_uid(dataset, label, rel), label, method, v,
                                   identity=v.relative_to(side).with_suffix("").as_posix()))
        imgs = list_files(d, IMAGE_EXTS)
        if not imgs:
            continue
        as_folder = images_as == "folders" or (images_as == "auto" and d != side)
        if as_folder:
            rel = d.relative_to(root)
            out.append(VideoRecord(dataset, split, make_uid(dataset, label, rel), label, method,
                                   frame_paths=tuple(imgs), identity=rel_d.as_posix() or d.name))
        else:
            for im in imgs:
                rel = im.relative_to(root)
                out.append(VideoRecord(dataset, split, make_uid(dataset, label, rel), label, method,
                                       frame_paths=(im,), identity=im.relative_to(side).with_suffix("").as_posix()))
    return out


def read_generic(root: str | Path, dataset: str | None = None, split: str = "all", images_as: ImagesAs = "auto",
                 require_both: bool = False) -> list[VideoRecord]:
    """Records of a ``real/`` + ``fake/`` folder pair (either may be missing unless ``require_both``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: folder not found (expected real/ and/or fake/ sub-folders)")
    dataset = dataset or root.name
    sides = [(child_ci(root, "real"), 0), (child_ci(root, "fake"), 1)]
    if all(s is None for s, _ in sides) or (require_both and any(s is None for s, _ in sides)):
        raise DatasetLayoutError(f"{root}: expected real/ and {'' if require_both else 'or '}fake/ sub-folders of images or videos")
    records: list[VideoRecord] = []
    for side, label in sides:
        if side is not None:
            records.extend(_side_records(root, side, label, dataset, split, images_as))
    if not records:
        raise DatasetLayoutError(f"{root}: real/ and fake/ hold no images ({sorted(IMAGE_EXTS)}) or videos ({sorted(VIDEO_EXTS)})")
    log_counts(dataset, root, records)
    return check_unique(records)


def read_image_folder(folder: str | Path, dataset: str, label: int = 0, split: str = "all",
                      root: str | Path | None = None) -> list[VideoRecord]:
    """One record per image file in ``folder`` (recursive); identity = relative path without suffix."""
    folder = Path(folder)
    root = Path(root) if root is not None else folder
    imgs = list_files(folder, IMAGE_EXTS, recursive=True) if folder.is_dir() else []
    if not imgs:
        raise DatasetLayoutError(f"{folder}: no images found (expected *.jpg / *.png files)")
    method = "real" if label == 0 else "fake"
    return [VideoRecord(dataset, split, make_uid(dataset, label, p.relative_to(root)), label, method, frame_paths=(p,),
                        identity=p.relative_to(root).with_suffix("").as_posix()) for p in imgs]


def read_video_folder(folder: str | Path, dataset: str, label: int = 0, split: str = "all",
                      root: str | Path | None = None) -> list[VideoRecord]:
    """One record per video file in ``folder`` (recursive); identity = relative path without suffix."""
    folder = Path(folder)
    root = Path(root) if root is not None else folder
    vids = list_files(folder, VIDEO_EXTS, recursive=True) if folder.is_dir() else []
    if not vids:
        raise DatasetLayoutError(f"{folder}: no videos found (expected *.mp4 / *.avi / ... files)")
    method = "real" if label == 0 else "fake"
    return [VideoRecord(dataset, split, make_uid(dataset, label, p.relative_to(root)), label, method, video_path=p,
                        identity=p.relative_to(root).with_suffix("").as_posix()) for p in vids]


def read_shared_data(root: str | Path, dataset: str = "shared", subsets: list[str] | None = None,
                     include: tuple[str, ...] = ("faces", "videos")) -> list[VideoRecord]:
    """Real-only records of the shared-data layout (faces/<subset>/*.jpg, videos/<subset>/*.mp4).

    ``subsets`` restricts to those sub-folder names (e.g. ``["congress_gpo"]``). Split is ``all``;
    use :func:`trainer.torchdata.split_by_identity` for identity-disjoint train/val/test.
    """
    root = Path(root)
    found = {k: child_ci(root, k) for k in include}
    if all(v is None for v in found.values()):
        raise DatasetLayoutError(f"{root}: expected faces/<subset>/*.jpg and/or videos/<subset>/*.mp4")
    records: list[VideoRecord] = []
    for kind, d in found.items():
        if d is None:
            continue
        for sub in sorted((s for s in d.iterdir() if s.is_dir()), key=natural_key):
            if subsets is not None and sub.name not in subsets:
                continue
            reader = read_image_folder if kind == "faces" else read_video_folder
            try:
                records.extend(reader(sub, dataset, 0, "all", root=root))
            except DatasetLayoutError:
                continue  # an empty subset is not an error in a multi-subset tree
    if not records:
        raise DatasetLayoutError(f"{root}: no images or videos under {', '.join(include)} (subsets={subsets})")
    log_counts(dataset, root, records)
    return check_unique(records)
