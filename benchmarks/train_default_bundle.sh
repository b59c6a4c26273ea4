#!/usr/bin/env bash
# The exact command sequence that built detectors/bundles/default/ (see its README.md).
# Run from anywhere; everything is relative to the repository root; ../shared/data must exist.
# Outputs: data-cache/ (crops, split, test sets) and runs/default-bundle/ (run folders), both gitignored;
# the bundle itself goes to detectors/bundles/default/.
#
#   benchmarks/train_default_bundle.sh            # everything
#   STEPS_ANL=400 STEPS_DF=400 STEPS_PRIOR=300 benchmarks/train_default_bundle.sh   # the first (weaker) bundle
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # shared 2-core box: one thread per job
T=.venv/bin/fakewatch-train
PY=.venv/bin/python
R=runs/default-bundle
SPLIT=data-cache/default-bundle/split
TEST=data-cache/default-bundle/testsets
CFG=trainer/configs/default-bundle
STEPS_PRIOR=${STEPS_PRIOR:-300}
STEPS_ANL=${STEPS_ANL:-400}
STEPS_DF=${STEPS_DF:-400}
OUT=${OUT:-detectors/bundles/default}

newest() { ls -d "$1"-* | sort | tail -1; }

# 1. aligned 256-px crops (the serving face pipeline). The data used: all 18 videos (32 evenly spaced
#    frames each), all 819 congress_gpo portraits, and the first 696 all_age_faces records in sorted
#    order (where the first full `prepare` run was stopped to save CPU time).
$T prepare --dataset shared --root ../shared/data --out data-cache/shared --frames 32 --reader-arg 'include=[videos]'
$T prepare --dataset shared --root ../shared/data --out data-cache/shared --frames 32 \
   --reader-arg 'include=[faces]' --reader-arg 'subsets=[congress_gpo]'
$T prepare --dataset shared --root ../shared/data --out data-cache/shared --frames 32 \
   --reader-arg 'include=[faces]' --reader-arg 'subsets=[all_age_faces]' --max-records 696

# 2. identity-disjoint train / val / test split (faces by identity hash 75/10/15 %, videos 12/2/4)
$PY benchmarks/default_bundle_data.py split data-cache/shared $SPLIT

# 3. the frozen pixel DDPM prior, on train identities only
$T --runs $R prior --config $CFG/prior.yaml --set train.steps=$STEPS_PRIOR
PRIOR=$(newest $R/prior)/prior

# 4. ANL frame detector (regulariser on) and its ablation (off): same backbone, data, schedule, seed
$T --runs $R fit --method anl --config $CFG/anl.yaml --data $SPLIT --set train.steps=$STEPS_ANL \
   --set diffusion.folder=$PRIOR --set anl.regulariser=on
ANL_ON=$(newest $R/anl)/fit
$T --runs $R fit --method anl --config $CFG/anl.yaml --data $SPLIT --set train.steps=$STEPS_ANL \
   --set anl.regulariser=off
ANL_OFF=$(newest $R/anl)/fit

# 5. DiffFake: stage-1 embedder + GMM over pairs of the 12 train videos (calibration.json from the 2 val videos)
$T --runs $R fit --method difffake --config $CFG/difffake.yaml --data $SPLIT --set train.steps=$STEPS_DF
DF=$(newest $R/difffake)/fit

# 6. test sets from the held-out TEST identities only (never trained on): sbi, difffake, blend, regen (+ low-res control)
$PY benchmarks/default_bundle_data.py testsets $SPLIT $TEST --prior $PRIOR --strength 0.3 --steps 20

# 7. bundles (thresholds calibrated on the val split at 1 % FPR), the ablation bundle, evaluation
$T --runs $R bundle --out $OUT --frame $ANL_ON/best.pt --difffake $DF/checkpoint.pt \
   --calib-data $SPLIT --calib-split val --target-fpr 0.01 --name fakewatch-default --version 1 --no-fp16
$T --runs $R bundle --out $R/bundle-anl-off --frame $ANL_OFF/best.pt \
   --calib-data $SPLIT --calib-split val --target-fpr 0.01 --name fakewatch-default-anl-off --version 1 --no-fp16
$T --runs $R eval --bundle $OUT --data $TEST --group-by dataset+method --out $R/eval-on
$T --runs $R eval --bundle $R/bundle-anl-off --data $TEST --group-by dataset+method --out $R/eval-off
