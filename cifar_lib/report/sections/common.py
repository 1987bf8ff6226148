"""What every section shares: the Filled sheet of numbers, tables and figures, and the
phrases that name data, seeds and devices."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ...study.stats import ALPHA, interval_label
from ...study.tables import (runs_frame, seed_range)


LEVEL = interval_label(ALPHA)       # "95%": the family-wise level of every interval shown

RECIPES = ("seed_basic", "seed_improved", "improved_tuned", "deep_sgd", "deep", "fast")


class Filled:
    """What the template's placeholders are filled with: values, tables and figures."""

    def __init__(self, figures_dir: Path, shown: set[str] | None = None):
        self.values: dict[str, str] = {}
        self.tables: dict[str, tuple[pd.DataFrame, str]] = {}
        self.figures: dict[str, tuple[Path, str]] = {}
        self.paired: dict[str, pd.DataFrame] = {}          # each sweep section's paired table
        self.figures_dir = figures_dir
        self.shown = shown              # the figures the template shows (None: all of them)

    def table(self, name: str, frame: pd.DataFrame, caption: str):
        self.tables[name] = (frame, caption)

    def figure(self, name: str, fig, caption: str):
        if self.shown is not None and name not in self.shown:
            plt.close(fig)              # figures/ holds only what the report shows
            return
        path = self.figures_dir / f"{name}.png"
        # No timestamps in the file, so an unchanged figure gives unchanged bytes.
        fig.savefig(path, dpi=130, bbox_inches="tight", metadata={"Software": None})
        self.figures[name] = (path, caption)


def _spoken_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return ", ".join(items[:-1]) + " and " * (len(items) > 1) + "".join(items[-1:])


def _seeds(counts: pd.Series) -> str:
    low, high = counts.min(), counts.max()
    return str(low) if low == high else f"{low}–{high}"


def data_phrase(runs: pd.DataFrame) -> str:
    kinds = set(runs["official_data"])
    if kinds == {True}:
        return "the official CIFAR-10 release"
    if kinds == {False}:
        return "a local JPEG-rebuilt copy of CIFAR-10, NOT the official release"
    return "a mix of the official release and a local copy (see the data column)"


def data_mark(runs: pd.DataFrame) -> str:
    """The short mark every caption carries (Section 2 says what it means once, in full)."""
    kinds = set(runs["official_data"])
    return "official data" if kinds == {True} else "JPEG copy, not official" if kinds == {False} \
        else "official and JPEG-copy runs mixed"


def _scope(records: list[dict]) -> str:
    """What every table caption states: profile, runs and seeds, and which data."""
    runs = runs_frame(records)
    profiles = ", ".join(sorted(set(runs["profile"])))
    seed_text = seed_range(set(runs["seed"]))
    return f"profile {profiles}, {len(runs)} run{'s' if len(runs) != 1 else ''}, {seed_text}, {data_mark(runs)}"


def _tta_kind(config: dict) -> str:
    if not config["tta"]:
        return "none"
    return f"flips + {config['tta_shift']} px shifts" if config.get("tta_shift") else "flips"


def _final_table(runs: pd.DataFrame) -> pd.DataFrame:
    cols = {"config": "config", "seed": "seed", "epochs": "epochs", "val_acc": "val %",
            "test_acc": "test %", "test_acc_tta": "test % (TTA)", "wall_minutes": "minutes"}
    return runs[[c for c in cols if c in runs]].rename(columns=cols)


