"""A copy of a bundle with its frame threshold moved to another false-positive rate on real calibration crops.

    .venv/bin/python benchmarks/rethreshold_bundle.py BUNDLE OUT --calib-data DIR [--calib-split val] --target-fpr 0.05

For operating-point studies (e.g. ``benchmarks/scan_fakes_dev.py --bundle OUT``) when the training checkpoint that
``fakewatch-train bundle`` would need is gone. The fake probabilities come from the serving path
(``trainer.bundle_scores.frame_probabilities``, as ``fakewatch-train bundle`` calibrates), the threshold from
``trainer.calibrate.threshold_at_fpr``. Only ``frame.threshold`` and ``version`` (suffixed ``-fprN``) change;
the model files are copied unchanged. It also prints the threshold at the bundle's own ``target_fpr``, which
must reproduce the shipped one (a check that the calibration data is the bundle's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def rethreshold(bundle: Path, out: Path, calib_data: Path, split: str | None, target_fpr: float) -> dict:
    from detectors.bundle import load_bundle
    from trainer.bundle_scores import frame_probabilities, load_items, open_scorers
    from trainer.calibrate import threshold_at_fpr

    src = load_bundle(bundle)
    if src.manifest.frame is None:
        raise SystemExit(f"{bundle}: no frame model to threshold")
    reals = [it for it in load_items(calib_data, [split] if split else None) if it.label == 0]
    if not reals:
        raise SystemExit(f"{calib_data} (split {split!r}): no real crops")
    with open_scorers(src) as (frame, _):
        p = frame_probabilities(frame, [it.path for it in reals], 32)
    man = json.loads((bundle / "manifest.json").read_text())
    own_fpr = ((man.get("provenance") or {}).get("target_fpr"))
    thr = threshold_at_fpr(p, target_fpr)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle, out)
    shipped = man["frame"]["threshold"]
    man["frame"]["threshold"] = thr
    man["version"] = f"{man['version']}-fpr{target_fpr * 100:g}"
    (out / "manifest.json").write_text(json.dumps(man, indent=2) + "\n")
    load_bundle(out)  # the copy still verifies
    return {"out": str(out), "n_real_crops": len(reals), "target_fpr": target_fpr, "threshold": thr,
            "shipped_threshold": shipped, "shipped_target_fpr": own_fpr,
            "threshold_at_shipped_fpr": None if own_fpr is None else threshold_at_fpr(p, float(own_fpr))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--calib-data", type=Path, required=True, help="prepared crops (fakewatch-train prepare / split)")
    p.add_argument("--calib-split", default="val")
    p.add_argument("--target-fpr", type=float, required=True)
    a = p.parse_args(argv)
    print(json.dumps(rethreshold(a.bundle, a.out, a.calib_data, a.calib_split, a.target_fpr), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
