"""Settings chosen by measuring: each recorded pilot under the rule its file declares (the
rate ImprovedNet without batch norm trains at, the head scale and warm-up of FastNet
without it) and the FastNet without batch norm trained at the chosen settings, and
FastNet's learning-rate curve with its best multiplier (study/curve.py)."""
from __future__ import annotations

import os
import re

import numpy as np

from ...study.curve import COLLAPSE_POINTS, multipliers, rate_curve, rate_curve_figure
from ...study.stats import fixed
from ...study.sweeps import Sweep, sweep_records
from ...study.paired import arm_differences, declared_table, first_family_ran
from ...study.tables import mean_std, pilot_choice, runs_frame, seed_range
from .common import LEVEL, _spoken_list, signed
from .studies import _count, effect_phrase


def _short_names(names: list[str]) -> list[str]:
    """The settings without the words they all start with, cut back to a ', ' (or else a
    space): 'no batch norm, rate x1' and '..., rate x3' -> 'rate ×1' and 'rate ×3'."""
    common = os.path.commonprefix(names)
    cut = (common.rfind(", ") + 2 if ", " in common else common.rfind(" ") + 1) if len(names) > 1 else 0
    return [re.sub(r"(^|\s)x(?=\d)", r"\1×", n[cut:]) for n in names]


def _threads(n) -> str:
    """'one thread', 'two threads'."""
    return f"{_count(int(n))} thread{'s' * (int(n) != 1)}"


def pilot(filled, records: list[dict], sweep: Sweep | None, key: str):
    """`key`: each setting's validation accuracy, or 'diverged' (no score: its loss blew up)
    or its failure, the chosen one marked, once every setting has run; `key_chosen`: the
    chosen setting's name."""
    mine = sweep_records(records, sweep) if sweep else []
    if not mine:
        return
    runs = runs_frame(mine)
    table = pilot_choice(sweep, runs)
    if not (table["runs"] > 0).all():
        return
    names = _short_names(list(table.index))
    scores = runs.groupby("variant")["val_acc"].mean()       # NaN where every run diverged

    def outcome(setting, row, failed_said: str) -> str:
        if not row["failed"]:
            return f"{fixed(row['val_acc'])}%" + (" (chosen)" if row["chosen"] else "")
        return "diverged" if np.isnan(scores[setting]) else f"{fixed(scores[setting])}%{failed_said}"

    said = [f"{name}: {outcome(setting, row, '' if table['failed'].all() else ', failed to train')}"
            for name, (setting, row) in zip(names, table.iterrows())]    # names may hold commas
    filled.values[key] = (f"all {_count(len(names))} settings failed to train ({'; '.join(said)})"
                          if table["failed"].all() else "; ".join(said))
    seeds = len(sweep.seeds)
    filled.values[f"{key}_budget"] = (f"{sweep.config(sweep.baseline, 'cpu').epochs} epochs, "
                                      f"{_count(seeds)} seed{'s' * (seeds > 1)}")
    if table["chosen"].any():
        chosen = table.index[table["chosen"]][0]
        filled.values[f"{key}_chosen"] = chosen
        if sweep.config(chosen, "cpu").lr != sweep.config(sweep.baseline, "cpu").lr:
            filled.values[f"{key}_other_rate"] = "yes"      # the arm changes its rate as well


def _times(m: float) -> str:
    return f"×{m:.3g}"


