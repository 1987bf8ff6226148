"""What every section shares: the Filled sheet of numbers, tables and figures, and the
phrases that name data, seeds and devices."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ...study.stats import ALPHA, fixed, interval_label
from ..document import SAVE_DPI, smallest_printed_font
from ...study.tables import seed_range


LEVEL = interval_label(ALPHA)       # "95%": the family-wise level of every interval shown

# The final recipes the report shows. `deep` is left out: it was chosen after `deep_sgd`'s
# test accuracy had been read, so its test accuracy is no clean held-out estimate.
RECIPES = ("seed_basic", "seed_improved", "improved_tuned", "improved_tuned_50", "fast")


class Filled:
    """What the template's placeholders are filled with: values, tables and figures."""

    def __init__(self, figures_dir: Path, shown: set[str] | None = None):
        self.values: dict[str, str] = {}
        self.tables: dict[str, tuple[pd.DataFrame, str]] = {}
        self.figures: dict[str, tuple[Path, str]] = {}
        self.paired: dict[str, pd.DataFrame] = {}          # each sweep section's paired table
        self.printed_font: dict[str, float] = {}           # each figure's smallest text on A4, pt
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
        fig.savefig(path, dpi=SAVE_DPI, bbox_inches="tight", metadata={"Software": None})
        self.figures[name] = (path, caption)
        self.printed_font[name] = smallest_printed_font(fig)


def _spoken_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return ", ".join(items[:-1]) + " and " * (len(items) > 1) + "".join(items[-1:])


def data_phrase(runs: pd.DataFrame) -> str:
    kinds = set(runs["official_data"])
    if kinds == {True}:
        return "the official CIFAR-10 release"
    if kinds == {False}:
        return "a local JPEG-rebuilt copy of CIFAR-10, not the official release"
    return "a mix of the official release and a local copy (see the data column)"


def signed(x: float) -> str:
    """An effect as print sets it: '+0.37', '−3.33' (a minus sign, not a hyphen)."""
    return fixed(x, plus=True).replace("-", "−")


def machine_phrase(*tables: pd.DataFrame) -> str:
    """Where paired tables (stats.compare_to_base) ran and on which seeds, said once for a
    caption: '2-core Intel Xeon, bf16; seeds 0–3' (more than two machines are counted, not named)."""
    return where_phrase({d for t in tables for d in t.attrs["devices"]},
                        {p for t in tables for p in t.attrs["precisions"]},
                        {s for t in tables for s in t.attrs["seeds"]})


def where_phrase(devices, precisions, seeds) -> str:
    """machine_phrase from the machines, precisions and seeds themselves (a runs frame's columns)."""
    devices, precisions = sorted(set(devices)), sorted(set(precisions))
    where = _spoken_list(devices) if len(devices) <= 2 else f"{len(devices)} machines"
    return f"{where}, {'/'.join(precisions)}; {seed_range(set(seeds))}"


def _tta_kind(config: dict) -> str:
    if not config["tta"]:
        return "none"
    # written as the augmentation column writes its parts, so the column stays narrow
    return "flip+shift" if config.get("tta_shift") else "flip"   # Methods says by how much
