"""Notebooks: what every notebook does first (pick the profile, load the data, say what
it runs with), showing a sweep from its records, and tidying saved outputs (progress bars
collapsed to their last state)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..config import ConfigError
from ..data import CIFAR10, load_cifar10
from ..records import device_info
from .stats import fixed
from .tables import device_label
from ..device import pick_device


def notebook_profile(profile: str = "auto") -> str:
    """CIFAR_PROFILE (e.g. `smoke` in CI) overrides the notebook's choice; `auto` is `full`
    with a CUDA GPU and `cpu` otherwise."""
    asked = os.environ.get("CIFAR_PROFILE") or profile
    try:
        return config.resolve_profile(asked)
    except ConfigError as e:
        raise ConfigError(f"{e} (from CIFAR_PROFILE or the notebook)") from None


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
    profile = notebook_profile(profile)
    device = pick_device()
    data = load_cifar10(data_root)
    print(f"profile: {profile}\ndevice: {device_label(device_info(device))}\ndata: {data.describe()}\n"
          f"fingerprint: {data.fingerprint}")
    return Session(profile, str(device), data)


def show_recorded_sweep(sweep, profile: str, title: str, results_dir: Path | None = None):
    """A sweep too long to train inside a notebook, read from its records: each variant's
    effect against the baseline with its interval, simultaneous over the sweep's declared
    variants (what they rest on, the table, the verdicts, a forest plot). Without records,
    the command that measures them. Returns the table (None without the baseline's runs)."""
    from IPython.display import display

    from . import plots
    from ..records import RESULTS_DIR
    from .tables import compare_sweep, describe_pairing, readable, summarise_effects, sweep_runs

    runs = sweep_runs(sweep, profile, results_dir or RESULTS_DIR)
    if runs.empty:
        gpu = "" if sweep.made_by else ", `--profile full --jobs 4` on a GPU"
        print(f"no {sweep.name} records at the {profile} profile yet ({sweep.planned_runs} runs): "
              f"`{sweep.command(profile)}` measures them here{gpu}")
        return None
    if note := sweep.progress(zip(runs["variant"], runs["seed"]), profile):
        print(note)
    if sweep.baseline not in set(runs["variant"]):
        print(f"the baseline, {sweep.baseline}, has no record yet: nothing to compare with")
        return None
    table = compare_sweep(sweep, runs)
    if not table.attrs["machines"]:
        print(f"{title}: no variant has a run paired with {sweep.baseline} yet")
        return table
    print(f"{title}: {describe_pairing(table)}.")
    display(readable(table))
    print(summarise_effects(table))
    if not sweep.single_comparison and table["low"].notna().any():   # without intervals, nothing to plot
        display(plots.forest_plot(table, title=title, label=f"difference to {sweep.baseline}"))
    return table


def show_budget_transfer(group: str, profile: str, results_dir: Path | None = None):
    """One family of the recipe study (8 epochs) beside the same changes in the core study
    (2 epochs): each change's effect at both budgets with its interval, and whether the
    change of effect with budget is resolved. Returns the table (None while either budget
    lacks the runs)."""
    from IPython.display import display

    from . import plots
    from ..records import RESULTS_DIR
    from .sweeps import CORE_STUDY, RECIPE_STUDY
    from .tables import budget_family, load_records, readable

    records = load_records(results_dir or RESULTS_DIR, profile=profile, diverged=True)
    found = budget_family(records, RECIPE_STUDY, CORE_STUDY, group)   # adjusted as Appendix A is
    if found is None:
        print(f"the {group} family has no runs at one of the two budgets at the {profile} profile yet")
        return None
    table = found[0]
    if table.empty:
        print("no change has an interval at both budgets yet")
        return None
    display(readable(table[["short", "long", "change", "change_low", "change_high", "p", "resolved"]]))
    display(plots.budget_transfer(table))
    return table


def show_sensitivity(family: str, profile: str, results_dir: Path | None = None):
    """One family of the recipe study under its declared analysis (the two-way layout) and,
    beside it, the paired one (differences pooled, Cochran-screened, Holm over the whole
    study): each arm's interval under both and whether the verdicts agree. Both are
    computed over the whole study; the rows shown are the family's."""
    from IPython.display import display

    from ..records import RESULTS_DIR
    from .paired import beside_declared
    from .stats import rounded
    from .sweeps import RECIPE_STUDY
    from .tables import sweep_runs

    runs = sweep_runs(RECIPE_STUDY, profile, results_dir or RESULTS_DIR)
    if RECIPE_STUDY.baseline not in set(runs["variant"] if len(runs) else ()):
        print(f"no {RECIPE_STUDY.name} records with its baseline at the {profile} profile yet")
        return None
    table = beside_declared(RECIPE_STUDY, runs)
    mine = table[table["family"] == family].drop(columns="family")
    display(rounded(mine).replace({True: "✓", False: ""}))
    screened = ", ".join(table.attrs["screened"]) or "none"
    print(f"over the whole study, {table.attrs['agree']} of {table.attrs['arms']} verdicts agree; "
          f"arms screened out of the pool (Cochran's C): {screened}; the smallest effect this "
          f"family finds 80% of the time: {fixed(table.attrs['detectable'][family])} points")
    return mine


def _recorded_runs(sweep, profile: str, results_dir: Path | None):
    """A sweep's runs at `profile`, or None (saying the command that measures them) while its
    baseline has none: every paired view measures against the baseline."""
    from ..records import RESULTS_DIR
    from .tables import sweep_runs

    runs = sweep_runs(sweep, profile, results_dir or RESULTS_DIR)
    if runs.empty or sweep.baseline not in set(runs["variant"]):
        print(f"no {sweep.name} records with its baseline at the {profile} profile yet "
              f"({sweep.planned_runs} runs planned): `{sweep.command(profile)}` measures them")
        return None
    return runs


def show_coursework_study(profile: str, results_dir: Path | None = None):
    """The coursework study (ImprovedNet at 50 epochs) under its declared paired analysis,
    and each change beside the same change on FastNet at 8 epochs (study/transfer.py).
    Without records, the command that measures them. Returns the two tables."""
    from IPython.display import display

    from . import plots
    from ..records import RESULTS_DIR
    from .paired import declared_table, stage_alpha
    from .stats import format_p, interval_label, rounded
    from .sweeps import COURSEWORK_STUDY
    from .tables import sweep_runs
    from .transfer import study_transfer

    study, root = COURSEWORK_STUDY, results_dir or RESULTS_DIR
    if (runs := _recorded_runs(study, profile, root)) is None:
        return None, None
    if note := study.progress(zip(runs["variant"], runs["seed"]), profile):
        print(note)
    table = declared_table(study, runs)
    paired = table[(table["pairs"] > 0) | (table["failed"] > 0)]
    if paired.empty:
        print(f"no change has a run paired with {study.baseline} yet")
        return table, None
    print(f"ImprovedNet, each change against {study.baseline}: "
          f"{interval_label(stage_alpha(study))} intervals within each family, p_holm over the study")
    shown = ["family", "pairs", "failed", "diff", "low", "high", "p", "p_holm", "resolved"]
    display(rounded(paired[shown]).assign(p=paired["p"].map(format_p), p_holm=paired["p_holm"].map(format_p))
            .replace({True: "✓", False: ""}))
    if table["low"].notna().any() and table.attrs["first_family_ran"]:
        display(plots.forest_plot(table.assign(device=table["machine"]), label=f"difference to {study.baseline}"))
    elif table["low"].notna().any():
        print("the forest plot waits until every question has all its seeds: "
              "until then the pooled spread has few degrees of freedom")
    carried = study_transfer(study, table, lambda other: sweep_runs(other, profile, root))
    carried = carried.dropna(subset=["improved", "fast"])
    if len(carried):
        display(rounded(carried[["improved", "improved_low", "improved_high", "fast", "fast_low",
                                 "fast_high", "interaction", "interaction_low", "interaction_high"]]))
        print(f"signs agree for {carried.attrs['signs_agree']} of {carried.attrs['changes']} changes")
    return table, carried


def show_pilot(name: str, profile: str, results_dir: Path | None = None):
    """A recorded pilot (a sweep that chooses a removed component's settings) under the rule
    its file declares: each setting's validation accuracy, its failures and the one chosen.
    Without records, the command that runs it. Returns the table."""
    from IPython.display import display

    from ..records import RESULTS_DIR
    from .stats import rounded
    from .sweeps import SWEEPS
    from .tables import pilot_choice, sweep_runs

    sweep = SWEEPS[name]
    runs = sweep_runs(sweep, profile, results_dir or RESULTS_DIR)
    if runs.empty:
        print(f"no {name} records at the {profile} profile yet: `{sweep.command(profile)}` runs the pilot")
        return None
    table = pilot_choice(sweep, runs)
    display(rounded(table).replace({True: "✓", False: ""}))
    return table


def show_paired_arm(name: str, profile: str, results_dir: Path | None = None):
    """A sweep declared with the paired analysis (such as fastnet_without_bn: one arm against
    `fast`) as declared, once every seed of it has run; until then how far along it is.
    Without records, the command that measures it. Returns the table (or None)."""
    from IPython.display import display

    from .paired import declared_table
    from .stats import format_p, rounded
    from .sweeps import SWEEPS

    sweep = SWEEPS[name]
    if (runs := _recorded_runs(sweep, profile, results_dir)) is None:
        return None
    if note := sweep.progress(zip(runs["variant"], runs["seed"]), profile):
        print(note)
    table = declared_table(sweep, runs)
    if not table.attrs["first_family_ran"]:
        return None
    accuracy = runs.groupby("variant")["val_acc"].mean().rename("val %")
    shown = table[["pairs", "failed", "diff", "low", "high", "p"]].join(accuracy)
    display(rounded(shown).assign(p=table["p"].map(format_p)))
    return table


def show_rate_curve(profile: str, results_dir: Path | None = None):
    """FastNet's learning-rate curve (fastnet_lr_curve, study/curve.py): each multiplier's
    paired effect, the quadratic in log rate with its best multiplier, and where training
    collapses. Without records, the command that measures it. Returns the curve."""
    import numpy as np
    from IPython.display import display

    from .curve import rate_curve, rate_curve_figure
    from .paired import first_family_ran
    from .stats import rounded
    from .sweeps import SWEEPS

    sweep = SWEEPS["fastnet_lr_curve"]
    if (runs := _recorded_runs(sweep, profile, results_dir)) is None:
        return None
    if note := sweep.progress(zip(runs["variant"], runs["seed"]), profile):
        print(note)
    if not first_family_ran(sweep, runs):
        print("the curve's fit waits until every multiplier has all its seeds")
        return None
    curve = rate_curve(sweep, runs, profile)
    display(rounded(curve).replace({True: "✓", False: ""}))
    a = curve.attrs
    if not np.isnan(a["best"]):
        bounds = (f"{fixed(a['best_low'])} to {fixed(a['best_high'])}" if not np.isnan(a["best_low"])
                  else "unbounded: the curvature is not resolved")
        print(f"best multiplier {fixed(a['best'])} (95% interval {bounds})")
    print(f"collapses below x1 at: {a['collapse_low']:.3g}; above x1 at: {a['collapse_high']:.3g} (nan: none)")
    display(rate_curve_figure(curve))
    return curve


def show_search(sweep, profile: str, results_dir: Path | None = None):
    """An Optuna search on a sweep's baseline (`tune --sweep NAME`), read from results/: what
    it ran and found, each trial's accuracy with the settings' importances, Optuna's slice
    plot, and the best trial's paired confirmation with the sweep's seeds. Without a stored
    study, the command that runs it. Returns the trials (None without a study)."""
    import warnings

    import matplotlib.pyplot as plt
    import numpy as np
    # optuna's progress bars look for Jupyter's widgets, which the kit does not need
    warnings.filterwarnings("ignore", message="IProgress not found")
    import optuna
    from IPython.display import display
    from optuna.visualization import matplotlib as optuna_plots

    from . import plots
    from ..records import RESULTS_DIR
    from .search import against_one_setting, agreed_choice, describe_settings, read_search
    from .tuning import confirmation

    results_dir = results_dir or RESULTS_DIR
    search = read_search(sweep, profile, results_dir)
    if search is None:
        print(f"no Optuna search of {sweep.name}'s base at the {profile} profile yet: "
              f"`python -m cifar_lib tune --sweep {sweep.name} --profile {profile} --n-trials 40 "
              f"--confirm` runs it and confirms its best trial (`benchmarks/gpu_check.sh` on a GPU)")
        return None
    study, trials = search.study, search.trials
    where = "".join(f"; {device_label(device)}, {precision}" for device, precision in search.machines)
    states = trials["state"].value_counts()
    print(f"{len(trials)} trials ({', '.join(f'{n} {s}' for s, n in states.items())}; one seed each"
          f"{where}): best validation accuracy {fixed(100 * study.best_value)}% "
          f"(trial {study.best_trial.number}) with {describe_settings(study.best_params, sweep.config(sweep.baseline, profile))}; the "
          f"median complete trial {fixed(search.complete['val_acc'].median())}%")
    display(plots.optuna_search(trials, search.importances))
    with warnings.catch_warnings():       # optuna marks its matplotlib plots experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = np.atleast_1d(optuna_plots.plot_slice(study))
    display(axes.flat[0].figure)
    plt.close(axes.flat[0].figure)
    check = confirmation(sweep, study, profile)
    show_recorded_sweep(check, profile, title=f"Optuna's best trial against {sweep.baseline}",
                        results_dir=results_dir)
    # the one choice the best trials agreed on, asked alone by the sweep: the trial against it
    agreed = agreed_choice(search, sweep.config(sweep.baseline, profile))
    alone = agreed and against_one_setting(sweep, check, agreed)
    if alone:
        show_recorded_sweep(alone, profile, title=f"Optuna's best trial against {alone.baseline}",
                            results_dir=results_dir)
    return trials


def _last_state(text: str) -> str:
    # A terminal shows only what follows the last carriage return of each line.
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


KERNEL_DISPLAY_NAME = "Python 3 (ipykernel)"     # ipykernel.kernelspec.get_kernel_dict()'s


def tidy_outputs(path: Path) -> bool:
    """Merge each cell's consecutive stream outputs, keep only the final state of every
    progress bar (what a terminal would show at the end), drop the execution timestamps
    (they change on every run) and name the kernel as ipykernel does; True if the file changed."""
    path = Path(path)
    raw = path.read_text()
    nb = json.loads(raw)
    # the kernel's name as JupyterLab's own kernel gives it, so opening a notebook there and
    # letting it autosave changes nothing
    nb["metadata"]["kernelspec"] = {"display_name": KERNEL_DISPLAY_NAME, "language": "python", "name": "python3"}
    for cell in (c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["metadata"].pop("execution", None)
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
