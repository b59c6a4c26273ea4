"""Dataset readers on tiny fake folder trees (empty files where only listing matters)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from trainer.data import (
    DatasetLayoutError,
    load_records,
    read_celebdf,
    read_dfd,
    read_dfdc,
    read_dfdc_preview,
    read_faceshifter,
    read_ffpp,
    read_generic,
    read_shared_data,
    read_wilddeepfake,
    safe_name,
    summarize,
)
from trainer.torchdata import split_by_identity


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def counts(records, *keys):
    return Counter(tuple(getattr(r, k) for k in keys) for r in records)


# ------------------------------------------------------------------------------------------------ FF++


@pytest.fixture
def ffpp_root(tmp_path: Path) -> Path:
    ff = tmp_path / "FaceForensics++"
    ids = ["000", "001", "002", "003", "004", "005"]
    # case differs from the official spelling on purpose (case-insensitive matching)
    touch(ff, *[f"Original_Sequences/YouTube/c23/videos/{i}.mp4" for i in ids + ["999"]])
    touch(ff, *[f"Original_Sequences/YouTube/raw/videos/{i}.mp4" for i in ids])
    pairs = [("000", "001"), ("002", "003"), ("004", "005")]
    for m in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter"):
        for a, b in pairs:
            touch(ff, f"manipulated_sequences/{m}/c23/videos/{a}_{b}.mp4", f"manipulated_sequences/{m}/c23/videos/{b}_{a}.mp4")
    touch(ff, "manipulated_sequences/Deepfakes/raw/videos/000_001.mp4", "manipulated_sequences/Deepfakes/c23/videos/998_999.mp4")
    touch(ff, "Original_Sequences/actors/c23/videos/01__kitchen.mp4", "Original_Sequences/actors/c23/videos/02__walk.mp4",
          "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__kitchen__ABCDEFGH.mp4")
    (ff / "splits").mkdir()
    for split, pr in zip(("train", "val", "test"), pairs):
        (ff / "splits" / f"{split}.json").write_text(json.dumps([list(pr)]))
    return tmp_path


def test_ffpp_counts_splits_and_uids(ffpp_root: Path):
    recs = read_ffpp(ffpp_root, "c23")
    c = counts(recs, "split", "label")
    assert c == {(s, 0): 2 for s in ("train", "val", "test")} | {(s, 1): 8 for s in ("train", "val", "test")}
    assert Counter(r.method for r in recs if r.label == 1) == {m: 6 for m in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")}
    fake = next(r for r in recs if r.video_path.name == "002_003.mp4" and r.method == "Deepfakes")
    assert fake.split == "val" and fake.identity == "002" and fake.extra == {"target": "002", "source": "003"}
    assert fake.video_uid == "FF++-c23/fake/manipulated_sequences/Deepfakes/c23/videos/002_003.mp4"
    assert len({r.video_uid for r in recs}) == len(recs)
    assert all(r.video_path.is_file() for r in recs)
    # video 999 and fake 998_999 are in no split -> skipped
    assert not any("999" in r.video_uid for r in recs)
    assert summarize(recs)["label"] == {"fake": 24, "real": 6}


def test_ffpp_options(ffpp_root: Path):
    test_only = read_ffpp(ffpp_root, "c23", methods=["FaceShifter"], splits=("test",))
    assert counts(test_only, "label", "method") == {(0, "real"): 2, (1, "FaceShifter"): 2}
    assert read_faceshifter(ffpp_root)[0].split == "test"
    raw = read_ffpp(ffpp_root, "c0", methods=["Deepfakes"], splits=("train",))
    assert counts(raw, "label") == {(0,): 2, (1,): 1}
    assert all(r.dataset == "FF++-c0" for r in raw)


def test_ffpp_frame_folder_layout(tmp_path: Path):
    ff = tmp_path / "ff"
    touch(ff, "original_sequences/youtube/c23/000/0.png", "original_sequences/youtube/c23/000/1.png",
          "original_sequences/youtube/c23/001/0.png", "manipulated_sequences/Deepfakes/c23/000_001/3.png")
    for s in ("train", "val", "test"):
        (ff / f"{s}.json").write_text(json.dumps([["000", "001"]] if s == "train" else []))
    recs = read_ffpp(ff, "c23", methods=["Deepfakes"])
    assert counts(recs, "label") == {(0,): 2, (1,): 1}
    r0 = next(r for r in recs if r.identity == "000" and r.label == 0)
    assert r0.video_path is None and [p.name for p in r0.frame_paths] == ["0.png", "1.png"]


def test_ffpp_errors(ffpp_root: Path, tmp_path: Path):
    (ffpp_root / "FaceForensics++" / "splits" / "val.json").unlink()
    with pytest.raises(DatasetLayoutError, match=r"val\.json.*not found"):
        read_ffpp(ffpp_root)
    with pytest.raises(DatasetLayoutError, match="not a FaceForensics"):
        read_ffpp(tmp_path / "nothing")
    (ffpp_root / "FaceForensics++" / "splits" / "val.json").write_text('{"a": 1}')
    with pytest.raises(DatasetLayoutError, match="2-element"):
        read_ffpp(ffpp_root)
    (ffpp_root / "FaceForensics++" / "splits" / "val.json").write_text('[["002", "003"]]')
    with pytest.raises(DatasetLayoutError, match="FooSwap.*not found"):
        read_ffpp(ffpp_root, methods=["FooSwap"])
    with pytest.raises(DatasetLayoutError, match="no c40 folder"):
        read_ffpp(ffpp_root, "c40")


def test_dfd(ffpp_root: Path):
    recs = read_dfd(ffpp_root)
    assert counts(recs, "split", "label", "method") == {("test", 0, "real"): 2, ("test", 1, "DeepFakeDetection"): 1}
    assert {r.identity for r in recs} == {"01", "02"}


# ------------------------------------------------------------------------------------------------ Celeb-DF


@pytest.fixture
def celeb_root(tmp_path: Path) -> Path:
    r = tmp_path / "Celeb-DF-v2"
    touch(r, "Celeb-real/id0_0000.mp4", "Celeb-real/id1_0001.mp4", "Youtube-real/00000.mp4", "Youtube-real/00001.mp4",
          "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id1_id0_0001.mp4", "Celeb-synthesis/id1_id0_0002.mp4")
    (r / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id9_id8_0000.mp4\n")
    return tmp_path


def test_celebdf(celeb_root: Path):
    recs = read_celebdf(celeb_root)
    assert counts(recs, "split", "label") == {("test", 0): 2, ("test", 1): 1, ("train", 0): 2, ("train", 1): 2}
    yt = next(r for r in recs if r.video_path.name == "00000.mp4")
    assert yt.split == "test" and yt.identity == "yt00000" and yt.method == "real"
    assert {r.identity for r in recs if r.label == 1} == {"id0", "id1"}
    assert [r.split for r in read_celebdf(celeb_root, splits=("test",))] == ["test"] * 3


def test_celebdf_errors(celeb_root: Path):
    lst = celeb_root / "Celeb-DF-v2" / "List_of_testing_videos.txt"
    lst.write_text("2 Celeb-real/id0_0000.mp4\n")
    with pytest.raises(DatasetLayoutError, match=r"List_of_testing_videos.txt:1"):
        read_celebdf(celeb_root)
    lst.unlink()
    with pytest.raises(DatasetLayoutError, match="test list not found"):
        read_celebdf(celeb_root)
    assert len(read_celebdf(celeb_root, require_test_list=False)) == 7


# ------------------------------------------------------------------------------------------------ DFDC / DFDCP


def test_dfdc(tmp_path: Path):
    r = tmp_path / "DFDC"
    touch(r, "train/dfdc_train_part_0/a.mp4", "train/dfdc_train_part_0/b.mp4", "train/dfdc_train_part_0/c.mp4",
          "test/x.mp4", "test/y.mp4", "test/z.mp4")
    (r / "train/dfdc_train_part_0/metadata.json").write_text(json.dumps(
        {"a.mp4": {"label": "REAL", "split": "train"}, "b.mp4": {"label": "FAKE", "original": "a.mp4", "split": "train"}}))
    (r / "test/labels.csv").write_text("filename,label\nx.mp4,1\ny.mp4,0\n")
    test = read_dfdc(tmp_path)
    assert counts(test, "split", "label") == {("test", 1): 1, ("test", 0): 1}
    both = read_dfdc(r, splits=("train", "test"))
    assert len(both) == 4
    a, b = (next(x for x in both if x.video_path.name == n) for n in ("a.mp4", "b.mp4"))
    assert (a.label, b.label) == (0, 1) and a.identity == b.identity == "dfdc_train_part_0/a"
    (r / "test/labels.csv").write_text("name,fake\nx.mp4,1\n")
    with pytest.raises(DatasetLayoutError, match="filename,label"):
        read_dfdc(r)


def test_dfdc_sbi_layout_and_missing_labels(tmp_path: Path):
    touch(tmp_path, "videos/v1.mp4", "videos/v2.mp4")
    (tmp_path / "labels.csv").write_text("filename,label\nv1.mp4,1\nv2.mp4,0\n")
    assert counts(read_dfdc(tmp_path), "label") == {(1,): 1, (0,): 1}
    (tmp_path / "labels.csv").unlink()
    with pytest.raises(DatasetLayoutError):
        read_dfdc(tmp_path)


def test_dfdc_preview(tmp_path: Path):
    r = tmp_path / "DFDCP"
    rels = {"original_videos/123/a.mp4": ("real", "test"), "method_A/123/123_456/b.mp4": ("fake", "test"),
            "method_B/123/123_789/c.mp4": ("fake", "train"), "original_videos/124/d.mp4": ("real", "train")}
    touch(r, *rels)
    (r / "dataset.json").write_text(json.dumps({k: {"label": lab, "set": s} for k, (lab, s) in rels.items()}))
    test = read_dfdc_preview(tmp_path)
    assert counts(test, "label", "method") == {(0, "real"): 1, (1, "method_A"): 1}
    assert {x.identity for x in test} == {"123"}
    assert len(read_dfdc_preview(r, splits=("train", "test"))) == 4
    (r / "dataset.json").unlink()
    with pytest.raises(DatasetLayoutError, match="dataset.json"):
        read_dfdc_preview(r)


# ------------------------------------------------------------------------------------------------ WildDeepfake


def test_wilddeepfake(tmp_path: Path):
    r = tmp_path / "deepfake_in_the_wild"
    touch(r, "real_train/1/real/5/0.png", "real_train/1/real/5/10.png", "real_train/1/real/5/2.png",
          "real_train/1/real/6/0.png", "fake_train/2/fake/7/0.png", "real_test/3/real/8/0.png",
          "fake_test/4/fake/9/0.png", "fake_test/4/fake/10/1.png", "real_train/1.tar.gz")
    recs = read_wilddeepfake(tmp_path)
    assert counts(recs, "split", "label") == {("train", 0): 2, ("train", 1): 1, ("test", 0): 1, ("test", 1): 2}
    seq = next(x for x in recs if x.video_uid.endswith("/5"))
    assert [p.name for p in seq.frame_paths] == ["0.png", "2.png", "10.png"]  # natural order
    assert seq.video_uid == "WildDeepfake/real/real_train/1/real/5" and seq.identity == "real_train/1"


def test_wilddeepfake_archives_not_unpacked(tmp_path: Path):
    for top in ("real_train", "real_test", "fake_train", "fake_test"):
        touch(tmp_path, f"{top}/1.tar.gz")
    with pytest.raises(DatasetLayoutError, match="unpack"):
        read_wilddeepfake(tmp_path)


# ------------------------------------------------------------------------------------------------ generic / shared


def test_generic(tmp_path: Path):
    touch(tmp_path, "REAL/a.mp4", "REAL/seq1/0.png", "REAL/seq1/1.png", "REAL/loose.jpg",
          "fake/diffswap/x.png", "fake/diffswap/y.png", "fake/b.avi", "fake/notes.txt")
    recs = read_generic(tmp_path, dataset="gen")
    by = {r.video_uid: r for r in recs}
    assert set(by) == {"gen/real/REAL/a.mp4", "gen/real/REAL/seq1", "gen/real/REAL/loose.jpg",
                       "gen/fake/fake/diffswap", "gen/fake/fake/b.avi"}
    assert by["gen/fake/fake/diffswap"].method == "diffswap" and len(by["gen/fake/fake/diffswap"].frame_paths) == 2
    assert by["gen/fake/fake/b.avi"].method == "fake"
    files = read_generic(tmp_path, dataset="gen", images_as="files")
    assert sum(1 for r in files if r.frame_paths is not None) == 5
    with pytest.raises(DatasetLayoutError, match="real/"):
        read_generic(tmp_path / "REAL" / "seq1")


def test_shared_layout_and_registry(tmp_path: Path):
    touch(tmp_path, "faces/setA/p1.jpg", "faces/setA/p2.jpg", "faces/setB/q.png", "videos/clips/v.mp4")
    recs = load_records("shared", tmp_path)
    assert len(recs) == 4 and all(r.label == 0 and r.split == "all" for r in recs)
    assert {r.identity for r in recs} == {"faces/setA/p1", "faces/setA/p2", "faces/setB/q", "videos/clips/v"}
    assert len(read_shared_data(tmp_path, subsets=["setB"])) == 1
    with pytest.raises(KeyError, match="unknown dataset"):
        load_records("nope", tmp_path)
    with pytest.raises(DatasetLayoutError):
        read_shared_data(tmp_path / "faces" / "setA")


def test_safe_name_unique():
    a, b = safe_name("ds/real/a/b.mp4"), safe_name("ds/real/a_b.mp4")
    assert a != b and "/" not in a and len(safe_name("x" * 500)) < 120


def test_split_by_identity():
    items = [{"identity": f"id{i // 3}", "path": f"p{i}"} for i in range(300)]  # 100 identities x 3
    s = split_by_identity(items, val_frac=0.1, test_frac=0.2, seed=1)
    ids = {k: {x["identity"] for x in v} for k, v in s.items()}
    assert (len(ids["train"]), len(ids["val"]), len(ids["test"])) == (70, 10, 20)
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(len(v) for v in s.values()) == 300
    assert split_by_identity(items, 0.1, 0.2, seed=1) == s
    assert split_by_identity(items, 0.1, 0.2, seed=2) != s
    with pytest.raises(ValueError):
        split_by_identity(items, 0.6, 0.5)


def test_real_shared_data_counts(shared_data: Path):
    recs = read_shared_data(shared_data)
    c = Counter("faces" if r.frame_paths else "videos" for r in recs)
    assert c == {"faces": 6776, "videos": 18}
    assert len({r.identity for r in recs}) == len(recs)
