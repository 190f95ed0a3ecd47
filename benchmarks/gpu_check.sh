#!/usr/bin/env bash
# The GPU check: one script for a single H100/H200-class machine with no network, in under
# 10 minutes. It runs the CUDA tests, the training-throughput benchmark, and a 20-trial
# CIFAR-10-shaped search with --jobs 4 --trials-per-gpu 4 (against the same search one
# trial at a time), and writes every figure to $OUT (default ./gpu-results).
#
# Optuna, MLflow and friends may be missing there: wheels in .whl/ are installed first
# (see the device tool's notes); the package itself runs from this checkout.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SMOKE="${SMOKE:-0}"   # SMOKE=1: tiny sizes on any machine, to check this script itself
export MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
START=$(date +%s)
section() { echo; echo "== $1 ($(( $(date +%s) - START )) s)"; }

{
    section "environment"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
} 2>&1 | tee "$OUT/environment.txt"

section "CUDA tests" | tee "$OUT/cuda_tests.txt"
timeout 180 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee -a "$OUT/cuda_tests.txt"

section "training throughput" | tee "$OUT/throughput.txt"
if [ "$SMOKE" = 1 ]; then
    timeout 300 "$PY" benchmarks/train_throughput.py --synthetic --images 1024 --epochs 2 2>&1 | tee -a "$OUT/throughput.txt"
else
    timeout 240 "$PY" benchmarks/train_throughput.py --device cuda --epochs 4 2>&1 | tee -a "$OUT/throughput.txt"
fi

section "CIFAR-10-shaped searches" | tee "$OUT/search.txt"
DATA=$(mktemp -d)
WORK=$(mktemp -d)
if [ "$SMOKE" = 1 ]; then
    SIZES="--train 2000 --test 500"; TRIALS=4; EPOCHS=1; DEVICE=cpu; JOBS=2; PER_GPU=1
else
    SIZES=""; TRIALS=20; EPOCHS=6; DEVICE=cuda; JOBS=4; PER_GPU=4
fi
"$PY" benchmarks/make_cifar_shaped.py "$DATA" $SIZES 2>&1 | tee -a "$OUT/search.txt"
for mode in "one-at-a-time:1" "packed:$JOBS"; do
    name=${mode%%:*}; jobs=${mode##*:}
    trials=$TRIALS; [ "$name" = one-at-a-time ] && trials=$(( TRIALS / 2 ))
    begin=$(date +%s.%N)
    ( cd "$WORK" && timeout 300 "$PY" -m automl search --dataset cifar10 --data-dir "$DATA" \
        --space "$OLDPWD/search_spaces/cifar.yaml" --study-name "gpu-$name" --trials "$trials" \
        --max-epochs "$EPOCHS" --device "$DEVICE" --jobs "$jobs" --trials-per-gpu "$PER_GPU" \
        --no-evaluate ) > "$OUT/search-$name.log" 2>&1
    status=$?
    end=$(date +%s.%N)
    "$PY" - "$name" "$trials" "$begin" "$end" "$status" <<'PYEOF' | tee -a "$OUT/search.txt"
import sys
name, trials, begin, end, status = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:5]), sys.argv[5]
hours = (end - begin) / 3600
print(f"{name:<14} {trials} trials in {end - begin:6.1f} s = {trials / hours:7.0f} trials/hour (exit {status})")
PYEOF
    tail -n 4 "$OUT/search-$name.log" >> "$OUT/search.txt"
done

# The target the design aims at: a 100-trial search on the real CIFAR-10 (JPEG files, full
# set) that registers >= 94 % test accuracy in under 10 minutes. Runs only when the
# archive travelled with the checkout (shared/data or ../shared/data) and time is left.
ARCHIVE=""
for candidate in shared/data/cifar10-jpg.tar.gz ../shared/data/cifar10-jpg.tar.gz; do
    [ -f "$candidate" ] && ARCHIVE="$candidate" && break
done
section "CIFAR-10 JPEG search, full set" | tee "$OUT/cifar.txt"
if [ -n "$ARCHIVE" ] && [ "$SMOKE" != 1 ]; then
    timeout 600 "$PY" benchmarks/cifar_budget.py --budget "${CIFAR_BUDGET:-480}" --seeds 0 \
        --per-class 0 --test-per-class 0 --space cifar --device cuda \
        --configs "default (tpe + hyperband)" --scratch "$(mktemp -d)" --archive "$ARCHIVE" 2>&1 | tee -a "$OUT/cifar.txt"
else
    echo "skipped: no cifar10-jpg.tar.gz beside the checkout (or SMOKE=1)" | tee -a "$OUT/cifar.txt"
fi
section "done" | tee -a "$OUT/search.txt"
