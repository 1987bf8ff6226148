"""The study's statistics, in one place: each variant of a declared family against the base,
seed by seed on one machine, with the paired spread pooled over the family and Bonferroni
intervals that hold simultaneously over it.

The design: every variant of a family and the base run the same seeds, so the runs of one
machine form a variant x seed layout. The additive model accuracy = variant + seed + noise
is fitted by least squares; its residual pools the run-to-run noise of the whole family
(m (n - 1) degrees of freedom for m variants and n seeds, against n - 1 for one variant
alone). Each variant's effect is its coefficient minus the base's, with a t interval at
level 1 - alpha / m, m the number of variants the family *declared*: all m intervals then
cover their effects together with probability at least 1 - alpha. "Resolved" means the
interval excludes 0.

Two kinds of run are kept out of the pool: a run that failed to train (final accuracy under
the sweep's `failure_below`), reported as a failure rather than an effect, and the runs of
a variant whose own paired spread is out of line with the pool (an F test at
`spread_alpha`), which gets an interval from its own spread and a flag.
"""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
COLUMNS = ["device", "precision", "mean", "std", "seeds", "runs", "pairs", "failed", "diff",
           "low", "high", "p", "resolved", "own_spread"]


def interval_label(alpha: float = ALPHA) -> str:
    """'95%' for alpha 0.05: the family-wise level of a table's intervals."""
    return f"{100 * (1 - alpha):.3g}%"       # 95%, 97.5%


def half_even(x: float, places: int = 2) -> float:
    """x rounded as a printer rounds: a tie goes to the even digit, judged on the decimal the
    float stands for (an effect of −5.235 arrives as −5.2349999…, −1.665 as −1.6650…1; both
    are ties)."""
    if not np.isfinite(x):
        return x
    # two places more strip the noise (accuracies are stored as float32, ~1e-6 points off):
    # they are multiples of 0.02 points, and their means of a few seeds tie only exactly
    return float(Decimal(repr(round(float(x), places + 2))).quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)) + 0.0   # + 0.0: no −0.00


def fixed(x: float, places: int = 2, plus: bool = False) -> str:
    """x printed to `places` decimals (with its sign if `plus`), rounded half-even: the one
    rounding rule of every number the report and notebooks print."""
    return f"{half_even(x, places):{'+' if plus else ''}.{places}f}"


def rounded(table: pd.DataFrame, places: int = 2) -> pd.DataFrame:
    """A table's float columns rounded half-even (counts stay integers)."""
    return table.apply(lambda c: c.map(lambda x: half_even(x, places)) if c.dtype == float else c)


def format_p(p: float) -> str:
    """A p-value as a paper prints it: two significant figures, trailing zeros kept ('0.010',
    '1.0'), '< 0.0001' below that."""
    return "" if np.isnan(p) else "< 0.0001" if p < 1e-4 else f"{p:#.2g}"


def failed_to_train(scores: pd.Series, failure_below: float | None) -> pd.Series:
    """Which runs failed to train: no score (it diverged), or a score (percent) under the
    sweep's rule (it collapsed). A failure is reported, never pooled as an effect."""
    return scores.isna() | (scores < 100 * (failure_below or 0))


def bonferroni(p: float, m: int) -> float:
    """A p-value adjusted over a family of m comparisons."""
    return float(min(1.0, p * m))


def additive_fit(runs: pd.DataFrame, metric: str, by: str) -> dict:
    """Least-squares fit of metric = group + seed (one machine's runs). Returns each
    group's coefficient, their covariance up to sigma^2, the residual variance and its df."""
    groups = list(dict.fromkeys(runs[by]))
    seeds = sorted(set(runs["seed"]))
    x = np.zeros((len(runs), len(groups) + len(seeds) - 1))
    for row, (g, s) in enumerate(zip(runs[by], runs["seed"])):
        x[row, groups.index(g)] = 1
        if seeds.index(s) > 0:                       # the first seed is the reference level
            x[row, len(groups) + seeds.index(s) - 1] = 1
    y = runs[metric].to_numpy(float)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    df = len(y) - np.linalg.matrix_rank(x)
    residual = y - x @ coef
    variance = float(residual @ residual / df) if df > 0 else np.nan
    unscaled = np.linalg.pinv(x.T @ x)[:len(groups), :len(groups)]
    return {"groups": groups, "coef": coef[:len(groups)], "unscaled": unscaled,
            "variance": variance, "df": int(df)}


def _contrast(fit: dict, group: str, base: str) -> tuple[float, float]:
    """The effect of `group` against `base` in a fit, and its standard error."""
    i, j = fit["groups"].index(group), fit["groups"].index(base)
    c = fit["unscaled"]
    return (fit["coef"][i] - fit["coef"][j],
            float(np.sqrt(fit["variance"] * (c[i, i] + c[j, j] - 2 * c[i, j]))))


