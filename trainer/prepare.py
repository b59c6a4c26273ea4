"""Preprocessing: dataset records -> aligned face crops on disk + a manifest (resumable).

For every :class:`~trainer.data.records.VideoRecord`:

1. sample ``frames_per_video`` frames evenly (``linspace(0, n - 1, k)``, methods.md §1) from the
   video with PyAV, or from the record's image list;
2. run the SAME :class:`detectors.faces.pipeline.FacePipeline` the daemon uses (detector + 5-point
   alignment at ``crop_size`` / ``crop_scale``) on each frame; keep the largest face
   (``face_policy="largest"``) or every face whose box area is at least ``min_rel_area`` x the
   largest (``"all"``);
3. write the crops to ``<out>/<dataset>/<real|fake>/<safe uid>/<frame>[_f<k>].png`` and a
   ``faces.json`` beside them (record fields, per crop: frame index, face index, box, 5 points in
   frame and crop coordinates, score, quality, optional 68 landmarks).

Resume: a video's folder is built under a temporary name and renamed into place when complete,
so a folder with ``faces.json`` is always a finished item; a re-run skips finished items (also
the ones that failed, unless ``retry_failed``). Bad items (unreadable video, no face found) are
recorded with their status, counted and never stop the run. At the end ``manifest.jsonl`` (one
line per crop, for every finished item under ``out``) and ``summary.json`` (this run's counts)
are rewritten atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import cv2
import numpy as np

from detectors.faces.align import crop_template, similarity_transform, transform_points
from trainer.data.records import LABEL_NAMES, VideoRecord, safe_component, safe_name

log = logging.getLogger("fakewatch.trainer.prepare")

FacePolicy = Literal["largest", "all"]
DONE_FILE = "faces.json"
MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"


@dataclass
class PrepareSummary:
    """Counts of one :func:`prepare` run (items = records)."""

    items: int = 0
    already_done: int = 0
    processed: int = 0
    ok: int = 0
    no_face: int = 0
    unreadable: int = 0
    error: int = 0
    frames: int = 0
    frames_without_face: int = 0
    crops: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    by_label: dict[str, int] = field(default_factory=dict)  # finished ok items per label
    failed: list[str] = field(default_factory=list)  # "<uid>: <status> (<reason>)", first 100

    def __str__(self) -> str:
        return (f"{self.items} items: {self.already_done} already done, {self.processed} processed "
                f"({self.ok} ok, {self.no_face} no face, {self.unreadable} unreadable, {self.error} errors); "
                f"{self.frames} frames, {self.crops} crops, {self.frames_without_face} frames without a face; "
                f"{self.seconds:.1f} s{' (stopped early)' if self.stopped_early else ''}")


# ------------------------------------------------------------------------------------------------ #
# frame sampling


def even_indices(n_total: int, k: int) -> list[int]:
    """``k`` evenly spaced integer indices over ``n_total`` frames (unique, sorted)."""
    if n_total <= 0 or k <= 0:
        return []
    return sorted(set(np.linspace(0, n_total - 1, min(k, n_total)).astype(int).tolist()))


def count_video_frames(path: str | Path) -> int:
    """Number of frames of the first video stream (container header, else by demuxing packets)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if s.frames and s.frames > 0:
            return int(s.frames)
        return sum(1 for p in c.demux(s) if p.size > 0)


def sample_video_frames(path: str | Path, k: int) -> list[tuple[int, np.ndarray]]:
    """``k`` evenly spaced RGB frames of a video as ``(frame index, HxWx3 uint8)`` (decoded in order)."""
    import av

    n = count_video_frames(path)
    want = even_indices(n, k)
    if not want:
        return []
    wanted, last = set(want), want[-1]
    out: list[tuple[int, np.ndarray]] = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for i, frame in enumerate(c.decode(s)):
            if i in wanted:
                out.append((i, frame.to_ndarray(format="rgb24")))
            if i >= last:
                break
    return out


