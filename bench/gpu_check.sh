#!/usr/bin/env bash
# `make gpu-check`: everything we want from a lent GPU, in one command that
# fits the device tool's limits (15 minutes of device time a session, 10 a
# command, 8 files back). Run it from the checkout on the GPU machine:
#
#   make gpu-check                      # results in $OUT (the device tool's) or bench/results/gpu-check/
#   GPU_CHECK_BUDGET=540 make gpu-check # total seconds (default 540 = 9 minutes)
#
# Steps, each time-boxed so the whole stays within the budget:
#   1. build in place with TORCH_CUDA_ARCH_LIST=9.0 (or the device's own) and all cores
#   2. the CUDA tests (pytest -m cuda)
#   3. compute-sanitizer memcheck, racecheck and synccheck over bench/gpu_kernels.py,
#      which calls every kernel on small shapes (probed first; skipped with a
#      message where the sanitizer refuses the device, as on gVisor machines)
#   4. lenetalex bench --device cuda --quick: float32 (TF32 off), bfloat16, the
#      convolutions with TF32 on, and the bfloat16 convolutions on our kernels
#      alone (LENETALEX_CONV_CUDA_KERNEL=gemm: tensor-core GEMM, our backward)
#   5. LeNet-5 trained on Fashion-MNIST until 89% test accuracy, timed
#      (bench/gpu_train_lenet5.py; its lines in bench.log, the verdict in summary.md)
# Files written (8 at most, the device tool's limit): summary.md, build-tests.log,
# sanitizer.log, bench.log, bench-float32.{json,md}, bench-bfloat16.{json,md}.
# Each names the device, torch and commit. Exit 2 without a GPU; 1 if a step failed.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUTDIR=${OUT:-bench/results/gpu-check}
BUDGET=${GPU_CHECK_BUDGET:-540}
mkdir -p "$OUTDIR"
START=$(date +%s)
SUMMARY="$OUTDIR/summary.md"
FAILED=0

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
# box SECONDS RESERVE: SECONDS, or less if the steps after this need RESERVE.
box() { local l; l=$(( $(left) - $2 )); (( l < $1 )) && echo $(( l > 10 ? l : 10 )) || echo "$1"; }
say() { echo "$*" | tee -a "$SUMMARY"; }
# step NAME LOG BOX RESERVE COMMAND...: runs COMMAND under timeout, logs, records.
step() {
  local name=$1 log=$2 limit t0 rc
  limit=$(box "$3" "$4"); shift 4
  t0=$(date +%s)
  echo "== $name (limit ${limit} s): $*" >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local verdict=ok
  (( rc == 124 || rc == 137 )) && verdict="TIMED OUT after ${limit} s"
  (( rc != 0 && rc != 124 && rc != 137 )) && verdict="FAILED (exit $rc)"
  [[ $verdict != ok ]] && FAILED=1
  say "- $name: $verdict, $(( $(date +%s) - t0 )) s (log: $(basename "$log"))"
  return $rc
}

if ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu-check: no CUDA device here (torch.cuda.is_available() is False); run it on the GPU machine" >&2
  exit 2
fi

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | head -1)
{
  echo "# lenetalex gpu-check"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $commit${dirty:+ (dirty tree)}"
  $PY -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"- device: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB"); print(f"- torch: {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})")'
  echo "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
  echo "- host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo
  echo "## Steps"
} >"$SUMMARY"

# torch.library.opcheck (in the CUDA tests) needs expecttest, which the GPU
# image lacks: carry its wheel in .whl/ (the device tool's README says how;
# `pip download --no-deps -d .whl expecttest` here) and it is installed.
if ! $PY -c 'import expecttest' 2>/dev/null && ls .whl/expecttest-*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/gpu-check-site .whl/expecttest-*.whl &&
    export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi

