"""Weight averaging of frame-detector checkpoints ("model soup", Wortsman et al. 2022, uniform soup).

Runs fine-tuned from the same pretrained initialisation with different seeds land in one basin of the loss;
the average of their weights is one network (inference cost of one model) that is usually at least as good
as the mean of its members and removes part of the seed-to-seed spread that single runs show.

Members are checkpoints of one method with the same backbone and input size, and optionally the frame model
of an already built bundle (``frame.onnx``: the exporter folded every batch norm into its convolution, so the
torch weights are not in the file). To average both kinds in one parameterisation, every member is first
**folded**: each batch norm's scale and shift move into the preceding convolution's weight and the batch
norm's bias, and the batch norm becomes the identity (weight 1, running mean 0, running variance 1 - eps;
its activation stays). Folding does not change the network's function (tested), so a folded soup exports
and calibrates like any checkpoint (``fakewatch-train bundle --frame soup.pt``).

An ONNX member is read by graph structure, not by initialiser names: the Conv nodes in graph order are matched
to the convolutions in the order a forward pass runs them (shapes checked one by one), the final Gemm to the
linear head; the imported network's logits are then compared with ONNX Runtime's on a seeded input, and a
file that does not reproduce them is rejected with its name. Parameters that the inference graph does not
contain (a training-only head) come from the template checkpoint unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class SoupError(ValueError):
    """A member that cannot join the soup (missing, other method or architecture, unreadable ONNX)."""


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))


def conv_bn_pairs(module: nn.Module, size: int) -> tuple[list[str], list[tuple[str, str]]]:
    """(every Conv2d in execution order, the (conv, batch norm) pairs where a batch norm follows a conv)."""
    names = {m: n for n, m in module.named_modules()}
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
             for m in module.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    try:
        was_training = module.training
        with torch.no_grad():
            module.eval()(torch.zeros(1, 3, size, size))
        module.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    convs: list[str] = []
    pairs: list[tuple[str, str]] = []
    last: nn.Conv2d | None = None
    for m in order:
        if isinstance(m, nn.Conv2d):
            convs.append(names[m])
            last = m
        elif last is not None and m.num_features == last.out_channels:
            pairs.append((names[last], names[m]))
            last = None
        else:
            raise SoupError(f"batch norm {names[m]} does not follow a convolution: cannot fold it")
    return convs, pairs


@torch.no_grad()
def fold_batchnorm_(module: nn.Module, size: int) -> nn.Module:
    """Fold every batch norm into the convolution before it, in place (same function, identity batch norms)."""
    _, pairs = conv_bn_pairs(module, size)
    mods = dict(module.named_modules())
    for cname, bname in pairs:
        conv, bn = mods[cname], mods[bname]
        if not bn.affine or not bn.track_running_stats:
            raise SoupError(f"batch norm {bname}: only affine batch norms with running statistics can be folded")
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
        if conv.bias is not None:
            shift = shift + conv.bias * scale
            conv.bias.zero_()
        bn.weight.fill_(1.0)
        bn.bias.copy_(shift)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
    return module


@torch.no_grad()
def import_frame_onnx_(module: nn.Module, onnx_path: str | Path, size: int, tol: float = 1e-3) -> float:
    """Load a frame.onnx exported from this architecture (batch norms folded) into ``module`` (in place,
    leaving it folded); returns the max abs logit difference against ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    p = Path(onnx_path)
    if not p.is_file():
        raise SoupError(f"{p}: ONNX file not found")
    try:
        g = onnx.load(str(p)).graph
    except Exception as e:  # protobuf decode errors
        raise SoupError(f"{p}: not a readable ONNX model ({str(e).splitlines()[0][:200]})") from e
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    conv_nodes = [n for n in g.node if n.op_type == "Conv"]
    gemm_nodes = [n for n in g.node if n.op_type == "Gemm"]
    fold_batchnorm_(module, size)  # identity batch norms: the ONNX biases go into their bias
    convs, pairs = conv_bn_pairs(module, size)
    bn_of = dict(pairs)
    mods = dict(module.named_modules())
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    expected = f"{len(convs)} Conv nodes and 1 Gemm (the architecture of the template checkpoint)"
    if len(conv_nodes) != len(convs) or len(gemm_nodes) != 1 or len(linears) != 1:
        raise SoupError(f"{p}: {len(conv_nodes)} Conv and {len(gemm_nodes)} Gemm nodes, expected {expected}")
    for node, cname in zip(conv_nodes, convs):
        conv = mods[cname]
        w = inits.get(node.input[1])
        if w is None or tuple(w.shape) != tuple(conv.weight.shape):
            raise SoupError(f"{p}: Conv node {node.name or node.input[1]} has weight shape "
                            f"{None if w is None else tuple(w.shape)}, expected {tuple(conv.weight.shape)} ({cname})")
        conv.weight.copy_(_tensor(w))
        b = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if cname in bn_of:
            if b is not None:
                mods[bn_of[cname]].bias.copy_(_tensor(b))
        elif conv.bias is not None and b is not None:
            conv.bias.copy_(_tensor(b))
    gemm, fc = gemm_nodes[0], linears[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gemm.attribute}
    w = inits.get(gemm.input[1])
    if w is not None and not attrs.get("transB", 0):
        w = w.T
    if w is None or tuple(w.shape) != tuple(fc.weight.shape):
        raise SoupError(f"{p}: Gemm weight shape {None if w is None else tuple(w.shape)}, "
                        f"expected {tuple(fc.weight.shape)} (the linear head)")
    fc.weight.copy_(_tensor(w))
    if fc.bias is not None and len(gemm.input) > 2:
        fc.bias.copy_(_tensor(inits[gemm.input[2]]).reshape(fc.bias.shape))
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32))
    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    was_training = module.training
    got = module.eval()(x).numpy()
    module.train(was_training)
    err = float(np.abs(got.reshape(ref.shape) - ref).max())
    if not err <= tol:
        raise SoupError(f"{p}: the imported weights do not reproduce the file's logits (max abs error {err:.3g} > "
                        f"{tol}): not an export of the template checkpoint's architecture")
    return err


