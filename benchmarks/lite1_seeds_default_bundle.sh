#!/usr/bin/env bash
# The four-seed round (2026-12-04, evening): the four Lite1 networks of benchmarks/backbone_default_bundle.sh
# (seeds 1-4, @5's frame recipe on an ImageNet EfficientNet-Lite1) combined, instead of the one best seed that
# fakewatch-default@7 ships. No training: runs after that script with SEEDS="1 2" and SEEDS="3 4".
#
#   benchmarks/lite1_seeds_default_bundle.sh     # about 40 min on an idle 2-core box (three evals, three benches)
#
# Why: @7's network (L1, seed 1) is the best of four seeds on fakes_dev (six-family mean frame AUC 0.886 / 0.843 /
# 0.855 / 0.877) and @7 (L1 with mirror averaging) the best of three combinations, so @7's fakes_dev numbers carry a
# selection bonus of unknown size; a retrained L1 would more likely land near the four-seed mean. A combination of
# all four seeds picks no seed.
# Candidates, all frame-only bundles recalibrated at 1 % FPR on the val reals:
#   Sh    the uniform weight soup of L1-L4 (`fakewatch-train soup`, batch norms folded) on the crop and its mirror
#         image (two Lite1 passes per face, as @7)
#   E4    L1-L4 as a logit ensemble (four passes)
#   E4h   L1-L4 each on the crop and its mirror image (eight passes)
# Rule (written down and committed before any of these three was built or scored): each candidate is scored on the
# six fakes_dev families against the held-out reals and timed with `fakewatch bench --scene single --streams 2
# --fps 5 --seconds 30`. Among the candidates that keep up with two live 720p streams at 5 analysed fps (10 fps,
# nothing lost), the highest six-family mean frame AUC is the choice. It replaces @7 if its six-family mean is at
# least @7's minus 0.005 (0.892) and its worst family at least @7's minus 0.01 (0.744): at equal measured skill the
# combination without a seed pick is preferred, because @7's own figures are inflated by its picks. The choice
# becomes fakewatch-default@8 only after the full eval (with @7's DiffFake model and the fusion fitted again),
# `benchmarks/scan_fakes_dev.py` and `fakewatch demo`, in the session that builds it (SHIP=<choice> below).
# fakes_dev is used for validation and model choice only, never as training data.
# Resumed on a new machine (2026-12-04, evening; written down and committed before anything of it was built or
# scored): Sh was scored (0.871 / 0.702, docs/default-bundle.md), then the machine and its runs were lost,
# L1's checkpoint with them. L1_FROM=<commit of fakewatch-default@7> builds E4h without it: seeds 2-4 trained again
# (`SEEDS="2 3 4" benchmarks/backbone_default_bundle.sh`, or its fit and bundle commands alone), each put on both
# views (`combine --hflip`: L2h-L4h), and @7's graph (L1h: L1 on both views) as the first member:
#   E4h = (L1h + L2h + L3h + L4h) / 4, the same function as E4h above (eight passes)
# E4 (L1 on one view) cannot be built from @7's graph, and Sh is not built again; the rule is unchanged and
# applied to E4h (Sh already failed it). Seeds 2-4 are the lost networks again only if training is deterministic on
# the new machine (check: their thresholds at 1 % FPR were 0.8653, 0.8631, 0.7750); otherwise they are new draws of
# the same three seeds, and the docs say which.
#
#   L1_FROM=4392616 benchmarks/lite1_seeds_default_bundle.sh     # about 30 min after the three fits
set -euo pipefail
cd "$(dirname "$0")/.."
R=${R:-runs/backbone}
. benchmarks/lib.sh
if [ -n "${L1_FROM:-}" ]; then
  bundle_at $L1_FROM $R/bundle-v7
  for s in 2 3 4; do
    [ -f $R/bundle-L$s/frame.onnx ] || { echo "$R/bundle-L$s missing: SEEDS=\"2 3 4\" benchmarks/backbone_default_bundle.sh" >&2; exit 2; }
    [ -d $R/bundle-L${s}h ] || run $T --runs $R combine --bundle $R/bundle-L$s --out $R/bundle-L${s}h --hflip \
      --calib-data $SPLIT --calib-split val --target-fpr 0.01 --version 8-member-L${s}h
  done
  [ -d $R/bundle-E4h ] || run $T --runs $R combine --bundle $R/bundle-v7 --out $R/bundle-E4h --member $R/bundle-L2h \
    --member $R/bundle-L3h --member $R/bundle-L4h --calib-data $SPLIT --calib-split val --target-fpr 0.01 \
    --version 8-candidate-E4h
  ev $R/bundle-E4h $R/eval-E4h
  [ -f $R/bench-E4h.json ] || run .venv/bin/fakewatch bench --scene single --streams 2 --fps 5 --seconds 30 \
    --bundle $R/bundle-E4h --json $R/bench-E4h.json
  $PY benchmarks/default_bundle_data.py choose --min-mean 0.892 --min-worst 0.744 --candidate E4h=$R/eval-E4h,$R/bench-E4h.json
  exit 0
fi
CK=()
for s in 1 2 3 4; do
  [ -f $R/bundle-L$s/frame.onnx ] || { echo "$R/bundle-L$s missing: run benchmarks/backbone_default_bundle.sh" >&2; exit 2; }
  CK+=($(ls -d $R/frame-256-s$s-lite1/*/fit | sort | tail -1)/best.pt)
done
[ -f $R/soup-L1234.pt ] || run $T --runs $R soup "${CK[@]}" --out $R/soup-L1234.pt
[ -d $R/bundle-S ] || run $T --runs $R bundle --out $R/bundle-S --frame $R/soup-L1234.pt --calib-data $SPLIT \
  --calib-split val --target-fpr 0.01 --name fakewatch-default-soup-L1234 --version 8-candidate-S --no-fp16
M=(--member $R/bundle-L2 --member $R/bundle-L3 --member $R/bundle-L4)
[ -d $R/bundle-Sh ] || run $T --runs $R combine --bundle $R/bundle-S --out $R/bundle-Sh --hflip \
  --calib-data $SPLIT --calib-split val --target-fpr 0.01 --version 8-candidate-Sh
[ -d $R/bundle-E4 ] || run $T --runs $R combine --bundle $R/bundle-L1 --out $R/bundle-E4 "${M[@]}" \
  --calib-data $SPLIT --calib-split val --target-fpr 0.01 --version 8-candidate-E4
[ -d $R/bundle-E4h ] || run $T --runs $R combine --bundle $R/bundle-L1 --out $R/bundle-E4h "${M[@]}" --hflip \
  --calib-data $SPLIT --calib-split val --target-fpr 0.01 --version 8-candidate-E4h
for n in Sh E4 E4h; do ev $R/bundle-$n $R/eval-$n; done
for n in Sh E4 E4h; do
  [ -f $R/bench-$n.json ] || run .venv/bin/fakewatch bench --scene single --streams 2 --fps 5 --seconds 30 \
    --bundle $R/bundle-$n --json $R/bench-$n.json
done
# the rule: the best that keeps up, if within 0.005 of @7's mean (0.897) and 0.01 of its worst family (0.754); the
# choice becomes @8 after the full eval, the scan and the demo
$PY benchmarks/default_bundle_data.py choose --min-mean 0.892 --min-worst 0.744 \
  $(for n in Sh E4 E4h; do echo --candidate $n=$R/eval-$n,$R/bench-$n.json; done)
