"""DeepfakeBench processed layout + dataset JSON reader (methods.md §6.8) on a generated tiny tree."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from trainer.data import DatasetLayoutError, load_records
from trainer.data.deepfakebench import LABELS, read_deepfakebench


def _frames(rgb: Path, rel: str, n: int = 3, landmarks: bool = False) -> list[str]:
    """Write n tiny frames under rgb/rel/frames-level folder; return their paths relative to rgb (posix)."""
    d = rgb / rel
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in (0, 10, 2)[:n]:  # natural order is 000, 002, 010
        img = np.full((16, 16, 3), 40 + 10 * i, np.uint8)
        cv2.imwrite(str(d / f"{i:03d}.png"), img)
        if landmarks:
            ld = rgb / rel.replace("frames", "landmarks")
            ld.mkdir(parents=True, exist_ok=True)
            np.save(ld / f"{i:03d}.npy", np.zeros((81, 2), np.int32))
        out.append(f"{rel}/{i:03d}.png")
    return out


def _entry(label: str, frames: list[str]) -> dict:
    return {"label": label, "frames": frames}


@pytest.fixture()
def bench(tmp_path) -> Path:
    root = tmp_path / "DeepfakeBench"
    rgb = root / "datasets" / "rgb"
    js = root / "preprocessing" / "dataset_json"
    js.mkdir(parents=True)
    # Celeb-DF-v2: three path spellings; '00000' exists as a folder name in two sub-sets
    a = _frames(rgb, "Celeb-DF-v2/Celeb-real/frames/id0_0000", landmarks=True)
    b = _frames(rgb, "Celeb-DF-v2/YouTube-real/frames/00000")
    c = _frames(rgb, "Celeb-DF-v2/Celeb-synthesis/frames/id0_id1_0000")
    d = _frames(rgb, "Celeb-DF-v2/Celeb-synthesis/frames/00000")
    win = lambda ps: [p.replace("/", "\\") for p in ps]  # noqa: E731  (Windows separators, relative to rgb)
    dot = lambda ps: [f"./datasets/rgb/{p}" for p in ps]  # noqa: E731  (relative to the DeepfakeBench root)
    foreign = lambda ps: [f"/home/someone/DeepfakeBench/datasets/rgb/{p}" for p in ps]  # noqa: E731
    celeb = {"Celeb-DF-v2": {
        "CelebDFv2_real": {
            "train": {"id0_0000": _entry("CelebDFv2_real", win(a)), "00000": _entry("CelebDFv2_real", dot(b))},
            "val": {"00000": _entry("CelebDFv2_real", dot(b))},
            "test": {"00000": _entry("CelebDFv2_real", dot(b))}},
        "CelebDFv2_fake": {
            "train": {"id0_id1_0000": _entry("CelebDFv2_fake", foreign(c)),
                      "00000": _entry("CelebDFv2_fake", d)},
            "test": {}}}}
    (js / "Celeb-DF-v2.json").write_text(json.dumps(celeb))
    # FF-DF: compression level under each split; reals live in the FaceForensics++ tree
    r = _frames(rgb, "FaceForensics++/original_sequences/youtube/c23/frames/000", n=2)
    f = _frames(rgb, "FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/000_003", n=2)
    f40 = _frames(rgb, "FaceForensics++/manipulated_sequences/Deepfakes/c40/frames/000_003", n=2)
    ff = {"FF-DF": {
        "FF-real": {"train": {"c23": {"000": _entry("FF-real", r)}, "c40": {}}},
        "FF-DF": {"train": {"c23": {"000_003": _entry("FF-DF", f)}, "c40": {"000_003": _entry("FF-DF", f40)}}}}}
    (js / "FF-DF.json").write_text(json.dumps(ff))
    return root


def test_celebdf_records(bench):
    recs = read_deepfakebench(bench, "Celeb-DF-v2")
    by_uid = {r.video_uid: r for r in recs}
    assert sorted(by_uid) == ["Celeb-DF-v2/fake/Celeb-synthesis/00000", "Celeb-DF-v2/fake/Celeb-synthesis/id0_id1_0000",
                              "Celeb-DF-v2/real/Celeb-real/id0_0000", "Celeb-DF-v2/real/YouTube-real/00000"]
    yt = by_uid["Celeb-DF-v2/real/YouTube-real/00000"]
    assert yt.split == "test" and yt.label == 0 and yt.method == "real"  # listed under train/val/test -> test once
    fake = by_uid["Celeb-DF-v2/fake/Celeb-synthesis/id0_id1_0000"]
    assert fake.label == 1 and fake.method == "CelebDFv2_fake" and fake.split == "train" and fake.identity == "id0"
    # every path spelling resolved to the real files, in natural frame order
    real = by_uid["Celeb-DF-v2/real/Celeb-real/id0_0000"]
    assert [p.name for p in real.frame_paths] == ["000.png", "002.png", "010.png"]
    assert all(p.is_file() for r in recs for p in r.frame_paths)
    assert real.extra["crops_given"] is True and real.extra["landmarks"][0].name == "000.npy"
    assert fake.extra["landmarks"] is None and "compression" not in fake.extra
    # split filter; registry name; dataset inferred only when unambiguous
    assert {r.split for r in read_deepfakebench(bench, "Celeb-DF-v2", splits=("train",))} == {"train"}
    assert len(load_records("deepfakebench", bench, dataset="Celeb-DF-v2")) == 4
    with pytest.raises(DatasetLayoutError, match="pass dataset="):
        read_deepfakebench(bench)


def test_ffpp_compression_level(bench):
    c23 = read_deepfakebench(bench, "FF-DF")
    assert sorted((r.label, r.method, r.identity) for r in c23) == [(0, "real", "000"), (1, "Deepfakes", "000")]
    assert all(r.extra["compression"] == "c23" for r in c23)
    fake = next(r for r in c23 if r.label == 1)
    assert fake.video_uid == "FF-DF/fake/FaceForensics++/manipulated_sequences/Deepfakes/c23/000_003"
    c40 = read_deepfakebench(bench, "FF-DF_c40")  # DeepfakeBench's config spelling
    assert [r.video_uid for r in c40] == ["FF-DF/fake/FaceForensics++/manipulated_sequences/Deepfakes/c40/000_003"]
    with pytest.raises(DatasetLayoutError, match="no compression level 'raw'"):
        read_deepfakebench(bench, "FF-DF", compression="raw")


def test_label_table():
    assert {k for k, v in LABELS.items() if v == 0} == {"FF-real", "DFD_real", "CelebDFv1_real", "CelebDFv2_real",
                                                        "DFDCP_Real", "DFDC_Real", "DF_real", "UADFV_Real"}
    assert LABELS["DFDCP_FakeB"] == 1 and LABELS["FF-FH"] == 1 and LABELS["UADFV_Fake"] == 1


def test_layout_errors(bench, tmp_path):
    js = bench / "preprocessing" / "dataset_json"
    with pytest.raises(DatasetLayoutError, match="no dataset JSON for 'DFDCP'"):
        read_deepfakebench(bench, "DFDCP")
    (js / "DFDCP.json").write_text(json.dumps({"DFDC": {}}))
    with pytest.raises(DatasetLayoutError, match="no top-level key 'DFDCP'"):
        read_deepfakebench(bench, "DFDCP")
    frames = [str(p.relative_to(bench / "datasets" / "rgb")) for p in
              sorted((bench / "datasets" / "rgb" / "Celeb-DF-v2" / "Celeb-real").rglob("*.png"))]
    (js / "DFDCP.json").write_text(json.dumps({"DFDCP": {"DFDCP_FakeC": {"test": {"v": _entry("DFDCP_FakeC", frames)}}}}))
    with pytest.raises(DatasetLayoutError, match="label 'DFDCP_FakeC'"):
        read_deepfakebench(bench, "DFDCP")
    assert read_deepfakebench(bench, "DFDCP", label_map={"DFDCP_FakeC": 1})[0].label == 1
    (js / "DFDCP.json").write_text(json.dumps({"DFDCP": {"DFDCP_Real": {"test": {"v": _entry("DFDCP_Real", ["nope/0.png"])}}}}))
    with pytest.raises(DatasetLayoutError, match="frames on disk"):
        read_deepfakebench(bench, "DFDCP")
    (tmp_path / "empty" / "preprocessing" / "dataset_json").mkdir(parents=True)
    (tmp_path / "empty" / "preprocessing" / "dataset_json" / "X.json").write_text("{}")
    with pytest.raises(DatasetLayoutError, match="datasets/rgb not found"):
        read_deepfakebench(tmp_path / "empty", "X")
    with pytest.raises(DatasetLayoutError, match="folder not found"):
        read_deepfakebench(tmp_path / "missing", "X")


def test_prepare_crops_given(bench, tmp_path):
    from trainer.prepare import load_manifest, prepare

    recs = read_deepfakebench(bench, "FF-DF")
    summary = prepare(recs, tmp_path / "crops", frames_per_video=2, crops_given=True, progress=False)
    rows = load_manifest(tmp_path / "crops")
    assert len(rows) == 4 and {r["video_uid"] for r in rows} == {r.video_uid for r in recs}
    assert summary.crops == 4
