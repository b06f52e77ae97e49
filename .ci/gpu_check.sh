#!/usr/bin/env bash
# The GPU check of issue 10, as ONE command for a machine with an NVIDIA GPU (the device tool):
#
#     bash .ci/gpu_check.sh            # logs and a summary go to $OUT (default: ./gpu_check_out)
#
# Budget: BUDGET seconds in all (default 540: one device call allows 600); each step has its own
# timeout, cut to what is left, most important first. It installs nothing that is already
# importable: CuPy, pytest and hypothesis are installed only when missing (the device may have no
# network; a failed install is logged and the steps that need it report why they were skipped).
# Steps, in order:
#   1. the machine: nvidia-smi, Python, NumPy, CuPy, PyTorch (+ CUDA?) versions
#   2. tests/test_kernels.py: every fast path (minienc/kernels/: CuPy kernels, fused optimizer
#      updates) against its reference, on the GPU
#   3. tests/test_gpu_path.py: same seed -> same weights, first 20 losses CPU vs GPU, no hidden
#      host sync in a Trainer step
#   4. the benchmark on the GPU at batch 256 (ViT workloads too), fused kernels on, then off
#      (MINIENC_FUSED_KERNELS=0: what the fast paths in minienc/kernels/ buy)
#   5. minienc.distributed's NCCL engine with one GPU (collectives, a 3-step SimCLR through the
#      Trainer against a plain run)
#   6. the whole test suite's CUDA cases (-k cuda)
#   7. every image demo with --device cuda on the 32x32 digit canvas, timed (what a GPU buys), the
#      text demo, and the MLP workloads at batch 1024
#   8. every objective at its defaults on the GPU against the CPU's table (.ci/gpu_vs_cpu.py: the
#      same seed, 5-shot within 0.5 points), best as a call of its own: ONLY=compare_cuda ...
# One device call may not hold it all: the steps run most important first, and a second call
# runs what was left, by name: ONLY="demos_cuda benchmark_cuda_1024" bash .ci/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
export HYPOTHESIS_PROFILE=ci MPLBACKEND=Agg PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # minienc from this checkout, not installed
PY=${PYTHON:-python3}

note() { echo "$*" | tee -a "$SUMMARY"; }

# the whole script stays inside one device call: steps get what is left of BUDGET seconds
BUDGET=${BUDGET:-540}

# run NAME SECONDS CMD...: CMD under a timeout, its output in $OUT/NAME.log, one summary line
run() {
    local name=$1 limit=$2; shift 2
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
    local left=$((BUDGET - SECONDS))
    if [ $left -lt 20 ]; then note "$name: SKIPPED, the ${BUDGET}s budget is spent"; return 0; fi
    [ $limit -gt $left ] && limit=$left
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local tail_line
    tail_line=$(grep -E "passed|failed|error|skipped" "$OUT/$name.log" | tail -1)
    note "$name: rc=$rc ($((SECONDS - start))s, limit ${limit}s) ${tail_line}"
    [ $rc -eq 124 ] && note "  $name TIMED OUT: see $OUT/$name.log"
    [ $rc -ne 0 ] && tail -3 "$OUT/$name.log" | sed 's/^/  | /' >> "$SUMMARY"
    return 0
}

importable() { $PY -c "import $1" > /dev/null 2>&1; }

# ----- 1. the machine --------------------------------------------------------------------------
note "# minienc GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || note "nvidia-smi failed (no GPU or no driver?)"
head -15 "$OUT/nvidia-smi.txt" >> "$SUMMARY"
for pkg in "numpy" "pytest" "hypothesis"; do
    importable "$pkg" || timeout 60 $PY -m pip install -q "$pkg" >> "$OUT/install.log" 2>&1 \
        || note "could not install $pkg (see install.log)"
done
if ! importable cupy && nvidia-smi > /dev/null 2>&1; then
    # the CUDA major version of the driver picks the wheel (cupy-cuda12x or cupy-cuda11x)
    cuda_major=$(nvidia-smi 2>/dev/null | grep -o "CUDA Version: [0-9]*" | grep -o "[0-9]*$")
    wheel="cupy-cuda${cuda_major:-12}x"
    note "CuPy missing: pip install $wheel"
    timeout 150 $PY -m pip install -q "$wheel" >> "$OUT/install.log" 2>&1 \
        || note "could not install $wheel (see install.log): GPU steps will be skipped"
