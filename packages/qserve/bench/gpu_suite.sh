#!/usr/bin/env bash
# One-shot GPU checks of the 4-bit packages (qserve and svdquant), sized for a 15-minute device budget.
#
# Run from the repository root on a CUDA machine:   OUT=/some/dir bash packages/qserve/bench/gpu_suite.sh
# The parts run in order of what is still open: the two kernel benchmarks (the speed goals, each also timing the
# packed (inline-PTX) dequantization next to the byte-wise one), then the module and engine checks. PARTS (default
# "qserve_kernels svdquant_gemm svdquant_layers qserve_engine") picks and orders them. The timeouts add up to 690 s,
# over one device call's 600 s: run PARTS="qserve_kernels svdquant_gemm" (450 s at most) in one call and the two
# checks in the next, on the same warm machine. Through this workplace's device tool, with the pydantic wheels for the
# GPU image's Python in .whl/ (carried):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#   PARTS="qserve_kernels svdquant_gemm" bash packages/qserve/bench/gpu_suite.sh
# Installs nothing and reaches no network. Extra pure-Python packages the GPU image lacks (e.g. pydantic built for
# its Python) may sit in $EXTRA_SITE (default /tmp/site) and are put on PYTHONPATH. Each part has its own timeout;
# a failing part is logged and the suite goes on. Results land in $OUT: suite.log, status.txt (part -> exit code)
# and one .log / .json per part.
set -u
OUT=${OUT:-/tmp/gpu_suite}
mkdir -p "$OUT"
ROOT=$(pwd)
EXTRA_SITE=${EXTRA_SITE:-/tmp/site}
export PYTHONPATH="$EXTRA_SITE:$ROOT/packages/qserve/src:$ROOT/packages/svdquant/src:$ROOT/packages/svdquant/bench${PYTHONPATH:+:$PYTHONPATH}"
: > "$OUT/status.txt"
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python -c "import torch, triton; print(torch.__version__, triton.__version__)"; } > "$OUT/env.txt" 2>&1

part() {  # part NAME TIMEOUT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "[$(date +%T)] $name" | tee -a "$OUT/suite.log"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name $rc" >> "$OUT/status.txt"
    tail -n 4 "$OUT/$name.log" | tee -a "$OUT/suite.log"
}

for p in ${PARTS:-qserve_kernels svdquant_gemm svdquant_layers qserve_engine}; do
    case $p in
        qserve_kernels) part qserve_kernels 300 python packages/qserve/bench/bench_kernels.py --sweep --json "$OUT/qserve_kernels.json" ;;
        svdquant_gemm) part svdquant_gemm 150 python packages/svdquant/bench/bench_gemm.py --json "$OUT/svdquant_gemm.json" ;;
        svdquant_layers) part svdquant_layers 120 python packages/svdquant/bench/gpu_check_layers.py ;;
        qserve_engine) part qserve_engine 120 python packages/qserve/bench/gpu_check_engine.py ;;
        *) echo "unknown part $p" | tee -a "$OUT/suite.log" ;;
    esac
done
echo "[$(date +%T)] done" | tee -a "$OUT/suite.log"
