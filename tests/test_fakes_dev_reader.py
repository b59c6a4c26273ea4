"""The fakes_dev validation-set reader (labels.csv + regions.csv) and prepare's side-by-side regions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from detectors import samples
from trainer.data.fakes_dev import read_fakes_dev
from trainer.data.records import DatasetLayoutError
from trainer.evaluate import tpr_at_fpr

HEAD = "path,label,generator,family,source,kind,group\n"


def _layout(root: Path) -> Path:
    (root / "swap").mkdir(parents=True)
    (root / "gen").mkdir()
    face = cv2.resize(samples.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    blank = np.full_like(face, 127)
    # side by side: the real face on the left, an empty (faceless) right half
    cv2.imwrite(str(root / "swap" / "sbs.png"), cv2.cvtColor(np.hstack([face, blank]), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "gen" / "portrait.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    (root / "labels.csv").write_text(HEAD + "swap/sbs.png,fake,X,faceswap_x,o/r@1:a,image,g1\n"
                                     "gen/portrait.png,fake,Y,diffusion_y,o/r@2:b,image,g2\n")
    (root / "regions.csv").write_text("path,layout,fake_region,real_region\nswap/sbs.png,side_by_side_2panel,right_half,left_half\n")
    return root


def test_records_families_regions_and_matched_reals(tmp_path: Path):
    recs = read_fakes_dev(_layout(tmp_path / "fd"))
    by = {(r.label, r.method, r.extra.get("region")) for r in recs}
    assert by == {(1, "faceswap_x", "right_half"), (0, "real", "left_half"), (1, "diffusion_y", None)}
    assert {r.identity for r in recs} == {"g1", "g2"} and all(r.split == "test" for r in recs)
    assert len(read_fakes_dev(tmp_path / "fd", families=["diffusion_y"])) == 1
    assert len(read_fakes_dev(tmp_path / "fd", matched_reals=False)) == 2


def test_missing_files_and_layouts_are_clear_errors(tmp_path: Path):
    with pytest.raises(DatasetLayoutError, match="no labels.csv"):
        read_fakes_dev(tmp_path)
    root = _layout(tmp_path / "fd")
    (root / "gen" / "portrait.png").unlink()
    with pytest.raises(DatasetLayoutError, match="portrait.png: listed in labels.csv but missing"):
        read_fakes_dev(root)


def test_prepare_searches_only_the_named_half(tmp_path: Path):
    from trainer.prepare import load_manifest, prepare

    root = _layout(tmp_path / "fd")
    out = tmp_path / "prep"
    prepare(read_fakes_dev(root), out, frames_per_video=1)
    rows = load_manifest(out)
    found = {(r["label"], r["method"]) for r in rows}
    # the face sits in the left (real) half only: the right-half record finds no face
    assert (0, "real") in found and (1, "diffusion_y") in found and (1, "faceswap_x") not in found


def test_tpr_at_fpr():
    y = np.array([0] * 100 + [1] * 10)
    s = np.concatenate([np.linspace(0, 1, 100), np.linspace(0.5, 1.5, 10)])
    assert tpr_at_fpr(y, s, 0.01) == pytest.approx(0.5, abs=0.11)
    assert tpr_at_fpr(y, s + 10 * y, 0.01) == 1.0
    assert np.isnan(tpr_at_fpr(np.zeros(5), np.arange(5.0)))
