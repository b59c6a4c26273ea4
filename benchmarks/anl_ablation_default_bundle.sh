#!/usr/bin/env bash
# ANL's diffusion regulariser ON with @4's recipe (issue 11, item 8): the off arm is @4 itself (seed 0) and seed 1
# of benchmarks/soup_default_bundle.sh; this script trains the on arm and measures it on @4's sets
# (docs/default-bundle.md, "ANL regulariser ablation").
#
#   benchmarks/anl_ablation_default_bundle.sh            # prior ~17 min + ~80 min of training per seed, 2-core box
#   SEEDS="0 1" benchmarks/anl_ablation_default_bundle.sh
#
# Needs the data cache of benchmarks/train_default_bundle.sh steps 1-4 (data-cache/default-bundle: split4, recon4,
# testsets4, fakesdev4). Outputs in runs/anl-ablation/ (gitignored); nothing in the tree changes.
# The frozen diffusion model is our 64 px pixel DDPM face prior (trainer/configs/default-bundle/prior.yaml),
# trained on the TRAIN identities only. The noise head is train-only: frame.onnx has the same graph in both arms.
# anl.head_channels is 32 (@3's value) instead of frame4.yaml's 64: the head upsamples 7x7 features to
# 112x112 before resizing to the prior's 64 px, and at 64 channels it costs about 45 % of the backbone's step on
# this CPU, at 32 about 17 %.
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/fakewatch-train
C=data-cache/default-bundle
R=${R:-runs/anl-ablation}
SEEDS=${SEEDS:-0}
export OMP_NUM_THREADS=2
newest() { ls -d "$1"/*/ | sort | tail -1 | sed 's:/$::'; }
mkdir -p $R
# 1. the frozen prior (train identities only)
[ -n "$(ls -d $R/prior/*/prior 2>/dev/null)" ] || $T --runs $R/prior prior \
  --config trainer/configs/default-bundle/prior.yaml --set data.crops=$C/split4/train
P=$(newest $R/prior)/prior
for SEED in $SEEDS; do
  # 2. the on arm: @4's recipe (frame4.yaml: data, augmentation, schedule, seed) plus the noise regulariser
  [ -n "$(ls -d $R/frame-anl-s$SEED/*/fit 2>/dev/null)" ] || $T --runs $R/frame-anl-s$SEED fit --method anl \
    --config trainer/configs/default-bundle/frame4.yaml --data $C/split4 --set seed=$SEED --set data.recon=$C/recon4 \
    --set anl.regulariser=on --set diffusion.folder=$P --set anl.head_channels=32
  F=$(newest $R/frame-anl-s$SEED)/fit/best.pt
  # 3. frame-only bundle (threshold at 1 % FPR on the val reals) and eval on @4's sets
  $T --runs $R bundle --out $R/bundle-anl-s$SEED --frame $F --calib-data $C/split4 --calib-split val \
    --target-fpr 0.01 --name fakewatch-anl-s$SEED --version 5 --no-fp16
  $T --runs $R eval --bundle $R/bundle-anl-s$SEED --data $C/testsets4 --data $C/fakesdev4 --group-by dataset+method \
    --out $R/eval-anl-s$SEED
done
