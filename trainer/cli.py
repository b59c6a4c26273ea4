"""``fakewatch-train``: prepare data, train, evaluate, export and bundle models.

Commands::

    fakewatch-train prepare --dataset NAME --root DIR --out PREPARED      face crops + manifest
    fakewatch-train prior   [--config F] [--set k=v] [--images DIR]        pixel DDPM face prior
    fakewatch-train fit     --method anl|diffusionfake|difffake [--config F] [--set k=v] [--data PREPARED]
    fakewatch-train reconstruct --data PREPARED --ae DIR --out DIR        autoencoder pseudo-fakes (once per crop)
    fakewatch-train eval    --bundle DIR --data PREPARED [--data ...]      tables + plots
    fakewatch-train export  --checkpoint CK --out DIR                     ONNX (+fp16) with parity check
    fakewatch-train bundle  --out DIR [--frame CK] [--difffake CK] [--calib-data PREPARED]

Every command writes a run folder ``<runs>/<command or method>-<UTC timestamp>/`` with the resolved
configuration (``config.yaml``), the log (``log.txt``) and the result (``metrics.json``); training
methods put their own folder (checkpoints, ``metrics.jsonl``) inside it. Seeds are fixed from the
config (``seed``). Bad input (a missing or malformed file, a corrupt bundle, an unknown config key)
prints one line naming the file and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("fakewatch.trainer")

METHODS = ("anl", "diffusionfake", "difffake")
EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad command-line input; reported as one line, exit status 2."""


# --------------------------------------------------------------------------------------------
# run folders


class Run:
    """``<root>/<name>-<timestamp>/`` with config.yaml, log.txt and metrics.json."""

    def __init__(self, root: str | Path, name: str, config: dict[str, Any]):
        import yaml

        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        base = Path(root) / f"{name}-{stamp}"
        path, i = base, 1
        while path.exists():
            path = base.with_name(f"{base.name}-{i}")
            i += 1
        path.mkdir(parents=True)
        self.path = path
        (path / "config.yaml").write_text(yaml.safe_dump(_plain(config), sort_keys=False))
        self._handler = logging.FileHandler(path / "log.txt")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(self._handler)
        log.info("run folder %s", path)

    def finish(self, result: dict[str, Any]) -> None:
        (self.path / "metrics.json").write_text(json.dumps(_plain(result), indent=2) + "\n")
        log.info("done: %s", self.path / "metrics.json")
        logging.getLogger().removeHandler(self._handler)
        self._handler.close()


