"""Checkpoints -> a calibrated bundle (``fakewatch-train bundle``).

1. each checkpoint is rebuilt by its registered method (:mod:`trainer.methods`) and exported with a parity
   check (:func:`trainer.export.export_model`): a ``frame`` method's detector as ``frame.onnx``, DiffFake's
   embedder as ``embed.onnx`` beside its GMM;
2. a provisional bundle is written and scored on the calibration crops with the serving scorers
   (:func:`trainer.calibrate.calibrate_bundle`), and on labeled validation crops for the fusion weights
   (:func:`trainer.calibrate.fit_fusion`); without calibration data, DiffFake's own ``calibration.json``
   (written by its training) is used;
3. the final bundle gets the thresholds, the fusion, provenance, metrics and the crop geometry the models'
   training data was prepared with (:func:`crop_spec`), so the daemon cuts the same crops.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from detectors.bundle import Bundle, CropSpec, FrameModelSpec, TemporalModelSpec, sha256_file
from trainer import export as ex
from trainer.export import ExportError

log = logging.getLogger("fakewatch.trainer")

GMM_KEYS = ("weights", "means", "precisions_cholesky")


def difffake_gmm(ck_path: Path, gmm_path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The DiffFake GMM arrays: ``gmm_path``, else ``gmm.npz`` (or ``<checkpoint>.gmm.npz``) beside the
    checkpoint, else a ``gmm`` entry inside it."""
    if gmm_path:
        p = Path(gmm_path)
        try:
            with np.load(p) as z:
                return {k: z[k] for k in GMM_KEYS}
        except (OSError, KeyError, ValueError) as e:
            raise ExportError(f"{p}: expected an .npz with weights, means, precisions_cholesky ({e})") from e
    for cand in (ck_path.parent / "gmm.npz", ck_path.with_suffix(".gmm.npz")):
        if cand.is_file():
            return difffake_gmm(ck_path, cand)
    from trainer import train_loop as tl

    g = tl.load_checkpoint(ck_path).get("gmm")
    if isinstance(g, dict) and set(GMM_KEYS) <= set(g):
        return {k: np.asarray(g[k]) for k in GMM_KEYS}
    raise ExportError(f"{ck_path}: no GMM found (pass --gmm FILE.npz or put gmm.npz beside the checkpoint)")


def _trained_on(checkpoint: str | Path) -> dict[str, Any]:
    """``{"machine": ...}``: the ``machine.json`` of the ``fakewatch-train fit`` run folder that wrote the checkpoint
    (``<run>/fit/<checkpoint>``), or nothing for a checkpoint from elsewhere (a soup, an older run)."""
    m = Path(checkpoint).resolve().parent.parent / "machine.json"
    try:
        return {"machine": json.loads(m.read_text())} if m.is_file() else {}
    except (OSError, ValueError):
        return {}


def crop_spec(prepared: list[tuple[str, str | Path | None]]) -> tuple[CropSpec, str]:
    """The crop geometry of the prepared folders ``[(what, folder)]`` the bundle's models were trained and
    calibrated on (:func:`trainer.prepare.crop_geometry`), and where it came from. Folders that are unset,
    gone, or hold given (not aligned) crops say nothing; two that disagree are an error. When none says
    anything: the default :class:`~detectors.bundle.CropSpec` (256 px, scale 1.3, the face pipeline's
    default and what every bundle before this record was made with)."""
    from trainer.prepare import crop_geometry

    seen: dict[tuple[int, float], list[str]] = {}
    for what, folder in prepared:
        if not folder or not Path(folder).is_dir():
            continue
        try:
            g = crop_geometry(folder)
        except ValueError as e:
            raise ExportError(str(e)) from e
        if g is not None:
            seen.setdefault(g, []).append(f"{what} {folder}")
    if len(seen) > 1:
        raise ExportError("the bundle's data was prepared with different crop geometries: "
                          + "; ".join(f"{size}px/scale {scale} ({', '.join(w)})" for (size, scale), w in seen.items()))
    if not seen:
        log.info("no prepared crop folder of the models found: manifest crop = the default %s", CropSpec())
        return CropSpec(), "default (no prepared crop folder with aligned crops found)"
    (size, scale), where = next(iter(seen.items()))
    return CropSpec(size=size, scale=scale), "prepared data: " + ", ".join(where)


