"""The sections on the studies: methods, the basic model, a sweep's table and figure, and
whether a cheap budget ranks changes as the recipe's does."""
from __future__ import annotations

import re

import math

import numpy as np
import pandas as pd

from ...study import plots
from ...study.sweeps import CORE_STUDY, FAST_ABLATION, sweep_records
from ...study.tables import (budget_agreement, describe_pairing,
                     history_frame, mean_std, compare_sweep, runs_frame)

from .common import Filled, LEVEL, RECIPES, _scope, _seeds, _spoken_list, _tta_kind

def methods(filled: Filled, runs: pd.DataFrame, records: list[dict]):
    r = records[0]
    val = r["config"]["val_size"]
    filled.values.update(split="yes", train_size=f"{50000 - val:,}", val_size=f"{val:,}")
    filled.figure("intermediate_block", plots.intermediate_block_diagram(fast=True),
                  "FastNet's intermediate block, behind the study's results: a 3×3 and a 1×1 "
                  "convolution of one input, mixed by weights computed from its channel means.")
    named = runs[runs["sweep"].isna()]    # sweeps vary models (e.g. without batch norm)
    models = ((named if len(named) else runs).drop_duplicates("model")[["model", "parameters"]]
              .sort_values("parameters").reset_index(drop=True))
    filled.table("models", models, "Models: the networks trained in these records and their "
                                   "parameter counts.")
    latest = {}
    for rec in records:   # the newest final run of each recipe says what it is (tuning runs vary)
        if rec["config_name"] in RECIPES and rec.get("test_read"):
            latest[rec["config_name"]] = rec["config"]
    rows = [{"recipe": name, "model": c["model"], "optimizer": c["optimizer"], "lr": c["lr"],
             "batch": c["batch_size"], "epochs": c["epochs"], "schedule": c["schedule"],
             "weight decay": c["weight_decay"], "label smoothing": c["label_smoothing"],
             "augmentation": "+".join(c["augment"]) or "none", "TTA": _tta_kind(c)}
            for name, c in sorted(latest.items(), key=lambda kv: RECIPES.index(kv[0]))]
    if rows:
        filled.table("recipes", pd.DataFrame(rows).astype({"lr": str, "weight decay": str}),
                     f"Recipes: every final recipe's settings as its newest `{r['profile']}` "
                     f"record ran it (epochs at that profile).")


def basic(filled: Filled, records: list[dict]):
    if not records:
        return
    runs = runs_frame(records)
    filled.values.update(basic_test=mean_std(runs["test_acc"]),
                         basic_epochs=str(runs["epochs"].iloc[0]))
    filled.figure("basic_curves", plots.learning_curves(history_frame(records)),
                  f"BasicNet learning curves: {plots.CURVE_STYLES_TEXT} ({_scope(records)}).")