def _plain(v: Any) -> Any:
    """JSON/YAML-safe copy: paths to str, numpy scalars to Python, NaN to None."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("onnxscript", "onnx_ir", "torch", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --------------------------------------------------------------------------------------------
# models from checkpoints


def _method_module(method: str):
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")
    try:
        return importlib.import_module(f"trainer.{method}")
    except ImportError as e:
        raise UsageError(f"method {method!r} is not available in this build ({e})") from e


def _train_fn(method: str):
    mod = _method_module(method)
    fn = getattr(mod, f"train_{method}", None)
    if fn is None:
        raise UsageError(f"trainer.{method} has no train_{method}()")
    return fn


def load_checkpoint_model(path: str | Path) -> tuple[str, dict[str, Any], Any]:
    """(method, config, inference module) of a training checkpoint written by trainer.train_loop."""
    from trainer import train_loop as tl

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: checkpoint not found")
    try:
        ck = tl.load_checkpoint(p)
    except Exception as e:  # torch.load raises pickle/zip/runtime errors for foreign files
        raise UsageError(f"{p}: not a readable fakewatch checkpoint ({str(e).splitlines()[0][:200]})") from e
    method = ck.get("method")
    mod = _method_module(str(method))
    loader = getattr(mod, f"load_{method}", None)
    if loader is None:
        raise UsageError(f"trainer.{method} has no load_{method}() to rebuild {p}")
    model = loader(p)
    if hasattr(model, "export_module"):
        model = model.export_module()
    return str(method), dict(ck.get("config") or {}), model.eval()


def _model_geometry(cfg: dict[str, Any]) -> tuple[str, int]:
    m = cfg.get("model") or {}
    try:
        return str(m["backbone"]), int(m["image_size"])
    except KeyError as e:
        raise UsageError(f"checkpoint config lacks model.{e.args[0]}") from None


# --------------------------------------------------------------------------------------------
# scoring prepared crops with a bundle (same preprocessing as daemon.scoring.prepare)


def _model_input(paths: Sequence[Path], size: int, norm) -> np.ndarray:
    import cv2

    from detectors.preprocess import model_input

    arr = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise UsageError(f"{p}: crop image missing or unreadable")
        arr.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return model_input(arr, size, norm)


def _run_batched(rt, paths: Sequence[Path], size: int, norm, batch: int, desc: str) -> np.ndarray:
    from tqdm.auto import tqdm

    outs = []
    for i in tqdm(range(0, len(paths), batch), desc=desc, leave=False, disable=not sys.stderr.isatty()):
        outs.append(np.asarray(rt.run(_model_input(paths[i:i + batch], size, norm)), np.float32).reshape(len(paths[i:i + batch]), -1))
    return np.concatenate(outs) if outs else np.zeros((0, 1), np.float32)


def frame_probabilities(bundle, paths: Sequence[Path], batch: int = 32, runtime: str = "cpu") -> np.ndarray:
    from detectors.runtime import select_runtime

    spec = bundle.manifest.frame
    rt = select_runtime(bundle.frame_onnx, runtime, plan_dir=bundle.path("plans"))
    logits = _run_batched(rt, paths, spec.input_size, spec.normalisation, batch, "frame")[:, 0]
    return 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -60, 60)))


def embeddings(bundle, paths: Sequence[Path], batch: int = 32, runtime: str = "cpu") -> np.ndarray:
    from detectors.runtime import select_runtime

    spec = bundle.manifest.temporal
    rt = select_runtime(bundle.embed_onnx, runtime, plan_dir=bundle.path("plans"))
    return _run_batched(rt, paths, spec.input_size, spec.normalisation, batch, "embed")


def pair_indices(n: int, rng: np.random.Generator, k: int = 8) -> list[tuple[int, int]]:
    """DiffFake pairing of one video's n frames (methods.md §4.3), via trainer.difffake.make_pairs when present."""
    try:
        from trainer.difffake import make_pairs  # type: ignore[attr-defined]

        return [tuple(p) for p in make_pairs(n, rng=rng, k=k)]  # type: ignore[misc]
    except (ImportError, TypeError):
        pass
    if n < 2:
        return []
    order = rng.permutation(n)
    if n > 2 * k:
        base, pool = order[: n - k], order[n - k:]
    else:
        base, pool = order[: n // 2], order[n // 2:]
    return [(int(b), int(rng.choice(pool))) for b in base]


def temporal_video_logliks(bundle, items: list, batch: int = 32, seed: int = 0, runtime: str = "cpu", k: int = 8):
    """Per pair: (video uid, label, log-likelihood) for the bundle's DiffFake model over prepared crops."""
    from detectors.difffake import GmmScorer, combine

    spec = bundle.manifest.temporal
    tracks: dict[str, list] = {}
    for it in items:
        tracks.setdefault(it.video_uid, []).append(it)
    pairable = [uid for uid in sorted(tracks) if len(tracks[uid]) >= 2]
    if len(pairable) < len(tracks):  # single images (face datasets) have no pairs: one line, not one per image
        single = sorted(set(tracks) - set(pairable))
        log.info("DiffFake: %d of %d videos/tracks have fewer than 2 crops and give no pairs (e.g. %s)",
                 len(single), len(tracks), ", ".join(single[:3]))
    flat = [it for uid in pairable for it in tracks[uid]]  # only crops that can pair are embedded
    emb = embeddings(bundle, [it.path for it in flat], batch, runtime) if flat else None
    scorer = GmmScorer.from_arrays(bundle.load_gmm())
    rng = np.random.default_rng(seed)
    vids, labels, lls = [], [], []
    start = 0
    for uid in pairable:
        n = len(tracks[uid])
        pairs = pair_indices(n, rng, k)
        if pairs:
            a = emb[[start + i for i, _ in pairs]]
            b = emb[[start + j for _, j in pairs]]
            ll = scorer.score_samples(combine(a, b, spec.combination))
            vids += [uid] * len(ll)
            labels += [tracks[uid][0].label] * len(ll)
            lls.append(ll)
        start += n
    return np.asarray(vids), np.asarray(labels, np.int64), (np.concatenate(lls) if lls else np.zeros(0))


def _load_items(data: str | Path, splits: Sequence[str] | None):
    from trainer.torchdata import crop_items

    p = Path(data)
    if not (p / "manifest.jsonl").is_file():
        raise UsageError(f"{p / 'manifest.jsonl'}: missing (expected a folder written by 'fakewatch-train prepare')")
    from trainer.prepare import load_manifest

    try:
        rows = [r for r in load_manifest(p) if splits is None or r.get("split", "all") in splits]
        items = crop_items(rows)
        for it, r in zip(items, rows):
            it.frame = int(r.get("frame", 0))  # frame index within its video (SBI-style video score)
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise UsageError(f"{p / 'manifest.jsonl'}: malformed ({e})") from e
    if not items:
        raise UsageError(f"{p / 'manifest.jsonl'}: no crops{' in split(s) ' + ','.join(splits) if splits else ''}")
    return items


def _test_sets(items: list, group_by: str) -> dict[str, list]:
    groups: dict[str, list] = {}
    if group_by == "dataset":
        for it in items:
            groups.setdefault(it.dataset or "data", []).append(it)
        return groups
    # dataset+method: each fake method against all reals of its dataset (FF++ per-manipulation protocol)
    by_ds: dict[str, list] = {}
    for it in items:
        by_ds.setdefault(it.dataset or "data", []).append(it)
    for ds, its in by_ds.items():
        reals = [it for it in its if it.label == 0]
        methods = sorted({it.method for it in its if it.label == 1})
        for m in methods or ["real"]:
            groups[f"{ds}/{m}"] = reals + [it for it in its if it.label == 1 and it.method == m]
    return groups


def evaluate_bundle(bundle, items: list, out_dir: Path, group_by: str = "dataset", batch: int = 32,
                    runtime: str = "cpu", seed: int = 0) -> list[dict[str, Any]]:
    from trainer.evaluate import ScoreSet, write_report

    rows: list[dict[str, Any]] = []
    m = bundle.manifest
    for name, its in _test_sets(items, group_by).items():
        safe = name.replace("/", "_")
        if m.frame is not None:
            probs = frame_probabilities(bundle, [it.path for it in its], batch, runtime)
            ss = ScoreSet(name, probs, np.array([it.label for it in its]), np.array([it.video_uid for it in its]),
                          frames=np.array([int(getattr(it, "frame", 0)) for it in its]),
                          kind="probability", method=m.frame.method)
            ss.save_npz(out_dir / f"scores_frame_{safe}.npz")
            rows += [dict(r, model="frame") for r in write_report([ss], out_dir / "frame" / safe, m.frame.threshold)]
        if m.temporal is not None:
            vids, labels, ll = temporal_video_logliks(bundle, its, batch, seed, runtime)
            if ll.size:
                ss = ScoreSet(name, -ll, labels, vids, kind="fakeness", method=m.temporal.method)
                ss.save_npz(out_dir / f"scores_temporal_{safe}.npz")
                rows += [dict(r, model="temporal")
                         for r in write_report([ss], out_dir / "temporal" / safe, m.temporal.threshold)]
    from trainer.evaluate import write_table

    write_table(rows, out_dir)
    (out_dir / "metrics_all.json").write_text(json.dumps(_plain(rows), indent=2) + "\n")
    return rows


# --------------------------------------------------------------------------------------------
# commands


def cmd_prepare(a: argparse.Namespace) -> dict[str, Any]:
    from trainer.data.registry import load_records
    from trainer.prepare import prepare

    kwargs = {}
    for kv in a.reader_arg or []:
        if "=" not in kv:
            raise UsageError(f"--reader-arg {kv!r} must look like key=value")
        k, v = kv.split("=", 1)
        import yaml

        kwargs[k] = yaml.safe_load(v)
    root = Path(a.root)
    if not root.exists():
        raise UsageError(f"{root}: dataset root not found")
    try:
        records = load_records(a.dataset, root, **kwargs)
    except KeyError as e:  # unknown dataset name
        raise UsageError(str(e.args[0])) from e
    except TypeError as e:  # a --reader-arg the reader does not take
        raise UsageError(f"--reader-arg: {e}") from e
    if a.max_records:
        records = records[: a.max_records]
    summary = prepare(records, a.out, frames_per_video=a.frames, face_policy=a.face_policy,
                      min_rel_area=a.min_rel_area, image_format=a.format, limit=a.limit,
                      crops_given=a.crops_given, progress=sys.stderr.isatty())
    print(summary)
    from dataclasses import asdict

    return asdict(summary)


def cmd_prior(a: argparse.Namespace, cfg: dict[str, Any], run: Run) -> dict[str, Any]:
    from trainer.prior import train_prior

    cfg["out_dir"] = str(run.path / "prior")
    if a.images:
        cfg.setdefault("data", {}).setdefault("image_dirs", [])
        cfg["data"]["image_dirs"] = list(cfg["data"].get("image_dirs") or []) + list(a.images)
    folder = train_prior(cfg)
    return {"prior": str(folder)}


def cmd_fit(a: argparse.Namespace, cfg: dict[str, Any], run: Run) -> dict[str, Any]:
    fn = _train_fn(a.method)
    cfg["out_dir"] = str(run.path)
    cfg["run_name"] = "fit"
    data = cfg.get("data") or {}
    if data.get("crops"):
        # Build the datasets here, exactly as the methods do by default, and pass them in: DiffFake's
        # stage 2 (GMM fit + calibration) needs the dataset's crop items, which it only sees this way.
        from trainer import train_loop as tl

        size, seed = int(cfg["model"]["image_size"]), int(cfg.get("seed", 0))
        ds = tl.build_pair_dataset(data, "train", size, seed)
        val = tl.build_pair_dataset(data, "val", size, seed) if data.get("val", False) else None
        log.info("pseudo-fake pairs (%s) from %s: %d train crops%s", data.get("kind", "sbi"), data["crops"], len(ds),
                 f", {len(val)} val crops" if val is not None else "")
        out = fn(cfg, ds, val)
    else:
        out = fn(cfg)
    result: dict[str, Any] = {"method": a.method, "output": str(out)}
    ckdir = Path(out).parent if Path(out).suffix else Path(out)
    mfile = ckdir / "metrics.jsonl"
    if mfile.is_file():
        rows = [json.loads(x) for x in mfile.read_text().splitlines() if x.strip()]
        if rows:
            result["last"] = rows[-1]
    print(f"checkpoint: {out}")
    return result


def cmd_reconstruct(a: argparse.Namespace) -> dict[str, Any]:
    from trainer.prepare import load_manifest
    from trainer.reconstruct import reconstruct_crops

    splits = set(a.split or ["train", "val"])
    rows = [r for r in load_manifest(a.data) if int(r.get("label", 0)) == 0 and r.get("split", "all") in splits]
    if not rows:
        raise UsageError(f"{a.data}: no real crops in splits {sorted(splits)}")
    return reconstruct_crops(rows, a.out, a.ae, latent_noise=a.latent_noise, threads=a.threads, seed=a.seed,
                             limit=a.limit)


def cmd_eval(a: argparse.Namespace) -> dict[str, Any]:
    from detectors.bundle import load_bundle

    bundle = load_bundle(a.bundle)
    items = []
    for d in a.data:
        items += _load_items(d, a.split or None)
    out = Path(a.out) if a.out else a._run.path / "eval"
    out.mkdir(parents=True, exist_ok=True)
    rows = evaluate_bundle(bundle, items, out, a.group_by, a.batch, a.runtime, a.seed)
    print((out / "metrics.md").read_text())
    return {"bundle": str(bundle.root), "bundle_version": bundle.version_string, "out": str(out), "rows": rows}


def cmd_export(a: argparse.Namespace) -> dict[str, Any]:
    from trainer.export import export_model

    method, cfg, model = load_checkpoint_model(a.checkpoint)
    _, size = _model_geometry(cfg)
    kind = "embed" if method == "difffake" else "frame"
    model = _difffake_embedder(model) if method == "difffake" else model
    info = export_model(model, a.out, size, kind=kind, fp16=not a.no_fp16, tol=a.tol,
                        dynamo=a.exporter == "dynamo")
    return {"method": method, **info}


def _difffake_embedder(model):
    """The embedding module of a DiffFake stage-1 model (an Embedder, or an object holding one)."""
    from detectors.models import Embedder

    if isinstance(model, Embedder):
        return model
    for attr in ("embedder", "backbone_model", "model"):
        sub = getattr(model, attr, None)
        if isinstance(sub, Embedder):
            return sub
    return model


def _difffake_gmm(ck_path: Path, gmm_path: str | None) -> dict[str, np.ndarray]:
    if gmm_path:
        p = Path(gmm_path)
        try:
            with np.load(p) as z:
                return {k: z[k] for k in ("weights", "means", "precisions_cholesky")}
        except (OSError, KeyError, ValueError) as e:
            raise UsageError(f"{p}: expected an .npz with weights, means, precisions_cholesky ({e})") from e
    for cand in (ck_path.parent / "gmm.npz", ck_path.with_suffix(".gmm.npz")):
        if cand.is_file():
            return _difffake_gmm(ck_path, str(cand))
    from trainer import train_loop as tl

    ck = tl.load_checkpoint(ck_path)
    g = ck.get("gmm")
    if isinstance(g, dict) and {"weights", "means", "precisions_cholesky"} <= set(g):
        return {k: np.asarray(g[k]) for k in ("weights", "means", "precisions_cholesky")}
    raise UsageError(f"{ck_path}: no GMM found (pass --gmm FILE.npz or put gmm.npz beside the checkpoint)")


def _fit_fusion(b, frame, temporal, items: list, a: argparse.Namespace, pair_k: int) -> dict[str, Any]:
    """Manifest ``fusion`` from labeled validation crops (reals + fakes, grouped into videos), scored with the
    provisional bundle ``b`` (the serving ONNX path); see :func:`trainer.calibrate.fusion_weights`."""
    from trainer import calibrate as cal
    from trainer.evaluate import auc, video_scores

    labels = np.array([it.label for it in items])
    if len(set(labels.tolist())) < 2:
        raise UsageError(f"{a.fusion_data}: fusion data needs real and fake crops")
    comps: dict[str, dict[str, Any]] = {}
    if frame is not None:
        p = frame_probabilities(b, [it.path for it in items], a.batch)
        vid, vy, vs = video_scores(np.array([it.video_uid for it in items]), labels, p)
        comps["frame"] = {"video_auc": auc(vy, vs) if len(set(vy.tolist())) == 2 else float("nan"),
                          "n_real_videos": int((vy == 0).sum()), "n_fake_videos": int((vy == 1).sum())}
    if temporal is not None:
        vids, vlab, ll = temporal_video_logliks(b, items, a.batch, a.seed, k=pair_k)
        per: dict[str, list] = {}
        for v, y, x in zip(vids, vlab, ll):
            per.setdefault(v, [int(y), []])[1].append(float(x))
        vy = np.array([y for y, _ in per.values()], int)
        vs = np.array([-np.mean(x) for _, x in per.values()])  # fakeness = -mean pair log-likelihood
        comps["temporal"] = {"video_auc": auc(vy, vs) if vy.size and len(set(vy.tolist())) == 2 else float("nan"),
                             "n_real_videos": int((vy == 0).sum()), "n_fake_videos": int((vy == 1).sum())}
    out = cal.fusion_weights(comps, a.fusion_min_videos)
    out["fitted_on"] = f"{a.fusion_data} (split {a.fusion_split or 'all'})"
    return out


def cmd_bundle(a: argparse.Namespace) -> dict[str, Any]:
    from detectors.bundle import FrameModelSpec, TemporalModelSpec
    from trainer import calibrate as cal
    from trainer import export as ex

    if not a.frame and not a.difffake:
        raise UsageError("bundle needs --frame CHECKPOINT, --difffake CHECKPOINT or both")
    work = a._run.path / "export"
    metrics: dict[str, Any] = {}
    provenance: dict[str, Any] = {"created_by": "fakewatch-train bundle", "calibration_data": a.calib_data,
                                  "calibration_split": a.calib_split, "target_fpr": a.target_fpr}
    from detectors.bundle import sha256_file

    calib_items = _load_items(a.calib_data, [a.calib_split] if a.calib_split else None) if a.calib_data else None
    frame = temporal = None
    pair_k = 8
    if a.frame:
        method, cfg, model = load_checkpoint_model(a.frame)
        if method == "difffake":
            raise UsageError(f"{a.frame}: a DiffFake checkpoint was given as --frame (use --difffake)")
        backbone, size = _model_geometry(cfg)
        info = ex.export_model(model, work / "frame", size, kind="frame", fp16=not a.no_fp16, tol=a.tol,
                               dynamo=a.exporter == "dynamo")
        spec = FrameModelSpec(method=method, backbone=backbone, input_size=size, version=a.version)
        metrics["frame_export"] = info
        provenance["frame"] = {"checkpoint": str(a.frame), "sha256": sha256_file(Path(a.frame)),
                               "data": cfg.get("data"), "seed": cfg.get("seed")}
        frame = ex.FrameArtifact(Path(info["path"]), spec, Path(info["fp16_path"]) if "fp16_path" in info else None)
    if a.difffake:
        method, cfg, model = load_checkpoint_model(a.difffake)
        backbone, size = _model_geometry(cfg)
        info = ex.export_model(_difffake_embedder(model), work / "embed", size, kind="embed", fp16=False, tol=a.tol,
                               dynamo=a.exporter == "dynamo")
        spec = TemporalModelSpec(method="difffake", backbone=backbone, input_size=size, version=a.version)
        g = cfg.get("gmm") if isinstance(cfg.get("gmm"), dict) else {}
        if g.get("differential") is False:
            raise UsageError(f"{a.difffake}: GMM fitted on single frames (gmm.differential=false); "
                             "bundles serve the pair (differential) model only")
        spec.combination = str(g.get("combination", spec.combination))
        pair_k = int(g.get("pair_k", 8))
        calib_json = Path(a.difffake).parent / "calibration.json"
        if calib_items is None and calib_json.is_file():  # written by trainer.difffake.train_difffake
            c = (json.loads(calib_json.read_text()).get("calibration") or {})
            if c:
                spec.threshold = float(c["threshold"])
                spec.loglik_real_mean = float(c["loglik_real_mean"])
                spec.loglik_real_std = float(c["loglik_real_std"])
                metrics["temporal_calibration"] = {"source": calib_json.name, **c}
        metrics["embed_export"] = info
        provenance["temporal"] = {"checkpoint": str(a.difffake), "sha256": sha256_file(Path(a.difffake)),
                                  "data": cfg.get("data"), "seed": cfg.get("seed")}
        temporal = ex.TemporalArtifact(Path(info["path"]), spec, _difffake_gmm(Path(a.difffake), a.gmm))
    # a provisional bundle to score the calibration data with the exact serving path (ONNX Runtime)
    b = ex.build_bundle(work / "provisional", frame=frame, temporal=temporal, name=a.name, version=a.version)
    if calib_items is not None:
        reals = [it for it in calib_items if it.label == 0]
        if not reals:
            raise UsageError(f"{a.calib_data}: no real crops in split {a.calib_split!r} to calibrate on")
        from trainer.evaluate import ScoreSet, evaluate_set

        if frame is not None:
            p = frame_probabilities(b, [it.path for it in calib_items], a.batch)
            y = np.array([it.label for it in calib_items])
            frame.spec.threshold = cal.threshold_at_fpr(p[y == 0], a.target_fpr)
            metrics["frame_calibration"] = {"threshold": frame.spec.threshold, "target_fpr": a.target_fpr,
                                            "n_real_crops": int((y == 0).sum())}
            if len(set(y.tolist())) == 2:
                vids = np.array([it.video_uid for it in calib_items])
                metrics["frame_val"] = evaluate_set(ScoreSet("calibration", p, y, vids), frame.spec.threshold)
        if temporal is not None:
            vids, _, ll = temporal_video_logliks(b, reals, a.batch, a.seed, k=pair_k)
            if ll.size == 0:
                raise UsageError(f"{a.calib_data}: no real video with >= 2 crops to calibrate DiffFake on")
            st = cal.temporal_stats(ll, vids, a.target_fpr)
            temporal.spec.threshold = st["threshold"]
            temporal.spec.loglik_real_mean = st["loglik_real_mean"]
            temporal.spec.loglik_real_std = st["loglik_real_std"]
            metrics["temporal_calibration"] = st
    fusion = None
    if a.fusion_data:
        fusion = _fit_fusion(b, frame, temporal, _load_items(a.fusion_data, [a.fusion_split] if a.fusion_split else None),
                             a, pair_k)
        metrics["fusion"] = fusion
    bundle = ex.build_bundle(a.out, frame=frame, temporal=temporal, name=a.name, version=a.version,
                             provenance=_plain(provenance), metrics=_plain(metrics), fusion=_plain(fusion))
    print(f"bundle {bundle.version_string} written to {bundle.root}")
    return {"bundle": str(bundle.root), "files": bundle.manifest.files, **metrics}


# --------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fakewatch-train", description=__doc__.split("\n\n")[0].replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--runs", default="runs", help="parent folder of run folders (default: runs)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for bad input")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cfg_args(sp):
        sp.add_argument("--config", help="YAML config merged over trainer/configs/<method>.yaml")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (dotted, value parsed as YAML); repeatable")

    sp = sub.add_parser("prepare", help="extract aligned face crops + manifest from a dataset")
    sp.add_argument("--dataset", required=True, help="dataset reader: ffpp, celebdf, dfdc, dfdcp, dfd, faceshifter, "
                    "wilddeepfake, generic (real/ + fake/ folders), shared (../shared/data)")
    sp.add_argument("--root", required=True, help="dataset root folder")
    sp.add_argument("--out", required=True, help="prepared-crops folder (resumable)")
    sp.add_argument("--frames", type=int, default=32, help="evenly spaced frames per video (default 32)")
    sp.add_argument("--face-policy", choices=("largest", "all"), default="largest")
    sp.add_argument("--min-rel-area", type=float, default=0.5)
    sp.add_argument("--format", choices=("png", "jpg"), default="png")
    sp.add_argument("--limit", type=int, default=None, help="process at most N new items, then stop")
    sp.add_argument("--max-records", type=int, default=0, help="use only the first N records (smoke runs)")
    sp.add_argument("--crops-given", action="store_true", help="images are already face crops")
    sp.add_argument("--reader-arg", action="append", metavar="KEY=VALUE", help="keyword argument of the reader")

    sp = sub.add_parser("prior", help="train the pixel DDPM face prior (trainer/configs/prior.yaml)")
    cfg_args(sp)
    sp.add_argument("--data", help="prepared-crops folder (sets data.crops; its real crops are used)")
    sp.add_argument("--images", action="append", help="folder of real face crops (appended to data.image_dirs)")

    sp = sub.add_parser("fit", help="train a method (trainer/configs/<method>.yaml)")
    sp.add_argument("--method", required=True, choices=METHODS)
    cfg_args(sp)
    sp.add_argument("--data", help="prepared-crops folder (sets data.crops); its real crops make the "
                    "pseudo-fake pairs, split by the manifest or identity-disjoint (data.val_fraction)")

    sp = sub.add_parser("reconstruct", help="autoencoder reconstructions of real crops (recon/regen pseudo-fakes)")
    sp.add_argument("--data", required=True, help="prepared-crops folder (its real crops of --split)")
    sp.add_argument("--ae", required=True, help="folder with taef2_encoder.pth + taef2_decoder.pth (local)")
    sp.add_argument("--out", required=True, help="output folder (resumable; index.json)")
    sp.add_argument("--split", action="append", help="manifest split(s) (default: train and val)")
    sp.add_argument("--latent-noise", type=float, default=0.35, help="std of latent noise for regen/ (0 = none)")
    sp.add_argument("--threads", type=int, default=1)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--limit", type=int, default=None, help="stop after N crops in the index")

    sp = sub.add_parser("eval", help="evaluate a bundle on prepared test data: tables and plots")
    sp.add_argument("--bundle", required=True)
    sp.add_argument("--data", required=True, action="append", help="prepared-crops folder; repeatable")
    sp.add_argument("--split", action="append", help="manifest split(s) to use (default: all)")
    sp.add_argument("--group-by", choices=("dataset", "dataset+method"), default="dataset",
                    help="test sets: per dataset, or per fake method against the dataset's reals (FF++ protocol)")
    sp.add_argument("--out", help="output folder (default: <run>/eval)")
    sp.add_argument("--batch", type=int, default=32)
    sp.add_argument("--runtime", default="cpu", choices=("auto", "cpu", "cuda", "tensorrt"))
    sp.add_argument("--seed", type=int, default=0, help="seed of DiffFake pair sampling")

    sp = sub.add_parser("export", help="export a checkpoint to ONNX (+ fp16) with a parity check")
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--no-fp16", action="store_true")
    sp.add_argument("--tol", type=float, default=1e-4, help="max abs error vs PyTorch (fp32)")
    sp.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                    help="torch.onnx exporter (dynamo falls back to torchscript on failure)")

    sp = sub.add_parser("bundle", help="assemble a bundle from a frame checkpoint and/or a DiffFake checkpoint")
    sp.add_argument("--out", required=True)
    sp.add_argument("--frame", help="ANL or DiffusionFake checkpoint")
    sp.add_argument("--difffake", help="DiffFake stage-1 checkpoint (embedder)")
    sp.add_argument("--gmm", help="DiffFake GMM .npz (default: gmm.npz beside the checkpoint or inside it)")
    sp.add_argument("--calib-data", help="prepared-crops folder for threshold calibration")
    sp.add_argument("--calib-split", default="val", help="manifest split used for calibration ('' = all)")
    sp.add_argument("--target-fpr", type=float, default=0.01, help="false-positive rate on calibration reals")
    sp.add_argument("--fusion-data", help="prepared crops with reals AND fakes (validation identities) to fit the "
                    "fusion weights from each model's measured video AUC (manifest 'fusion')")
    sp.add_argument("--fusion-split", default="", help="manifest split of --fusion-data ('' = all)")
    sp.add_argument("--fusion-min-videos", type=int, default=5,
                    help="videos per class a component must be measured on to get any weight (default 5)")
    sp.add_argument("--name", default="fakewatch")
    sp.add_argument("--version", default="0")
    sp.add_argument("--no-fp16", action="store_true")
    sp.add_argument("--tol", type=float, default=1e-4)
    sp.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo")
    sp.add_argument("--batch", type=int, default=32)
    sp.add_argument("--seed", type=int, default=0)
    return p


