"""Notebooks: what every notebook does first (pick the profile, load the data, say what
it runs with), showing a sweep from its records, and tidying saved outputs (progress bars
collapsed to their last state)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .config import PROFILES, ConfigError, auto_profile
from .data import CIFAR10, load_cifar10
from .records import device_info
from .device import pick_device


def resolve_profile(profile: str = "auto") -> str:
    """CIFAR_PROFILE (e.g. `smoke` in CI) overrides the notebook's choice; `auto` is `full`
    with a CUDA GPU and `cpu` otherwise."""
    profile = os.environ.get("CIFAR_PROFILE") or profile
    if profile == "auto":
        profile = auto_profile()
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r} (from CIFAR_PROFILE or the notebook); "
                          f"valid: auto, {', '.join(PROFILES)}")
    return profile


@dataclass
class Session:
    profile: str
    device: str
    data: CIFAR10


def start(profile: str = "auto", data_root=None) -> Session:
    """Resolve the profile, load CIFAR-10 (downloading the official release if no copy is
    found) and print the profile, device and data identity the notebook runs with."""
    import pandas as pd

    pd.set_option("display.precision", 2)      # tables show numbers rounded for reading
    profile = resolve_profile(profile)
    device = pick_device()
    data = load_cifar10(data_root)
    print(f"profile: {profile}\ndevice: {device_info(device)['name']}\ndata: {data.describe()}\n"
          f"fingerprint: {data.fingerprint}")
    return Session(profile, str(device), data)


def show_recorded_sweep(sweep, profile: str, title: str, results_dir: Path | None = None):
    """A sweep too long to train inside a notebook, read from its records: each variant's
    difference to the baseline with a 95% interval, and every seed's accuracy. Without
    records, the commands that measure it. Returns the runs (one row each)."""
    from IPython.display import display

    from . import plots
    from .records import RESULTS_DIR
    from .tables import compare_to_base, summarize, sweep_runs

    runs = sweep_runs(sweep, profile, results_dir or RESULTS_DIR)
    if runs.empty:
        print(f"no {sweep.name} records at the {profile} profile yet ({sweep.planned_runs} runs): "
              f"`{sweep.command(profile)}` measures them here, `--profile full --jobs 4` on a GPU")
        return runs
    if note := sweep.progress(len(runs), profile):
        print(note)
    order = list(sweep.variants)
    if sweep.baseline in set(runs["variant"]):
        display(compare_to_base(runs, sweep.baseline, order=order))
    else:                           # differences need the baseline's runs
        print(f"the baseline, {sweep.baseline}, has no record yet: each variant's runs alone")
        display(summarize(runs, order=order))
    display(plots.sweep_plot(runs, order=order, title=title))
    return runs


def _last_state(text: str) -> str:
    # A terminal shows only what follows the last carriage return of each line.
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def tidy_outputs(path: Path) -> bool:
    """Merge each cell's consecutive stream outputs and keep only the final state of
    every progress bar (what a terminal would show at the end); True if the file changed."""
    path = Path(path)
    raw = path.read_text()
    nb = json.loads(raw)
    for cell in (c for c in nb["cells"] if c["cell_type"] == "code"):
        merged = []
        for out in cell.get("outputs", []):
            if (out["output_type"] == "stream" and merged and merged[-1]["output_type"] == "stream"
                    and merged[-1]["name"] == out["name"]):
                merged[-1]["text"] = "".join(merged[-1]["text"]) + "".join(out["text"])
            else:
                merged.append(out)
        for out in merged:
            if out["output_type"] == "stream":
                text = "".join(out["text"])
                text = _last_state(text).strip("\n") + "\n"     # tqdm redraws with \r
                out["text"] = text.splitlines(keepends=True)
        cell["outputs"] = merged
    out = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if out != raw:
        path.write_text(out)
        return True
    return False