def read_image(path: str | Path) -> np.ndarray | None:
    """RGB uint8 image or None if unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def iter_record_frames(rec: VideoRecord, k: int):
    """Yield ``(frame index, RGB image or None)`` for ``k`` evenly sampled frames of a record."""
    if rec.video_path is not None:
        yield from sample_video_frames(rec.video_path, k)
        return
    paths = rec.frame_paths or ()
    for i in even_indices(len(paths), k):
        yield i, read_image(paths[i])


# ------------------------------------------------------------------------------------------------ #


def select_faces(observations: list, policy: FacePolicy = "largest", min_rel_area: float = 0.5) -> list:
    """Largest face, or all faces with box area >= ``min_rel_area`` x the largest (largest first)."""
    if not observations:
        return []
    obs = sorted(observations, key=lambda o: o.face.area, reverse=True)
    if policy == "largest":
        return obs[:1]
    if policy == "all":
        biggest = obs[0].face.area
        return [o for o in obs if o.face.area >= min_rel_area * biggest]
    raise ValueError(f"face_policy must be 'largest' or 'all', got {policy!r}")


def item_dir(out_dir: Path, rec: VideoRecord) -> Path:
    """Folder of one record's crops: ``<out>/<dataset>/<real|fake>/<safe uid>``."""
    return Path(out_dir) / safe_component(rec.dataset) / LABEL_NAMES[rec.label] / safe_name(rec.video_uid)


def _record_meta(rec: VideoRecord) -> dict[str, Any]:
    src = rec.video_path if rec.video_path is not None else (rec.frame_paths[0].parent if len(rec.frame_paths) > 1 else rec.frame_paths[0])
    return {"video_uid": rec.video_uid, "dataset": rec.dataset, "split": rec.split, "label": rec.label,
            "method": rec.method, "identity": rec.identity, "source": str(src)}


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=None, separators=(",", ":")))
    os.replace(tmp, path)


def _save_image(path: Path, img: np.ndarray, fmt: str, jpeg_quality: int) -> None:
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    if not cv2.imwrite(str(path), bgr, params):
        raise OSError(f"{path}: could not write image")


def _process_record(rec: VideoRecord, tmp: Path, pipeline, cfg: dict[str, Any], landmarker) -> dict[str, Any]:
    """Crops of one record into ``tmp``; returns the faces.json content (status ok/no_face/unreadable)."""
    size, scale = pipeline.crop_size, pipeline.crop_scale
    template = crop_template(size, scale)
    crops: list[dict[str, Any]] = []
    n_frames = n_unreadable = n_noface = 0
    try:
        frames = list(iter_record_frames(rec, cfg["frames_per_video"]))
    except Exception as e:  # noqa: BLE001 - PyAV raises many error types for broken files
        return {"status": "unreadable", "reason": f"{type(e).__name__}: {e}"[:300]}
    region = (rec.extra or {}).get("region", "full")
    for idx, img in frames:
        if img is None:
            n_unreadable += 1
            continue
        if region != "full":  # side-by-side clips: search only the named half
            half = img.shape[1] // 2
            img = np.ascontiguousarray(img[:, :half] if region == "left_half" else img[:, half:])
        n_frames += 1
        if cfg["crops_given"]:
            crop = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            chosen = [(None, crop)]
        else:
            chosen = [(o, o.crop) for o in select_faces(pipeline.process(img), cfg["face_policy"], cfg["min_rel_area"])]
        if not chosen:
            n_noface += 1
            continue
        for k, (o, crop) in enumerate(chosen):
            name = f"{idx:06d}{'' if k == 0 else f'_f{k}'}.{cfg['image_format']}"
            _save_image(tmp / name, crop, cfg["image_format"], cfg["jpeg_quality"])
            entry: dict[str, Any] = {"file": name, "frame": int(idx), "face": k}
            if o is not None:
                kps = np.asarray(o.face.kps, np.float64).reshape(5, 2)
                m = similarity_transform(kps, template)
                entry.update(box=np.round(o.face.box, 2).tolist(), kps=np.round(kps, 2).tolist(),
                             kps_crop=np.round(transform_points(m, kps), 2).tolist(),
                             score=round(float(o.face.score), 4), quality=round(float(o.quality), 4))
            else:
                entry.update(kps_crop=np.round(template, 2).tolist())
            if landmarker is not None:
                entry["landmarks68"] = np.round(landmarker.landmarks(crop, np.asarray(entry["kps_crop"])), 1).tolist()
            crops.append(entry)
    if n_frames == 0:
        status, reason = "unreadable", "no decodable frames"
    elif not crops:
        status, reason = "no_face", f"no face in {n_frames} frames"
    else:
        status, reason = "ok", ""
    return {"status": status, "reason": reason, "frames_sampled": len(frames), "frames_decoded": n_frames,
            "frames_without_face": n_noface, "frames_unreadable": n_unreadable, "crops": crops}