def _bad_input_types() -> tuple[type[BaseException], ...]:
    from detectors.bundle import BundleError
    from detectors.runtime import RuntimeError_
    from trainer.evaluate import EvalError
    from trainer.export import ExportError
    from trainer.train_loop import ConfigError

    types: list[type[BaseException]] = [UsageError, BundleError, ConfigError, EvalError, ExportError, RuntimeError_,
                                        FileNotFoundError]
    try:
        from trainer.data.records import DatasetLayoutError

        types.append(DatasetLayoutError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    bad = _bad_input_types()
    run: Run | None = None
    try:
        if args.command in ("prior", "fit"):
            from trainer import train_loop as tl

            method = "prior" if args.command == "prior" else args.method
            cfg = tl.load_config(method, args.config, args.set)
            tl.seed_everything(int(cfg.get("seed", 0)))
            if args.command == "fit":
                cfg["out_dir"], cfg["run_name"] = "<run folder>", "fit"  # set below; recorded for clarity
            if args.data:
                manifest = Path(args.data) / "manifest.jsonl"
                if not manifest.is_file():
                    raise UsageError(f"{manifest}: missing (expected a folder written by 'fakewatch-train prepare')")
                cfg.setdefault("data", {})["crops"] = str(args.data)
            run = Run(args.runs, method, {"command": args.command, **cfg})
            result = (cmd_prior if args.command == "prior" else cmd_fit)(args, cfg, run)
        else:
            config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
            run = Run(args.runs, args.command, config)
            args._run = run
            result = {"prepare": cmd_prepare, "reconstruct": cmd_reconstruct, "eval": cmd_eval, "export": cmd_export, "bundle": cmd_bundle}[args.command](args)
        run.finish({"command": args.command, **result})
        print(f"run folder: {run.path}")
        return 0
    except bad as e:
        if args.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        log.debug("bad input", exc_info=True)
        if run is not None:
            run.finish({"command": args.command, "error": msg})
        print(f"fakewatch-train {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