def _inference_module(model: nn.Module) -> nn.Module:
    return model.export_module() if hasattr(model, "export_module") else model


def _inference_keys(model: nn.Module) -> set[str]:
    """Names (in ``model.state_dict()``) of the tensors that the exported inference graph uses."""
    ptrs = {v.data_ptr() for v in _inference_module(model).state_dict().values()}
    return {k for k, v in model.state_dict().items() if v.data_ptr() in ptrs}


def soup_checkpoints(checkpoints: list[str | Path], out: str | Path, onnx_frames: list[str | Path] = (),
                     template: str | Path | None = None) -> dict[str, Any]:
    """Uniform soup of ``checkpoints`` (and of the frame models in ``onnx_frames``) written to ``out`` as a
    checkpoint of the template's method (default: the first checkpoint). Returns the soup's record (members,
    their sha256, import errors), which is also stored in the checkpoint's config under ``soup``."""
    from trainer import train_loop as tl
    from trainer.methods import get_method, model_geometry

    paths = [Path(c) for c in checkpoints]
    if not paths:
        raise SoupError("soup needs at least one checkpoint (the template of the architecture)")
    if len(paths) + len(onnx_frames) < 2:
        raise SoupError("soup needs at least two members (checkpoints and ONNX frame models together)")
    tpl = Path(template) if template else paths[0]
    cks = {}
    for p in dict.fromkeys([tpl, *paths]):
        try:
            cks[p] = tl.load_checkpoint(p)
        except (FileNotFoundError, ValueError) as e:
            raise SoupError(str(e)) from None
        except Exception as e:  # torch.load's pickle/zip errors
            raise SoupError(f"{p}: not a readable fakewatch checkpoint ({str(e).splitlines()[0][:200]})") from e
    t_ck = cks[tpl]
    method = get_method(str(t_ck.get("method")))
    if method.output != "frame":
        raise SoupError(f"{tpl}: a {method.name} checkpoint; soup averages frame detectors only")
    geometry = model_geometry(t_ck["config"])
    for p in paths:
        if cks[p].get("method") != t_ck.get("method"):
            raise SoupError(f"{p}: method {cks[p].get('method')!r}, the template {tpl} is {t_ck.get('method')!r}")
        if model_geometry(cks[p]["config"]) != geometry:
            raise SoupError(f"{p}: backbone/input size {model_geometry(cks[p]['config'])}, the template's is {geometry}")
    size = geometry[1]
    t_model = method.load(tpl)
    fold_batchnorm_(_inference_module(t_model), size)
    t_state = {k: v.detach().clone() for k, v in t_model.state_dict().items()}
    inference = _inference_keys(t_model)
    states: list[dict[str, torch.Tensor]] = []
    members: list[dict[str, Any]] = []
    names: list[str] = []
    for p in paths:
        model = method.load(p)
        fold_batchnorm_(_inference_module(model), size)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        members.append({"checkpoint": str(p), "sha256": _sha256(p), "seed": cks[p]["config"].get("seed")})
        names.append(str(p))
    for o in onnx_frames:
        model = method.load(tpl)
        err = import_frame_onnx_(_inference_module(model), o, size)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        members.append({"onnx": str(o), "sha256": _sha256(Path(o)), "import_max_abs_err": err})
        names.append(str(o))
    # the inference graph's parameters are averaged over every member; training-only ones (ANL's noise head,
    # present in a regulariser-on checkpoint only) are the template's, unchanged
    avg: dict[str, torch.Tensor] = {}
    kept: list[str] = []
    for k, tv in t_state.items():
        if k not in inference:
            avg[k] = tv
            kept.append(k)
            continue
        for name, s in zip(names, states):
            if k not in s:
                raise SoupError(f"{name}: has no parameter {k} of the frame model")
        vals = [s[k] for s in states]
        if any(v.shape != vals[0].shape for v in vals):
            raise SoupError(f"parameter {k}: shapes {[tuple(v.shape) for v in vals]} differ between members")
        avg[k] = torch.stack([v.float() for v in vals]).mean(0).to(vals[0].dtype) if vals[0].is_floating_point() \
            else vals[0].clone()
    record = {"kind": "uniform", "batchnorm": "folded", "members": members,
              "train_only_from_template": len(kept)}
    cfg = dict(t_ck["config"]) | {"soup": record}
    extra = {k: v for k, v in t_ck.items() if k not in ("method", "config", "state_dict")}
    outp = Path(out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    tmp = outp.with_suffix(outp.suffix + ".tmp")
    torch.save({"method": t_ck["method"], "config": cfg, "state_dict": avg, **extra}, tmp)
    tmp.replace(outp)
    return record
