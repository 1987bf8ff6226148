#!/usr/bin/env bash
# Everything the kit measures on a GPU, in one call, from the repository root:
#
#   CIFAR10_ROOT=/path/to/folder bash benchmarks/gpu_check.sh
#
# (the folder holds cifar-10-batches-py/; without CIFAR10_ROOT, data/ is used or the
# official archive downloaded). It uses the machine's own python3 and torch (PYTHON
# overrides; no venv, no internet needed) and the kit from this checkout (PYTHONPATH=.).
# Stages, in order of value, each writing records under results/ (RESULTS overrides):
#   0. the coursework study: ImprovedNet's no-batch-norm pilot; FastNet's batch-norm pilot
#      (and its chosen arm) and learning-rate curve, seconds a run; then ImprovedNet's
#      50-epoch study (about 134 s a run on an H200), N runs at a time; each a study of its
#      own beside the CPU's, never paired with it
#   1. the recipe study (notebooks 02-04) at the full profile: 19 variants of `fast` x the
#      sweep file's 4 seeds at the recipe's 8 epochs, N runs at a time (--jobs); a study of
#      its own beside the CPU's, each variant paired only with the GPU's own base runs
#   2. the core study at its own 2-epoch budget (`--profile cpu`: profiles are budgets) on
#      the GPU, so the budget comparison has both budgets on one machine; the block
#      ablation at the full profile; then an Optuna search of `fast` at the full profile's
#      8 epochs (40 trials, TPE with median pruning) on the validation split, its best trial
#      confirmed with the core study's seeds, paired with `fast`
#   3. ImprovedNet with the tuned recipe at the coursework's 50 epochs, seed 0
#   4. `fast` at the full profile, seeds 0-4, on all 50,000 images (--final), one at a
#      time so their training seconds are uncontended; its other budgets (fast_budget)
#      and what each ingredient adds (fast_ablation)
#   5. the throughput ladder on cuda, eager and torch.compile
#   6. `deep`, the coursework's recipe (`seed_improved`) and the basic model
#      (`seed_basic`) at 50 epochs, and the 4,000-image demonstrations at the full budget
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

stage "coursework pilot (ImprovedNet without batch norm, 8 epochs), x$JOBS" \
  "${SWEEP[@]}" coursework_pilot --profile full
# FastNet's runs take seconds here: its batch-norm pilot (and the arm its result declares,
# once that file exists) and its learning-rate curve, before the long ImprovedNet study
stage "FastNet without batch norm: pilot, x$JOBS" "${SWEEP[@]}" fastnet_bn_pilot --profile full
stage "FastNet without batch norm: second pilot, x$JOBS" "${SWEEP[@]}" fastnet_bn_pilot2 --profile full
if [ -f configs/sweeps/fastnet_without_bn.toml ]; then
  stage "FastNet without batch norm: the chosen settings, x$JOBS" "${SWEEP[@]}" fastnet_without_bn --profile full
fi
stage "FastNet's learning-rate curve, x$JOBS" "${SWEEP[@]}" fastnet_lr_curve --profile full
stage "coursework study (ImprovedNet, 50 epochs), x$JOBS" "${SWEEP[@]}" coursework_study --profile full
stage "recipe study, full profile, x$JOBS" "${SWEEP[@]}" recipe_study --profile full
stage "core study, 2 epochs, x$JOBS" "${SWEEP[@]}" core_study --profile cpu
stage "block ablation, full profile, x$JOBS" "${SWEEP[@]}" block_ablation --profile full
stage "Optuna study of the core study's base, 40 trials, then its best confirmed" \
  "$PY" -m cifar_lib tune --sweep core_study --profile full --n-trials 40 --confirm \
  --device cuda --results-dir "$RESULTS" --checkpoint-dir "$CHECKPOINTS"
stage "ImprovedNet, tuned recipe, 50 epochs, seed 0" "${TRAIN[@]}" --config improved_tuned_50 --seed 0
for seed in 0 1 2 3 4; do
  stage "fast, seed $seed (final: all 50,000 images)" "${TRAIN[@]}" --config fast --final --seed "$seed"
done
for sweep in fast_budget fast_ablation; do
  stage "sweep $sweep, full profile, x$JOBS" "${SWEEP[@]}" "$sweep" --profile full
done
stage "throughput ladder" "$PY" benchmarks/throughput.py --ladder --compile --device cuda \
  --batch-size 512 --repeats 5 --steps 20 --out "$RESULTS/benchmarks"
stage "deep, seed 0" "${TRAIN[@]}" --config deep --seed 0
stage "seed_improved (the coursework's 50 epochs), seed 0" "${TRAIN[@]}" --config seed_improved --seed 0
stage "seed_basic (the basic model at 50 epochs), seed 0" "${TRAIN[@]}" --config seed_basic --seed 0
for sweep in augmentation hyperparameters; do
  stage "sweep $sweep x$JOBS" "${SWEEP[@]}" "$sweep" --profile full
done

echo "== summary ($(( SECONDS - START )) s)"
"$PY" - "$RESULTS" <<'EOF'
import sys
from cifar_lib.study.tables import load_records, runs_frame

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
