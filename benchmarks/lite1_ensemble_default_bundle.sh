#!/usr/bin/env bash
# The Lite1 round (2026-12-04): benchmarks/backbone_default_bundle.sh's rule passed (L1, @5's recipe on an ImageNet
# EfficientNet-Lite1, six-family fakes_dev mean frame AUC 0.886 against 0.851 for @5's Lite0 network with the same
# seed), so Lite1 is the member backbone of this round. Runs after that script (its runs L1 and L2, seeds 1 and 2).
#
#   benchmarks/backbone_default_bundle.sh && benchmarks/lite1_ensemble_default_bundle.sh
#
# Candidates, all frame-only bundles recalibrated at 1 % FPR on the val reals:
#   L1    the seed-1 Lite1 network (one pass per face)
#   L1h   L1 on the crop and its mirror image (two passes)
#   LE    L1 and L2, each on the crop and its mirror image (four Lite1 passes, as @6 has four Lite0 passes)
# Rule (written down and committed before L2 or any of these combinations was scored): each candidate is scored on
# the six fakes_dev families against the held-out reals and timed with `fakewatch bench --scene single --streams 2
# --fps 5 --seconds 30`. Among the candidates that keep up with two live 720p streams at 5 analysed fps (10 fps,
# nothing lost), the highest six-family mean frame AUC is the choice, if it beats @6 (0.865) by >= 0.01. The choice
# replaces @6 as fakewatch-default@7 only after the full eval (with a DiffFake model and the fusion fitted again),
# `benchmarks/scan_fakes_dev.py` and `fakewatch demo`, in the session that builds it; this script only chooses.
# fakes_dev is used for validation and model choice only, never as training data.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${R:-runs/backbone}
. benchmarks/lib.sh
for s in 1 2; do
  [ -f $R/bundle-L$s/frame.onnx ] || { echo "$R/bundle-L$s missing: run benchmarks/backbone_default_bundle.sh" >&2; exit 2; }
done
[ -d $R/bundle-L1h ] || run $T --runs $R combine --bundle $R/bundle-L1 --out $R/bundle-L1h --hflip \
  --calib-data $SPLIT --calib-split val --target-fpr 0.01 --version 7-candidate-L1h
[ -d $R/bundle-LE ] || run $T --runs $R combine --bundle $R/bundle-L1 --out $R/bundle-LE --member $R/bundle-L2 --hflip \
  --calib-data $SPLIT --calib-split val --target-fpr 0.01 --version 7-candidate-LE
for n in L1 L1h LE; do
  ev $R/bundle-$n $R/eval-$n
  [ -f $R/bench-$n.json ] || run .venv/bin/fakewatch bench --scene single --streams 2 --fps 5 --seconds 30 \
    --bundle $R/bundle-$n --json $R/bench-$n.json
done
# the rule: the best that keeps up, if it beats @6 (0.865) by >= 0.01; the choice becomes @7 (SHIP below)
$PY benchmarks/default_bundle_data.py choose --min-mean 0.875 \
  $(for n in L1 L1h LE; do echo --candidate $n=$R/eval-$n,$R/bench-$n.json; done)

# SHIP=<choice> builds fakewatch-default@7 into $OUT (the rule above picked it): the choice's frame graph, @6's DiffFake
# model taken over unchanged (`combine --temporal`), the fusion fitted again on the val pseudo-fake videos, the full
# eval (frame + temporal) of @7 and of @6 on the same sets, and the bundle's manifest and README.
#
#   SHIP=L1h benchmarks/lite1_ensemble_default_bundle.sh     # about 25 min more on an idle 2-core box
[ -n "${SHIP:-}" ] || exit 0
case $SHIP in
  L1h) COMB=(--hflip) ;;
  LE) COMB=(--member $R/bundle-L2 --hflip) ;;
  *) echo "SHIP=$SHIP: only L1h or LE are combinations this script can build" >&2; exit 2 ;;
esac
OUT=${OUT:-detectors/bundles/default}
V6=${V6:-f6c9f54}   # a commit whose detectors/bundles/default is fakewatch-default@6
bundle_at $V6 $R/bundle-v6
[ -d $R/bundle-v7 ] || run $T --runs $R combine --bundle $R/bundle-L1 --out $R/bundle-v7 "${COMB[@]}" \
  --calib-data $SPLIT --calib-split val --target-fpr 0.01 --temporal $R/bundle-v6 --fusion-data $C/valsets4 \
  --name fakewatch-default --version 7
for v in v7 v6; do
  [ -f $R/eval-$v/metrics_all.json ] || run $T --runs $R eval --bundle $R/bundle-$v --data $C/testsets4 \
    --data $C/fakesdev4 --group-by dataset+method --out $R/eval-$v
done
rm -rf $OUT && mkdir -p $OUT
cp $R/bundle-v7/manifest.json $R/bundle-v7/frame.onnx $R/bundle-v7/embed.onnx $R/bundle-v7/gmm.npz $OUT/
# provenance: @6's commands and training runs (its DiffFake model and data cache come from @5), then this round's;
# the frame networks start from ImageNet Lite1, the DiffFake embedder (@6's) from ImageNet Lite0
$PY - $R <<'PYEOF'
import json, sys
from detectors.models.pretrained import get_source, provenance
r = sys.argv[1]
p6 = json.load(open(f"{r}/bundle-v6/manifest.json"))["provenance"]
with open(f"{r}/commands-v7.txt", "w") as f:
    f.write("# fakewatch-default@6 (the DiffFake model, from @5; the data cache), from its manifest:\n")
    f.write("\n".join(p6["commands"]) + "\n")
    f.write("# fakewatch-default@7 (benchmarks/backbone_default_bundle.sh, benchmarks/lite1_ensemble_default_bundle.sh):\n")
    f.write(open(f"{r}/commands.txt").read())
json.dump({"training_runs": p6["training_runs"], "training_runs_v5": p6["training_runs_v5"]},
          open(f"{r}/training-runs-v6.json", "w"), indent=1)
json.dump(provenance(get_source("efficientnet_lite1")), open(f"{r}/pretrained-lite1.json", "w"), indent=1)
json.dump(p6["pretrained"], open(f"{r}/pretrained-temporal.json", "w"), indent=1)
json.dump(p6["reconstruction_autoencoder"], open(f"{r}/autoencoder.json", "w"), indent=1)
PYEOF
RUNS=(--run frame_256_s1_lite1=$(ls -d $R/frame-256-s1-lite1/*/fit | sort | tail -1))
[ $SHIP = LE ] && RUNS+=(--run frame_256_s2_lite1=$(ls -d $R/frame-256-s2-lite1/*/fit | sort | tail -1))
run $PY benchmarks/default_bundle_data.py finalize $OUT --split $SPLIT --tests $C/testsets4 "${RUNS[@]}" \
  --eval "fakewatch-default@7 (shipped)=$R/eval-v7" --eval "previous bundle fakewatch-default@6=$R/eval-v6" \
  --commands $R/commands-v7.txt --notes docs/default-bundle.md --extra pretrained=$R/pretrained-lite1.json \
  --extra pretrained_temporal=$R/pretrained-temporal.json --extra reconstruction_autoencoder=$R/autoencoder.json \
  --extra training_runs_v6=$R/training-runs-v6.json
