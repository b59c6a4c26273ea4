"""Preprocessing into aligned crops: real clips through the real face pipeline, resume, bad items."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from detectors import samples
from detectors.faces.align import crop_template
from trainer.data import read_generic, read_shared_data
from trainer.data.records import VideoRecord, make_uid
from trainer.landmarks import TemplateLandmarker
from trainer.prepare import (
    even_indices,
    item_dir,
    load_manifest,
    prepare,
    sample_video_frames,
    select_faces,
)


@pytest.fixture(scope="module")
def pipeline():
    from detectors.faces.factory import FacesConfig, build_face_pipeline

    return build_face_pipeline(FacesConfig(embed=False, det_max_side=320))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """generic real/ + fake/ tree: 2 face clips, 1 face image, 1 group photo, 1 face-less clip, 1 broken file."""
    root = tmp_path_factory.mktemp("gen")
    face = samples.astronaut()
    samples.write_video(root / "real" / "a.mp4", samples.moving_frames(face, 20, (320, 240), seed=1), fps=10)
    samples.write_video(root / "fake" / "m1" / "b.mp4", samples.moving_frames(face[:, ::-1].copy(), 12, (320, 240), seed=2), fps=10)
    blank = (np.random.default_rng(0).integers(0, 40, (240, 320, 3))).astype(np.uint8)
    samples.write_video(root / "fake" / "m1" / "noface.mp4", [blank] * 5, fps=10)
    cv2.imwrite(str(root / "real" / "astro.jpg"), cv2.cvtColor(cv2.resize(face, (320, 320)), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "real" / "group.jpg"), cv2.cvtColor(samples.group_photo(), cv2.COLOR_RGB2BGR))
    (root / "fake" / "m1" / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    return root


def test_even_indices_and_sampling(tree: Path):
    assert even_indices(20, 4) == [0, 6, 12, 19]
    assert even_indices(3, 8) == [0, 1, 2]
    assert even_indices(0, 8) == []
    frames = sample_video_frames(tree / "real" / "a.mp4", 4)
    assert [i for i, _ in frames] == [0, 6, 12, 19]
    assert frames[0][1].shape == (240, 320, 3) and frames[0][1].dtype == np.uint8


def test_prepare_resume_and_bad_items(tree: Path, tmp_path: Path, pipeline):
    recs = read_generic(tree, dataset="gen", images_as="files")
    assert len(recs) == 6
    out = tmp_path / "out"
    kw = dict(pipeline=pipeline, frames_per_video=4, progress=False)

    # "interrupted" run: stops after 2 items (injected limit); a half-written item is left behind too
    s1 = prepare(recs, out, limit=2, **kw)
    assert (s1.processed, s1.stopped_early, s1.already_done) == (2, True, 0)
    stale = item_dir(out, recs[-1]).with_name(".tmp-" + item_dir(out, recs[-1]).name)
    stale.mkdir(parents=True)
    (stale / "000000.png").write_bytes(b"partial")

    s2 = prepare(recs, out, **kw)
    assert s2.already_done == 2 and s2.processed == 4 and not s2.stopped_early
    total_ok = s1.ok + s2.ok
    assert total_ok == 4  # a.mp4, b.mp4, astro.jpg, group.jpg
    assert s1.no_face + s2.no_face == 1 and s1.unreadable + s2.unreadable == 1
    assert not stale.exists()

    rows = load_manifest(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths))  # no duplicates after resume
    per_video = Counter(r["video_uid"] for r in rows)
    assert per_video["gen/real/real/a.mp4"] == 4 and per_video["gen/fake/fake/m1/b.mp4"] == 4
    assert per_video["gen/real/real/group.jpg"] == 1  # largest face only
    assert all(p.is_file() for p in paths)
    img = cv2.imread(str(paths[0]))
    assert img.shape == (256, 256, 3)
    # the 5 points land on the crop template (that is what alignment means)
    r0 = next(r for r in rows if r["video_uid"] == "gen/real/real/a.mp4")
    assert np.abs(np.asarray(r0["kps_crop"]) - crop_template(256)).max() < 8
    assert {r["method"] for r in rows if r["label"] == 1} == {"m1"}

    meta = json.loads((item_dir(out, recs[0]) / "faces.json").read_text())
    assert {"box", "kps", "kps_crop", "score", "quality", "frame"} <= set(meta["crops"][0])
    bad = {json.loads(p.read_text())["status"] for p in out.glob("*/*/*/faces.json")} - {"ok"}
    assert bad == {"no_face", "unreadable"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["by_label"] == {"real": 3, "fake": 1}

    # third run: nothing to do; retry_failed re-processes only the two failures
    s3 = prepare(recs, out, **kw)
    assert (s3.already_done, s3.processed) == (6, 0)
    s4 = prepare(recs, out, retry_failed=True, **kw)
    assert (s4.already_done, s4.processed, s4.ok) == (4, 2, 0)
    assert len(load_manifest(out)) == len(rows)


def test_prepare_all_faces_landmarks_and_jpeg(tree: Path, tmp_path: Path, pipeline):
    group = [r for r in read_generic(tree, dataset="gen", images_as="files") if r.video_uid.endswith("group.jpg")]
    s = prepare(group, tmp_path / "o", pipeline=pipeline, face_policy="all", min_rel_area=0.3, image_format="jpg",
                landmarker=TemplateLandmarker(), progress=False)
    rows = load_manifest(tmp_path / "o")
    assert s.ok == 1 and len(rows) >= 3 and s.crops == len(rows)
    assert all(r["path"].suffix == ".jpg" for r in rows)
    assert np.asarray(rows[0]["landmarks68"]).shape == (68, 2)
    assert sorted(r["face"] for r in rows) == list(range(len(rows)))


def test_select_faces_policy(pipeline):
    obs = pipeline.process(samples.group_photo())
    assert len(obs) >= 3
    largest = select_faces(obs, "largest")
    assert len(largest) == 1 and largest[0].face.area == max(o.face.area for o in obs)
    assert len(select_faces(obs, "all", 0.0)) == len(obs)
    assert all(o.face.area >= 0.9 * largest[0].face.area for o in select_faces(obs, "all", 0.9))
    with pytest.raises(ValueError):
        select_faces(obs, "biggest")


def test_prepare_crops_given_and_errors(tmp_path: Path, pipeline):
    p = tmp_path / "seq" / "0.png"
    p.parent.mkdir()
    cv2.imwrite(str(p), np.full((224, 224, 3), 128, np.uint8))
    rec = VideoRecord("wild", "test", make_uid("wild", 1, "seq"), 1, "wild", frame_paths=(p,))
    s = prepare([rec], tmp_path / "o", pipeline=pipeline, crops_given=True, progress=False)
    assert s.ok == 1 and cv2.imread(str(load_manifest(tmp_path / "o")[0]["path"])).shape == (256, 256, 3)
    with pytest.raises(ValueError, match="frames_per_video"):
        prepare([rec], tmp_path / "o", pipeline=pipeline, frames_per_video=0)
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_manifest(tmp_path / "nothing")


def test_prepare_shared_data(shared_data: Path, tmp_path: Path, pipeline):
    recs = read_shared_data(shared_data, subsets=["congress_gpo"])[:4] + read_shared_data(shared_data, subsets=["sadtalker_ref_video"])[:1]
    s = prepare(recs, tmp_path / "o", pipeline=pipeline, frames_per_video=3, progress=False)
    assert s.ok == 5 and s.crops == 4 + 3


def test_crop_geometry_is_recorded_and_goes_into_the_bundle_manifest(tree: Path, tmp_path: Path, pipeline):
    """The trainer writes the crop geometry it prepared with into the manifest (trainer.bundling.crop_spec)."""
    from detectors.bundle import CropSpec
    from detectors.faces.factory import FacesConfig, build_face_pipeline
    from trainer.bundling import crop_spec
    from trainer.export import ExportError
    from trainer.prepare import crop_geometry

    astro = [r for r in read_generic(tree, dataset="gen", images_as="files") if r.video_uid.endswith("astro.jpg")]
    prepare(astro, tmp_path / "default", pipeline=pipeline, progress=False)
    small = build_face_pipeline(FacesConfig(embed=False, det_max_side=320, crop_size=128, crop_scale=1.5))
    prepare(astro, tmp_path / "small", pipeline=small, progress=False)
    assert crop_geometry(tmp_path / "default") == (256, 1.3)
    assert crop_geometry(tmp_path / "small") == (128, 1.5)
    assert crop_geometry(tmp_path / "empty") is None
    spec, source = crop_spec([("frame training data", tmp_path / "small"), ("calibration data", None)])
    assert spec == CropSpec(size=128, scale=1.5) and str(tmp_path / "small") in source
    assert crop_spec([("frame training data", "gone/folder")])[0] == CropSpec()  # nothing known: today's default
    with pytest.raises(ExportError, match="different crop geometries"):
        crop_spec([("frame", tmp_path / "default"), ("temporal", tmp_path / "small")])
