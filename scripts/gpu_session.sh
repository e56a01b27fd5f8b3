#!/usr/bin/env bash
# Everything a lent GPU should run: `bash scripts/gpu_session.sh STAGE...` (default: all). Stages, in
# the order `all` runs them:
#   tests      the quick tier of the kernel tests on the GPU (`-m quick` once that marker exists)
#   flagship   rbench run suites/resnet50_fp16.yaml (eager vs compile vs triton)
#   kernels    benchmarks/kernel_bench.py (every ResNet-50 layer against cuDNN), JSON written per layer
#   triton     rbench run suites/triton_vs_torch.yaml, ResNet-50 only (the whole family takes hours)
#   family     rbench run suites/resnet_family.yaml
#   scenarios  rbench run suites/resnet50_mlperf.yaml  } stages of later work: until the suite file
#   lowprec    rbench run suites/resnet50_int8.yaml    } exists the stage says "suite not present
#   ddp        rbench run suites/resnet50_ddp.yaml     } yet" and the next one runs
#   pybench    pytest-benchmark timings of the kernels (benchmarks/), for `rbench compare`
#   fulltests  every kernel and triton-backend test on the GPU
# Nothing is installed: the checkout and kernels/ go on PYTHONPATH (Python 3.10-3.12, torch >= 2.4,
# triton >= 3.2 as found). One call fits a 10-minute command: the stages share SESSION_S seconds
# (default 540), each at most STAGE_S; a stage stopped by its budget resumes in the next call, and
# finished stages are not run again. State lives in RUNS (default runs/gpu). On a fresh machine the
# previous call's archive, copied to runs/gpu-results.tar.gz (or named by GPU_SESSION_RESUME),
# restores it. Every call ends (also when a stage fails or the call is interrupted) by writing ONE
# archive, $OUT/gpu-results.tar.gz (<= 16 MiB: run files, logs, rbench env, nvidia-smi/rocm-smi,
# kernel benchmark and pytest-benchmark JSON, report.html, manifest.json), and a one-screen summary.
# It is also rewritten after every stage, so even a call killed outright keeps what it measured.
# `rbench results import gpu-results.tar.gz` files it under results/.
# GPU_SESSION_DRY=1 runs every stage's CPU form in a few minutes (kernel tests on a few shapes under
# the Triton interpreter, the benchmark's --cpu-smoke, a few tiny cases of each suite's CPU profile).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
DRY=${GPU_SESSION_DRY:-0}
OUT=${OUT:-$ROOT/out}
if [ "$DRY" = 1 ]; then RUNS=${RUNS:-$ROOT/runs/gpu-dry}; else RUNS=${RUNS:-$ROOT/runs/gpu}; fi
SESSION_S=${SESSION_S:-540}
STAGE_S=${STAGE_S:-$SESSION_S}
MIN_STAGE_S=${MIN_STAGE_S:-40}  # no stage is started with less time than this left
PACK_S=60                       # kept back for a stage's kill grace, the report, the archive and the summary
# The report and the summary are bounded so that the call ends in time; a dry run has no call limit.
if [ "$DRY" = 1 ]; then REPORT_S=300 SUMMARY_S=120; else REPORT_S=45 SUMMARY_S=30; fi
MAX_BYTES=$((16 * 1024 * 1024)) # the most one returned file may hold
PY=${PYTHON:-$(command -v python3 || command -v python)}
ARCHIVE=$OUT/gpu-results.tar.gz
START=$(date +%s)
DEADLINE=$((START + SESSION_S))
export PYTHONPATH="$ROOT:$ROOT/kernels${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

ALL=(tests flagship kernels triton family scenarios lowprec ddp pybench fulltests)
declare -A SUITE=([flagship]=suites/resnet50_fp16.yaml [triton]=suites/triton_vs_torch.yaml
                  [family]=suites/resnet_family.yaml [scenarios]=suites/resnet50_mlperf.yaml
                  [lowprec]=suites/resnet50_int8.yaml [ddp]=suites/resnet50_ddp.yaml)
declare -A GPU_ARGS=([triton]="--filter resnet50/")
# The dry run's few tiny cases of each suite's CPU profile (the rest is recorded `skipped`): one
# case that proves the stage's path (for ddp: two gloo ranks under torchrun). `bs1/` is the guess for
# a suite not written yet; its author checks it against the suite's case ids (a filter that selects
# nothing fails the stage, and tests/test_gpu_session.py with it).
declare -A DRY_ARGS=([flagship]="--filter resnet50/bs1/224px/fp32/eager/inference" [triton]="--filter resnet18/bs1/32px/fp16/"
                     [family]="--filter resnet18/" [scenarios]="--filter bs1/" [lowprec]="--filter bs1/"
                     [ddp]="--filter training/channels_last/np2")