# 1. Build. The device's own architecture (9.0 on an H100/H200) unless told.
ARCH=${TORCH_CUDA_ARCH_LIST:-$($PY -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{p.major}.{p.minor}")')}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
LOG="$OUTDIR/build-tests.log"
: >"$LOG"
if ! step "build (TORCH_CUDA_ARCH_LIST=$ARCH)" "$LOG" 240 240 \
    env TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$(nproc)" LENETALEX_CUDA=1 $PY setup.py build_ext --inplace; then
  say ""; say "The build failed: nothing else can run (see build-tests.log)."
  exit 1
fi
$PY -m lenetalex info >>"$LOG" 2>&1

# 2. The CUDA tests.
step "CUDA tests (pytest -m cuda)" "$LOG" 150 200 $PY -m pytest -q -m cuda -p no:cacheprovider tests
grep -E '^(FAILED|ERROR)|passed|failed' "$LOG" | tail -15 | sed 's/^/    /' >>"$SUMMARY"

# 3. compute-sanitizer, probed on a one-line program first.
SAN="$OUTDIR/sanitizer.log"
: >"$SAN"
if command -v compute-sanitizer >/dev/null &&
   timeout 60 compute-sanitizer --tool memcheck --error-exitcode 1 \
     $PY -c 'import torch; torch.ones(4, device="cuda").sum().item()' >>"$SAN" 2>&1; then
  for tool in memcheck racecheck synccheck; do
    step "compute-sanitizer $tool" "$SAN" 60 150 \
      compute-sanitizer --tool "$tool" --error-exitcode 1 $PY bench/gpu_kernels.py --dtypes float32,bfloat16
  done
  grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|FAIL' "$SAN" | sed 's/^/    /' >>"$SUMMARY"
else
  say "- compute-sanitizer: not run (missing, or it refused this device: see sanitizer.log)"
  step "kernel sweep without sanitizer" "$SAN" 60 150 $PY bench/gpu_kernels.py --dtypes float32,float16,bfloat16,float64
fi

# 4. The benchmark, quick: float32 (TF32 off on both sides), bfloat16, and the
# convolutions against cuDNN with TF32 on (that one's tables only in bench.log).
B="$PY -m lenetalex bench --device cuda --quick --no-progress"
BLOG="$OUTDIR/bench.log"
: >"$BLOG"
step "bench float32" "$BLOG" 150 220 \
  $B --dtype float32 --json "$OUTDIR/bench-float32.json" --markdown "$OUTDIR/bench-float32.md"
step "bench bfloat16" "$BLOG" 110 140 \
  $B --dtype bfloat16 --json "$OUTDIR/bench-bfloat16.json" --markdown "$OUTDIR/bench-bfloat16.md"
step "bench float32 conv, reference with TF32" "$BLOG" 60 90 $B --dtype float32 --ops conv --tf32
# Our conv kernels alone, no cuDNN (the testing knob): the tensor-core GEMM and
# our backward against cuDNN, the measurement plan.cuh's estimated rule awaits.
step "bench bfloat16 conv, our kernels only" "$BLOG" 50 90 \
  env LENETALEX_CONV_CUDA_KERNEL=gemm $B --dtype bfloat16 --ops conv
{ echo; echo "## Targets (float32, bfloat16, float32 conv with TF32, bfloat16 conv on our kernels; tables in bench.log)"; echo
  grep -E '^=* ?targets|\b(pass|short)\b' "$BLOG" | sed 's/^/    /'; } >>"$SUMMARY"

# 5. LeNet-5 to 89% Fashion-MNIST test accuracy: training seconds (issue 21).
# The data: the system's copy, or carried with the checkout in data/fashion-mnist
# (device tool: carry ["data/fashion-mnist"]; `make gpu-data` puts it there).
step "LeNet-5 time to 89% (bench/gpu_train_lenet5.py)" "$BLOG" 90 0 $PY bench/gpu_train_lenet5.py
grep -E '^LeNet-5 Fashion-MNIST time' "$BLOG" | sed 's/^/    /' >>"$SUMMARY"

say ""
say "total $(( $(date +%s) - START )) s of a ${BUDGET} s budget; $( ((FAILED)) && echo 'some steps FAILED' || echo 'every step ok')"
exit $FAILED
