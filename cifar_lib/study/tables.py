"""pandas views of results records: one row per run, one row per epoch, mean +- std."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..records import RESULTS_DIR, iter_records
from .sweeps import sweep_records

METRICS = ("val_acc", "val_acc_tta", "test_acc", "test_acc_tta")


def load_airbench_reference(root=RESULTS_DIR) -> dict | None:
    """airbench94 measured outside the kit on the same data (the yardstick of `fast`), from
    results/benchmarks/; None where that file is absent."""
    path = Path(root) / "benchmarks" / "airbench94-h200-20261126.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_records(root=RESULTS_DIR, *, profile: str | None = None, config: str | None = None,
                 include_smoke: bool = False) -> list[dict]:
    """Complete run records under root, oldest first, filtered by profile and config name."""
    out = []
    for _, r in iter_records(root, include_smoke=include_smoke or profile == "smoke"):
        if r.get("status") != "complete":
            continue
        if (profile is None or r["profile"] == profile) and (config is None or r["config_name"] == config):
            out.append(r)
    return sorted(out, key=lambda r: (r["started_at"], r["id"]))


def cpu_model(device: dict) -> str | None:
    """A CPU's model as prose names it ('Intel Xeon', 'AMD EPYC': the marketing string
    without its trademark signs and clock); None where only the architecture was recorded."""
    name = re.sub(r"\((R|TM)\)|\bProcessor\b|\bCPU\b|@.*$|\d+-Core", "", device.get("cpu", "CPU"))
    name = " ".join(name.split())
    return None if name in ("", "x86_64", "aarch64", "arm64", "i386") else name


def device_label(device: dict) -> str:
    """A device as prose names it: 'NVIDIA H200', '2-core Intel Xeon with AMX', '2-core
    AMD EPYC' (a record made before the units were kept names none)."""
    if device["type"] != "cpu":
        return device["name"]
    name = cpu_model(device) or "CPU (model not recorded)"
    units = f" with {device['cpu_units']}" if device.get("cpu_units") else ""
    return f"{device.get('cpu_count', device.get('threads'))}-core {name}{units}"


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run: identity, tags, budget (epochs, training images and the images
    seen, their product), final accuracies (percent) and timings."""
    rows = []
    for r in records:
        tags = r.get("tags", {})
        rows.append({
            "id": r["id"], "config": r["config_name"], "profile": r["profile"], "seed": r["seed"],
            "sweep": tags.get("sweep"), "variant": tags.get("variant"), "factor": tags.get("factor"),
            "model": r["model"]["name"], "parameters": r["model"]["parameters"],
            "epochs": r["config"]["epochs"], "train_images": r["data"]["train_images"],
            "images_seen": r["config"]["epochs"] * r["data"]["train_images"],
            "official_data": r["data"]["official"],
            **{m: 100 * r["final"][m] if m in r["final"] else None for m in METRICS},
            "train_minutes": r["train_seconds"] / 60, "wall_minutes": r["wall_seconds"] / 60,
            # `device` as prose names it; `device_name` exactly as recorded (what pairing uses)
            "device": device_label(r["device"]), "device_name": r["device"]["name"],
            "device_label": device_label(r["device"]),
            "device_type": r["device"]["type"],
            "precision": r["precision"],
        })
    return pd.DataFrame(rows)


def final_runs(configs: list[str], root=RESULTS_DIR, profiles=("cpu", "full")) -> pd.DataFrame:
    """The runs of `configs` that read the test set, at any of `profiles`: one row each with
    its budget and where it ran, so recipes trained for different lengths sit side by side."""
    records = [r for p in profiles for r in load_records(root, profile=p)
               if r["config_name"] in configs and r["test_read"]]
    columns = ["config", "profile", "seed", "epochs", "images_seen", "test_acc", "test_acc_tta",
               "train_minutes", "device"]
    if not records:
        return pd.DataFrame(columns=columns)
    runs = runs_frame(records)[columns]
    order = {name: i for i, name in enumerate(configs)}
    return runs.sort_values(["config", "profile", "seed"], key=lambda c: c.map(order)
                            if c.name == "config" else c).reset_index(drop=True)


def history_frame(records: list[dict]) -> pd.DataFrame:
    """One row per epoch of every run, accuracies in percent, with the training time
    elapsed at the end of each epoch (minutes)."""
    rows = []
    for r in records:
        tags = r.get("tags", {})
        elapsed = 0.0
        for h in r["history"]:
            elapsed += h["train_seconds"]
            rows.append({"id": r["id"], "config": r["config_name"], "seed": r["seed"],
                         "variant": tags.get("variant"), "epoch": h["epoch"],
                         "train_loss": h["train_loss"], "val_loss": h["val_loss"],
                         "train_acc": 100 * h["train_acc"], "val_acc": 100 * h["val_acc"],
                         "lr": h["lr"], "minutes": elapsed / 60})
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame, by: str = "variant", metric: str = "val_acc",
              order=None) -> pd.DataFrame:
    """mean, std and number of seeds of `metric` per group, in `order` if given."""
    table = (runs.groupby(by, sort=False)[metric].agg(["mean", "std", "count"])
             .rename(columns={"count": "seeds"}))
    if order is not None:
        table = table.reindex([o for o in order if o in table.index])
    return table.round(2)


def budget_runs(records: list[dict], sweep) -> pd.DataFrame:
    """The final runs of the final sweep `sweep` (other budgets) and of its base config at its
    own budget (one row each): the points of an accuracy-vs-images curve."""
    own = [r for r in records if r["config_name"] == sweep.base and r["test_read"]]
    return runs_frame(own + [r for r in sweep_records(records, sweep) if r["test_read"]])


def budget_curve(runs: pd.DataFrame) -> pd.DataFrame:
    """Accuracy against budget: the mean, std and number of seeds of the test accuracy (plain
    and with TTA) of final runs per number of training images seen, smallest budget first."""
    stats = {f"{name} {agg}": (metric, agg) for name, metric in
             (("test %", "test_acc"), ("test % (TTA)", "test_acc_tta")) for agg in ("mean", "std")}
    table = runs.groupby("images_seen").agg(epochs=("epochs", "first"), seeds=("seed", "count"),
                                            **stats)
    return table.sort_index().round(2)


def study_cost(runs: pd.DataFrame) -> pd.DataFrame:
    """What each study (a sweep, or a config outside sweeps) cost as recorded, machine by
    machine (a CPU's rate differs several-fold from another's, so times are never pooled
    across devices): runs, wall hours and the mean wall minutes of a run there."""
    runs = runs.assign(study=runs["sweep"].fillna(runs["config"]))
    table = runs.groupby(["study", "device_label", "precision"], sort=False).agg(
        runs=("id", "size"), wall_hours=("wall_minutes", lambda m: m.sum() / 60),
        minutes_per_run=("wall_minutes", "mean"))
    return table.sort_values("wall_hours", ascending=False).round(2)


def mean_std(values) -> str:
    """'mean ± std% (n seeds)' of accuracies in percent, as the report and notebooks quote them."""
    values = pd.Series(values, dtype=float).dropna()
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}% (1 seed)"
    return f"{values.mean():.2f} ± {values.std():.2f}% ({len(values)} seeds)"


def holm_levels(pvalues, alpha: float = 0.05) -> np.ndarray:
    """Holm's step-down procedure as one error rate per comparison: sorted by p, the k-th
    smallest (of m) is tested at alpha / (m - k + 1) until one fails; from there on every
    comparison keeps the failed step's rate. An interval at level 1 - rate then excludes 0
    exactly when Holm rejects, so "resolved" and "the interval excludes 0" agree."""
    p = np.asarray(pvalues, dtype=float)
    rates = np.empty(len(p))
    failed_at = None
    for k, i in enumerate(np.argsort(p, kind="stable")):
        rate = alpha / (len(p) - k)
        if failed_at is None and not p[i] < rate:
            failed_at = rate
        rates[i] = rate if failed_at is None else failed_at
    return rates


def paired_differences(runs: pd.DataFrame, base: str, by: str = "variant", metric: str = "val_acc",
                       order=None, alpha: float = 0.05) -> pd.DataFrame:
    """Each variant against `base`, seed by seed: the mean of the per-seed differences with
    a t interval (n - 1 degrees of freedom), Holm-adjusted across the table's comparisons.

    A difference is only taken between two runs of the same seed on the same device with
    the same precision; runs without such a partner are left out of the difference and
    counted in `unpaired`. `resolved` means the adjusted interval excludes 0. The table's
    attrs say what it rests on: devices, precisions, seeds and the family size."""
    from scipy import stats

    key = ["seed", "device_name" if "device_name" in runs else "device", "precision"]
    runs = runs.dropna(subset=[metric])
    if runs[runs[by] == base].empty:
        raise KeyError(f"no {metric} for the base {by} {base!r}; groups: {sorted(set(runs[by]))}")
    groups = [g for g in (order or list(dict.fromkeys(runs[by]))) if g in set(runs[by])]
    # The base's runs on a machine where none of the table's variants ran answer nothing
    # here: they are left out of its row (its mean is over the runs the differences use).
    machine = runs[key[1:]].apply(tuple, axis=1)
    variants = runs[by].isin(groups) & (runs[by] != base)
    if variants.any():
        runs = runs[(runs[by] != base) | machine.isin(set(machine[variants]))]
    base_rows = runs[runs[by] == base].drop_duplicates(key, keep="last").set_index(key)
    base_runs = base_rows[metric]
    rows = []
    for group in groups:
        mine_rows = runs[runs[by] == group].drop_duplicates(key, keep="last").set_index(key)
        mine = mine_rows[metric]
        shared = mine.index.intersection(base_runs.index)
        diffs = (mine[shared] - base_runs[shared]).to_numpy()
        # where the row's differences were taken (the base: where it ran), for tables whose
        # questions were measured on more than one machine, each paired on its own
        where = mine_rows.loc[shared if group != base else mine.index, "device_label"]
        row = {by: group, "device": " / ".join(sorted(set(where))),
               # the base of a two-machine table ran each seed on both: seeds < runs
               "mean": mine.mean(), "std": mine.std(), "seeds": mine.index.get_level_values("seed").nunique(),
               "runs": len(mine),
               "pairs": len(shared) if group != base else 0,
               "unpaired": len(mine) - len(shared) if group != base else 0,
               "diff": diffs.mean() if len(diffs) and group != base else np.nan,
               "sd_diff": diffs.std(ddof=1) if len(diffs) > 1 and group != base else np.nan}
        row["p"] = (stats.ttest_1samp(diffs, 0.0).pvalue
                    if group != base and len(diffs) > 1 else np.nan)
        rows.append(row)
    table = pd.DataFrame(rows).set_index(by)
    tested = table["p"].notna()
    rates = pd.Series(np.nan, index=table.index)
    rates[tested] = holm_levels(table.loc[tested, "p"].fillna(1.0), alpha)   # sd 0: p is nan
    half = (stats.t.ppf(1 - rates / 2, table["pairs"] - 1) * table["sd_diff"]
            / np.sqrt(table["pairs"]))
    low, high = f"{1 - alpha:.0%} low", f"{1 - alpha:.0%} high"
    table[low], table[high] = table["diff"] - half, table["diff"] + half
    table["p_holm"] = _holm_adjusted(table["p"])
    table["resolved"] = (table[low] > 0) | (table[high] < 0)
    used = runs[runs[by].isin(groups)]
    table.attrs.update(devices=sorted(set(used["device_label"])), precisions=sorted(set(used["precision"])),
                       ran_on=sorted(set(used[key[1:]].apply(tuple, axis=1))),
                       seeds=sorted(set(used["seed"])), comparisons=int(tested.sum()),
                       base=base, metric=metric, alpha=alpha)
    return table.drop(columns=["p"]).round({"mean": 2, "std": 2, "diff": 2, "sd_diff": 2,
                                            low: 2, high: 2, "p_holm": 4})


def budget_agreement(cheap: pd.DataFrame, full: pd.DataFrame, counterparts: dict[str, str]) -> pd.DataFrame:
    """Do two budgets rank the same changes alike? `cheap` and `full` are paired tables of
    two sweeps (each paired on its own device), `counterparts` maps the cheap sweep's
    variants to the full one's names. One row per shared variant with both differences;
    attrs hold Spearman's rank correlation, its p-value and how many variants it rests on."""
    from scipy import stats

    rows = [{"variant": v, "cheap budget": cheap.loc[v, "diff"], "full budget": full.loc[w, "diff"]}
            for v, w in counterparts.items()
            if v in cheap.index and w in full.index and pd.notna(cheap.loc[v, "diff"])
            and pd.notna(full.loc[w, "diff"])]
    table = pd.DataFrame(rows, columns=["variant", "cheap budget", "full budget"]).set_index("variant")
    rho, p = np.nan, np.nan
    if len(table) > 2:
        # Exact: the share of the n! orderings whose |rho| reaches the observed one (at n = 4
        # the normal approximation would call a perfect ordering p = 0; it is 2 in 24).
        import itertools

        x, y = table["cheap budget"].to_numpy(), table["full budget"].to_numpy()
        rho = stats.spearmanr(x, y).statistic
        null = [stats.spearmanr(x, np.asarray(perm)).statistic for perm in itertools.permutations(y)]
        p = float(np.mean(np.abs(null) >= abs(rho) - 1e-12))
    table.attrs.update(spearman=float(rho), p=p, shared=len(table))
    return table