fi
$PY - >> "$SUMMARY" 2>&1 <<'EOF'
import platform, numpy
print("python", platform.python_version(), "numpy", numpy.__version__)
try:
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print("cupy", cupy.__version__, "device", props["name"].decode(),
          "CUDA runtime", cupy.cuda.runtime.runtimeGetVersion())
except Exception as exc:  # reported, not fatal: the summary says what could not run
    print("cupy unusable:", exc)
try:
    import torch
    print("torch", torch.__version__, "cuda available", torch.cuda.is_available())
except ImportError:
    print("torch not installed: the benchmark runs without its PyTorch rows")
EOF
$PY -c "import minienc; assert minienc.cuda_available()" > /dev/null 2>&1 \
    || note "WARNING: minienc sees no CUDA device; the GPU tests below will all be skipped"

# ----- 2-3. the kernels and the GPU path -------------------------------------------------------
run kernels 90 $PY -m pytest -q -rs tests/test_kernels.py
run gpu_path 150 $PY -m pytest -q -rs tests/test_gpu_path.py

# ----- 4. the benchmark ------------------------------------------------------------------------
run benchmark_cuda 150 $PY benchmarks/benchmark.py --workloads all --device cuda --batch 256 \
    --warmup 5 --repeats 20 --inner 5
run benchmark_cuda_unfused 60 env MINIENC_FUSED_KERNELS=0 $PY benchmarks/benchmark.py \
    --workloads vit_mae,vit_jepa --device cuda --batch 256 --impls minienc --warmup 5 --repeats 20 --inner 5
for log in benchmark_cuda benchmark_cuda_unfused; do
    { echo "## $log"; grep -E "^\| |^note|^# " "$OUT/$log.log"; } >> "$SUMMARY" 2>/dev/null
done

# ----- 5. NCCL through CuPy, world size 1 ----------------------------------------------------------
run distributed_nccl 90 $PY -m pytest -q -rs tests/test_distributed.py -k cuda

# ----- 6. the whole suite on the GPU -----------------------------------------------------------
run suite_cuda 120 $PY -m pytest -q -x -k cuda tests

# ----- 7. the demos on the GPU, and larger batches -------------------------------------------------
# each image demo on the canvas for 600 steps (the CPU default is the 8x8 digits); the log keeps
# each demo's wall time and its evaluation row
demos_cuda() {
    local demo
    for demo in autoencoder denoising vae triplet simclr moco mae jepa lejepa byol simsiam vicreg \
                barlow dino mlm; do
        local start=$SECONDS
        echo "### $demo"
        local data="--data digits-canvas:32"
        [ $demo = mlm ] && data=""   # text: the built-in corpus
        $PY demos/$demo.py --device cuda $data --steps 600 --overwrite \
            --out "$OUT/demos/$demo" 2>&1 | tail -12
        echo "### $demo: $((SECONDS - start)) s"
    done
}
export -f demos_cuda; export PY OUT
run demos_cuda 300 bash -c demos_cuda
grep -E "^### .*: [0-9]+ s" "$OUT/demos_cuda.log" >> "$SUMMARY" 2>/dev/null
run benchmark_cuda_1024 60 $PY benchmarks/benchmark.py --workloads mlp_ae,simclr_mlp --device cuda \
    --batch 1024 --warmup 5 --repeats 20 --inner 5
{ echo "## benchmark_cuda_1024"; grep -E "^\| |^note|^# " "$OUT/benchmark_cuda_1024.log"; } >> "$SUMMARY" 2>/dev/null
# ----- 8. issue 30's bar: the same seed gives the CPU's 5-shot within 0.5 points ------------------
# every objective at its demo's defaults on the built-in digits, against docs/compare.md's CPU
# table (a run of its own: ONLY=compare_cuda bash .ci/gpu_check.sh; BUDGET=540 allows ~8 minutes)
run compare_cuda 480 $PY demos/compare.py --device cuda --threads 1 --overwrite \
    --out "$OUT/compare_cuda"
run gpu_vs_cpu 20 $PY .ci/gpu_vs_cpu.py "$OUT/compare_cuda/compare.json"
{ echo "## gpu_vs_cpu"; cat "$OUT/gpu_vs_cpu.log"; } >> "$SUMMARY" 2>/dev/null
note "done: logs in $OUT"
