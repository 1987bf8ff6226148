"""Every folder the kit reads or writes, in one place, each with an environment override.

In a source checkout (editable install or PYTHONPATH) the folders sit at the repository
root. An installed package writes to the current working directory instead, never into
site-packages, and reads the configs it ships as package data.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Configs and sweeps are TOML files under CONFIG_DIR, read with this parser.
if sys.version_info >= (3, 11):
    import tomllib
else:                              # Python 3.10: the same parser, from PyPI
    import tomli as tomllib        # noqa: F401 (config.py and sweeps.py import it from here)

PACKAGE_DIR = Path(__file__).resolve().parent
_checkout = PACKAGE_DIR.parent
IN_CHECKOUT = (_checkout / "pyproject.toml").is_file() and (_checkout / "configs").is_dir()
# The repository root, or None for an installed package (git facts are then not read).
REPO_ROOT: Path | None = _checkout if IN_CHECKOUT else None
WORK_ROOT = REPO_ROOT if IN_CHECKOUT else Path.cwd()


def _override(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value).expanduser() if value else default


CONFIG_DIR = _checkout / "configs" if IN_CHECKOUT else PACKAGE_DIR / "configs"
DATA_ROOT = _override("CIFAR10_ROOT", WORK_ROOT / "data")   # holds cifar-10-batches-py/
# The study's evidence (committed): sweeps and searches write here, notebooks and the report read.
RESULTS_DIR = _override("CIFAR_RESULTS_DIR", WORK_ROOT / "results")
# Your own runs (git-ignored): `train`, `bash run.sh` and a notebook's new runs write here.
RUNS_DIR = _override("CIFAR_RUNS_DIR", WORK_ROOT / "runs")


def record_folders(folder=None) -> list[Path]:
    """Where records are looked for: `folder` if given, else the study's, then one's own
    (a new run is written to the last)."""
    return [Path(folder)] if folder is not None else [RESULTS_DIR, RUNS_DIR]
CHECKPOINT_DIR = _override("CIFAR_CHECKPOINT_DIR", WORK_ROOT / "checkpoints")
FIGURES_DIR = _override("CIFAR_FIGURES_DIR", WORK_ROOT / "figures")
REPORT_DIR = _override("CIFAR_REPORT_DIR", WORK_ROOT / "report")
