#!/usr/bin/env bash
# The steps of docs/ci/github-actions.yml, end to end on a CPU, without GitHub:
#   1. run a suite and store it as the baseline for this machine,
#   2. run it again and compare: nothing changed, so `rbench compare` exits 0,
#   3. run it while two busy processes compete for the CPU (a real slowdown) and compare: exits 1,
#   4. export the runs as CSV, github-action-benchmark and Bencher JSON.
# Usage: bash docs/ci/dry-run-cpu.sh [WORKDIR]     (about two minutes; needs rbench installed)
set -euo pipefail

WORK=${1:-$(mktemp -d -t rbench-ci-XXXX)}
SUITE=${SUITE:-docs/ci/cpu-ci.yaml}
# One thread: several threads contending with other processes on a small machine make CPU timings
# an order of magnitude noisier.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$WORK"
echo "working in $WORK"

echo "== 1. baseline run"
rbench run "$SUITE" --out "$WORK/baseline-run" > "$WORK/baseline-run.log"
rbench baseline update "$(rbench latest "$WORK/baseline-run")" --into "$WORK/baselines/this-cpu"

compare_latest() {  # $1: directory holding the new run; prints the markdown, echoes compare's exit status
    local new base code=0
    new=$(rbench latest "$1")
    base=$(rbench baseline find "$new" --root "$WORK/baselines")
    rbench compare "$base" "$new" --format markdown > "$1.md" || code=$?
    cat "$1.md" >&2
    echo "$code"
}

echo "== 2. unchanged run"
rbench run "$SUITE" --out "$WORK/ci" > "$WORK/ci.log"
same=$(compare_latest "$WORK/ci")

echo "== 3. slowed run: two busy processes share the CPU with it"
python3 -c 'while True: pass' & hog1=$!
python3 -c 'while True: pass' & hog2=$!
trap 'kill $hog1 $hog2 2>/dev/null || true' EXIT
rbench run "$SUITE" --out "$WORK/ci-slow" > "$WORK/ci-slow.log"
kill $hog1 $hog2
trap - EXIT
slowed=$(compare_latest "$WORK/ci-slow")

echo "== 4. exports for dashboards: CSV, github-action-benchmark and Bencher JSON"
rbench export "$WORK/ci" "$WORK/ci-slow" --format csv -o "$WORK/cases.csv"
rbench export "$(rbench latest "$WORK/ci")" --format gab -o "$WORK/gab-latency.json"
rbench export "$(rbench latest "$WORK/ci")" --format bmf -o "$WORK/bmf.json"

echo "== exit status of rbench compare: unchanged run $same (want 0), slowed run $slowed (want 1)"
[ "$same" -eq 0 ] && [ "$slowed" -eq 1 ]
