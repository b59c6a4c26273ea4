"""Frame detectors combined into one ONNX graph: a logit ensemble of members and horizontal-flip averaging.

    fakewatch-train combine --bundle SRC --out DIR [--member frame.onnx ...] [--hflip] --calib-data PREPARED

The combined graph has the members' interface (``input`` (N, 3, S, S) -> ``logit`` (N, 1)), so every runtime
(ONNX Runtime, the torch runtime, TensorRT) and the one inference path (:mod:`detectors.inference`) run it
unchanged, and evaluation, calibration and serving see the same function:

    logit(x) = mean over members m and views v of m(v(x)),   views = {identity} or {identity, horizontal flip}

The mean is over logits (the usual way to average binary classifiers; ``sigmoid`` of it stays the bundle's
fake probability). With ``hflip`` the batch is doubled inside the graph (``Concat(x, Slice(x, step -1 on
width))``), each member runs once on the doubled batch, and the two halves are averaged. Members must take the
same input size and emit one logit per row; each is renamed with a prefix (``onnx.compose.add_prefix``) so
initialisers and nodes never clash. The graph is checked against the members run one by one on ONNX Runtime
(seeded input, max abs difference reported); a member file that is not such a frame model is refused with its
name. The bundle keeps its temporal model, and its fusion unless ``fusion_items`` are given (then the fusion is
fitted again on the combined model); the frame threshold is calibrated again on real crops through the serving
path (the combination changes the score distribution).

``temporal`` (``--temporal BUNDLE``) takes the DiffFake model of another bundle instead of the source's: its
manifest section, embedder and GMM files, byte for byte, and its training provenance. Its crop must be the
source's (the embedder saw faces cut that way), and the fusion must be fitted again (``fusion_items``): the
source's fusion describes another temporal model, or none.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

INT64_MIN = -(2**63)


class CombineError(ValueError):
    """A member that cannot be combined, or a combined graph that does not reproduce its members."""


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dims(vi) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]


def load_member(path: str | Path):
    """(ModelProto, input size) of a frame-model ONNX file; CombineError naming the file otherwise."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise CombineError(f"{p}: member ONNX file not found")
    try:
        m = onnx.load(str(p))
        onnx.checker.check_model(m)
    except Exception as e:  # noqa: BLE001 - any parse/check failure is bad input
        raise CombineError(f"{p}: not a valid ONNX model ({e})") from e
    g = m.graph
    init = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in init]
    if len(inputs) != 1 or len(g.output) != 1:
        raise CombineError(f"{p}: expected one input and one output (a frame model), found "
                           f"{len(inputs)} inputs and {len(g.output)} outputs")
    d = _dims(inputs[0])
    if len(d) != 4 or d[1] != 3 or not isinstance(d[2], int) or d[2] != d[3] or d[2] <= 0:
        raise CombineError(f"{p}: expected input (N, 3, S, S), found {d}")
    out = _dims(g.output[0])
    if len(out) != 2 or out[1] != 1:
        raise CombineError(f"{p}: expected output (N, 1) (one logit per crop), found {out}")
    return m, int(d[2])


def _opsets(models) -> dict[str, int]:
    ops: dict[str, int] = {}
    for m in models:
        for o in m.opset_import:
            if ops.setdefault(o.domain, o.version) != o.version:
                raise CombineError(f"members disagree on the opset of domain {o.domain!r} "
                                   f"({ops[o.domain]} and {o.version}); export them with the same exporter")
    return ops


