#!/usr/bin/env bash
# Input resolution of the frame detector (issue 11, item 2): @4's recipe (frame4.yaml: data, mix, augmentation,
# schedule, seed) at model.image_size=256 instead of 224, measured on @4's sets (docs/default-bundle.md,
# "224 px against 256 px").
#
#   benchmarks/resolution_default_bundle.sh        # 44 min of training at 256 px on an idle 2-core box (measured), then ~8 min of eval
#   SEED=1 SIZE=256 benchmarks/resolution_default_bundle.sh
#
# 256 px is the side of the aligned crops that `fakewatch-train prepare` writes (and that serving aligns to), so it
# is the largest input that needs no new crops and reconstructions: at 256 the crop is used as is, at 224 it is
# downscaled by resize_crop (the serving resize). Needs the data cache of benchmarks/train_default_bundle.sh steps
# 1-4 (data-cache/default-bundle: split4, recon4, testsets4, fakesdev4). Outputs in runs/resolution/ (gitignored);
# nothing in the tree changes. fakes_dev is used for validation and model choice only, never as training data.
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/fakewatch-train
C=data-cache/default-bundle
R=${R:-runs/resolution}
SEED=${SEED:-0}
SIZE=${SIZE:-256}
export OMP_NUM_THREADS=2
newest() { ls -d "$1"/*/ | sort | tail -1 | sed 's:/$::'; }
mkdir -p $R
N=frame-$SIZE-s$SEED
# 1. @4's recipe at SIZE px
[ -n "$(ls -d $R/$N/*/fit 2>/dev/null)" ] || $T --runs $R/$N fit --method anl \
  --config trainer/configs/default-bundle/frame4.yaml --data $C/split4 --set seed=$SEED --set data.recon=$C/recon4 \
  --set model.image_size=$SIZE
F=$(newest $R/$N)/fit/best.pt
# 2. frame-only bundle (threshold at 1 % FPR on the val reals) and eval on @4's sets
$T --runs $R bundle --out $R/bundle-$N --frame $F --calib-data $C/split4 --calib-split val \
  --target-fpr 0.01 --name fakewatch-$N --version 5 --no-fp16
$T --runs $R eval --bundle $R/bundle-$N --data $C/testsets4 --data $C/fakesdev4 --group-by dataset+method \
  --out $R/eval-$N
# 3. REEVAL_V4=1: @4 (224 px, the default bundle until @5; from git history; its eval includes DiffFake, about
#    10 min) re-scored beside it. Its published row was reproduced within 0.001 on two rebuilt caches
#    (docs/default-bundle.md).
V4=${V4:-bedc83c}   # a commit whose detectors/bundles/default is fakewatch-default@4
if [ "${REEVAL_V4:-0}" = 1 ] && [ ! -d $R/eval-v4 ]; then
  mkdir -p $R/bundle-v4
  for f in manifest.json frame.onnx embed.onnx gmm.npz README.md; do
    git show $V4:detectors/bundles/default/$f > $R/bundle-v4/$f
  done
  $T --runs $R eval --bundle $R/bundle-v4 --data $C/testsets4 --data $C/fakesdev4 --group-by dataset+method \
    --out $R/eval-v4
fi
