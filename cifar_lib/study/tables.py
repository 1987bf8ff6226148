"""pandas views of results records: one row per run, one row per epoch, mean +- std."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..paths import record_folders
from ..records import RESULTS_DIR, iter_records
from .reuse import machine_key
from .stats import (ALPHA, budget_interaction, compare_to_base, failed_to_train, fixed, format_p,
                    half_even, interval_label, rounded)
from .sweeps import sweep_records

METRICS = ("val_acc", "val_acc_tta", "test_acc", "test_acc_tta")


def load_airbench_reference(root=RESULTS_DIR) -> dict | None:
    """airbench94 measured outside the kit on the same data (the yardstick of `fast`), from
    results/benchmarks/; None where that file is absent."""
    path = Path(root) / "benchmarks" / "airbench94-h200-20261126.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_records(root=None, *, profile: str | None = None, config: str | None = None,
                 include_smoke: bool = False, diverged: bool = False) -> list[dict]:
    """Complete run records under root (default: the study's results/ and one's own runs/),
    oldest first, filtered by profile and config name; with `diverged`, also the records of
    runs that diverged (status 'failed': no final scores), which a sweep reports as failures."""
    out = []
    statuses = {"complete", "failed"} if diverged else {"complete"}
    records = (r for folder in record_folders(root) if folder.is_dir()
               for _, r in iter_records(folder, include_smoke=include_smoke or profile == "smoke"))
    for r in records:
        if r.get("status") not in statuses:
            continue
        if (profile is None or r["profile"] == profile) and (config is None or r["config_name"] == config):
            out.append(r)
    return sorted(out, key=lambda r: (r["started_at"], r["id"]))


def prose_cpu_name(device: dict) -> str | None:
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
    name = prose_cpu_name(device) or "CPU (model not recorded)"
    units = f" with {device['cpu_units']}" if device.get("cpu_units") else ""
    return f"{device.get('cpu_count', device.get('threads'))}-core {name}{units}"


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run: identity, tags, budget (epochs, training images and the images
    seen, their product), final accuracies and the last epoch's training accuracy (percent)
    and timings."""
    rows = []
    for r in records:
        tags = r.get("tags", {})
        rows.append({
            "id": r["id"], "config": r["config_name"], "profile": r["profile"], "seed": r["seed"],
            "sweep": tags.get("sweep"), "variant": tags.get("variant"), "factor": tags.get("factor"),
            "model": r["model"]["name"], "parameters": r["model"]["parameters"],
            "epochs": r["config"]["epochs"], "train_images": r["data"]["train_images"],
            "images_seen": r["config"]["epochs"] * r["data"]["train_images"],
            # what the epochs trained on: a last partial batch is dropped (45,000 at batch
            # 2,000 trains 44,000 an epoch), so this is counted from each epoch's own rate
            "images_trained": round(sum(h["images_per_second"] * h["train_seconds"]
                                        for h in r.get("history", []))),
            "official_data": r["data"]["official"],
            **{m: 100 * r["final"][m] if m in r.get("final", {}) else None for m in METRICS},
            # on the batches as trained (augmented, dropout on): how closely the run fits them
            "train_acc": 100 * r["history"][-1]["train_acc"] if r.get("history") else None,
            "train_minutes": r["train_seconds"] / 60, "wall_minutes": r["wall_seconds"] / 60,
            # `device` as prose names it; `machine` what pairing compares (reuse.machine_key)
            "device": device_label(r["device"]), "machine": " · ".join(machine_key(r)),
            "device_type": r["device"]["type"], "threads": r["device"].get("threads"),
            "precision": r["precision"],
        })
    return pd.DataFrame(rows)


def newest_finals(records: list[dict]) -> dict[str, dict]:
    """The newest run that read the test set, per config name (records oldest first, as
    load_records gives them)."""
    return {r["config_name"]: r for r in records if r["test_read"]}


def analysed_run(records: list[dict], config: str = "fast") -> dict | None:
    """The final run whose predictions notebook 5 and the report analyse: of `config`'s runs
    that saved them, the lowest seed's first."""
    saved = [r for r in records if r["config_name"] == config and r["test_read"] and "predictions" in r]
    return min(saved, key=lambda r: (r["seed"], r["started_at"])) if saved else None


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
                         "train_loss": h["train_loss"],
                         "val_loss": np.nan if h["val_loss"] is None else h["val_loss"],
                         # a final run has no validation split: its val_* are None
                         "train_acc": 100 * h["train_acc"],
                         "val_acc": np.nan if h["val_acc"] is None else 100 * h["val_acc"],
                         "lr": h["lr"], "minutes": elapsed / 60})
    return pd.DataFrame(rows)


