"""The paired analysis (a sweep's `analysis = "paired"`): each arm's effect is the mean of
its paired differences (arm minus base, seed by seed on one machine), and the spread is
pooled from those differences themselves.

Why not the two-way layout's residual (stats.compare_to_base)? That pool mixes the base's
run-to-run spread into every arm's, and in the recipe study the base varies about three
times less than the arms (run sd 0.09 against 0.30 points), so its intervals come out
about a fifth too wide for most arms and too narrow for a noisy one. Here:

- each arm's differences give a variance with n - 1 degrees of freedom; the pool is their
  sum over the arms pooled together (a family, or the whole study), over their summed df;
- the arms' variances are screened, over every arm of the study, with Cochran's C (the
  largest variance's share of their sum, which works at 1-3 degrees of freedom where an F
  test against a two-arm family's pool cannot): an arm out of line at `spread_alpha` is
  flagged and keeps its own variance, and the test is repeated on the rest while three or
  more arms remain;
- intervals are Bonferroni over a family's declared comparisons; a claim across families
  ("nine changes cost accuracy") uses Holm over every declared comparison of the study,
  given beside them (`p_holm`, `resolved_holm`);
- a run that failed to train is reported as a failure, never pooled.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .stats import ALPHA, failed_to_train
from .tables import compare_sweep, every_seed_ran


def cochran_p(variances, df: int) -> float:
    """P(C >= the observed C) for k variances of `df` degrees of freedom each, C = the
    largest over their sum (the usual F approximation: k * P(F > (k-1)C / (1-C)) with
    F(df, (k-1) df), exact in the tail that matters)."""
    v = np.asarray(variances, float)
    k = len(v)
    if k < 2 or df < 1 or v.sum() <= 0:
        return 1.0
    c = v.max() / v.sum()
    if c >= 1:
        return 0.0
    return float(min(1.0, k * stats.f.sf((k - 1) * c / (1 - c), df, (k - 1) * df)))


def holm(p: pd.Series, m: int | None = None) -> pd.Series:
    """Holm's step-down adjustment of the p-values in `p` over `m` comparisons (default: the
    known ones). NaN stays NaN; with m = len(p) it counts as a p-value of 1, ranked last: a
    declared comparison not yet measured (or failed) still widens the others' adjustment."""
    known = p.dropna().sort_values()
    m = len(known) if m is None else m
    adjusted = np.minimum(1.0, np.maximum.accumulate(known.to_numpy() * (m - np.arange(len(known)))))
    return pd.Series(adjusted, index=known.index).reindex(p.index)


def arm_differences(runs: pd.DataFrame, base: str, arm: str, *, metric: str, by: str,
                    failure_below: float | None) -> tuple[pd.Series, int, str | None]:
    """The arm's paired differences by seed on the machine where it has most pairs with the
    base, the number of its runs that failed to train, and that machine."""
    failed = failed_to_train(runs[metric], failure_below)
    good = runs[~failed]
    mine = good[good[by] == arm].set_index(["machine", "seed"])[metric]
    theirs = good[good[by] == base].set_index(["machine", "seed"])[metric]
    diffs = (mine - theirs).dropna()
    n_failed = int(failed[runs[by] == arm].sum())
    if diffs.empty:
        return pd.Series(dtype=float), n_failed, None
    machine = diffs.groupby(level="machine").size().idxmax()
    return diffs.xs(machine, level="machine"), n_failed, machine