def summarise_effects(table: pd.DataFrame) -> str:
    """The table's verdicts in a sentence or two, for notebooks to print under it:
    resolved differences with their adjusted intervals, then the unresolved ones."""
    low, high = f"{1 - table.attrs['alpha']:.0%} low", f"{1 - table.attrs['alpha']:.0%} high"
    tested = table.dropna(subset=[low])
    untested = [v for v in table.index if v != table.attrs["base"] and v not in tested.index]
    resolved = tested[tested["resolved"]].sort_values("diff")
    parts = []
    if len(resolved):
        parts.append("Resolved: " + "; ".join(
            f"{v} {r['diff']:+.2f} points ({r[low]:+.2f} to {r[high]:+.2f})" for v, r in resolved.iterrows()) + ".")
    unresolved = tested[~tested["resolved"]]
    if len(unresolved):
        parts.append("Not resolved (the adjusted interval contains 0): " + ", ".join(
            f"{v} ({r['diff']:+.2f})" for v, r in unresolved.sort_values("diff").iterrows()) + ".")
    if untested:
        parts.append(f"Fewer than two seeds paired with the base so far: {', '.join(untested)}.")
    return " ".join(parts) or "No variant has runs paired with the base yet."


def _holm_adjusted(pvalues: pd.Series) -> pd.Series:
    """Holm-adjusted p-values (nan where no test ran): the running maximum of (m - k + 1) p."""
    p = pvalues.dropna().sort_values(kind="stable")
    m = len(p)
    adjusted = pd.Series(np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p.to_numpy())),
                         index=p.index)
    return adjusted.reindex(pvalues.index)


