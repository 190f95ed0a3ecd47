#!/usr/bin/env bash
# The GPU check: one command that checks automl on a single CUDA machine, with no network
# needed, and keeps to BUDGET seconds (560 by default) in all. The fixed steps are each
# bounded; what they leave goes to the step that matters most: a CIFAR-10 search on the
# full set (the design's target: >= 94 % test accuracy from 100 trials in under 10
# minutes). Every figure lands in $OUT (default ./gpu-results). See docs/gpu-check.md.
#
# For a machine without network, prepare the checkout first on a machine with one:
# `python benchmarks/gpu_bundle.py` fetches into .whl/ the wheels the GPU machine's Python
# lacks and links the CIFAR-10 archive into shared/data/ (`--emulate DIR` also builds an
# interpreter like the GPU machine's, to run SMOKE=1 with). Copy the checkout with .whl/
# and shared/ to the GPU machine, then run there:
#   bash benchmarks/gpu_check.sh
#
# Steps, in order (each bounded): environment; dependencies (the wheels, only if the
# machine cannot import them); the CUDA tests; training throughput; the same
# CIFAR-10-shaped search one trial at a time and packed (--jobs 4 --trials-per-gpu 4),
# which decides whether the full search is packed; the full CIFAR-10 search with the time
# left.
# Settings: BUDGET (seconds), OUT (results folder), PYTHON (interpreter).
# SMOKE=1: tiny sizes on the CPU, to check this script itself on any machine.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SMOKE="${SMOKE:-0}"
BUDGET="${BUDGET:-560}"
START=$(date +%s)
export MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export AUTOML_CHECKPOINT_SECONDS="${AUTOML_CHECKPOINT_SECONDS:-120}"  # not every epoch
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }
section() { echo; echo "== $1 ($(elapsed) s of $BUDGET)"; }

{
    section "environment"
    "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__,
        'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    nproc
    section "dependencies"
    if "$PY" -c "import optuna, mlflow, pydantic, sqlalchemy" 2>/dev/null; then
        echo "already importable"
    elif ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
        "$PY" -c "import optuna, mlflow, pydantic, sqlalchemy; print('installed from .whl')" || exit 3
    else
        echo "optuna/mlflow/pydantic missing and no .whl/: run benchmarks/gpu_bundle.py first"; exit 3
    fi
} 2>&1 | tee "$OUT/environment.txt"
[ "${PIPESTATUS[0]}" = 0 ] || exit 3
[ -d /tmp/site ] && export PYTHONPATH="$PYTHONPATH:/tmp/site"

section "CUDA tests" | tee "$OUT/cuda_tests.txt"
timeout 100 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/training 2>&1 | tee -a "$OUT/cuda_tests.txt"

section "training throughput" | tee "$OUT/throughput.txt"
if [ "$SMOKE" = 1 ]; then
    timeout 120 "$PY" benchmarks/train_throughput.py --synthetic --images 1024 --epochs 2 2>&1 | tee -a "$OUT/throughput.txt"
else
    timeout 45 "$PY" benchmarks/train_throughput.py --device cuda --images 20000 --epochs 2 2>&1 | tee -a "$OUT/throughput.txt"
fi

section "CIFAR-10-shaped searches: one at a time, then packed" | tee "$OUT/search.txt"
DATA=$(mktemp -d)
WORK=$(mktemp -d)
if [ "$SMOKE" = 1 ]; then
    SIZES="--train 1000 --test 200"; TRIALS=4; EPOCHS=1; DEVICE=cpu; JOBS=2; PER_GPU=1; LIMIT=150
else
    SIZES="--train 10000 --test 2000"; TRIALS=8; EPOCHS=2; DEVICE=cuda; JOBS=4; PER_GPU=4; LIMIT=45
fi
"$PY" benchmarks/make_cifar_shaped.py "$DATA" $SIZES 2>&1 | tee -a "$OUT/search.txt"
PACKED=1
for mode in "one-at-a-time:1" "packed:$JOBS"; do
    name=${mode%%:*}; jobs=${mode##*:}
    trials=$TRIALS; [ "$name" = one-at-a-time ] && trials=$(( TRIALS / 2 ))
    begin=$(date +%s.%N)
    ( cd "$WORK" && timeout "$LIMIT" "$PY" -m automl search --dataset cifar10 --data-dir "$DATA" \
        --space cifar --study-name "gpu-$name" --trials "$trials" \
        --max-epochs "$EPOCHS" --device "$DEVICE" --jobs "$jobs" --trials-per-gpu "$PER_GPU" \
        --no-evaluate --ensemble 1 --no-tta ) > "$OUT/search-$name.log" 2>&1
    status=$?
    [ "$name" = packed ] && [ "$status" != 0 ] && PACKED=0
    end=$(date +%s.%N)
    "$PY" - "$name" "$trials" "$begin" "$end" "$status" <<'PYEOF' | tee -a "$OUT/search.txt"
import sys
name, trials, begin, end, status = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:5]), sys.argv[5]
hours = (end - begin) / 3600
print(f"{name:<14} {trials} trials in {end - begin:6.1f} s = {trials / hours:7.0f} trials/hour (exit {status})")
PYEOF
    tail -n 4 "$OUT/search-$name.log" >> "$OUT/search.txt"
done

# The target: a search on the real CIFAR-10 (JPEG files, the full set) registering >= 94 %
# test accuracy; 100 trials at most, in the time left less a margin for unpacking,
# decoding and registering. Packed when the packed search above ran cleanly.
ARCHIVE=""
for candidate in shared/data/cifar10-jpg.tar.gz ../shared/data/cifar10-jpg.tar.gz; do
    [ -f "$candidate" ] && ARCHIVE="$candidate" && break
done
section "CIFAR-10 JPEG search" | tee "$OUT/cifar.txt"
if [ -n "$ARCHIVE" ]; then
    if [ "$SMOKE" = 1 ]; then
        CIFAR="--per-class 30 --test-per-class 10 --device cpu --max-epochs 1"; MARGIN=90
    else
        CIFAR="--per-class 0 --test-per-class 0 --device cuda"; MARGIN=150
    fi
    [ "$PACKED" = 1 ] && CIFAR="$CIFAR --jobs $JOBS --trials-per-gpu $PER_GPU"
    search_budget=$(( $(left) - MARGIN )); [ "$search_budget" -lt 60 ] && search_budget=60
    echo "search budget ${search_budget} s, packed=$PACKED" | tee -a "$OUT/cifar.txt"
    timeout $(( $(left) > 90 ? $(left) : 90 )) "$PY" benchmarks/cifar_budget.py --budget "$search_budget" \
        --seeds 0 --space cifar --max-trials 100 $CIFAR --trials \
        --configs "default (tpe + hyperband)" --scratch "$(mktemp -d)" --archive "$ARCHIVE" 2>&1 | tee -a "$OUT/cifar.txt"
else
    echo "skipped: no cifar10-jpg.tar.gz in shared/data (run benchmarks/gpu_bundle.py)" | tee -a "$OUT/cifar.txt"
fi
section "done" | tee -a "$OUT/cifar.txt"