def sweep(filled: Filled, records: list[dict], sweep, title: str, name: str):
    filled.values[f"{name}_command"] = sweep.command(records[0]["profile"])
    filled.values[f"{name}_planned"] = sweep.describe_plan()
    mine = sweep_records(records, sweep)
    if sweep.baseline not in {r["tags"]["variant"] for r in mine}:
        return                      # nothing to compare with yet: the template says so
    runs = runs_frame(mine)
    baseline = sweep.baseline
    paired = compare_sweep(sweep, runs)
    filled.paired[name] = paired
    # what the table rests on: the base's runs on machines where no variant ran are not
    used = runs["machine"].isin(set(paired.attrs["machines"]))
    mine, runs = [r for r, u in zip(mine, used) if u], runs[used.to_numpy()]
    if not paired.attrs["machines"]:
        return                      # no variant is paired with the baseline yet: nothing to show
    filled.values.update({f"{name}__{slug(v)}": effect_phrase(row) for v, row in paired.iterrows()
                          if v != baseline and (row["runs"] > 0)})
    table = paired.reset_index()
    table = table[(table["runs"] > 0) | (table["variant"] == baseline)]
    base = mine[0]
    filled.values[f"{name}_setup"] = (
        f"{_what_changes(sweep)}, and is trained with {_seeds(table['seeds'])} "
        f"seed{'s' if table['seeds'].max() > 1 else ''} on {base['data']['train_images']:,} training images for "
        f"{base['config']['epochs']} epochs ({_devices(runs)}); accuracy is measured on "
        f"{base['data']['val_images']:,} validation images and compared with "
        f"**{baseline}** {_base_means(runs, baseline)}.")
    others = table[table["variant"] != baseline]
    resolved = [f"{v} ({d:+.2f} points, simultaneous {LEVEL} interval {lo:+.2f} to {hi:+.2f})"
                for v, d, lo, hi in others.loc[others["resolved"],
                                               ["variant", "diff", "low", "high"]].values]
    unresolved = list(others.loc[~others["resolved"], "variant"])
    verdict = (f"Differences the seeds resolve: {'; '.join(resolved)}." if resolved else
               "No difference is resolved by these seeds.")
    unresolved_text = (f"Not resolved (the adjusted interval of the difference contains 0): "
                       f"{', '.join(unresolved)}." if unresolved else "")
    if others["pairs"].max() < 2:         # one seed pair: a difference, but no spread to test it by
        verdict, unresolved_text = ("With one seed pair a difference has no interval: these rows "
                                    "say what each run reached, and resolve nothing."), ""
    filled.values[f"{name}_result"] = " ".join(
        part for part in (sweep.progress([(r["tags"]["variant"], r["seed"]) for r in mine], base["profile"]), verdict, unresolved_text) if part)
    # What a reader needs per variant: its mean, the pairs the difference rests on, the
    # difference, its adjusted interval and p, and the verdict (spreads are in notebooks).
    several = len(paired.attrs["devices"]) > 1          # then each row names its machine
    shown = table[["variant", *["device"] * several, "mean", "pairs", "diff", "low", "high",
                   "p", "resolved"]]
    filled.table(name, shown.rename(columns={"mean": "val % mean", "diff": f"diff to {baseline}",
                                             "p": "p (adjusted)"}),
        f"{title}: validation accuracy (mean over seeds) and each variant's difference "
        f"to {baseline}: {describe_pairing(paired)} ({_scope(mine)}).")
    if sweep.single_comparison:     # by the plan, so the template's figure references hold
        return
    filled.figure(f"{name}_sweep", plots.forest_plot(paired, title=title, label=f"difference to {baseline}"),
                  f"{title}: each variant's paired difference to {baseline} with its simultaneous "
                  f"{LEVEL} interval (filled: resolved; arrows: an interval cut at the axis; a "
                  f"difference beyond the axis sits on its edge, its value written beside it); "
                  f"{describe_pairing(paired)}.")


def slug(variant: str) -> str:
    """A variant's name as a placeholder's tail: 'crop + random flips' -> 'crop_random_flips'."""
    return re.sub(r"\W+", "_", variant.lower()).strip("_")


def effect_phrase(row: pd.Series) -> str:
    """One variant's answer as the text cites it: its effect in points with its interval, or
    that it failed to train, or that it has too few seed pairs for an interval."""
    if row["failed"]:
        return f"failed to train ({int(row['failed'])} of {int(row['runs'])} runs)"
    if pd.isna(row["low"]):
        return f"{row['diff']:+.2f} points ({int(row['pairs'])} seed pair{'s' * (row['pairs'] != 1)}, no interval)"
    unresolved = "" if row["resolved"] else ", not resolved"
    flag = ", its own spread" if row["own_spread"] else ""
    return f"{row['diff']:+.2f} points ({row['low']:+.2f} to {row['high']:+.2f}{unresolved}{flag})"


def _base_means(runs: pd.DataFrame, baseline: str) -> str:
    """'(80.35%)', or, where the study ran on several machines, the baseline's mean on each
    ('on the same device (80.35% on the 2-core Intel Xeon, 81.02% on the 2-core AMD EPYC)')."""
    means = runs[runs["variant"] == baseline].groupby("device", sort=False)["val_acc"].mean()
    if len(means) == 1:
        return f"({means.iloc[0]:.2f}%)"
    return "on the same device (" + ", ".join(f"{m:.2f}% on the {d}" for d, m in means.items()) + ")"