def build_from_checkpoints(out: str | Path, work: Path, *, frame: str | None = None, difffake: str | None = None,
                           gmm: str | None = None, calib_items: list | None = None, calib_data: str | None = None,
                           calib_split: str = "val", target_fpr: float = 0.01, fusion_items: list | None = None,
                           fusion_data: str | None = None, fusion_split: str = "", fusion_min_videos: int = 5,
                           name: str = "fakewatch", version: str = "0", fp16: bool = True, tol: float = 1e-4,
                           dynamo: bool = True, batch: int = 32, seed: int = 0) -> tuple[Bundle, dict[str, Any]]:
    """Export, calibrate and assemble (see the module docstring); returns the final bundle and its metrics.
    ``work``: a scratch folder for the exports and the provisional bundle."""
    from trainer import calibrate as cal
    from trainer.methods import load_inference_model, model_geometry

    if not frame and not difffake:
        raise ExportError("bundle needs --frame CHECKPOINT, --difffake CHECKPOINT or both")
    metrics: dict[str, Any] = {}
    provenance: dict[str, Any] = {"created_by": "fakewatch-train bundle", "calibration_data": calib_data,
                                  "calibration_split": calib_split, "target_fpr": target_fpr}
    prepared: list[tuple[str, str | Path | None]] = []
    frame_art = temporal_art = None
    pair_k = 8
    if frame:
        method, cfg, model = load_inference_model(frame)
        if method.output != "frame":
            raise ExportError(f"{frame}: a {method.name} checkpoint ({method.output} model) was given as --frame "
                              "(use --difffake)")
        backbone, size = model_geometry(cfg)
        info = ex.export_model(model, work / "frame", size, kind="frame", fp16=fp16, tol=tol, dynamo=dynamo)
        spec = FrameModelSpec(method=method.name, backbone=backbone, input_size=size, version=version)
        metrics["frame_export"] = info
        provenance["frame"] = {"checkpoint": str(frame), "sha256": sha256_file(Path(frame)),
                               "data": cfg.get("data"), "seed": cfg.get("seed"),
                               **({"soup": cfg["soup"]} if cfg.get("soup") else {}), **_trained_on(frame)}
        prepared.append(("frame training data", (cfg.get("data") or {}).get("crops")))
        frame_art = ex.FrameArtifact(Path(info["path"]), spec, Path(info["fp16_path"]) if "fp16_path" in info else None)
    if difffake:
        method, cfg, model = load_inference_model(difffake)
        if method.output != "embed":
            raise ExportError(f"{difffake}: a {method.name} checkpoint ({method.output} model) was given as --difffake")
        backbone, size = model_geometry(cfg)
        info = ex.export_model(model, work / "embed", size, kind="embed", fp16=False, tol=tol, dynamo=dynamo)
        spec = TemporalModelSpec(method=method.name, backbone=backbone, input_size=size, version=version)
        g = cfg.get("gmm") if isinstance(cfg.get("gmm"), dict) else {}
        if g.get("differential") is False:
            raise ExportError(f"{difffake}: GMM fitted on single frames (gmm.differential=false); "
                              "bundles serve the pair (differential) model only")
        spec.combination = str(g.get("combination", spec.combination))
        pair_k = int(g.get("pair_k", 8))
        calib_json = Path(difffake).parent / "calibration.json"
        if calib_items is None and calib_json.is_file():  # written by trainer.difffake.train_difffake
            c = json.loads(calib_json.read_text()).get("calibration") or {}
            if c:
                spec.threshold = float(c["threshold"])
                spec.loglik_real_mean = float(c["loglik_real_mean"])
                spec.loglik_real_std = float(c["loglik_real_std"])
                metrics["temporal_calibration"] = {"source": calib_json.name, **c}
        metrics["embed_export"] = info
        provenance["temporal"] = {"checkpoint": str(difffake), "sha256": sha256_file(Path(difffake)),
                                  "data": cfg.get("data"), "seed": cfg.get("seed"), **_trained_on(difffake)}
        prepared.append(("DiffFake training data", (cfg.get("data") or {}).get("crops")))
        temporal_art = ex.TemporalArtifact(Path(info["path"]), spec, difffake_gmm(Path(difffake), gmm))
    prepared.append(("calibration data", calib_data if calib_items is not None else None))
    crop, crop_source = crop_spec(prepared)
    provenance["crop"] = {**asdict(crop), "source": crop_source}
    # a provisional bundle to score the calibration data with the exact serving path
    b = ex.build_bundle(work / "provisional", frame=frame_art, temporal=temporal_art, name=name, version=version,
                        crop=crop)
    if calib_items is not None:
        c = cal.calibrate_bundle(b, calib_items, target_fpr, batch, seed, pair_k,
                                 where=f"{calib_data} (split {calib_split!r})")
        if frame_art is not None:
            frame_art.spec.threshold = c["frame_calibration"]["threshold"]
        if temporal_art is not None:
            st = c["temporal_calibration"]
            temporal_art.spec.threshold = st["threshold"]
            temporal_art.spec.loglik_real_mean = st["loglik_real_mean"]
            temporal_art.spec.loglik_real_std = st["loglik_real_std"]
        metrics.update(c)
    fusion = None
    if fusion_items is not None:
        fusion = cal.fit_fusion(b, fusion_items, batch, seed, pair_k, fusion_min_videos, where=str(fusion_data))
        fusion["fitted_on"] = f"{fusion_data} (split {fusion_split or 'all'})"
        metrics["fusion"] = fusion
    from trainer.runs import plain

    bundle = ex.build_bundle(out, frame=frame_art, temporal=temporal_art, name=name, version=version, crop=crop,
                             provenance=plain(provenance), metrics=plain(metrics), fusion=plain(fusion))
    return bundle, metrics