def prepare(
    records: Iterable[VideoRecord],
    out_dir: str | Path,
    faces_cfg: Any = None,
    *,
    pipeline: Any = None,
    frames_per_video: int = 32,
    face_policy: FacePolicy = "largest",
    min_rel_area: float = 0.5,
    image_format: Literal["png", "jpg"] = "png",
    jpeg_quality: int = 95,
    crops_given: bool = False,
    landmarker: Any = None,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Extract aligned face crops of ``records`` into ``out_dir`` (resumable; see module docstring).

    faces_cfg: a :class:`detectors.faces.factory.FacesConfig` (or a dict of its fields; None =
        defaults, the CenterFace backend) used to build the face pipeline; or pass a ready
        ``pipeline`` (anything with ``process(image) -> [FaceObservation]``, ``crop_size``, ``crop_scale``).
    frames_per_video: evenly spaced frames per video (images: evenly spaced images of the record).
    face_policy / min_rel_area: ``"largest"`` face, or ``"all"`` faces with area >= min_rel_area x largest.
    image_format / jpeg_quality: crop file format (PNG lossless by default).
    crops_given: the images are already face crops (e.g. WildDeepfake): resize to the crop size
        instead of detecting; the stored 5 points are then the crop template.
    landmarker: optional :class:`trainer.landmarks.Landmarker`; stores 68 points per crop.
    retry_failed: re-process items that failed in an earlier run (no face / unreadable).
    limit: process at most this many not-yet-finished items, then stop (batching a long job; tests).
    Returns the run's :class:`PrepareSummary` (also written to ``out_dir/summary.json``).
    """
    if frames_per_video < 1:
        raise ValueError(f"frames_per_video must be >= 1, got {frames_per_video}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if face_policy not in ("largest", "all"):
        raise ValueError(f"face_policy must be 'largest' or 'all', got {face_policy!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = list(records)
    if pipeline is None:
        from detectors.faces.factory import FacesConfig, build_face_pipeline

        if faces_cfg is None:
            faces_cfg = FacesConfig(embed=False)
        elif isinstance(faces_cfg, dict):
            faces_cfg = FacesConfig(**faces_cfg)
        pipeline = build_face_pipeline(faces_cfg)
    cfg = {"frames_per_video": frames_per_video, "face_policy": face_policy, "min_rel_area": min_rel_area,
           "image_format": image_format, "jpeg_quality": jpeg_quality, "crops_given": crops_given}
    summary = PrepareSummary(items=len(records))
    t0 = time.monotonic()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(records), desc="prepare", unit="video", dynamic_ncols=True)
    try:
        for rec in records:
            d = item_dir(out_dir, rec)
            done = d / DONE_FILE
            if done.is_file():
                prev = json.loads(done.read_text()).get("status")
                if prev == "ok" or not retry_failed:
                    summary.already_done += 1
                    if bar is not None:
                        bar.update(1)
                    continue
            if limit is not None and summary.processed >= limit:
                summary.stopped_early = True
                break
            tmp = d.with_name(f".tmp-{d.name}")
            if tmp.exists():
                shutil.rmtree(tmp)  # leftover of an interrupted run
            tmp.mkdir(parents=True)
            try:
                meta = _process_record(rec, tmp, pipeline, cfg, landmarker)
            except Exception as e:  # noqa: BLE001 - one bad item never stops the run
                log.exception("%s: failed", rec.video_uid)
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                meta = {"status": "error", "reason": f"{type(e).__name__}: {e}"[:300]}
            meta = {**_record_meta(rec), **meta, "crop_size": pipeline.crop_size, "crop_scale": pipeline.crop_scale,
                    "pipeline": getattr(pipeline, "name", type(pipeline).__name__), **cfg}
            _write_json_atomic(tmp / DONE_FILE, meta)
            if d.exists():
                shutil.rmtree(d)
            os.replace(tmp, d)
            summary.processed += 1
            status = meta["status"]
            setattr(summary, status, getattr(summary, status) + 1)
            summary.frames += meta.get("frames_decoded", 0)
            summary.frames_without_face += meta.get("frames_without_face", 0)
            summary.crops += len(meta.get("crops", []))
            if status != "ok" and len(summary.failed) < 100:
                summary.failed.append(f"{rec.video_uid}: {status} ({meta.get('reason', '')})")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ok=summary.ok, bad=summary.processed - summary.ok, crops=summary.crops)
    finally:
        if bar is not None:
            bar.close()
        summary.seconds = round(time.monotonic() - t0, 2)
        rows = write_manifest(out_dir)
        summary.by_label = dict(Counter(LABEL_NAMES[r["label"]] for r in {r["video_uid"]: r for r in rows}.values()))
        _write_json_atomic(out_dir / SUMMARY, asdict(summary))
        log.info("prepare %s: %s", out_dir, summary)
    return summary


def iter_done(out_dir: str | Path):
    """Yield ``(item folder, faces.json dict)`` for every finished item under ``out_dir``."""
    for done in sorted(Path(out_dir).glob(f"*/*/*/{DONE_FILE}")):
        if done.parent.name.startswith(".tmp-"):
            continue
        yield done.parent, json.loads(done.read_text())


def write_manifest(out_dir: str | Path) -> list[dict[str, Any]]:
    """Rewrite ``out_dir/manifest.jsonl``: one row per crop of every finished ok item (paths relative to out_dir)."""
    out_dir = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for d, meta in iter_done(out_dir):
        if meta.get("status") != "ok":
            continue
        base = {k: meta[k] for k in ("video_uid", "dataset", "split", "label", "method", "identity")}
        for c in meta["crops"]:
            row = {**base, "path": (d / c["file"]).relative_to(out_dir).as_posix(), "frame": c["frame"], "face": c["face"],
                   "kps_crop": c["kps_crop"]}
            if "landmarks68" in c:
                row["landmarks68"] = c["landmarks68"]
            rows.append(row)
    tmp = out_dir / f".{MANIFEST}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    os.replace(tmp, out_dir / MANIFEST)
    return rows


def load_manifest(out_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``manifest.jsonl`` with ``path`` made absolute (a :class:`pathlib.Path`)."""
    out_dir = Path(out_dir)
    p = out_dir / MANIFEST
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no manifest (run prepare() into {out_dir} first)")
    rows = []
    with open(p) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                r["path"] = out_dir / r["path"]
                rows.append(r)
    return rows


def crop_geometry(out_dir: str | Path) -> tuple[int, float] | None:
    """``(crop_size, crop_scale)`` the face pipeline cut a prepared folder's crops with (from its finished items'
    ``faces.json``), or None when it has no finished item or its crops were given (``crops_given``: resized
    dataset crops, no alignment of ours). Items prepared with different geometries raise ValueError."""
    found: set[tuple[int, float]] = set()
    for _, meta in iter_done(out_dir):
        if meta.get("status") != "ok" or meta.get("crops_given") or "crop_size" not in meta:
            continue
        found.add((int(meta["crop_size"]), float(meta["crop_scale"])))
    if len(found) > 1:
        raise ValueError(f"{out_dir}: crops of different geometries {sorted(found)} (size, scale) in one folder")
    return found.pop() if found else None