def combine_models(paths: Sequence[str | Path], hflip: bool = False):
    """The combined ModelProto and the input size (see the module docstring)."""
    import onnx
    from onnx import TensorProto, compose, helper

    if not paths:
        raise CombineError("combine needs at least one member")
    loaded = [load_member(p) for p in paths]
    sizes = {s for _, s in loaded}
    if len(sizes) != 1:
        raise CombineError(f"members take different input sizes {sorted(sizes)}: "
                           + ", ".join(f"{p} ({s})" for p, (_, s) in zip(paths, loaded)))
    size = sizes.pop()
    ops = _opsets([m for m, _ in loaded])
    if ops.get("", 0) < 13:
        raise CombineError(f"members use opset {ops.get('', 0)} of the default domain; 13 or newer is needed")
    nodes, inits, functions, value_info = [], [], [], []
    x = "input"
    if hflip:
        inits += [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in
                  (("flip_starts", -1), ("flip_ends", INT64_MIN), ("flip_axes", 3), ("flip_steps", -1))]
        nodes += [helper.make_node("Slice", ["input", "flip_starts", "flip_ends", "flip_axes", "flip_steps"],
                                   ["input_hflip"], name="hflip"),
                  helper.make_node("Concat", ["input", "input_hflip"], ["views"], axis=0, name="views")]
        x = "views"
    logits = []
    for i, (m, _) in enumerate(loaded):
        pm = compose.add_prefix(m, f"m{i}/")
        g = pm.graph
        init = {t.name for t in g.initializer}
        (inp,) = [v for v in g.input if v.name not in init]
        nodes.append(helper.make_node("Identity", [x], [inp.name], name=f"m{i}/feed"))
        nodes += list(g.node)
        inits += list(g.initializer)
        value_info += list(g.value_info)
        functions += list(pm.functions)
        logits.append(g.output[0].name)
    k = len(logits)
    inits.append(helper.make_tensor("inv_members", TensorProto.FLOAT, [], [1.0 / k]))
    nodes += [helper.make_node("Sum", logits, ["logit_sum"], name="members_sum"),
              helper.make_node("Mul", ["logit_sum", "inv_members"], ["logit_members" if hflip else "logit"],
                               name="members_mean")]
    if hflip:
        inits.append(helper.make_tensor("views_shape", TensorProto.INT64, [3], [2, -1, 1]))
        nodes.append(helper.make_node("Reshape", ["logit_members", "views_shape"], ["logit_views"], name="views_split"))
        if ops[""] >= 18:  # ReduceMean's axes became an input in opset 18
            inits.append(helper.make_tensor("views_axis", TensorProto.INT64, [1], [0]))
            nodes.append(helper.make_node("ReduceMean", ["logit_views", "views_axis"], ["logit"], keepdims=0,
                                          name="views_mean"))
        else:
            nodes.append(helper.make_node("ReduceMean", ["logit_views"], ["logit"], axes=[0], keepdims=0,
                                          name="views_mean"))
    graph = helper.make_graph(
        nodes, "fakewatch_combined_frame",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["batch", 1])],
        initializer=inits, value_info=value_info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in ops.items()],
                              functions=functions, producer_name="fakewatch-train combine")
    model.ir_version = max(m.ir_version for m, _ in loaded)
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        raise CombineError(f"the combined graph does not check ({e})") from e
    return model, size


def _ort(model_or_path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    src = model_or_path if isinstance(model_or_path, (str, Path)) else model_or_path.SerializeToString()
    return ort.InferenceSession(str(src) if isinstance(src, Path) else src, so, providers=["CPUExecutionProvider"])


def parity(model, paths: Sequence[str | Path], size: int, hflip: bool, n: int = 3, seed: int = 0) -> float:
    """Max abs difference between the combined graph and the members run one by one (ONNX Runtime)."""
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, (n, 3, size, size)).astype(np.float32)
    views = [x, np.ascontiguousarray(x[..., ::-1])] if hflip else [x]
    ref = np.zeros((n, 1), np.float64)
    for p in paths:
        s = _ort(Path(p))
        name = s.get_inputs()[0].name
        for v in views:
            ref += s.run(None, {name: v})[0].astype(np.float64)
    ref /= len(paths) * len(views)
    got = _ort(model).run(None, {"input": x})[0]
    if got.shape != (n, 1):
        raise CombineError(f"the combined graph returns shape {got.shape}, expected {(n, 1)}")
    return float(np.abs(got - ref).max())