# Kernel tests on a few shapes (stem, a stride-2 1x1, a 1x1 expand, add_act) in fp16.
QUICK_K="(test_conv_bn_act or test_conv1x1_bn_act or test_add_act) and fp16 and (stem_7x7s2 or r18_l2_down or r50_l1_expand or contig)"
if [ "$DRY" != 1 ] && grep -Eq '^[[:space:]]*"quick[:"]' pyproject.toml; then
  QUICK=(tests/kernels tests/test_cuda_graph.py -m quick)
else
  QUICK=(tests/kernels -k "$QUICK_K")
fi
if [ "$DRY" = 1 ]; then
  FULL=(tests/test_triton_backend.py -k "test_every_resnet_converts_to_one_kernel_per_convolution and resnet18")
else
  FULL=(tests/kernels tests/test_triton_backend.py tests/test_cuda_graph.py --deselect tests/kernels/test_check.py)
fi

mkdir -p "$OUT" "$RUNS/logs" "$RUNS/state" || exit 2
RESUME_FROM=${GPU_SESSION_RESUME:-}
[ -z "$RESUME_FROM" ] && [ "$DRY" != 1 ] && RESUME_FROM=$ROOT/runs/gpu-results.tar.gz
if [ ! -f "$RUNS/session" ] && [ -n "$RESUME_FROM" ] && [ -f "$RESUME_FROM" ]; then
  tar -xzf "$RESUME_FROM" -C "$RUNS" --strip-components=1 && echo "restored the session from $RESUME_FROM"
fi
[ -f "$RUNS/session" ] || echo "$(date -u +%Y%m%dT%H%M%SZ)-$$-$RANDOM" >"$RUNS/session"
CALL=$(( $(cat "$RUNS/calls" 2>/dev/null || echo 0) + 1 ))
echo "$CALL" >"$RUNS/calls"

state() { cat "$RUNS/state/$1" 2>/dev/null || echo todo; }
set_state() { echo "$2" >"$RUNS/state/$1"; }
left_s() { echo $((DEADLINE - $(date +%s) - PACK_S)); }
log_tail() { echo "   ... $1 (last lines):"; tail -n "${2:-6}" "$1" | cut -c1-160 | sed 's/^/   | /'; }

CHILD=""
# Run a command into LOG (streamed: every line lands in the file as it is printed) for at most BUDGET
# seconds; TERM first (suites mark their run file interrupted), KILL 20 s later.
limited() {
  local budget=$1 log=$2; shift 2
  echo "+ $* (call $CALL, budget ${budget}s, $(date -u +%H:%M:%S))" >>"$log"
  timeout -s TERM -k 20 "$budget" "$@" >>"$log" 2>&1 </dev/null &
  CHILD=$!
  wait "$CHILD"
  local rc=$?
  CHILD=""
  return $rc
}

# pytest: 0 passed, 1 failures, 5 nothing collected; 124 the budget ran out (run again next call).
stage_pytest() {
  local stage=$1 budget=$2 log=$RUNS/logs/$1.log; shift 2
  limited "$budget" "$log" "$PY" -m pytest -v -p no:cacheprovider -rfEs --junitxml="$RUNS/logs/$stage.junit.xml" "$@"
  local rc=$?
  case $rc in
    0) set_state "$stage" done ;;
    124|137) set_state "$stage" stopped ;;
    1) set_state "$stage" "failed (test failures)" ;;
    5) set_state "$stage" "failed (no tests collected)" ;;
    *) set_state "$stage" "failed (pytest exit $rc)" ;;
  esac
  log_tail "$log" 3
}

stage_kernels() {
  local budget=$1 log=$RUNS/logs/kernels.log
  local args=(--json "$RUNS/kernel_bench.json" --resume --budget-s $((budget - 15)) --busy flag)
  [ "$DRY" = 1 ] && args+=(--cpu-smoke --dtype fp16)
  limited "$budget" "$log" "$PY" benchmarks/kernel_bench.py "${args[@]}"
  local rc=$?
  case $rc in
    0) set_state kernels done ;;
    3|124|137) set_state kernels stopped ;;
    *) set_state kernels "failed (exit $rc)" ;;
  esac
  log_tail "$log" 4
}

