#!/usr/bin/env bash
# One-shot GPU checks of linear-dit (SANA's Linear DiT): half-precision robustness at 4K token
# counts on real widths, linear vs softmax attention scaling, and training-step memory with and
# without gradient checkpointing (fp32 and bf16 autocast).
#
# Run from the repository root on a CUDA machine:   OUT=/some/dir bash packages/linear-dit/bench/gpu_suite.sh
# Installs nothing and reaches no network. Every part has its own timeout and the suite stops
# starting parts once its time budget (SUITE_BUDGET_S, default 330 s) is spent, so the whole run
# stays under 7 minutes; a failing part is logged and the suite goes on. Results land in $OUT:
# suite.log (timeline), status.txt (part -> exit code), env.txt, one .log per part, and .json /
# .xml results. Optional: a directory of extra pure-Python packages (e.g. pydantic built for this
# Python) at $LDIT_EXTRA_SITE (default .gpu_site) is put on PYTHONPATH.
# LDIT_SUITE_SMOKE=1 runs the same parts on the CPU at tiny sizes (to check the script itself).
set -u
SMOKE=${LDIT_SUITE_SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    DEVICE=cpu TOKENS="64 256" PRESET_1K=tiny PRESET_4K=tiny SIZE="--height 16 --width 16"
    NEED_CUDA="import torch"
else
    DEVICE=cuda TOKENS="1024 4096 16384 65536" PRESET_1K=sana-0.6b-1024px PRESET_4K=sana-0.6b-4k SIZE=""
    NEED_CUDA="import torch; assert torch.cuda.is_available()"
fi

OUT=${OUT:-/tmp/linear_dit_gpu_suite}
mkdir -p "$OUT"
PKG=packages/linear-dit
BUDGET=${SUITE_BUDGET_S:-420}
START=$(date +%s)
EXTRA_SITE=${LDIT_EXTRA_SITE:-.gpu_site}
PYTHONPATH="$PKG/src:$PKG/tests${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$EXTRA_SITE" ] && PYTHONPATH="$EXTRA_SITE:$PYTHONPATH"
export PYTHONPATH
export PYTHONUNBUFFERED=1

log() { echo "[$(date +%H:%M:%S) +$(($(date +%s) - START))s] $*" | tee -a "$OUT/suite.log"; }

# part NAME LIMIT_S CMD...: run CMD with stdout+stderr in $OUT/NAME.log under a timeout capped by
# what is left of the budget; record the exit code (124 = timed out, "skipped" = no time left).
part() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    if [ "$left" -lt 20 ]; then
        log "skip $name: ${left}s of the budget left"
        echo "$name skipped" >>"$OUT/status.txt"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    log "start $name (timeout ${limit}s)"
    timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    log "end $name rc=$rc"
    echo "$name $rc" >>"$OUT/status.txt"
}

# -- environment: a Python with torch and a visible CUDA device, plus the package's imports ----
PY=""
for cand in ${PYTHON:-} python python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "$NEED_CUDA" 2>/dev/null; then
        PY=$cand
        break
    fi
done
{
    echo "date: $(date -Is)"
    echo "host: $(hostname)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: unavailable"
    for cand in ${PYTHON:-} python python3; do
        command -v "$cand" >/dev/null 2>&1 || continue
        echo "$cand: $("$cand" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1)"
    done
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tee -a "$OUT/suite.log"
if [ -z "$PY" ]; then
    log "no Python with torch and a CUDA device found (tried \$PYTHON, python, python3); nothing installed, stopping"
    echo "environment no-torch-cuda" >>"$OUT/status.txt"
    exit 0
fi
MISSING=$("$PY" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("pydantic", "pytest") if importlib.util.find_spec(m) is None))
EOF
)
log "python: $PY; missing modules: ${MISSING:-none}"
if ! "$PY" -c "import linear_dit.linear_dit" >>"$OUT/suite.log" 2>&1; then
    log "linear_dit does not import with $PY (pydantic missing?); stopping"
    echo "environment no-linear-dit" >>"$OUT/status.txt"
    exit 0
fi

# -- 1. half precision at 16384 tokens, real widths (the CUDA tests) ---------------------------
if [[ " $MISSING " == *" pytest "* ]]; then
    log "skip half_precision: pytest is missing"
    echo "half_precision skipped-no-pytest" >>"$OUT/status.txt"
else
    part half_precision 120 "$PY" -m pytest "$PKG/tests/test_half_precision.py" -k cuda -q -p no:cacheprovider \
        -o addopts="--import-mode=importlib -ra" --junitxml="$OUT/half_precision.xml"
fi

# -- 2. linear vs softmax attention, 1K..64K tokens ---------------------------------------------
for dt in fp32 bf16; do
    part "attention_$dt" 60 bash -c "'$PY' '$PKG/bench/bench_attention_scaling.py' --device $DEVICE --dtype $dt \
        --tokens $TOKENS --repeats 3 --json > '$OUT/attention_$dt.json'"
done

# -- 2b. one denoising step of the released sizes (the `linear-dit bench` command) --------------
if [ "$SMOKE" = 1 ]; then BENCHES="tiny:256:bf16"; else
    BENCHES="sana-0.6b-1024px:1024:fp16 sana-0.6b-1024px:1024:bf16 sana-1.6b-1024px:1024:bf16 sana-1.6b-4k:4096:bf16"
fi
for spec in $BENCHES; do
    IFS=: read -r preset res dt <<<"$spec"
    part "step_${preset}_${res}_$dt" 60 bash -c "'$PY' -c 'from linear_dit.cli import app; app()' bench $preset \
        --resolution $res --dtype $dt --device $DEVICE --repeats 10 --json > '$OUT/step_${preset}_${res}_$dt.json'"
done

# -- 3. training-step memory, with and without gradient checkpointing ---------------------------
part train_memory_1024px_fp32 75 bash -c "'$PY' '$PKG/bench/bench_train_memory.py' --device $DEVICE \
    --preset $PRESET_1K $SIZE --batch 1 --json > '$OUT/train_memory_1024px_fp32.json'"
# bf16 autocast training step (fp32 weights and AdamW state): memory, time and a finite loss.
part train_memory_1024px_bf16 75 bash -c "'$PY' '$PKG/bench/bench_train_memory.py' --device $DEVICE \
    --preset $PRESET_1K $SIZE --batch 1 --precision bf16-autocast --json > '$OUT/train_memory_1024px_bf16.json'"
# 4K latents (16384 tokens), where activations dominate; an out-of-memory variant is reported, not fatal.
part train_memory_4k_bf16 90 bash -c "'$PY' '$PKG/bench/bench_train_memory.py' --device $DEVICE \
    --preset $PRESET_4K $SIZE --batch 1 --precision bf16-autocast --json > '$OUT/train_memory_4k_bf16.json'"

log "done; status:"
cat "$OUT/status.txt" | tee -a "$OUT/suite.log"
exit 0