def seed_summary(runs: pd.DataFrame, by: str = "variant", metric: str = "val_acc",
              order=None) -> pd.DataFrame:
    """mean, std and number of seeds of `metric` per group, in `order` if given."""
    table = (runs.groupby(by, sort=False)[metric].agg(["mean", "std", "count"])
             .rename(columns={"count": "seeds"}))
    if order is not None:
        table = table.reindex([o for o in order if o in table.index])
    return rounded(table)


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
    return rounded(table.sort_index())


def mean_std(values) -> str:
    """'mean ± std% (n seeds)' of accuracies in percent, as the report and notebooks quote them."""
    values = pd.Series(values, dtype=float).dropna()
    if len(values) == 1:
        return f"{fixed(values.iloc[0])}% (1 seed)"
    return f"{fixed(values.mean())} ± {fixed(values.std())}% ({len(values)} seeds)"


def compare_sweep(sweep, runs: pd.DataFrame, alpha: float = ALPHA,
                  metric: str | None = None) -> pd.DataFrame:
    """A sweep (or one of its groups) as its table: every declared variant against the
    baseline, with the sweep's failure rule (stats.compare_to_base), on the sweep's metric
    or another (`val_acc_tta`, say)."""
    return compare_to_base(runs, sweep.baseline, [v for v in sweep.variants if v != sweep.baseline],
                           metric=metric or sweep.metric, alpha=alpha,
                           failure_below=sweep.failure_below, spread_alpha=sweep.spread_alpha)