def compare_to_base(runs: pd.DataFrame, base: str, family: list[str], *, by: str = "variant",
                    metric: str = "val_acc", alpha: float = ALPHA,
                    failure_below: float | None = None, spread_alpha: float = 0.01) -> pd.DataFrame:
    """One row per variant of `family` (and one for the base): its accuracy, its effect
    against the base with a Bonferroni interval over the m = len(family) declared
    comparisons, and what the row rests on (each effect's standard error and degrees of
    freedom in attrs["standard_errors"], for budget_interaction).
    `runs`: tables.runs_frame rows (accuracy in percent; `failure_below` is a fraction,
    as the sweep file states it).

    A variant is paired on the machine (device and precision) where it has the most runs
    paired with the base; each machine's runs are fitted on their own, never pooled with
    another's."""
    family = [v for v in family if v != base]
    m = max(len(family), 1)
    runs = runs.drop_duplicates([by, "seed", "machine"], keep="last")
    runs = runs[runs[by].isin([base, *family])]
    failed = failed_to_train(runs[metric], failure_below)
    good = runs[~failed]
    base_runs = good[good[by] == base].set_index(["seed", "machine"]).index
    where = {}
    for v in family:
        mine = good[good[by] == v]
        counts = mine[mine.set_index(["seed", "machine"]).index.isin(base_runs)]["machine"].value_counts()
        where[v] = counts.index[0] if len(counts) else None
    rows, fits = {}, {}
    for machine in dict.fromkeys(w for w in where.values() if w is not None):
        members = [v for v in family if where[v] == machine]
        layout = good[(good["machine"] == machine) & good[by].isin([base, *members])]
        layout = layout[layout["seed"].isin(set(layout.loc[layout[by] == base, "seed"]))]
        # a variant that lost runs to failure, or whose spread is out of line, stands alone
        alone = {v for v in members if failed[runs[by] == v].any()
                 or _out_of_line(layout, v, base, by, metric, spread_alpha)}
        pooled = additive_fit(layout[~layout[by].isin(alone)], metric, by)
        fits[machine] = pooled
        for v in members:
            own = v in alone or pooled["df"] < 1
            rows[v] = {**_effect(layout, v, base, by, metric, None if own else pooled), "own_spread": own,
                       # the family's only variant on its machine: its pool is its own spread
                       "pooled_alone": len(members) == 1 < len(family)}
    table = []
    for v in [base, *family]:
        used = good[(good[by] == v) & ((good["machine"] == where[v]) if v != base
                                       else good["machine"].isin(fits))]
        row = rows.get(v, {"pairs": 0, "diff": np.nan, "se": np.nan, "df": np.nan, "own_spread": False,
                           "pooled_alone": False})
        table.append({by: v, "device": " / ".join(sorted(set(used["device"]))),
                      "precision": " / ".join(sorted(set(used["precision"]))),
                      "mean": used[metric].mean(), "std": used[metric].std(),
                      "seeds": used["seed"].nunique(), "runs": int((runs[by] == v).sum()),
                      "failed": int(failed[runs[by] == v].sum()), **row})
    table = pd.DataFrame(table).set_index(by)
    tested = table["se"] > 1e-6          # se 0: every seed moved alike, an interval proves nothing
    half = pd.Series(np.nan, index=table.index)
    half[tested] = stats.t.ppf(1 - alpha / (2 * m), table.loc[tested, "df"]) * table.loc[tested, "se"]
    table["low"], table["high"] = table["diff"] - half, table["diff"] + half
    table["p"] = np.nan
    table.loc[tested, "p"] = [bonferroni(2 * stats.t.sf(abs(d) / s, df), m) for d, s, df in
                              table.loc[tested, ["diff", "se", "df"]].itertuples(index=False)]
    table["resolved"] = (table["low"] > 0) | (table["high"] < 0)
    standard_errors = table[["se", "df", "pooled_alone"]].to_dict("index")     # for budget_interaction
    table = table[COLUMNS]
    used = good[good[by].isin([base, *family]) & good["machine"].isin(fits)]
    table.attrs.update(
        base=base, metric=metric, alpha=alpha, comparisons=m, family=family,
        seeds=sorted(set(used["seed"])), devices=sorted(set(used["device"])),
        precisions=sorted(set(used["precision"])),
        pooled_sd_diff={k: float(np.sqrt(2 * f["variance"])) for k, f in fits.items() if f["df"] > 0},
        pooled_df={k: f["df"] for k, f in fits.items()}, machines=list(fits),
        standard_errors=standard_errors,
        failed_runs=runs.loc[failed, [c for c in ("id", by, "seed", metric) if c in runs]].to_dict("records"))
    return table


