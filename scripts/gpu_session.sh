#!/usr/bin/env bash
# Everything a lent GPU should run, in one call: `bash scripts/gpu_session.sh STAGE...` with STAGE in
#   tests     the kernel and triton-backend tests on the GPU (compiled kernels, native bf16)
#   kernels   the kernel benchmark (every ResNet-50 layer, fp16 and bf16, batch 256 and 1)
#   flagship  rbench run suites/resnet50_fp16.yaml
#   triton    rbench run suites/triton_vs_torch.yaml, ResNet-50 only (the full suite takes hours)
#   family    rbench run suites/resnet_family.yaml
#   all       all of the above, in that order
# A device call may run 10 minutes. Suites are stopped with SIGTERM after $STAGE_S seconds (default
# 480) and marked interrupted; the same stage in a later call on the still-warm machine resumes the
# run file (kept in runs/gpu/ of the device's copy of the repo) and measures only the missing cases.
# Everything worth keeping is copied under $OUT (the device tool brings back at most 8 files, two
# folders deep): run files, logs, nvidia-smi output and `rbench env`.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
RUNS=${RUNS:-$PWD/runs/gpu}
STAGE_S=${STAGE_S:-480}
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1

pip install --quiet --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
{ nvidia-smi || rocm-smi; } >"$OUT/smi.txt" 2>&1
rbench env >"$OUT/env.json" 2>&1

# Start SUITE, or resume its latest interrupted/incomplete run file; stop it after STAGE_S seconds.
run_suite() {
  local suite=$1; shift
  local name latest
  name=$(basename "$suite" .yaml)
  latest=$(ls -t "$RUNS"/"$name"-*.jsonl 2>/dev/null | head -n 1)
  if [ -n "$latest" ] && ! tail -n 1 "$latest" | grep -q '"status": "complete"'; then
    timeout -s TERM "$STAGE_S" rbench run --resume "$latest"
  else
    timeout -s TERM "$STAGE_S" rbench run "$suite" --out "$RUNS" "$@"
  fi
  local rc=$?
  cp "$RUNS"/"$name"-*.jsonl "$OUT"/ 2>/dev/null
  [ $rc -eq 130 ] || [ $rc -eq 124 ] && echo "stopped after ${STAGE_S}s: run this stage again to resume"
  return $rc
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(tests)
[ "${stages[0]}" = all ] && stages=(tests kernels flagship triton family)
status=0
for stage in "${stages[@]}"; do
  echo "== $stage ($(date -u +%H:%M:%S))"
  case "$stage" in
    tests)    python -m pytest tests/kernels tests/test_triton_backend.py -q -p no:cacheprovider \
                --deselect tests/kernels/test_check.py 2>&1 | tail -n 60 | tee "$OUT/gpu_tests.log" ;;
    kernels)  python benchmarks/kernel_bench.py --out "$OUT" 2>&1 | tee "$OUT/kernel_bench.log" ;;
    flagship) run_suite suites/resnet50_fp16.yaml ;;
    triton)   run_suite suites/triton_vs_torch.yaml --filter resnet50/ ;;
    family)   run_suite suites/resnet_family.yaml ;;
    *) echo "unknown stage $stage (tests, kernels, flagship, triton, family, all)"; false ;;
  esac
  rc=$?  # the stage's status (pipefail), or 1 for an unknown stage
  [ $rc -ne 0 ] && status=1
done
exit $status