def budget_family(records: list[dict], study, short_study, group: str):
    """One family of `study` beside the same changes in `short_study`, a shorter budget:
    (budget_interaction's table, adjusted over every change the two studies declare alike,
    the short budget's compared table, the long one's), or None while the family has no
    counterpart or either budget lacks its base's runs."""
    short_study, declared = study.counterparts_in(short_study)
    names = {v: w for v, w in declared.items() if v in study.groups[group]}
    tables = []
    for sweep in (short_study.subset([short_study.baseline, *names.values()]), study.group(group)):
        runs = runs_frame(sweep_records(records, sweep))
        if not names or runs.empty or sweep.baseline not in set(runs["variant"]):
            return None
        tables.append(compare_sweep(sweep, runs))
    return budget_interaction(*tables, names, family=len(declared)), *tables


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
    resolved differences with their intervals, then the unresolved ones, then failures."""
    base = table.attrs["base"]
    rows = table.drop(index=base)
    tested = rows.dropna(subset=["low"])
    parts = []
    resolved = tested[tested["resolved"]].sort_values("diff")
    if len(resolved):
        parts.append("Resolved: " + "; ".join(
            f"{v} {fixed(r['diff'], plus=True)} points ({fixed(r['low'], plus=True)} to {fixed(r['high'], plus=True)})"
            for v, r in resolved.iterrows()) + ".")
    unresolved = tested[~tested["resolved"]].sort_values("diff")
    if len(unresolved):
        parts.append("Not resolved (the interval contains 0): " + "; ".join(
            f"{v} {fixed(r['diff'], plus=True)}" for v, r in unresolved.iterrows()) + ".")
    measured = rows[rows["low"].isna() & rows["diff"].notna()]
    if len(measured):       # one seed pair: a difference, but no spread to judge it by
        parts.append("Too few seed pairs for an interval: " + "; ".join(
            f"{v} {fixed(r['diff'], plus=True)} ({int(r['pairs'])} pair{'s' if r['pairs'] != 1 else ''})"
            for v, r in measured.iterrows()) + ".")
    failed = rows[rows["failed"] > 0]
    if len(failed):
        parts.append("Failed to train: " + "; ".join(
            f"{v} ({int(r['failed'])} of {int(r['runs'])} runs)" for v, r in failed.iterrows()) + ".")
    waiting = rows[(rows["runs"] == 0)]
    if len(waiting):
        parts.append(f"{len(waiting)} of the {len(rows)} declared variants {'has' if len(waiting) == 1 else 'have'} no runs yet.")
    return " ".join(parts) or "No variant has runs paired with the base yet."


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """A compared table (or a budget_interaction one) as a notebook shows it, the way the
    report prints one: two decimals, p to two significant figures, a tick for resolved,
    blanks where nothing was measured, a failure said in its row, and no device or precision
    columns when one machine ran every row (describe_pairing says which, above the table)."""
    shown = table.copy()
    one_machine = len(table.attrs.get("devices", [])) == 1 and len(table.attrs.get("precisions", [])) == 1
    shown = shown.drop(columns=["device", "precision"] if one_machine else [], errors="ignore")
    if "own_spread" in shown and not shown["own_spread"].any():
        shown = shown.drop(columns="own_spread")    # no variant has its own interval: nothing to flag
    for column in shown.columns[shown.dtypes == float]:
        shown[column] = shown[column].map(half_even)
    if "p" in shown:
        shown["p"] = table["p"].map(format_p)
    for flag in ("resolved", "own_spread"):
        if flag in shown:
            shown[flag] = shown[flag].map({True: "✓", False: ""})
    shown = shown.astype(object).where(shown.notna(), "")    # no NaN where nothing was measured
    if "pairs" in shown and table.attrs.get("base") in shown.index:
        shown.loc[table.attrs["base"], "pairs"] = ""          # the base is what the others pair with
    # a failure is said in its row, beside the name (how many runs failed), never left as a
    # blank effect: "failed" where no pair is left to give one
    failed = table[table["failed"] > 0] if "failed" in table else table.iloc[:0]
    renamed = {}
    for variant, row in failed.iterrows():
        renamed[variant] = f"{variant} ({int(row['failed'])} of {int(row['runs'])} runs failed)"
        if row["pairs"] == 0:
            shown.loc[variant, ["pairs", "diff"]] = ["", "failed"]
    return shown.rename(index=renamed)


def seed_range(seeds) -> str:
    """'seeds 0–3' for consecutive seeds, else 'seeds 0, 2' or 'seed 0', as captions say it."""
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seed" + "s" * (len(seeds) > 1) + " " + ", ".join(map(str, seeds))


def describe_pairing(table: pd.DataFrame) -> str:
    """What a compared table rests on, for its caption: 'seeds 0–3 on one 2-core Intel Xeon
    with AMX (bf16); 95% intervals, simultaneous over 6 comparisons'."""
    a = table.attrs
    where = (f"one {a['devices'][0]}" if len(a["devices"]) == 1
             else f"the device named in each row ({' or '.join(a['devices'])})")
    n = a["comparisons"]
    tested = table["low"].notna().any()
    return (f"{seed_range(a['seeds'])} on {where} ({', '.join(a['precisions'])}); "
            + (f"{interval_label(a['alpha'])} intervals, simultaneous over {n} comparison"
               f"{'s' * (n != 1)}" if tested else "no intervals: an effect needs two seed pairs or more"))


def sweep_runs(sweep, profile: str, root=RESULTS_DIR) -> pd.DataFrame:
    """One row per finished run of `sweep` at `profile` under root, diverged ones included
    with no scores (empty if none ran)."""
    return runs_frame(sweep_records(load_records(root, profile=profile, diverged=True), sweep))


def every_seed_ran(runs: pd.DataFrame, variants, seeds) -> bool:
    """Whether each of `variants` has a finished run (complete or failed) for every seed."""
    ran = runs.groupby("variant")["seed"].agg(set)
    return all(set(seeds) <= ran.get(v, set()) for v in variants)


def pilot_choice(sweep, runs: pd.DataFrame) -> pd.DataFrame:
    """A recorded pilot under the rule its file declares: one row per setting (in the file's
    order) with its final validation accuracy over its seeds and its failed runs; `chosen`
    marks the highest that did not fail (none while a setting has no run yet)."""
    rows = []
    for variant in sweep.variants:
        acc = runs.loc[runs["variant"] == variant, "val_acc"]
        failed = int(failed_to_train(acc, sweep.failure_below).sum())
        rows.append({"setting": variant, "runs": len(acc), "failed": failed,
                     "val_acc": acc.mean() if len(acc) > failed else np.nan})
    table = pd.DataFrame(rows).set_index("setting")
    trained = table[(table["failed"] == 0) & (table["runs"] > 0)]
    table["chosen"] = False
    if (table["runs"] > 0).all() and len(trained):
        table.loc[trained["val_acc"].idxmax(), "chosen"] = True
    return table
