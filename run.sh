#!/usr/bin/env bash
# One entry point for a fresh machine.
#   bash run.sh          set up .venv, train the recommended config with the profile that
#                        suits this machine (full on a CUDA GPU, cpu otherwise), print results
#   bash run.sh test     set up .venv and run the test suite
#   bash run.sh notebooks  set up .venv and execute the notebooks at the smoke profile (nbval)
#   bash run.sh setup    only set up .venv
# PYTHON picks the interpreter used to create .venv (default python3, 3.10 or newer).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}

setup() {
  # The kit is installed editable, so code changes need no reinstall: skip setup (about
  # 12 s of pip) while pyproject.toml is the one last installed and the kit imports.
  local stamp="$VENV/.kit-installed" want
  want="$(cksum < pyproject.toml)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
     && "$VENV/bin/python" -c "import cifar_lib, torch, torchvision" 2>/dev/null; then
    return
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # Without an NVIDIA GPU, PyPI's default Linux torch is the CUDA build (~5.9 GB of venv), so
  # the CPU builds (~1 GB) come first from PyTorch's own index (CPU_TORCH=1 forces that, 0
  # skips it). Where that index does not answer, or answers with a torch that does not load
  # beside its torchvision (seen: torch 2.13.0+cpu with torchvision 0.28.0), the default
  # build is installed instead.
  if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    want=${CPU_TORCH:-auto}
    if [ "$want" = auto ]; then
      want=1; if nvidia-smi -L >/dev/null 2>&1; then want=0; fi
    fi
    if [ "$want" = 1 ]; then
      if "$VENV/bin/python" -m pip install --quiet --timeout 15 --retries 1 \
           --index-url https://download.pytorch.org/whl/cpu torch torchvision 2>/dev/null \
         && "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
        "$VENV/bin/python" -c "import torch; print('installed torch', torch.__version__, '(CPU build)' \
          if torch.version.cuda is None else '(a CUDA build: a local wheel answered first)')" >&2
      else
        echo "PyTorch's CPU index is out of reach here: installing the default torch" >&2
        "$VENV/bin/python" -m pip uninstall --quiet --yes torch torchvision 2>/dev/null || true
      fi
    fi
  fi
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
}

case "${1:-train}" in
  setup) setup ;;
  train)
    setup
    shift || true
    # The recommended run is `fast`, trained on all 50,000 training images (--final: its
    # choices were made on the validation split); CONFIG=NAME trains that config as it is.
    # Without a data folder the official archive is downloaded (checksum-verified) into data/.
    if [ -n "${CONFIG:-}" ]; then set -- --config "$CONFIG" "$@"; else set -- --config fast --final "$@"; fi
    "$VENV/bin/python" -m cifar_lib train --profile auto "$@"
    ;;
  test)
    setup
    shift || true
    "$VENV/bin/python" -m pytest -q "$@"
    ;;
  notebooks)
    setup
    shift || true
    # Outputs marked NBVAL_CHECK_OUTPUT (dataset sizes, parameter counts, table columns) must
    # match the committed ones; the rest only has to run without error. Smoke runs are never
    # results: their records and checkpoints go to a temporary folder, removed afterwards.
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    CIFAR_PROFILE=smoke CIFAR_RESULTS_DIR="$scratch/results" CIFAR_RUNS_DIR="$scratch/runs" \
      CIFAR_CHECKPOINT_DIR="$scratch/checkpoints" \
      "$VENV/bin/python" -m pytest -q -p no:cacheprovider --nbval-lax notebooks/ "$@"
    ;;
  *) echo "usage: bash run.sh [train|test|notebooks|setup] [extra arguments]" >&2; exit 2 ;;
esac