def seed_range(seeds) -> str:
    """'seeds 0–3' for consecutive seeds, else 'seeds 0, 2' or 'seed 0', as captions say it."""
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seed" + "s" * (len(seeds) > 1) + " " + ", ".join(map(str, seeds))


def describe_pairing(table: pd.DataFrame) -> str:
    """What a paired table rests on, for its caption: 'seeds 0–3, each variant paired with
    the base seed by seed on the same device (2-core Intel Xeon; bf16); 95% intervals
    Holm-adjusted over 7 comparisons'."""
    a = table.attrs
    seed_text = seed_range(a["seeds"])
    if len(a["devices"]) == 1:
        where = f"the same device ({a['devices'][0]}; {', '.join(a['precisions'])})"
    else:   # each row was measured on one machine and paired with the base's runs there
        where = (f"the same device, named in each row ({' or '.join(a['devices'])}; "
                 f"{', '.join(a['precisions'])})")
    n = a["comparisons"]
    return (f"{seed_text}, each variant paired with the base seed by seed on {where}; "
            + (f"95% intervals Holm-adjusted over {n} comparison{'s' * (n != 1)}" if n else
               "no intervals: a difference needs two seed pairs or more for one"))


def sweep_runs(sweep, profile: str, root=RESULTS_DIR) -> pd.DataFrame:
    """One row per finished run of `sweep` at `profile` under root (empty if none ran)."""
    return runs_frame(sweep_records(load_records(root, profile=profile), sweep))