def paired_table(runs: pd.DataFrame, base: str, families: dict[str, list[str]], *,
                 metric: str = "val_acc", by: str = "variant", alpha: float = ALPHA,
                 failure_below: float | None = None, spread_alpha: float = 0.01,
                 pool: str = "family", power: float = 0.8) -> pd.DataFrame:
    """One row per declared arm of every family: its paired effect, the pooled standard
    error, a Bonferroni interval over its family's declared arms and a Holm-adjusted p over
    the study's. `pool`: "family" (each family's arms pooled together) or "study" (every
    arm of every family). attrs: each pool's sd of a paired difference and df, the arms
    screened out, and each family's smallest effect found with `power` at its pool."""
    runs = runs.drop_duplicates([by, "seed", "machine"], keep="last")
    rows = []
    for family, arms in families.items():
        for arm in arms:
            diffs, n_failed, machine = arm_differences(runs, base, arm, metric=metric, by=by,
                                                       failure_below=failure_below)
            rows.append({"family": family, by: arm, "machine": machine, "pairs": len(diffs),
                         "failed": n_failed, "diff": diffs.mean() if len(diffs) else np.nan,
                         "var": diffs.var(ddof=1) if len(diffs) > 1 else np.nan})
    table = pd.DataFrame(rows).set_index(by)
    groups = {"study": list(table.index)} if pool == "study" else \
        {f: list(table.index[table["family"] == f]) for f in families}
    # Screen over every arm of the study: a family of two arms cannot show an outlier at
    # 1-3 degrees of freedom, a study of many can. Cochran's C needs equal pairs.
    table["own_spread"] = False
    usable = table[(table["failed"] == 0)].dropna(subset=["var"])
    usable = usable[usable["pairs"] == usable["pairs"].max()]
    while len(usable) >= 3 and cochran_p(usable["var"], int(usable["pairs"].max()) - 1) < spread_alpha:
        worst = usable["var"].idxmax()
        table.loc[worst, "own_spread"] = True
        usable = usable.drop(index=worst)
    pools = {}
    for name, arms in groups.items():
        usable = table.loc[arms].dropna(subset=["var"])
        usable = usable[(usable["failed"] == 0) & ~usable["own_spread"]]
        df = int((usable["pairs"] - 1).sum())
        pools[name] = {"var": float(((usable["pairs"] - 1) * usable["var"]).sum() / df) if df else np.nan,
                       "df": df, "arms": list(usable.index)}
        for arm in arms:
            own = table.loc[arm, "own_spread"] or table.loc[arm, "failed"] > 0 or not df
            table.loc[arm, "own_spread"] = bool(own)
            var, dof = (table.loc[arm, "var"], table.loc[arm, "pairs"] - 1) if own else \
                (pools[name]["var"], df)
            table.loc[arm, "se"] = np.sqrt(var / table.loc[arm, "pairs"]) if table.loc[arm, "pairs"] else np.nan
            table.loc[arm, "df"] = dof
    m = table["family"].map(table["family"].value_counts())           # declared arms per family
    tested = table["se"] > 1e-9
    half = pd.Series(np.nan, index=table.index)
    half[tested] = stats.t.ppf(1 - alpha / (2 * m[tested]), table.loc[tested, "df"]) * table.loc[tested, "se"]
    table["low"], table["high"] = table["diff"] - half, table["diff"] + half
    raw = pd.Series(np.nan, index=table.index)
    raw[tested] = 2 * stats.t.sf((table.loc[tested, "diff"] / table.loc[tested, "se"]).abs(),
                                 table.loc[tested, "df"])
    table["p"] = np.minimum(1.0, raw * m)
    table["p_holm"] = holm(raw, m=len(table))      # every declared comparison
    table["resolved"] = (table["low"] > 0) | (table["high"] < 0)
    table["resolved_holm"] = table["p_holm"] < alpha
    n = int(table["pairs"].max()) if len(table) else 0
    detectable = {}
    for family in families:
        key = "study" if pool == "study" else family
        sd, df = np.sqrt(pools[key]["var"]), pools[key]["df"]       # sd of one paired difference
        k = len(families[family])
        detectable[family] = float((stats.t.ppf(1 - alpha / (2 * k), df) + stats.t.ppf(power, df))
                                   * sd / np.sqrt(n)) if df and n else np.nan
    table.attrs.update(base=base, metric=metric, alpha=alpha, pool=pool, families=families,
                       pools={k: {"sd_diff": float(np.sqrt(p["var"])), "df": p["df"], "arms": p["arms"]}
                              for k, p in pools.items()},
                       screened=list(table.index[table["own_spread"] & (table["failed"] == 0)]),
                       detectable=detectable)
    return table