def _what_changes(sweep) -> str:
    """What the sweep's variants change of its base, e.g. "Each variant changes one setting of
    the `fast` config". Where one changes more (an optimizer with its own rate, a rotation with
    its angle, a search's best trial), it says which: a table must not claim one factor per
    variant where a companion came along."""
    def flat(settings: dict) -> dict:
        return {**{k: v for k, v in settings.items() if k != "model_args"},
                **settings.get("model_args", {})}

    def names(keys: list[str]) -> str:
        words = [k.replace("_", " ") for k in keys]
        return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"

    base = flat(sweep.variants.get(sweep.baseline, {}))
    several = {}
    for variant, settings in sweep.variants.items():
        mine = flat(settings)
        changed = [k for k in {**base, **mine} if mine.get(k) != base.get(k)]
        if len(changed) > 1:
            several[variant] = changed
    config = f"the `{sweep.base}` config"
    if len(sweep.variants) == 2 and several:      # one variant, and it changes several settings
        [(variant, changed)] = several.items()
        return f"{variant} changes {names(changed)} of {config} together"
    return (f"Each variant changes one setting of {config}"
            + ("" if not several else " (" + "; ".join(
                f"{v} sets {names(c[:1])} together with {names(c[1:])}" for v, c in several.items()) + ")"))


def cheap_budget_agreement(filled: Filled, records: list[dict], full_records: list[dict]):
    """Does the core study's short budget rank the changes it shares with the full-budget
    ablation as that budget does? The evidence that a cheap base may stand for the recipe."""
    cheap_runs = runs_frame(sweep_records(records, CORE_STUDY))
    full_runs = runs_frame(sweep_records(full_records, FAST_ABLATION))
    if cheap_runs.empty or full_runs.empty or CORE_STUDY.baseline not in set(cheap_runs["variant"]):
        return
    cheap = compare_sweep(CORE_STUDY, cheap_runs)
    full = compare_sweep(FAST_ABLATION, full_runs)
    counterparts = CORE_STUDY.counterparts[FAST_ABLATION.name]
    agreement = budget_agreement(cheap, full, counterparts)
    if agreement.empty:
        return
    a = agreement.attrs
    opposite = [v for v, row in agreement.iterrows()
                if np.sign(row["cheap budget"]) != np.sign(row["full budget"])]
    names = _spoken_list(opposite)
    same = a["shared"] - len(opposite)
    sign_text = (f"{same} of the {a['shared']} {'has' if same == 1 else 'have'} the same sign at both"
                 + (f": {names} {'changes' if len(opposite) == 1 else 'change'} sign" if opposite else ""))
    if a["shared"] > 2:
        floor = 2 / math.factorial(a["shared"])     # a perfect ordering's exact p
        rank_text = (f"Spearman's rank correlation is {a['spearman']:+.2f} (exact p = {a['p']:.2f}; "
                     f"with {a['shared']} variants even a perfect ordering has p = {floor:.3f}), "
                     f"so it can flag a disagreement but cannot establish agreement.")
    else:
        rank_text = "A rank correlation needs at least three shared variants."
    cheap_epochs = int(cheap_runs["epochs"].iloc[0])
    full_epochs = int(full_runs["epochs"].iloc[0])
    filled.values["budget_agreement"] = (
        f"The core study trains `fast` for {cheap_epochs} epochs, the full-budget ablation for "
        f"{full_epochs}. Of the {len(counterparts)} changes both ran, {a['shared']} are measured at "
        f"both budgets, and {sign_text}")
    filled.values["budget_rank"] = rank_text
    # Each budget's difference beside its own verdict (simultaneous over that budget's family).
    shown = pd.DataFrame({
        f"{cheap_epochs} epochs": agreement["cheap budget"],
        f"resolved at {cheap_epochs}": [bool(cheap.loc[v, "resolved"]) for v in agreement.index],
        f"{full_epochs} epochs": agreement["full budget"],
        f"resolved at {full_epochs}": [bool(full.loc[counterparts[v], "resolved"]) for v in agreement.index],
    }, index=agreement.index).round(2).reset_index()
    filled.table("budget_agreement", shown,
                 f"The same changes of `fast` at two budgets: each variant's mean paired difference "
                 f"to `fast`, in points of validation accuracy, and whether its budget's "
                 f"simultaneous interval excludes 0. {cheap_epochs} epochs: "
                 f"{describe_pairing(cheap)}. {full_epochs} epochs: {describe_pairing(full)}.")


def _devices(runs: pd.DataFrame) -> str:
    """Where a set of runs trained, e.g. "NVIDIA H200: 18 runs; AMD EPYC (2 cores): 2 runs"."""
    counts = runs["device"].value_counts()
    if len(counts) == 1:
        return f"on {counts.index[0]}"
    return "on " + "; ".join(f"{device}: {n} run{'s' * (n != 1)}" for device, n in counts.items())