def _paired_diffs(layout, variant, base, by, metric) -> np.ndarray:
    """The variant's run minus the base's, seed by seed (one machine's layout)."""
    mine = layout[layout[by] == variant].set_index("seed")[metric]
    theirs = layout[layout[by] == base].set_index("seed")[metric]
    return (mine - theirs).dropna().to_numpy()


def _effect(layout, variant, base, by, metric, pooled) -> dict:
    """A variant's effect against the base with its standard error and degrees of freedom:
    from the pooled fit, or from its own paired differences where `pooled` is None."""
    diffs = _paired_diffs(layout, variant, base, by, metric)
    if pooled is not None:
        diff, se = _contrast(pooled, variant, base)
        return {"pairs": len(diffs), "diff": diff, "se": se, "df": pooled["df"]}
    if len(diffs) < 2:
        return {"pairs": len(diffs), "diff": diffs.mean() if len(diffs) else np.nan, "se": np.nan,
                "df": np.nan}
    return {"pairs": len(diffs), "diff": diffs.mean(), "se": diffs.std(ddof=1) / np.sqrt(len(diffs)),
            "df": len(diffs) - 1}


def _out_of_line(layout, variant, base, by, metric, spread_alpha) -> bool:
    """Is the variance of this variant's paired differences larger than the pool of the
    rest of its family allows (one-sided F test at spread_alpha)?"""
    rest = layout[layout[by] != variant]
    diffs = _paired_diffs(layout, variant, base, by, metric)
    if rest[by].nunique() < 2 or len(diffs) < 2:
        return False                      # nothing to pool it with
    fit = additive_fit(rest, metric, by)
    if not fit["df"] > 0 or not fit["variance"] > 0:
        return False
    ratio = diffs.var(ddof=1) / (2 * fit["variance"])
    return bool(stats.f.sf(ratio, len(diffs) - 1, fit["df"]) < spread_alpha)


def detectable_difference(sd_diff: float, m: int, n: int, *, alpha: float = ALPHA,
                          power: float = 0.8, df: int | None = None) -> float:
    """The smallest effect a family of m variants with n seeds each finds with `power`:
    (t[1 - alpha/(2m), df] + t[power, df]) * sd_diff / sqrt(n), df the pooled residual's
    degrees of freedom: m (n - 1) as planned, fewer where a variant stands alone."""
    df = df or m * (n - 1)
    return float((stats.t.ppf(1 - alpha / (2 * m), df) + stats.t.ppf(power, df))
                 * sd_diff / np.sqrt(n))


def budget_interaction(short: pd.DataFrame, long: pd.DataFrame, counterparts: dict[str, str],
                       alpha: float = ALPHA, family: int | None = None) -> pd.DataFrame:
    """Does a change's effect depend on the budget? `short` and `long` are compare_to_base
    tables of two studies (each paired on its own machine), `counterparts` maps the long
    study's variants to the short one's names. One row per variant with an interval in
    both: the two effects, their difference (long - short) and its Bonferroni interval over
    the `family` declared comparisons (default: every counterpart), with
    Welch-Satterthwaite degrees of freedom."""
    rows = []
    for long_name, short_name in counterparts.items():
        if long_name in long.index and short_name in short.index:
            a = {**short.loc[short_name], **short.attrs["standard_errors"][short_name]}
            b = {**long.loc[long_name], **long.attrs["standard_errors"][long_name]}
            if a["se"] > 1e-6 and b["se"] > 1e-6:
                rows.append({"variant": long_name, "short": a["diff"], "short_low": a["low"],
                             "short_high": a["high"], "long": b["diff"], "long_low": b["low"],
                             "long_high": b["high"], "change": b["diff"] - a["diff"],
                             "se": np.hypot(a["se"], b["se"]),
                             "df": (a["se"] ** 2 + b["se"] ** 2) ** 2
                             / (a["se"] ** 4 / a["df"] + b["se"] ** 4 / b["df"]),
                             # either effect's interval from its own spread (compare_to_base),
                             # or from a pool it was alone in on its machine
                             "own_spread": bool(a["own_spread"] or b["own_spread"]
                                                or a["pooled_alone"] or b["pooled_alone"])})
    table = pd.DataFrame(rows, columns=["variant", "short", "short_low", "short_high", "long", "long_low",
                                        "long_high", "change", "se", "df", "own_spread"]).set_index("variant")
    m = family or max(len(counterparts), 1)     # what was declared, not what has run
    half = stats.t.ppf(1 - alpha / (2 * m), table["df"]) * table["se"]
    table["change_low"], table["change_high"] = table["change"] - half, table["change"] + half
    table["p"] = [bonferroni(2 * stats.t.sf(abs(c) / s, d), m)
                  for c, s, d in zip(table["change"], table["se"], table["df"])]
    table["resolved"] = (table["change_low"] > 0) | (table["change_high"] < 0)
    table.attrs.update(alpha=alpha, comparisons=m)
    return table
