#!/usr/bin/env bash
# A uniform weight soup of the shipped default bundle's frame model (@4, seed 0) and a second seed of its recipe,
# measured on @4's sets (docs/default-bundle.md, "A weight soup of @4 and a second seed").
#
#   benchmarks/soup_default_bundle.sh     # about 60 min of training on an idle 2-core box, then ~10 min of eval
#
# Needs the data cache of benchmarks/train_default_bundle.sh steps 1-4 (data-cache/default-bundle: split4, recon4,
# testsets4, fakesdev4). Outputs in runs/soup-default-bundle/ (gitignored); nothing in the tree changes.
# fakes_dev is used for validation and model choice only, never as training data.
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/fakewatch-train
C=data-cache/default-bundle
R=${R:-runs/soup-default-bundle}
SEED=${SEED:-1}
V4=${V4:-87265d9}   # a commit whose detectors/bundles/default is fakewatch-default@4
export OMP_NUM_THREADS=2
mkdir -p $R
# 1. the second member: @4's recipe (trainer/configs/default-bundle/frame4.yaml), another seed
[ -n "$(ls -d $R/frame-mix-s$SEED/*/fit 2>/dev/null)" ] || $T --runs $R/frame-mix-s$SEED fit --method anl \
  --config trainer/configs/default-bundle/frame4.yaml --data $C/split4 --set seed=$SEED --set data.recon=$C/recon4
S=$(ls -d $R/frame-mix-s$SEED/*/ | sort | tail -1)fit/best.pt
# 2. the soup: @4's frame.onnx is read by graph structure (batch norms folded) and checked against ONNX Runtime
git show $V4:detectors/bundles/default/frame.onnx > $R/v4-frame.onnx
$T --runs $R soup $S --onnx-frame $R/v4-frame.onnx --out $R/soup-v4-s$SEED.pt
# 3. frame-only bundles (threshold at 1 % FPR on the val reals) and evals on @4's sets; @4 itself re-scored
for name in soup:$R/soup-v4-s$SEED.pt s$SEED:$S; do
  n=${name%%:*}; ck=${name#*:}
  $T --runs $R bundle --out $R/bundle-$n --frame $ck --calib-data $C/split4 --calib-split val --target-fpr 0.01 \
     --name fakewatch-$n --version 5 --no-fp16
  $T --runs $R eval --bundle $R/bundle-$n --data $C/testsets4 --data $C/fakesdev4 --group-by dataset+method --out $R/eval-$n
done
mkdir -p $R/bundle-v4
for f in manifest.json frame.onnx embed.onnx gmm.npz README.md; do git show $V4:detectors/bundles/default/$f > $R/bundle-v4/$f; done
$T --runs $R eval --bundle $R/bundle-v4 --data $C/testsets4 --data $C/fakesdev4 --group-by dataset+method --out $R/eval-v4
