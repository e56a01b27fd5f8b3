#!/usr/bin/env bash
# Everything a lent GPU should run, in one call: `bash scripts/gpu_session.sh STAGE...` with STAGE in
#   tests     GPU tests (kernels natively, bf16 included) and the CPU tests' GPU twins
#   kernels   the kernel benchmark (every ResNet-50 layer, fp16 and bf16, batch 256 and 1)
#   flagship  rbench run suites/resnet50_fp16.yaml
#   triton    rbench run suites/triton_vs_torch.yaml
#   family    rbench run suites/resnet_family.yaml
#   all       all of the above, in that order
# Results go under $OUT (the device tool brings back files at most two folders down), with the
# machine's identity (nvidia-smi, rbench env) beside them. One command may run 10 minutes: pass the
# stages that fit, and several calls for the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

pip install --quiet --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
{ nvidia-smi || rocm-smi; } >"$OUT/smi.txt" 2>&1
rbench env >"$OUT/env.json" 2>&1

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(tests)
[ "${stages[0]}" = all ] && stages=(tests kernels flagship triton family)
status=0
for stage in "${stages[@]}"; do
  echo "== $stage ($(date -u +%H:%M:%S))"
  case "$stage" in
    tests)    python -m pytest tests -q -x -p no:cacheprovider 2>&1 | tail -n 40 | tee "$OUT/gpu_tests.log" ;;
    kernels)  python benchmarks/kernel_bench.py --out "$OUT" 2>&1 | tee "$OUT/kernel_bench.log" ;;
    flagship) rbench run suites/resnet50_fp16.yaml --out "$OUT" ;;
    triton)   rbench run suites/triton_vs_torch.yaml --out "$OUT" ;;
    family)   rbench run suites/resnet_family.yaml --out "$OUT" ;;
    *) echo "unknown stage $stage (tests, kernels, flagship, triton, family, all)"; false ;;
  esac
  rc=$?  # the stage's pipeline status (pipefail), or 2 for an unknown stage
  [ $rc -ne 0 ] && status=1
done
exit $status