def stage_alpha(sweep) -> float:
    """The error rate of one look at a study: one with a declared second stage spends half
    of it at each stage (97.5% intervals at each), so the two looks together keep 95%."""
    return ALPHA / 2 if sweep.second_stage_seeds else ALPHA


def first_family_ran(sweep, runs: pd.DataFrame) -> bool:
    """Whether the baseline and every arm of the sweep's first family (the study's questions)
    have run every declared seed. Until then the pool has few degrees of freedom, and a
    forest plot would show only how wide that makes the intervals: it waits."""
    first = next(iter(sweep.families.values()))
    return every_seed_ran(runs, (sweep.baseline, *first), sweep.seeds)


def second_stage_owed(sweep, runs: pd.DataFrame) -> bool:
    """Whether a declared second stage still has runs to make: while the first stage is
    running (which arms it owes is not known yet), or while the baseline or an arm whose
    first-stage interval includes 0 lacks a second-stage seed. The intervals are those of
    the first stage's seeds alone: the stage-2 runs change the pool, not who is owed."""
    if not sweep.second_stage_seeds:
        return False
    first = runs[runs["seed"].isin(sweep.seeds)]
    if not first_family_ran(sweep, first):
        return True
    table = declared_table(sweep, first)
    open_arms = table.index[(table["pairs"] > 0) & (table["failed"] == 0) & ~table["resolved"]]
    return bool(len(open_arms)) and not every_seed_ran(runs, (sweep.baseline, *open_arms),
                                                       sweep.second_stage_seeds)


def declared_table(sweep, runs: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """A study declared with `analysis = "paired"` analysed as declared: paired_table over
    its families, its failure rule and screen, at its stage's error rate."""
    table = paired_table(runs, sweep.baseline, sweep.families, metric=metric or sweep.metric,
                         alpha=stage_alpha(sweep), failure_below=sweep.failure_below,
                         spread_alpha=sweep.spread_alpha)
    table.attrs["first_family_ran"] = first_family_ran(sweep, runs)     # figures and answers wait until then
    return table


def beside_declared(sweep, runs: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """A sweep analysed as declared (stats.compare_to_base per family) beside the paired
    analysis: one row per arm with an interval under both, each verdict, and whether they
    agree. For a study whose declared analysis was the two-way layout, this is the
    sensitivity analysis; attrs["agree"] and attrs["arms"] count the verdicts."""
    metric = metric or sweep.metric
    paired = paired_table(runs, sweep.baseline, dict(sweep.groups), metric=metric,
                          failure_below=sweep.failure_below, spread_alpha=sweep.spread_alpha)
    rows = []
    for family, arms in sweep.groups.items():
        declared = compare_sweep(sweep.group(family), runs, metric=metric)
        for arm in arms:
            a, b = declared.loc[arm], paired.loc[arm]
            if np.isnan(a["low"]) or np.isnan(b["low"]):
                continue
            rows.append({"family": family, "variant": arm, "diff": b["diff"],
                         "declared_low": a["low"], "declared_high": a["high"],
                         "declared_resolved": bool(a["resolved"]), "paired_low": b["low"],
                         "paired_high": b["high"], "paired_resolved": bool(b["resolved"]),
                         "holm_resolved": bool(b["resolved_holm"]), "own_spread": bool(b["own_spread"])})
    table = pd.DataFrame(rows).set_index("variant")
    table["agree"] = table["declared_resolved"] == table["paired_resolved"]
    table.attrs.update(agree=int(table["agree"].sum()), arms=len(table), metric=metric,
                       screened=paired.attrs["screened"], detectable=paired.attrs["detectable"],
                       pools=paired.attrs["pools"])
    return table
