"""pandas views of results records: one row per run, one row per epoch, mean +- std."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .records import RESULTS_DIR, iter_records
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
            "device": r["device"]["name"], "device_type": r["device"]["type"],
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
    """What each study (a sweep, or a config outside sweeps) cost as recorded: its runs, how
    many ran on a CPU and on a GPU, the wall hours on each, and the mean wall minutes of a
    CPU run (what one more costs there; empty where none ran on a CPU)."""
    runs = runs.assign(study=runs["sweep"].fillna(runs["config"]),
                       cpu_minutes=runs["wall_minutes"].where(runs["device_type"] == "cpu"),
                       gpu_minutes=runs["wall_minutes"].where(runs["device_type"] != "cpu"))
    table = runs.groupby("study", sort=False).agg(
        runs=("id", "size"), on_cpu=("cpu_minutes", "count"), on_gpu=("gpu_minutes", "count"),
        cpu_hours=("cpu_minutes", lambda m: m.sum() / 60), gpu_hours=("gpu_minutes", lambda m: m.sum() / 60),
        minutes_per_cpu_run=("cpu_minutes", "mean"))
    return table.sort_values("cpu_hours", ascending=False).round(2)


def mean_std(values) -> str:
    """'mean ± std% (n seeds)' of accuracies in percent, as the report and notebooks quote them."""
    values = pd.Series(values, dtype=float).dropna()
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}% (1 seed)"
    return f"{values.mean():.2f} ± {values.std():.2f}% ({len(values)} seeds)"


def compare_to_base(runs: pd.DataFrame, base: str, by: str = "variant", metric: str = "val_acc",
                    order=None, confidence: float = 0.95) -> pd.DataFrame:
    """Each group's mean, std and seeds of `metric`, and its difference to the `base` group
    with a `confidence` interval (Welch's t: groups need not share a variance, and seeds
    are not paired across variants, whose initial weights differ). `resolved` says whether
    the interval excludes 0, i.e. whether the seeds can tell the variant from the base."""
    from scipy import stats

    table = summarize(runs, by, metric, order)
    base_values = runs.loc[runs[by] == base, metric].dropna()
    if base_values.empty:
        raise KeyError(f"no {metric} for the base {by} {base!r}; groups: {list(table.index)}")
    diffs, lows, highs = [], [], []
    for group in table.index:
        values = runs.loc[runs[by] == group, metric].dropna()
        diff = values.mean() - base_values.mean()
        if group == base or min(len(values), len(base_values)) < 2:
            low = high = float("nan")         # an interval needs two seeds on each side
        else:
            ci = stats.ttest_ind(values, base_values, equal_var=False).confidence_interval(confidence)
            low, high = ci.low, ci.high
        diffs.append(diff), lows.append(low), highs.append(high)
    pct = f"{confidence:.0%}"
    table["diff"] = diffs
    table[f"{pct} low"] = lows
    table[f"{pct} high"] = highs
    table["resolved"] = (table[f"{pct} low"] > 0) | (table[f"{pct} high"] < 0)
    return table.round(2)


def sweep_runs(sweep, profile: str, root=RESULTS_DIR) -> pd.DataFrame:
    """One row per finished run of `sweep` at `profile` under root (empty if none ran)."""
    return runs_frame(sweep_records(load_records(root, profile=profile), sweep))
