"""Can a 10-minute run answer for an 80-minute one? Each change the coursework study made
to ImprovedNet at 50 epochs, beside the same change made to FastNet at 8 epochs (the
study's `[transfer]` table): both effects with their intervals, whether their signs agree,
the rank correlation of the effects, and the model x change interaction (the difference of
the two effects) with the study's one adjustment, Bonferroni over its declared changes.

Each side is paired on its own machine: ImprovedNet's effect is the paired analysis of its
study (paired.paired_table); FastNet's is `variant` minus `against` in the other sweep,
seed by seed, with the spread of those differences (n - 1 degrees of freedom). The two
sides share no runs, so the interaction's standard error adds their variances, with
Welch-Satterthwaite degrees of freedom.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .paired import arm_differences
from .stats import ALPHA


def contrast(runs: pd.DataFrame, variant: str, against: str, *, metric: str = "val_acc",
             failure_below: float | None = None) -> dict:
    """`variant` minus `against` seed by seed on one machine: mean, standard error, df and
    pairs (no interval where fewer than two pairs)."""
    diffs, failed, machine = arm_differences(runs, against, variant, metric=metric, by="variant",
                                             failure_below=failure_below)
    n = len(diffs)
    se = diffs.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
    return {"diff": diffs.mean() if n else np.nan, "se": se, "df": n - 1 if n > 1 else np.nan,
            "pairs": n, "failed": failed, "machine": machine}


def counterpart_sweeps(study) -> dict:
    """The sweeps `study.transfer` draws FastNet's side from (default: recipe_study), by
    name, those whose file exists (fastnet_without_bn is written after its pilot)."""
    from .sweeps import SWEEPS

    names = {spec.get("sweep", "recipe_study") for spec in study.transfer.values()}
    return {name: SWEEPS[name] for name in sorted(names) if name in SWEEPS}


def study_transfer(study, paired: pd.DataFrame, runs_of) -> pd.DataFrame:
    """transfer_table for a study as declared: FastNet's side from each counterpart sweep,
    its runs given by `runs_of(sweep)`, at the study's stage error rate (paired.stage_alpha)."""
    from .paired import stage_alpha

    others = counterpart_sweeps(study)
    return transfer_table(study, paired, {name: runs_of(other) for name, other in others.items()},
                          others, alpha=stage_alpha(study))


def transfer_table(study, paired: pd.DataFrame, other_runs: dict[str, pd.DataFrame],
                   other_sweeps: dict, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per change in `study.transfer`: ImprovedNet's effect (from `paired`, the
    study's paired_table) and FastNet's (from `other_runs[sweep]`), each with a 95%
    interval Bonferroni over the declared changes, and their difference (the interaction)
    with its interval and verdict. attrs: sign agreement and Spearman's rank correlation
    over the changes with both effects."""
    m = max(len(study.transfer), 1)
    rows = []
    for change, spec in study.transfer.items():
        sweep_name = spec.get("sweep", "recipe_study")
        other = other_sweeps.get(sweep_name)
        runs = other_runs.get(sweep_name)
        fast = {"diff": np.nan, "se": np.nan, "df": np.nan, "pairs": 0, "failed": 0}
        if other is not None and runs is not None and not runs.empty:
            fast = contrast(runs, spec["variant"], spec.get("against", other.baseline),
                            metric=other.metric, failure_below=other.failure_below)
        mine = paired.loc[change] if change in paired.index else None
        row = {"change": change, "improved": np.nan, "improved_se": np.nan, "improved_df": np.nan,
               "fast": fast["diff"], "fast_se": fast["se"], "fast_df": fast["df"]}
        if mine is not None:
            row.update(improved=mine["diff"], improved_se=mine["se"], improved_df=mine["df"])
        rows.append(row)
    table = pd.DataFrame(rows).set_index("change")
    for side in ("improved", "fast"):
        half = stats.t.ppf(1 - alpha / (2 * m), table[f"{side}_df"]) * table[f"{side}_se"]
        table[f"{side}_low"], table[f"{side}_high"] = table[side] - half, table[side] + half
    table["interaction"] = table["improved"] - table["fast"]
    table["interaction_se"] = np.hypot(table["improved_se"], table["fast_se"])
    welch = (table["improved_se"] ** 2 + table["fast_se"] ** 2) ** 2 / (
        table["improved_se"] ** 4 / table["improved_df"] + table["fast_se"] ** 4 / table["fast_df"])
    half = stats.t.ppf(1 - alpha / (2 * m), welch) * table["interaction_se"]
    table["interaction_low"] = table["interaction"] - half
    table["interaction_high"] = table["interaction"] + half
    table["interaction_resolved"] = (table["interaction_low"] > 0) | (table["interaction_high"] < 0)
    both = table.dropna(subset=["improved", "fast"])
    rho, p = (stats.spearmanr(both["improved"], both["fast"]) if len(both) >= 3 else (np.nan, np.nan))
    table.attrs.update(comparisons=m, alpha=alpha, changes=len(both),
                       signs_agree=int((np.sign(both["improved"]) == np.sign(both["fast"])).sum()),
                       spearman=float(rho), spearman_p=float(p))
    return table