def combine_bundle(src: str | Path, out: str | Path, members: Sequence[str | Path] = (), hflip: bool = False,
                   calib_items: list | None = None, calib_data: str | None = None, calib_split: str | None = None,
                   target_fpr: float = 0.01, version: str | None = None, tol: float = 1e-4,
                   batch: int = 32, fusion_items: list | None = None, fusion_data: str | None = None,
                   fusion_split: str = "", fusion_min_videos: int = 5, seed: int = 0,
                   temporal: str | Path | None = None, name: str | None = None) -> dict[str, Any]:
    """A copy of bundle ``src`` whose frame model is ``src``'s frame.onnx + ``members`` combined (``hflip``),
    with its frame threshold recalibrated at ``target_fpr`` on the real crops of ``calib_items``."""
    from detectors.bundle import Manifest, load_bundle, write_bundle
    from trainer.bundle_scores import frame_probabilities, open_scorers
    from trainer.calibrate import threshold_at_fpr

    sb = load_bundle(src)
    if sb.manifest.frame is None:
        raise CombineError(f"{src}: bundle has no frame model to combine")
    if not members and not hflip:
        raise CombineError("nothing to combine: give --member FILE(s), --hflip or both")
    if calib_items is None:
        raise CombineError("combine needs --calib-data: the combined model's threshold must be calibrated again")
    reals = [it for it in calib_items if it.label == 0]
    if not reals:
        raise CombineError(f"{calib_data}: no real crops to calibrate on")
    tb = None
    if temporal is not None:
        tb = load_bundle(temporal)
        if tb.manifest.temporal is None:
            raise CombineError(f"{temporal}: bundle has no temporal model to take")
        if tb.manifest.crop != sb.manifest.crop:
            raise CombineError(f"{temporal}: its crop {tb.manifest.crop} is not the source's {sb.manifest.crop}")
        if fusion_items is None:
            raise CombineError("--temporal needs --fusion-data: the fusion must be fitted again for another "
                               "temporal model")
    # a bundle whose frame model is itself a combination keeps that record with its member entry (nested), so the
    # manifest still says how many networks and views the new graph runs (`daemon.bench.frame_passes` counts them)
    paths, sources = [sb.frame_onnx], [sb.manifest.provenance.get("frame")]
    inner = [sb.manifest.provenance.get("frame_combination")]
    for q in members:
        q = Path(q)
        if q.is_dir():  # another bundle: its frame model, with its training provenance
            mb = load_bundle(q)
            if mb.manifest.frame is None:
                raise CombineError(f"{q}: bundle has no frame model")
            paths.append(mb.frame_onnx)
            sources.append({"bundle": mb.version_string, **(mb.manifest.provenance.get("frame") or {})})
            inner.append(mb.manifest.provenance.get("frame_combination"))
        else:
            paths.append(q)
            sources.append(None)
            inner.append(None)
    model, size = combine_models(paths, hflip)
    if size != sb.manifest.frame.input_size:
        raise CombineError(f"{src}: manifest input_size {sb.manifest.frame.input_size}, its frame.onnx takes {size}")
    err = parity(model, paths, size, hflip)
    if not err <= tol:
        raise CombineError(f"the combined graph differs from its members by {err:.3g} (> {tol})")
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    import onnx

    onnx.save(model, str(out / "frame.onnx"))
    man = Manifest.from_dict(json.loads((sb.root / "manifest.json").read_text()))
    before = man.frame.threshold
    man.frame.fp16_file = None
    files: dict[str, Path | bytes] = {"frame.onnx": out / "frame.onnx"}
    tsrc = sb
    if tb is not None:  # another bundle's DiffFake model, with its provenance
        tsrc = tb
        man.temporal = copy.deepcopy(tb.manifest.temporal)
        man.provenance = {**man.provenance, "temporal": {"bundle": f"{tb.version_string} ({tb.root})",
                                                         **(tb.manifest.provenance.get("temporal") or {})}}
    if man.temporal is not None:
        for rel in (man.temporal.file, man.temporal.gmm_file):
            files[rel] = tsrc.path(rel)
    man.frame.threshold = 0.5  # replaced below, after scoring with the combined graph
    if version:
        man.version = man.frame.version = version
    if name:
        man.name = name
    man.created = ""
    man.metrics = {}  # the source's evaluations describe another model
    bundle = write_bundle(out, man, files)
    with open_scorers(bundle) as (frame, _):
        p = frame_probabilities(frame, [it.path for it in reals], batch)
    thr = threshold_at_fpr(p, target_fpr)
    record = {
        "members": [{"file": str(q), "sha256": _sha256(q), "provenance": prov,
                     **({"frame_combination": comb} if comb else {})}
                    for q, prov, comb in zip(paths, sources, inner)],
        "hflip": hflip, "views": 2 if hflip else 1, "mean_of": "logits",
        "parity_max_abs": err, "source_bundle": f"{sb.version_string} ({sb.root})",
        "source_threshold": before, "threshold": thr, "target_fpr": target_fpr,
        "calibration_data": calib_data, "calibration_split": calib_split, "n_calibration_reals": len(reals),
        "real_fpr_at_threshold": float(np.mean(p >= thr)),
    }
    if tb is not None:
        record["temporal_from"] = f"{tb.version_string} ({tb.root})"
    man.frame.threshold = thr
    man.provenance = {**man.provenance, "frame_combination": record, "target_fpr": target_fpr}
    if fusion_items is not None:
        from trainer.calibrate import fit_fusion

        bundle = write_bundle(out, man, files)
        fusion = fit_fusion(bundle, fusion_items, batch, seed, min_videos=fusion_min_videos, where=str(fusion_data))
        fusion["fitted_on"] = f"{fusion_data} (split {fusion_split or 'all'})"
        man.fusion = json.loads(json.dumps(fusion, default=float))
        man.metrics = {"fusion": man.fusion}
        record["fusion_refitted"] = True
    write_bundle(out, man, files)
    load_bundle(out)
    return record