# Start the stage's suite, or resume its unfinished run file (the run file keeps its --filter).
stage_suite() {
  local stage=$1 budget=$2 file=${SUITE[$1]} log=$RUNS/logs/$1.log dir=$RUNS/$1 latest extra
  if [ ! -f "$file" ]; then
    echo "stage $stage: suite not present yet ($file)"
    set_state "$stage" "absent (no $file yet)"
    return
  fi
  if [ "$DRY" = 1 ]; then read -r -a extra <<<"${DRY_ARGS[$stage]:-}"; else read -r -a extra <<<"${GPU_ARGS[$stage]:-}"; fi
  mkdir -p "$dir"
  latest=$(ls -t "$dir"/*.jsonl 2>/dev/null | head -n 1)
  if [ -n "$latest" ] && ! tail -n 1 "$latest" | grep -q '"status": "complete"'; then
    limited "$budget" "$log" "$PY" -m rbench.cli run --resume "$latest"
  else
    limited "$budget" "$log" "$PY" -m rbench.cli run "$file" --out "$dir" "${extra[@]}"
  fi
  local rc=$?
  case $rc in
    0) set_state "$stage" done ;;
    124|130|137) set_state "$stage" stopped ;;
    *) set_state "$stage" "failed (rbench exit $rc)" ;;
  esac
  log_tail "$log" 2
}

run_stage() {
  local stage=$1 budget=$2
  case $stage in
    tests) stage_pytest tests "$budget" "${QUICK[@]}" ;;
    fulltests) stage_pytest fulltests "$budget" "${FULL[@]}" ;;
    pybench) stage_pytest pybench "$budget" benchmarks --benchmark-json="$RUNS/pytest-benchmark.json" \
               --benchmark-save-data ;;
    kernels) stage_kernels "$budget" ;;
    *) stage_suite "$stage" "$budget" ;;
  esac
}

# Copy RUNS into a staging folder (logs over 2 MiB keep their head and tail) and pack it; if the
# archive would not come back (over 16 MiB), leave out report.html, then the logs. Run files stay.
pack() {
  local tmp; tmp=$(mktemp -d) || return 1
  cp -R "$RUNS" "$tmp/gpu-results"
  find "$tmp/gpu-results" -type f \( -name '*.log' -o -name '*.txt' \) -size +2M | while read -r f; do
    { head -c 262144 "$f"; printf '\n[... %s bytes cut by gpu_session.sh ...]\n' "$(wc -c <"$f")"; tail -c 1572864 "$f"; } >"$f.cut"
    mv "$f.cut" "$f"
  done
  local drop
  for drop in none report logs; do
    case $drop in
      report) rm -f "$tmp/gpu-results/report.html" ;;
      logs) find "$tmp/gpu-results" -type f -name '*.log' -delete ;;
    esac
    tar -czf "$ARCHIVE.part" -C "$tmp" gpu-results || break
    if [ "$(wc -c <"$ARCHIVE.part")" -le "$MAX_BYTES" ]; then
      [ "$drop" != none ] && echo "WARNING: archive over 16 MiB: left out the $drop"
      mv "$ARCHIVE.part" "$ARCHIVE"
      break
    fi
  done
  rm -rf "$tmp" "$ARCHIVE.part"
}

manifest() {
  local sha dirty=null s first=1
  sha=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo "${RBENCH_GIT_SHA:-}")
  if git -C "$ROOT" rev-parse HEAD >/dev/null 2>&1; then
    if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then dirty=true; else dirty=false; fi
  fi
  {
    printf '{"kind": "rbench.gpu_session", "session": "%s", "call": %d, "dry": %s, "updated": "%s",\n' \
      "$(cat "$RUNS/session")" "$CALL" "$([ "$DRY" = 1 ] && echo true || echo false)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf ' "git": {"sha": "%s", "dirty": %s}, "session_s": %d, "stages": {' "$sha" "$dirty" "$SESSION_S"
    for s in "${ALL[@]}"; do
      [ $first = 1 ] || printf ', '
      first=0
      printf '"%s": "%s"' "$s" "$(state "$s")"
    done
    printf '}}\n'
  } >"$RUNS/manifest.json"
}

summary() {
  local s st todo=()
  echo "==== gpu_session: call $CALL, $(( $(date +%s) - START ))s of SESSION_S=${SESSION_S}s$([ "$DRY" = 1 ] && echo ', DRY RUN on the CPU') ===="
  for s in "${ALL[@]}"; do
    st=$(state "$s")
    printf '  %-10s %s\n' "$s" "$st"
    case $st in done*|failed*|absent*) ;; *) todo+=("$s") ;; esac
  done
  timeout "$SUMMARY_S" "$PY" -m rbench.cli results summary "$RUNS" 2>&1 | head -n 30
  if [ ${#todo[@]} -gt 0 ]; then
    echo "left: ${todo[*]}: run this script again (on a fresh machine, carry this archive as runs/gpu-results.tar.gz)"
  else
    echo "left: nothing"
  fi
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  local s
  for s in "${ALL[@]}"; do [ "$(state "$s")" = running ] && set_state "$s" "stopped (call ended)"; done
  if ls "$RUNS"/*/*.jsonl >/dev/null 2>&1; then
    timeout "$REPORT_S" "$PY" -m rbench.cli report "$RUNS" --html "$RUNS/report.html" --title "rbench GPU session" \
      >"$RUNS/logs/report.log" 2>&1 || echo "report not written (see logs/report.log)"
  fi
  summary | tee "$RUNS/summary.txt"
  manifest
  pack
  if [ -f "$ARCHIVE" ]; then
    echo "archive: $ARCHIVE ($(( $(wc -c <"$ARCHIVE") / 1024 )) KiB); file it with: rbench results import gpu-results.tar.gz"
  else
    echo "ERROR: no archive written"
    rc=1
  fi
  exit "$rc"
}

interrupted() {
  echo "gpu_session: interrupted; writing the archive"
  [ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null && wait "$CHILD"
  exit 130
}
trap finish EXIT
trap interrupted INT TERM

{ echo "== call $CALL, $(date -u)"
  if command -v nvidia-smi >/dev/null; then nvidia-smi; [ "$CALL" = 1 ] && nvidia-smi -q
  elif command -v rocm-smi >/dev/null; then rocm-smi; [ "$CALL" = 1 ] && rocm-smi --showallinfo
  else echo "no nvidia-smi or rocm-smi on this machine"; fi
} >>"$RUNS/smi.txt" 2>&1
# This machine's identity every call; a session continues only on the device it started on.
"$PY" -m rbench.cli env >"$RUNS/logs/env-call$CALL.json" 2>>"$RUNS/logs/env.log"
[ -s "$RUNS/env.json" ] || cp "$RUNS/logs/env-call$CALL.json" "$RUNS/env.json"
device_of() { "$PY" -c 'import json, sys; print((json.load(open(sys.argv[1])).get("device") or {}).get("name"))' "$1" 2>/dev/null; }
was=$(device_of "$RUNS/env.json")
now=$(device_of "$RUNS/logs/env-call$CALL.json")
if [ "$was" != "$now" ]; then
  echo "ERROR: this session ($RUNS) was measured on '$was', this machine is '$now': start a new one (RUNS=another/dir, or remove $RUNS)"
  exit 2
fi
if [ "$DRY" != 1 ] && grep -q '"kind": "cpu"' "$RUNS/env.json" && ! grep -q '"kind": "\(cuda\|rocm\|xpu\)"' "$RUNS/env.json"; then
  echo "WARNING: rbench sees no GPU here; the suites run their CPU profiles (GPU_SESSION_DRY=1 is the quick dry run)"
fi

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(all)
[ "${stages[0]}" = all ] && stages=("${ALL[@]}")
status=0
for stage in "${stages[@]}"; do
  if [[ ! " ${ALL[*]} " == *" $stage "* ]]; then
    echo "unknown stage $stage (known: ${ALL[*]}, all)"
    status=2
    continue
  fi
  case $(state "$stage") in
    done*|failed*) echo "== $stage: $(state "$stage") in an earlier call (rm $RUNS/state/$stage to run it again)"; continue ;;
  esac
  budget=$(left_s)
  [ "$budget" -gt "$STAGE_S" ] && budget=$STAGE_S
  if [ "$budget" -lt "$MIN_STAGE_S" ]; then
    echo "== $stage: not started, ${budget}s left in this call (the next call runs it)"
    continue
  fi
  echo "== $stage ($(date -u +%H:%M:%S), budget ${budget}s)"
  set_state "$stage" running
  run_stage "$stage" "$budget"
  case $(state "$stage") in failed*) status=1 ;; esac
  manifest
  pack
done
exit $status
