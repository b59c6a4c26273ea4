#!/usr/bin/env bash
# A four-network round (2026-12-03, night; rule written before any candidate was scored): the two template networks
# of @6 (@5's seed 1 = A, seed 2 = T2) and the two face-mesh networks of benchmarks/landmarks_default_bundle.sh (M1,
# M2), combined by `fakewatch-train combine` into one ONNX graph, recalibrated at 1 % FPR on the val reals and
# frame-scored on the same sets. Needs that script's runs/landmarks (bundles A, T2, M1, M2).
#
#   benchmarks/ensemble4_default_bundle.sh     # about 15 min for G on an idle 2-core box (H: about 25 more)
#
# Candidates: G = mean logit of the four networks on the crop (four passes per face, as @6); H = G with mirror
# averaging (eight passes). Rule: among the candidates that keep up in `fakewatch bench --scene single --streams 2
# --fps 5 --seconds 30` (no frame dropped), the highest six-family fakes_dev mean frame AUC replaces @6 if it beats
# @6's 0.865 by >= 0.01; shipping needs the full eval, scan, bench and demo (a later session). CANDS picks which are
# built (default G). fakes_dev is used for validation and model choice only, never as training data.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${R:-runs/landmarks}
. benchmarks/lib.sh
for n in A T2 M1 M2; do [ -f $R/bundle-$n/frame.onnx ] || { echo "$R/bundle-$n missing: run benchmarks/landmarks_default_bundle.sh" >&2; exit 2; }; done
for x in ${CANDS:-G}; do
  flip=""; [ $x = H ] && flip=--hflip
  [ -d $R/bundle-$x ] || run $T --runs $R combine --bundle $R/bundle-A --out $R/bundle-$x --member $R/bundle-T2 \
    --member $R/bundle-M1 --member $R/bundle-M2 $flip --calib-data $SPLIT --calib-split val --target-fpr 0.01 \
    --version 7-candidate-$x
  [ -f $R/eval-$x/metrics_all.json ] || run $T --runs $R eval --bundle $R/bundle-$x --data $C/testsets4 \
    --data $C/fakesdev4 --group-by dataset+method --models frame --out $R/eval-$x
  [ -f $R/bench-$x.txt ] || run .venv/bin/fakewatch bench --scene single --streams 2 --fps 5 --seconds 30 \
    --bundle $R/bundle-$x | tee $R/bench-$x.txt
done
.venv/bin/python - $R ${CANDS:-G} <<'PYEOF'
import json, sys
r, cands = sys.argv[1], sys.argv[2:]
for x in cands:
    a = [v["frame_auc"] for v in json.load(open(f"{r}/eval-{x}/metrics_all.json"))
         if v["model"] == "frame" and v["set"].startswith("fakes_dev/")]
    assert len(a) == 6, a
    print(f"{x}: six-family mean frame AUC {sum(a) / 6:.4f}, worst {min(a):.3f} (@6: 0.865 / 0.703; "
          f"rule: >= 0.875 and keeps up in bench-{x}.txt)")
PYEOF
