#!/usr/bin/env bash
# Everything the kit measures on a GPU, in one call, from the repository root:
#
#   CIFAR10_ROOT=/path/to/folder bash benchmarks/gpu_check.sh
#
# (the folder holds cifar-10-batches-py/; without CIFAR10_ROOT, data/ is used or the
# official archive downloaded). It uses the machine's own python3 and torch (PYTHON
# overrides; no venv, no internet needed) and the kit from this checkout (PYTHONPATH=.).
# Stages, in order of value, each writing records under results/ (RESULTS overrides):
#   1. `fast` at the full profile, seeds 0-4, trained on all 50,000 images (--final),
#      one at a time so that their training seconds are uncontended
#   2. `fast` at other budgets (the final sweep fast_budget: 2, 4 and 10 epochs),
#      notebook 02's augmentation rows of the fast ablation with seeds 0-3 at the `cpu`
#      profile's budget (all 16 runs are recorded, from CPUs and an H200, so the stage
#      reuses them), and
#      notebook 03's hyperparameters of `fast` on the whole split at that budget (all
#      recorded on a 2-core CPU, so the stage reuses them)
#   3. the ablations of `fast` and of the block (validation split, 2 seeds a variant, 4
#      where the sweep file's [variant_seeds] says),
#      first at the `cpu` profile's budget (4 epochs: the runs the notebooks show when
#      executed at that profile, about a day of CPU time, minutes here; each record names
#      the device it ran on), then at the `full` profile's 8 epochs
#   4. the throughput ladder on cuda, eager and torch.compile (compiling costs minutes,
#      so it comes after the records the issues ask for)
#   5. `best`, the seed's own recipe (`seed_improved`, its 50 epochs) and the basic model
#      at the same 50 epochs (`seed_basic`, notebook 01; already recorded on a 2-core CPU,
#      and the report reads the newest record), seed 0
#   6. the notebooks' study at the full budget: the sweeps, N runs at a time (--jobs)
# The whole script stops starting new work after BUDGET seconds (default 540, so it ends
# within 10 minutes); a sweep cut short leaves progress checkpoints, and running the
# script again resumes it and skips every finished run. Last, one summary table.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi missing or failing); this script only" >&2
  echo "measures GPUs. On a CPU use: python -m cifar_lib train --config fast --profile cpu" >&2
  exit 2
fi
nvidia-smi -L

PY=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
RESULTS=${RESULTS:-results}
CHECKPOINTS=${CHECKPOINTS:-checkpoints}
BUDGET=${BUDGET:-540}
JOBS=${JOBS:-4}
START=$SECONDS
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 2

left() { echo $(( BUDGET - (SECONDS - START) )); }
stage() {   # stage NAME COMMAND...: run it if time is left, cut it off when time runs out
  local name=$1; shift
  local remaining; remaining=$(left)
  if [ "$remaining" -le 15 ]; then echo "== $name: skipped (budget spent)"; return; fi
  echo "== $name ($(( SECONDS - START )) s in, $remaining s left)"
  timeout --signal=TERM --kill-after=20 "$remaining" "$@" \
    || echo "== $name: stopped or failed (exit $?); rerun the script to resume"
}
# Commands as arrays: `timeout` runs programs, not shell functions.
TRAIN=("$PY" -m cifar_lib train --profile full --quiet --results-dir "$RESULTS"
       --checkpoint-dir "$CHECKPOINTS" --device cuda)
SWEEP=("$PY" -m cifar_lib sweep --jobs "$JOBS" --device cuda
       --results-dir "$RESULTS" --checkpoint-dir "$CHECKPOINTS")

for seed in 0 1 2 3 4; do
  stage "fast, seed $seed (final: all 50,000 images)" "${TRAIN[@]}" --config fast --final --seed "$seed"
done
stage "sweep fast_budget, full profile, x$JOBS" "${SWEEP[@]}" fast_budget --profile full
stage "augmentation rows of fast_ablation (four seeds each), cpu profile, x$JOBS" "${SWEEP[@]}" \
  fast_ablation --profile cpu --variant "no augmentation" --variant fast \
  --variant "random flips" --variant "no translation"
stage "sweep fast_hyperparameters, cpu profile, x$JOBS" "${SWEEP[@]}" fast_hyperparameters --profile cpu
for profile in cpu full; do
  for sweep in fast_ablation block_ablation; do
    stage "sweep $sweep, $profile profile, x$JOBS" "${SWEEP[@]}" "$sweep" --profile "$profile"
  done
done
stage "throughput ladder" "$PY" benchmarks/throughput.py --ladder --compile --device cuda \
  --batch-size 512 --repeats 5 --steps 20 --out "$RESULTS/benchmarks"
stage "best, seed 0" "${TRAIN[@]}" --config best --seed 0
stage "seed_improved (the seed's 50 epochs), seed 0" "${TRAIN[@]}" --config seed_improved --seed 0
stage "seed_basic (the basic model at 50 epochs), seed 0" "${TRAIN[@]}" --config seed_basic --seed 0
for sweep in augmentation hyperparameters; do
  stage "sweep $sweep x$JOBS" "${SWEEP[@]}" "$sweep" --profile full
done

echo "== summary ($(( SECONDS - START )) s)"
"$PY" - "$RESULTS" <<'EOF'
import sys
from cifar_lib.tables import load_records, runs_frame

runs = runs_frame(load_records(sys.argv[1]))
runs = runs[runs["device_type"] == "cuda"]
if runs.empty:
    print("no GPU records")
else:
    runs["variant"] = runs["variant"].fillna("")
    table = (runs.groupby(["profile", "config", "variant"], sort=False)
             .agg(runs=("seed", "size"), val=("val_acc", "mean"), val_tta=("val_acc_tta", "mean"),
                  test_tta=("test_acc_tta", "mean"), test_tta_std=("test_acc_tta", "std"),
                  train_s=("train_minutes", lambda m: 60 * m.mean()), device=("device", "first")))
    print(table.round(2).to_string())
EOF
