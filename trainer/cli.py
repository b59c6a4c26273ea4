"""``fakewatch-train``: prepare data, train, evaluate, export and bundle models.

Commands::

    fakewatch-train prepare --dataset NAME --root DIR --out PREPARED      face crops + manifest
    fakewatch-train prior   [--config F] [--set k=v] [--images DIR]        pixel DDPM face prior
    fakewatch-train fit     --method anl|diffusionfake|difffake [--config F] [--set k=v] [--data PREPARED]
    fakewatch-train reconstruct --data PREPARED --ae DIR --out DIR        autoencoder pseudo-fakes (once per crop)
    fakewatch-train eval    --bundle DIR --data PREPARED [--data ...]      tables + plots
    fakewatch-train export  --checkpoint CK --out DIR                     ONNX (+fp16) with parity check
    fakewatch-train bundle  --out DIR [--frame CK] [--difffake CK] [--calib-data PREPARED]
    fakewatch-train soup    CK [CK ...] [--onnx-frame FILE] --out CK       weight average of frame detectors
    fakewatch-train combine --bundle B --out DIR [--member M] [--hflip] [--temporal B2]   logit ensemble / flip averaging

Every command writes a run folder ``<runs>/<command or method>-<UTC timestamp>/`` with the resolved
configuration (``config.yaml``), the log (``log.txt``) and the result (``metrics.json``); training
methods put their own folder (checkpoints, ``metrics.jsonl``) inside it. Seeds are fixed from the
config (``seed``). Bad input (a missing or malformed file, a corrupt bundle, an unknown config key)
prints one line naming the file and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.runs import RunFolder

log = logging.getLogger("fakewatch.trainer")

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad command-line input; reported as one line, exit status 2."""


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
# commands (each returns the result recorded in the run folder's metrics.json)


