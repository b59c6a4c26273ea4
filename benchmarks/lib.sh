# Shared preamble of the benchmarks/*_default_bundle.sh round scripts. Sourced, not run, from the checkout root
# after the script has set R (its run folder, gitignored):
#
#   set -euo pipefail
#   cd "$(dirname "$0")/.."
#   R=${R:-runs/<round>}
#   . benchmarks/lib.sh
#
# It names the tools and the data cache of benchmarks/train_default_bundle.sh (steps 1-4), starts the round's
# command log and runs everything on two threads (one 2-core box).
T=.venv/bin/fakewatch-train
PY=.venv/bin/python
C=data-cache/default-bundle
SPLIT=$C/split4
CMDS=$R/commands.txt   # every command `run` ran, in order: a shipped bundle's provenance.commands come from here
mkdir -p "$R"
[ -f "$CMDS" ] || : > "$CMDS"
export OMP_NUM_THREADS=2

# run CMD [ARG ...]: log the command line in $CMDS, then run it
run() { echo "$*" >> "$CMDS"; "$@"; }

# ev BUNDLE OUT: frame-only eval of BUNDLE on the held-out test reals and the fakes_dev families into OUT (skipped when
# OUT already has its metrics)
ev() { [ -f "$2/metrics_all.json" ] || run $T --runs $R eval --bundle "$1" --data $C/testsets4 --data $C/fakesdev4 \
  --group-by dataset+method --models frame --out "$2"; }

# bundle_at COMMIT DIR: the default bundle as committed at COMMIT (detectors/bundles/default), copied into DIR
bundle_at() {
  mkdir -p "$2"
  local f
  for f in manifest.json frame.onnx embed.onnx gmm.npz README.md; do
    git show "$1:detectors/bundles/default/$f" > "$2/$f"
  done
}