def learning_rate_curve(filled, records: list[dict], sweep: Sweep | None):
    """`lr_curve_*`: the multipliers measured, the best one with its interval (or why there
    is none), where training collapses, and the figure."""
    mine = sweep_records(records, sweep) if sweep else []
    runs = runs_frame(mine) if mine else None
    if runs is None or sweep.baseline not in set(runs["variant"]):
        return
    if not first_family_ran(sweep, runs):   # the declared fit rests on every multiplier's seeds
        recorded = sweep.recorded(runs)
        factor = multipliers(sweep)
        filled.values.update(lr_curve_runs=str(len(recorded)), lr_curve_planned=str(sweep.planned_runs),
                             lr_curve_multipliers=_count(len(factor)), lr_curve_lowest=_times(factor.min()),
                             lr_curve_highest=_times(factor.max()), lr_curve_seeds=_count(len(sweep.seeds)))
        return
    curve = rate_curve(sweep, runs)
    measured = curve[curve["pairs"] + curve["failed"] > 0]
    a = curve.attrs
    filled.values.update(lr_curve_points=str(len(measured)), lr_curve_lowest=_times(measured["multiplier"].min()),
                         lr_curve_highest=_times(measured["multiplier"].max()),
                         lr_curve_seeds=_count(len(sweep.seeds)))
    if not np.isnan(a["best"]):
        filled.values["lr_curve_best"] = f"×{fixed(a['best'])}"
        bounded = not np.isnan(a["best_low"])
        filled.values["lr_curve_interval"] = (
            f"95% interval ×{fixed(a['best_low'])} to ×{fixed(a['best_high'])} by Fieller's method, "
            f"Fieller 1954" if bounded else "its 95% interval has no bounds: the curvature is not resolved")
        if bounded:
            filled.values["lr_curve_bounded"] = "yes"
    elif a["vertex"] is not None:
        filled.values["lr_curve_flat"] = "yes"
    # every multiplier measured that collapsed, not a range beyond what was tested
    collapsed = [_times(m) for m in measured.loc[measured["collapsed"], "multiplier"]]
    filled.values["lr_curve_collapse"] = f"at {_spoken_list(collapsed)}" if collapsed else "at no multiplier tested"
    filled.values["lr_curve_collapse_points"] = f"{COLLAPSE_POINTS:g}"
    filled.figure("lr_curve", rate_curve_figure(curve),
                  f"FastNet's learning-rate curve at {sweep.config(sweep.baseline, 'cpu').epochs} epochs: "
                  f"each multiplier's effect against ×1 with {LEVEL} intervals over the multipliers, "
                  f"the quadratic in log rate, and the best multiplier's 95% interval (shaded).")


def without_batch_norm(filled, records: list[dict], sweep: Sweep | None, pilot: Sweep | None = None):
    """`fast_without_bn`: FastNet without batch norm at its pilot's settings against `fast`,
    paired seed by seed on one machine under its sweep's declared analysis, with its
    accuracy (`fast_without_bn_acc`) and seeds, once every declared seed of both has run;
    until then how many of its runs are recorded (`fast_without_bn_runs` of `_planned`).
    `fast_without_bn_pilot_seeds`: the arm's seeds that also ran in the `pilot` that chose
    its settings (their runs took part in the choice)."""
    mine = sweep_records(records, sweep) if sweep else []
    if not mine:
        return
    runs = runs_frame(mine)
    arm = next(iter(sweep.families.values()))[0]
    if not first_family_ran(sweep, runs):
        recorded = sweep.recorded(runs)
        filled.values.update(fast_without_bn_runs=_count(len(recorded)), fast_without_bn_planned=_count(sweep.planned_runs))
        return
    row = declared_table(sweep, runs).assign(runs=lambda t: t["pairs"] + t["failed"]).loc[arm]
    if row["failed"]:       # the sentences about it say it trains: a failure is said on its own
        filled.values["fast_without_bn_failed"] = effect_phrase(row)
        return
    if pilot and (shared := sorted(set(pilot.seeds) & set(sweep.seeds))):
        filled.values["fast_without_bn_pilot_seeds"] = seed_range(shared)
        # the pilot's choice was made on these seeds' runs: the effect on the others alone
        diffs, _, _ = arm_differences(runs, sweep.baseline, arm, metric=sweep.metric, by="variant",
                                      failure_below=sweep.failure_below)
        if len(others := diffs.drop(index=shared, errors="ignore")):
            filled.values.update(fast_without_bn_other_seeds=seed_range(others.index),
                                 fast_without_bn_other=signed(others.mean()))
    on_machine = runs[runs["machine"] == row["machine"]]
    filled.values.update(fast_without_bn=effect_phrase(row), fast_without_bn_seeds=seed_range(sweep.seeds),
                         fast_without_bn_acc=mean_std(on_machine.loc[on_machine["variant"] == arm, "val_acc"]),
                         fast_without_bn_base=mean_std(on_machine.loc[on_machine["variant"] == sweep.baseline, "val_acc"]),
                         fast_without_bn_machine=on_machine["device"].iloc[0],
                         fast_without_bn_threads=_threads(on_machine["threads"].iloc[0]))