def cmd_prepare(a: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import asdict

    import yaml

    from trainer.data.registry import load_records
    from trainer.prepare import prepare

    kwargs = {}
    for kv in a.reader_arg or []:
        if "=" not in kv:
            raise UsageError(f"--reader-arg {kv!r} must look like key=value")
        k, v = kv.split("=", 1)
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
    return asdict(summary)


def cmd_prior(a: argparse.Namespace, cfg: dict[str, Any], run: RunFolder) -> dict[str, Any]:
    from trainer.prior import train_prior

    cfg["out_dir"] = str(run.path / "prior")
    if a.images:
        data = cfg.setdefault("data", {})
        data["image_dirs"] = list(data.get("image_dirs") or []) + list(a.images)
    return {"prior": str(train_prior(cfg))}


def cmd_fit(a: argparse.Namespace, cfg: dict[str, Any], run: RunFolder) -> dict[str, Any]:
    from trainer.methods import get_method

    method = get_method(a.method)
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
        out = method.train(cfg, ds, val)
    else:
        out = method.train(cfg)
    result: dict[str, Any] = {"method": a.method, "output": str(out)}
    mfile = (Path(out).parent if Path(out).suffix else Path(out)) / "metrics.jsonl"
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


def cmd_landmark_model(a: argparse.Namespace) -> dict[str, Any]:
    from trainer.landmarks import FACE_MESH_SHA256, extract_face_mesh

    out = extract_face_mesh(a.wheel, a.out)
    print(f"face mesh: {out} (sha256 {FACE_MESH_SHA256})")
    return {"output": str(out), "sha256": FACE_MESH_SHA256}


def cmd_soup(a: argparse.Namespace) -> dict[str, Any]:
    from trainer.soup import soup_checkpoints

    record = soup_checkpoints(a.checkpoints, a.out, onnx_frames=a.onnx_frame or [], template=a.template)
    print(f"soup of {len(record['members'])} members: {a.out}")
    return record


def cmd_combine(a: argparse.Namespace) -> dict[str, Any]:
    from trainer.bundle_scores import load_items
    from trainer.combine import combine_bundle

    calib = load_items(a.calib_data, [a.calib_split] if a.calib_split else None) if a.calib_data else None
    fusion = load_items(a.fusion_data, [a.fusion_split] if a.fusion_split else None) if a.fusion_data else None
    record = combine_bundle(a.bundle, a.out, a.member or [], a.hflip, calib, a.calib_data, a.calib_split,
                            a.target_fpr, a.version, a.tol, a.batch, fusion, a.fusion_data, a.fusion_split,
                            a.fusion_min_videos, a.seed, a.temporal, a.name)
    print(f"combined {len(record['members'])} member(s){' with hflip' if a.hflip else ''}: {a.out} "
          f"(threshold {record['threshold']:.4f} at {a.target_fpr:g} FPR; parity {record['parity_max_abs']:.2g})")
    return record


def cmd_eval(a: argparse.Namespace) -> dict[str, Any]:
    from detectors.bundle import load_bundle
    from trainer.bundle_scores import evaluate_bundle, load_items

    bundle = load_bundle(a.bundle)
    items = [it for d in a.data for it in load_items(d, a.split or None)]
    out = Path(a.out) if a.out else a._run.path / "eval"
    out.mkdir(parents=True, exist_ok=True)
    models = [x.strip() for x in a.models.split(",") if x.strip()]
    if not models or set(models) - {"frame", "temporal"}:
        raise UsageError(f"--models {a.models!r}: expected frame, temporal or frame,temporal")
    rows = evaluate_bundle(bundle, items, out, a.group_by, a.batch, a.runtime, a.seed, models)
    print((out / "metrics.md").read_text())
    return {"bundle": str(bundle.root), "bundle_version": bundle.version_string, "out": str(out), "rows": rows}


def cmd_export(a: argparse.Namespace) -> dict[str, Any]:
    from trainer.export import export_model
    from trainer.methods import load_inference_model, model_geometry

    method, cfg, model = load_inference_model(a.checkpoint)
    _, size = model_geometry(cfg)
    info = export_model(model, a.out, size, kind=method.output, fp16=not a.no_fp16, tol=a.tol,
                        dynamo=a.exporter == "dynamo")
    return {"method": method.name, **info}


def cmd_bundle(a: argparse.Namespace) -> dict[str, Any]:
    from trainer.bundle_scores import load_items
    from trainer.bundling import build_from_checkpoints

    if not a.frame and not a.difffake:
        raise UsageError("bundle needs --frame CHECKPOINT, --difffake CHECKPOINT or both")
    calib = load_items(a.calib_data, [a.calib_split] if a.calib_split else None) if a.calib_data else None
    fusion = load_items(a.fusion_data, [a.fusion_split] if a.fusion_split else None) if a.fusion_data else None
    bundle, metrics = build_from_checkpoints(
        a.out, a._run.path / "export", frame=a.frame, difffake=a.difffake, gmm=a.gmm, calib_items=calib,
        calib_data=a.calib_data, calib_split=a.calib_split, target_fpr=a.target_fpr, fusion_items=fusion,
        fusion_data=a.fusion_data, fusion_split=a.fusion_split, fusion_min_videos=a.fusion_min_videos,
        name=a.name, version=a.version, fp16=not a.no_fp16, tol=a.tol, dynamo=a.exporter == "dynamo",
        batch=a.batch, seed=a.seed)
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
    sp.add_argument("--method", required=True, metavar="METHOD",
                    help="a registered method (trainer/methods.py): anl, diffusionfake or difffake")
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

    sp = sub.add_parser("landmark-model", help="take MediaPipe's face-mesh model (data.landmarker: mediapipe) out of a "
                        "local mediapipe==0.10.21 wheel (pip download mediapipe==0.10.21 --no-deps; never installed)")
    sp.add_argument("--wheel", required=True, help="the downloaded mediapipe-0.10.21-*.whl")
    sp.add_argument("--out", required=True, help="where to write face_landmark.tflite")

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
    sp.add_argument("--models", default="frame,temporal",
                    help="which of the bundle's models to score: frame, temporal or frame,temporal (default)")

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

    sp = sub.add_parser("soup", help="uniform weight average of frame checkpoints (batch norms folded; "
                        "optionally with a bundle's frame.onnx): one model from several seeds")
    sp.add_argument("checkpoints", nargs="+", help="frame checkpoints of one method and architecture")
    sp.add_argument("--onnx-frame", action="append", help="a bundle's frame.onnx of the same architecture "
                    "(repeatable; read by graph structure, checked against ONNX Runtime)")
    sp.add_argument("--template", help="checkpoint whose method/config the soup keeps (default: the first)")
    sp.add_argument("--out", required=True, help="output checkpoint (.pt)")

    sp = sub.add_parser("combine", help="a bundle copy whose frame model is a logit ensemble of its frame.onnx and "
                        "other members, optionally averaged over a horizontal flip (one ONNX graph; recalibrated)")
    sp.add_argument("--bundle", required=True, help="source bundle (its frame.onnx is the first member)")
    sp.add_argument("--out", required=True, help="output bundle folder (replaced)")
    sp.add_argument("--member", action="append", help="another frame model: a bundle folder or a frame .onnx of "
                    "the same input size (repeatable)")
    sp.add_argument("--hflip", action="store_true", help="average every member over the crop and its mirror image")
    sp.add_argument("--calib-data", required=True, help="prepared-crops folder for threshold calibration")
    sp.add_argument("--calib-split", default="val", help="manifest split used for calibration ('' = all)")
    sp.add_argument("--target-fpr", type=float, default=0.01)
    sp.add_argument("--fusion-data", help="labeled validation crops: fit the fusion weights again on the combined "
                    "model (as bundle --fusion-data); default: keep the source's fusion")
    sp.add_argument("--fusion-split", default="")
    sp.add_argument("--fusion-min-videos", type=int, default=5)
    sp.add_argument("--temporal", help="another bundle whose DiffFake model (embedder, GMM, provenance) replaces the "
                    "source's; same crop; needs --fusion-data")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--version", help="bundle version of the copy (default: the source's)")
    sp.add_argument("--name", help="bundle name of the copy (default: the source's)")
    sp.add_argument("--tol", type=float, default=1e-4, help="max abs logit difference against the members")
    sp.add_argument("--batch", type=int, default=32)
    return p


COMMANDS = {"prepare": cmd_prepare, "reconstruct": cmd_reconstruct, "eval": cmd_eval, "export": cmd_export,
            "bundle": cmd_bundle, "soup": cmd_soup, "combine": cmd_combine, "landmark-model": cmd_landmark_model}


def _bad_input_types() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (a file, a config key, a method name): one line and exit status 2."""
    from detectors.bundle import BundleError
    from detectors.runtime import RuntimeError_
    from trainer.combine import CombineError
    from trainer.data.records import DatasetLayoutError
    from trainer.evaluate import EvalError
    from trainer.export import ExportError
    from trainer.landmarks import LandmarkError
    from trainer.methods import MethodError
    from trainer.soup import SoupError
    from trainer.train_loop import ConfigError

    return (UsageError, BundleError, CombineError, ConfigError, DatasetLayoutError, EvalError, ExportError, LandmarkError,
            MethodError, RuntimeError_, SoupError, FileNotFoundError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    bad = _bad_input_types()
    run: RunFolder | None = None
    try:
        if args.command in ("prior", "fit"):
            from trainer import train_loop as tl
            from trainer.methods import get_method

            method = "prior" if args.command == "prior" else args.method
            defaults = "prior" if args.command == "prior" else get_method(method).config
            cfg = tl.load_config(defaults, args.config, args.set)
            tl.seed_everything(int(cfg.get("seed", 0)))
            if args.command == "fit":
                cfg["out_dir"], cfg["run_name"] = "<run folder>", "fit"  # set below; recorded for clarity
            if args.data:
                manifest = Path(args.data) / "manifest.jsonl"
                if not manifest.is_file():
                    raise UsageError(f"{manifest}: missing (expected a folder written by 'fakewatch-train prepare')")
                cfg.setdefault("data", {})["crops"] = str(args.data)
            run = RunFolder(args.runs, method, {"command": args.command, **cfg}, stamp=True).capture_log()
            result = (cmd_prior if args.command == "prior" else cmd_fit)(args, cfg, run)
        else:
            config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
            run = RunFolder(args.runs, args.command, config, stamp=True).capture_log()
            args._run = run
            result = COMMANDS[args.command](args)
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
