"""The report's sections: each reads the records it needs and fills its placeholders,
tables and figures (a `Filled`) for template.md. No training code is imported."""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..study import plots
from ..data import CLASSES
from ..predictions import run_predictions
from ..records import machine_key
from ..study.analysis import confusion_matrix, reliability
from ..study.sweeps import BLOCK_ABLATION, CORE_STUDY, FAST_ABLATION, FAST_BUDGET, sweep_records
from ..study.stats import compare_to_base
from ..study.tables import (budget_agreement, budget_curve, budget_runs, prose_cpu_name, describe_pairing,
                     device_label, history_frame, mean_std, compare_sweep, newest_finals, runs_frame, seed_range,
                     study_cost)

RECIPES = ("seed_basic", "seed_improved", "improved_tuned", "deep_sgd", "deep", "fast")


class Filled:
    """What the template's placeholders are filled with: values, tables and figures."""

    def __init__(self, figures_dir: Path, shown: set[str] | None = None):
        self.values: dict[str, str] = {}
        self.tables: dict[str, tuple[pd.DataFrame, str]] = {}
        self.figures: dict[str, tuple[Path, str]] = {}
        self.paired: dict[str, pd.DataFrame] = {}          # each sweep section's paired table
        self.figures_dir = figures_dir
        self.shown = shown              # the figures the template shows (None: all of them)

    def table(self, name: str, frame: pd.DataFrame, caption: str):
        self.tables[name] = (frame, caption)

    def figure(self, name: str, fig, caption: str):
        if self.shown is not None and name not in self.shown:
            plt.close(fig)              # figures/ holds only what the report shows
            return
        path = self.figures_dir / f"{name}.png"
        # No timestamps in the file, so an unchanged figure gives unchanged bytes.
        fig.savefig(path, dpi=130, bbox_inches="tight", metadata={"Software": None})
        self.figures[name] = (path, caption)


def _spoken_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return ", ".join(items[:-1]) + " and " * (len(items) > 1) + "".join(items[-1:])


def _seeds(counts: pd.Series) -> str:
    low, high = counts.min(), counts.max()
    return str(low) if low == high else f"{low}–{high}"


def data_phrase(runs: pd.DataFrame) -> str:
    kinds = set(runs["official_data"])
    if kinds == {True}:
        return "the official CIFAR-10 release"
    if kinds == {False}:
        return "a local JPEG-rebuilt copy of CIFAR-10, NOT the official release"
    return "a mix of the official release and a local copy (see the data column)"


def data_mark(runs: pd.DataFrame) -> str:
    """The short mark every caption carries (Section 2 says what it means once, in full)."""
    kinds = set(runs["official_data"])
    return "official data" if kinds == {True} else "JPEG copy, not official" if kinds == {False} \
        else "official and JPEG-copy runs mixed"


def _scope(records: list[dict]) -> str:
    """What every table caption states: profile, runs and seeds, and which data."""
    runs = runs_frame(records)
    profiles = ", ".join(sorted(set(runs["profile"])))
    seed_text = seed_range(set(runs["seed"]))
    return f"profile {profiles}, {len(runs)} run{'s' if len(runs) != 1 else ''}, {seed_text}, {data_mark(runs)}"


def _tta_kind(config: dict) -> str:
    if not config["tta"]:
        return "none"
    return f"flips + {config['tta_shift']} px shifts" if config.get("tta_shift") else "flips"


def _final_table(runs: pd.DataFrame) -> pd.DataFrame:
    cols = {"config": "config", "seed": "seed", "epochs": "epochs", "val_acc": "val %",
            "test_acc": "test %", "test_acc_tta": "test % (TTA)", "wall_minutes": "minutes"}
    return runs[[c for c in cols if c in runs]].rename(columns=cols)


def methods(filled: Filled, runs: pd.DataFrame, records: list[dict]):
    r = records[0]
    val = r["config"]["val_size"]
    filled.values.update(split="yes", train_size=f"{50000 - val:,}", val_size=f"{val:,}")
    filled.figure("intermediate_block", plots.intermediate_block_diagram(3),
                  "One intermediate block (L = 3).")
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
    order = list(sweep.variants)
    baseline = sweep.baseline
    paired = compare_sweep(sweep, runs)
    filled.paired[name] = paired
    # what the table rests on: the base's runs on machines where no variant ran are not
    used = runs["machine"].isin(set(paired.attrs["machines"]))
    mine, runs = [r for r, u in zip(mine, used) if u], runs[used.to_numpy()]
    if not paired.attrs["machines"]:
        return                      # no variant is paired with the baseline yet: nothing to show
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
    resolved = [f"{v} ({d:+.2f} points, simultaneous 95% interval {lo:+.2f} to {hi:+.2f})"
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
                  f"95% interval (filled: resolved; arrows: an interval cut at the axis; a "
                  f"difference beyond the axis sits on its edge, its value written beside it); "
                  f"{describe_pairing(paired)}.")


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
    # Each budget's difference beside its own verdict (Holm across that budget's whole table).
    shown = pd.DataFrame({
        f"{cheap_epochs} epochs": agreement["cheap budget"],
        f"resolved at {cheap_epochs}": [bool(cheap.loc[v, "resolved"]) for v in agreement.index],
        f"{full_epochs} epochs": agreement["full budget"],
        f"resolved at {full_epochs}": [bool(full.loc[counterparts[v], "resolved"]) for v in agreement.index],
    }, index=agreement.index).round(2).reset_index()
    filled.table("budget_agreement", shown,
                 f"The same changes of `fast` at two budgets: each variant's mean paired difference "
                 f"to `fast`, in points of validation accuracy, and whether its budget's "
                 f"Holm-adjusted interval excludes 0. {cheap_epochs} epochs: "
                 f"{describe_pairing(cheap)}. {full_epochs} epochs: {describe_pairing(full)}.")


def _devices(runs: pd.DataFrame) -> str:
    """Where a set of runs trained, e.g. "NVIDIA H200: 18 runs; AMD EPYC (2 cores): 2 runs"."""
    counts = runs["device"].value_counts()
    if len(counts) == 1:
        return f"on {counts.index[0]}"
    return "on " + "; ".join(f"{device}: {n} run{'s' * (n != 1)}" for device, n in counts.items())


def improved(filled: Filled, by_config: dict):
    names = [n for n in ("seed_improved", "improved_tuned") if by_config.get(n)]
    if not names:
        return
    records = [r for n in names for r in by_config[n]]
    runs = runs_frame(records)
    test = {n: runs.loc[runs["config"] == n, "test_acc"] for n in names}
    filled.values["improved_result"] = " ".join(
        f"`{n}`: {mean_std(test[n])} test accuracy in "
        f"{runs.loc[runs['config'] == n, 'wall_minutes'].mean():.1f} minutes." for n in names)
    if len(names) == 2:
        filled.values["improved_gain"] = f"{test['improved_tuned'].mean() - test['seed_improved'].mean():.1f}"
    filled.table("improved", _final_table(runs), f"ImprovedNet final runs ({_scope(records)}).")
    filled.figure("improved_curves", plots.learning_curves(history_frame(records)),
                  f"ImprovedNet, the coursework's recipe against the tuned one: "
                  f"{plots.CURVE_STYLES_TEXT}.")


def deep(filled: Filled, by_config: dict):
    tested = [r for r in by_config.get("deep", []) if r["test_read"]]
    if not tested:
        return
    runs = runs_frame(tested)
    filled.values.update(
        deep_tta=mean_std(runs["test_acc_tta"]), deep_plain=mean_std(runs["test_acc"]),
        deep_params=f"{tested[0]['model']['parameters']:,}",
        deep_minutes=f"{runs['wall_minutes'].mean():.1f}", deep_device=", ".join(sorted(set(runs["device"]))),
        tta_gain=f"{(runs['test_acc_tta'] - runs['test_acc']).mean():.2f}")
    filled.table("deep", _final_table(runs),
                 f"The deep recipe: {_scope(tested)}; the test set is read once per run.")
    # seed 0 of each attempt: further seeds of the final recipe are repeats, not attempts
    attempts = [r for n in ("deep_sgd", "deep") for r in by_config.get(n, []) if r["seed"] == 0]
    if attempts:
        table = runs_frame(attempts)[["config", "seed", "epochs", "val_acc", "val_acc_tta",
                                      "test_acc_tta", "wall_minutes"]]
        table.insert(3, "TTA", [_tta_kind(r["config"]) for r in attempts])
        filled.table("attempts", table.rename(columns={
            "val_acc": "val %", "val_acc_tta": "val % (TTA)", "test_acc_tta": "test % (TTA)",
            "wall_minutes": "minutes"}), f"What was tried for the deep recipe, in order, seed 0 "
            f"of each ({_scope(attempts)}; tuning runs leave the test column empty).")
    filled.figure("deep_curves", plots.learning_curves(history_frame(tested), hue="seed"),
                  f"The deep recipe (`deep`): learning curves, {plots.CURVE_STYLES_TEXT}, one colour per seed.")
    compare = [*by_config.get("seed_improved", []), *tested]
    filled.figure("time_to_accuracy", plots.time_to_accuracy(history_frame(compare)),
                  "Validation accuracy against training time: the coursework's recipe and the "
                  "deep recipe (`deep`).")


def _analysis(filled: Filled, record: dict, results_dir: Path):
    """Per-class accuracy, calibration and branch weights of the recommended recipe's final
    run with the lowest seed, from the predictions saved beside its record."""
    preds = run_predictions(record, results_dir)
    probs, labels = preds.get("probs_tta", preds["probs"]), preds["labels"]
    counts = confusion_matrix(labels, probs.argmax(1))
    per_class = pd.DataFrame({"class": CLASSES, "accuracy %": 100 * np.diag(counts) / counts.sum(1)})
    rows, ece = reliability(probs, labels)
    plain_rows, plain_ece = reliability(preds["probs"], labels)
    hardest, easiest = per_class["accuracy %"].idxmin(), per_class["accuracy %"].idxmax()
    filled.values.update(
        analysed_seed=str(record["seed"]),
        hardest_class=f"{CLASSES[hardest]} ({per_class['accuracy %'][hardest]:.2f}%)",
        easiest_class=f"{CLASSES[easiest]} ({per_class['accuracy %'][easiest]:.2f}%)",
        ece_plain=f"{100 * plain_ece:.2f}%", ece_tta=f"{100 * ece:.2f}%")
    filled.table("per_class", per_class, f"`fast`: per-class test accuracy with TTA "
                                         f"({_scope([record])}).")
    filled.figure("confusion", plots.confusion_heatmap(counts),
                  "`fast`: confusion matrix (test set, TTA).")
    filled.figure("reliability", plots.reliability_diagram(plain_rows, plain_ece, "no TTA"),
                  "`fast`: reliability diagram (test set, no TTA).")
    if "branch_weights" in preds:
        w = preds["branch_weights"]
        filled.values["branch_spread"] = f"{w.std(0).mean():.3f}"
        filled.figure("branch_weights_by_class", plots.branch_weights_by_class(w, labels),
                      "`fast`: mean branch weight per block and true class.")
        filled.figure("branch_weight_spread", plots.branch_weight_spread(w),
                      "`fast`: distribution of branch weights over test images.")


def fast(filled: Filled, by_config: dict, ref: dict | None, results_dir: Path):
    """The fast recipe: its final runs (all 50,000 images, test read once), its validation
    runs against `deep`'s, and airbench94 on the same data as the yardstick."""
    runs = runs_frame(by_config.get("fast", []))
    if runs.empty:
        return
    tuning = runs[runs["val_acc_tta"].notna()]
    deep = runs_frame(by_config.get("deep", []))
    if len(tuning) and len(deep):
        filled.values.update(fast_val_tta=mean_std(tuning["val_acc_tta"]),
                             fast_val_images=f"{tuning['images_seen'].iloc[0]:,}",
                             deep_val_tta=mean_std(deep["val_acc_tta"]),
                             deep_val_images=f"{deep['images_seen'].iloc[0]:,}")
    final = runs[runs["test_acc_tta"].notna()]
    if final.empty:
        return
    filled.values.update(fast_tta=mean_std(final["test_acc_tta"]), fast_plain=mean_std(final["test_acc"]),
                         fast_images=f"{final['images_seen'].iloc[0]:,}",
                         fast_minutes=f"{final['wall_minutes'].mean():.1f}",
                         fast_device=", ".join(sorted(set(final["device"]))))
    table = final[["seed", "images_seen", "test_acc", "test_acc_tta", "train_minutes",
                   "wall_minutes", "device", "precision"]]
    filled.table("fast", table.rename(columns={"images_seen": "images seen", "test_acc": "test %",
                                               "test_acc_tta": "test % (TTA)", "device": "device"}),
                 f"The fast recipe's final runs: trained on all 50,000 training images, the test "
                 f"set read once at the end "
                 f"({_scope([r for r in by_config['fast'] if r['test_read']])}).")
    analysed = [r for r in by_config["fast"] if r["test_read"] and "predictions" in r]
    if analysed:
        _analysis(filled, min(analysed, key=lambda r: (r["seed"], r["started_at"])), results_dir)
    if ref:
        filled.values.update(
            airbench_tta=f"{100 * ref['test_acc_tta']['mean']:.2f} ± {100 * ref['test_acc_tta']['std']:.2f}%",
            airbench_images=f"{ref['images_seen']:,}", airbench_seconds=f"{ref['train_seconds']['mean']:.1f}",
            airbench_device=ref["device"]["name"], airbench_runs=str(ref["runs"]),
            fast_gap=_gap_phrase(final["test_acc_tta"], 100 * ref["test_acc_tta"]["mean"],
                                 100 * ref["test_acc_tta"]["std"]))


def fast_budget(filled: Filled, records: list[dict], ref: dict | None):
    """The accuracy-vs-images curve: the recipe's final runs at its own budget and the
    final sweep `fast_budget` at others; where it reaches airbench94, and what more images buy."""
    runs = budget_runs(records, FAST_BUDGET)
    if runs.empty or runs["config"].nunique() < 2:      # a curve needs the sweep and the recipe
        return
    curve = budget_curve(runs)
    filled.values["fast_budget_progress"] = FAST_BUDGET.progress(
        runs.loc[runs["config"] == FAST_BUDGET.name, ["variant", "seed"]].itertuples(index=False, name=None),
        records[0]["profile"])
    tta = runs.groupby("images_seen")["test_acc_tta"]            # smallest budget first
    points = [f"{mean_std(group)} from {n:,}" for n, group in tta]
    filled.values["fast_budget_points"] = _spoken_list(points)
    own = runs.loc[runs["config"] == FAST_BUDGET.base, "images_seen"].iloc[0]
    if ref:
        goal = 100 * ref["test_acc_tta"]["mean"]
        reached = [n for n, mean in tta.mean().items() if mean >= goal]
        filled.values["fast_budget_reach"] = (
            f"The smallest budget whose mean with TTA reaches airbench94's {goal:.2f}% is "
            f"{reached[0]:,} images: {mean_std(tta.get_group(reached[0]))}" if reached else
            f"No budget measured reaches airbench94's {goal:.2f}% with TTA on average")
    larger = [n for n in curve.index if n > own]
    if larger:
        more, base = tta.get_group(larger[0]), tta.get_group(own)
        change = (_gap_phrase(more, base.mean(), base.std()) if len(base) > 1 else
                  f"{more.mean() - base.mean():+.2f} points (one seed each: no spread to judge it by)")
        filled.values["fast_budget_gain"] = (f"from {own:,} images to {larger[0]:,}, the accuracy "
                                             f"with TTA changes by {change}")
    table = curve.reset_index().rename(columns={"images_seen": "images seen"})
    scope = _scope([r for r in records if r["id"] in set(runs["id"])])
    filled.table("fast_budget", table, f"`fast`'s final runs by training images seen, test accuracy "
                 f"mean and std per budget ({scope}).")
    filled.figure("fast_budget", plots.accuracy_vs_images(runs, ref),
                  "`fast`: test accuracy against the training images seen, every final run a dot, "
                  "the mean per budget a line; airbench94 on the same data as the star (mean ± std).")


def _gap_phrase(ours: pd.Series, theirs: float, their_std: float) -> str:
    """How a mean over our seeds compares with a reference's mean ± std, claiming nothing
    smaller than the larger of the two spreads."""
    gap, spread = ours.mean() - theirs, max(their_std, ours.std() if len(ours) > 1 else 0.0)
    seeds = f"{len(ours)} seed{'s' * (len(ours) > 1)}"
    if abs(gap) <= spread:
        return (f"{gap:+.2f} points ({seeds}), within the {spread:.2f}-point run-to-run spread: "
                f"the runs do not tell the two apart")
    return f"{gap:+.2f} points ({seeds}), more than the {spread:.2f}-point run-to-run spread"


def gpu(filled: Filled, records: list[dict], ref: dict | None):
    """The paragraphs about `full`-profile (GPU) runs, when records of them exist: the seed's
    recipe, `deep`, `fast`'s final runs against airbench94 on the same GPU kind, and both
    ablations at the full budget."""
    if not records:
        return
    sweep(filled, records, BLOCK_ABLATION, "Block ablation, full profile", "block_ablation_full")
    sweep(filled, records, FAST_ABLATION, "Fast-recipe ablation, full profile", "fast_ablation_full")
    fast = runs_frame([r for r in records if r["config_name"] == "fast" and r["test_read"]])
    if len(fast):
        seconds = 60 * fast["train_minutes"]
        filled.values.update(fast_full_tta=mean_std(fast["test_acc_tta"]),
                             fast_full_plain=mean_std(fast["test_acc"]),
                             fast_full_device=fast["device"].iloc[0],
                             fast_full_precision=fast["precision"].iloc[0],
                             fast_full_seconds=f"{seconds.median():.1f}",
                             fast_full_seconds_range=f"{seconds.min():.1f}–{seconds.max():.1f}")
        if ref and ref["device"]["name"] == fast["device_name"].iloc[0]:   # ratios on one GPU kind only
            filled.values.update(
                fast_full_ratio=f"{seconds.median() / ref['train_seconds']['mean']:.1f}",
                fast_full_gap=_gap_phrase(fast["test_acc_tta"], 100 * ref["test_acc_tta"]["mean"],
                                          100 * ref["test_acc_tta"]["std"]))
    by_config = newest_finals(records)
    if "seed_basic" in by_config:
        r = by_config["seed_basic"]
        filled.values.update(basic_full_test=f"{100 * r['final']['test_acc']:.2f}%",
                             basic_full_device=device_label(r["device"]),
                             basic_full_minutes=f"{r['train_seconds'] / 60:.1f}",
                             basic_full_epochs=str(r["config"]["epochs"]))
        filled.figure("basic_full_curves", plots.learning_curves(history_frame([r])),
                      f"BasicNet at the full profile: {plots.CURVE_STYLES_TEXT} ({_scope([r])}).")
    if "seed_improved" in by_config:
        r = by_config["seed_improved"]
        filled.values.update(seed_full_test=f"{100 * r['final']['test_acc']:.2f}%",
                             seed_full_device=device_label(r["device"]),
                             data_phrase_full=data_phrase(runs_frame([r])))
        if "seed_basic" in by_config:          # the two coursework models at its own budget
            gap = r["final"]["test_acc"] - by_config["seed_basic"]["final"]["test_acc"]
            filled.values["improved_over_basic_full"] = f"{100 * gap:.1f}"
    if "deep" in by_config and "test_acc_tta" in by_config["deep"]["final"]:
        r = by_config["deep"]
        filled.values.update(deep_full_tta=f"{100 * r['final']['test_acc_tta']:.2f}%",
                             deep_full_seconds=f"{r['train_seconds']:.0f}",
                             deep_full_device=device_label(r["device"]))


COURSEWORK_REPORTED_TEST = 87.33   # the coursework's ImprovedNet, official data, 50 epochs


def tuned_at_coursework_budget(filled: Filled, records: list[dict]):
    """ImprovedNet with the kit's tuned recipe at the coursework's 50 epochs (one final run,
    from any profile: the config trains 50 epochs at each), beside the coursework's recipe
    at the same budget and the coursework's reported accuracy."""
    filled.values["coursework_reported"] = f"{COURSEWORK_REPORTED_TEST:.2f}%"
    finals = newest_finals(records)
    if "improved_tuned_50" not in finals:
        return
    r = finals["improved_tuned_50"]
    test = 100 * r["final"]["test_acc"]
    filled.values.update(tuned_50_test=f"{test:.2f}%", tuned_50_device=device_label(r["device"]),
                         tuned_50_precision=r["precision"], tuned_50_epochs=str(r["config"]["epochs"]),
                         tuned_50_hours=f"{r['train_seconds'] / 3600:.1f}",
                         tuned_50_vs_reported=f"{test - COURSEWORK_REPORTED_TEST:+.2f}")
    if "test_acc_tta" in r["final"]:
        filled.values["tuned_50_tta"] = f"{100 * r['final']['test_acc_tta']:.2f}%"
    # the coursework's recipe at the same epochs (its records at other budgets do not answer)
    seed = next((s for s in reversed(records) if s["config_name"] == "seed_improved"
                 and s["test_read"] and s["config"]["epochs"] == r["config"]["epochs"]), None)
    if seed is not None:
        filled.values.update(tuned_50_over_seed=f"{test - 100 * seed['final']['test_acc']:+.2f}",
                             tuned_50_seed_device=device_label(seed["device"]))


# The coursework's own questions among the core study's variants (dropout, batch norm, the
# learning rate, its augmentations), in the order the conclusion answers them.
COURSEWORK_QUESTIONS = ("dropout 0.1", "dropout 0.2", "no batch norm", "filter lr x0.25",
                        "filter lr x0.5", "filter lr x2", "filter lr x4", "rotation only",
                        "crop + random flips", "crop + random flips + rotation")


def coursework_answers(filled: Filled, sections=("regularisation_full", "optimisation_full",
                                                  "augmentation_full"), name="coursework_answers"):
    """The core study's answers to the coursework's questions in `sections`' tables: each
    variant's paired difference to the base where it rests on two seed pairs or more (one
    pair has no interval), resolved ones first."""
    tables = [filled.paired[s] for s in sections if s in filled.paired]
    if not tables:
        return
    rows = pd.concat(tables)
    rows = rows.loc[[v for v in COURSEWORK_QUESTIONS if v in rows.index and pd.notna(rows.loc[v, "diff"])
                     and rows.loc[v, "pairs"] >= 2]]
    if rows.empty:
        return
    def listed(part):
        return _spoken_list([f"{v} ({d:+.2f} points)" for v, d in part["diff"].items()])
    verdicts = [f"resolved, {listed(rows[rows['resolved']])}" if rows["resolved"].any() else "",
                f"not resolved, {listed(rows[~rows['resolved']])}" if (~rows["resolved"]).any() else ""]
    filled.values[name] = "; ".join(v for v in verdicts if v)


def optuna_search(filled: Filled, records: list[dict], search):
    """The Optuna search on the core study's base (all settings at once, one seed a trial):
    its trials, the best one's settings, the settings' importances, and the paired
    confirmation of the best trial with the core study's declared seeds. `search` is the
    stored search (tuning.read_search), or None where there is none."""
    from ..study.tuning import (SETTING_NAMES, against_one_setting, agreed_choice, confirmation,
                         describe_settings, describe_space)

    profile = records[0]["profile"]
    cfg = CORE_STUDY.config(CORE_STUDY.baseline, profile)
    if search is None:
        return
    trials, complete, best = search.trials, search.complete, search.study.best_trial
    late = search.pruned_at_the_end(cfg.epochs)
    top, share = next(iter(search.importances.items()))
    filled.values.update(
        optuna_trials=str(len(trials)), optuna_complete=str(len(complete)),
        optuna_pruned=f"{len(search.pruned) - len(late)} were stopped early by the pruner" + (
            f", and {len(late)} ran every epoch but were marked pruned at the last, below the median "
            f"there (their accuracies are final ones, drawn hollow)" if len(late) else ""),
        optuna_epochs=str(cfg.epochs), optuna_space=describe_space(cfg),
        optuna_device="; ".join(f"{device_label(device)}, {precision}"
                                for device, precision in search.machines),
        optuna_best=f"{100 * best.value:.2f}%", optuna_best_trial=str(best.number),
        optuna_best_settings=describe_settings(best.params),
        optuna_median=f"{complete['val_acc'].median():.2f}%",
        optuna_top=f"{top}, with {share:.2f} of the total",
        optuna_hours=f"{search.hours:.1f}")
    check = confirmation(CORE_STUDY, search.study, profile)
    agreed = agreed_choice(search, cfg)
    check_alone = agreed and against_one_setting(CORE_STUDY, check, agreed)
    # at a fixed number of epochs a smaller batch is more steps: the discussion's reading
    smaller_batch = bool(agreed) and agreed.get("batch_size", cfg.batch_size) < cfg.batch_size
    if agreed:
        [(key, value)] = agreed.items()
        filled.values["optuna_agreed"] = (
            f"all of the best quarter of the complete trials chose {SETTING_NAMES.get(key, key)} "
            f"{value}, against the recipe's {getattr(cfg, key)}"
            + (f": at a fixed number of epochs that is {'more' if smaller_batch else 'fewer'} steps"
               if key == "batch_size" else "")
            + (f", which the core study's one-setting variant `{check_alone.baseline}` asks alone"
               if check_alone else ""))
    base_label, base_value = "", None
    if len(search.machines) == 1:    # the base's seed-0 run on the machine the trials ran on
        [(device, precision)] = search.machines
        base = [r for r in sweep_records(records, CORE_STUDY) if r["tags"]["variant"] == CORE_STUDY.baseline
                and r["seed"] == 0 and machine_key(r) == (device["name"], precision)]
        if base:
            base_value = 100 * base[-1]["final"]["val_acc"]
            filled.values["optuna_base_seed0"] = f"{base_value:.2f}%"
            base_label = f"fast, seed 0, same machine ({base_value:.2f}%)"
    filled.figure("optuna_search", plots.optuna_search(trials, search.importances, base_value, base_label),
                  f"Optuna's search on `fast` at the core study's budget ({len(trials)} trials, seed 0 "
                  f"each, validation split; {filled.values['optuna_device']}): left, each complete "
                  f"trial's validation accuracy in the order it ran (trials stopped early as ticks "
                  f"along the bottom; a triangle on the lower edge is a complete trial below the "
                  f"axis), the "
                  f"best complete trial so far"
                  + (" and `fast`'s own seed-0 run on the same machine" if base_value else "") + "; right, "
                  f"each setting's PED-ANOVA importance for reaching the best tenth of the "
                  f"{len(complete)} complete trials.")
    sweep(filled, records, check, "Optuna's best trial against `fast`, whole training split",
          "optuna_confirm")
    if "optuna_confirm_setup" not in filled.values:
        filled.values["optuna_unconfirmed"] = check.command(profile)
        return
    confirmed = filled.paired["optuna_confirm"].drop(check.baseline).iloc[0]
    filled.values["optuna_confirm_verdict"] = (
        f"they are {confirmed['diff']:+.2f} points of validation accuracy against it "
        f"({int(confirmed['pairs'])} seed pairs, 95% interval {confirmed['low']:+.2f} to "
        f"{confirmed['high']:+.2f}): "
        + ("resolved" if confirmed["resolved"] else "not resolved, so the search's gain is not "
                                                     "shown to hold beyond its own seed"))
    if check_alone and _trial_against_one_setting(filled, records, check_alone, confirmed):
        recipe = CORE_STUDY.config(CORE_STUDY.baseline, "full").epochs
        filled.values["optuna_abstract"] = (
            f"Asked of `fast` at {cfg.epochs} of its {recipe} epochs, an Optuna search over "
            f"{len(best.params)} of its settings finds a gain of {confirmed['diff']:+.2f} points "
            f"of validation accuracy (confirmed on {int(confirmed['pairs'])} declared seeds, "
            f"paired), and one of those settings alone, `{check_alone.baseline}`, is not told "
            f"apart from it")
        if smaller_batch:
            filled.values["optuna_smaller_batch"] = check_alone.baseline


def _trial_against_one_setting(filled: Filled, records: list[dict], check, confirmed: pd.Series) -> bool:
    """The best trial against the core study's variant that makes only the choice the
    search's best trials agreed on, seed by seed on one machine: what the trial's other
    settings add to that one (`confirmed` is the trial's row against the base). True when
    that one setting carries the search's gain: the trial is not told from it, and the most
    the other settings could add (the interval's top) is a small part of the confirmed gain."""
    alone, trial = check.baseline, confirmed.name
    runs = runs_frame(sweep_records(records, check))
    if set(runs["variant"]) != {alone, trial}:
        return False
    paired = compare_to_base(runs, alone, [trial])
    row = paired.loc[trial]
    if row["pairs"] < 2:
        return False
    filled.values["optuna_vs_alone"] = (
        f"The best trial against the one-setting variant `{alone}` "
        f"({paired.loc[alone, 'mean']:.2f}%), seed by seed on one machine: {row['diff']:+.2f} "
        f"points ({int(row['pairs'])} seed pairs, 95% interval {row['low']:+.2f} to "
        f"{row['high']:+.2f}), " + (
            f"resolved: its other settings {'add to' if row['diff'] > 0 else 'take from'} what "
            f"{alone} gives" if row["resolved"] else
            f"not resolved, so these seeds cannot tell the best trial from {alone} alone"))
    if not (confirmed["resolved"] and not row["resolved"] and row["high"] < confirmed["diff"] / 2):
        return False
    filled.values["optuna_alone_verdict"] = (
        f"The one-setting variant `{alone}` is not told apart from that trial on the same "
        f"seeds ({row['diff']:+.2f} points between them, 95% interval {row['low']:+.2f} to "
        f"{row['high']:+.2f}, against the trial's {confirmed['diff']:+.2f} over `fast`): as "
        f"far as {int(row['pairs'])} seeds can tell, that one setting carries the search's gain "
        f"at this budget")
    return True


STUDY_GOAL_HOURS = 3      # what the core study aims at on one 2-core bf16 CPU


def cost(filled: Filled, runs: pd.DataFrame, records: list[dict], search):
    """What the profile's records cost, machine by machine, and the core study's wall time on
    the machine that ran it against the hours it aims at (and on a CPU without bf16); and
    where the extended study ran, with `search` (the stored Optuna search, or None)."""
    table = study_cost(runs)
    per_device = runs.groupby(["device", "precision"]).agg(
        runs=("id", "size"), hours=("wall_minutes", lambda m: m.sum() / 60)).sort_values("hours")
    (device, precision), most = per_device.index[-1], per_device.iloc[-1]
    filled.values["cost_by_device"] = (
        f"{len(runs)} runs took {per_device['hours'].sum():.1f} hours of wall time on "
        + (f"the {device} ({precision})" if len(per_device) == 1 else
           f"{len(per_device)} machines, the most ({most.hours:.1f} hours) on the {device} ({precision})"))
    # the planned variants only: a confirmation of Optuna's best trial runs in the same sweep
    core = runs[(runs["sweep"] == CORE_STUDY.name) & runs["variant"].isin(list(CORE_STUDY.variants))]
    if len(core):
        _core_cost(filled, core, records)
    _extended_cost(filled, runs, search)
    filled.table("study_cost", table.reset_index().rename(columns={
        "device": "device", "wall_hours": "wall hours", "minutes_per_run": "minutes per run"}),
        "What each study's records cost, machine by machine: runs, wall time and the mean "
        "minutes of one run (the final recipes' runs included; profile "
        + ", ".join(sorted(set(runs["profile"]))) + ").")


def _core_cost(filled: Filled, core: pd.DataFrame, records: list[dict]):
    """The core study's planned runs, projected on each machine from the runs it recorded,
    against the hours the study aims at; and what sets the time there: the plan's images
    over the rate they trained at, and the share of the wall time that was training (the
    rest: evaluation, start-up)."""
    planned = CORE_STUDY.planned_runs
    rows = []
    for (device, precision), group in core.groupby(["device", "precision"]):
        hours = group["wall_minutes"].sum() / 60
        rows.append({"device": device, "precision": precision, "runs": len(group),
                     "hours": hours, f"all {planned}, hours": hours * planned / len(group),
                     "images/s": group["images_seen"].sum() / (60 * group["train_minutes"].sum()),
                     "training %": 100 * group["train_minutes"].sum() / group["wall_minutes"].sum()})
    table = pd.DataFrame(rows).sort_values(f"all {planned}, hours")
    table[f"x {STUDY_GOAL_HOURS} h"] = table[f"all {planned}, hours"] / STUDY_GOAL_HOURS
    shown = table.round({"hours": 1, f"all {planned}, hours": 1, f"x {STUDY_GOAL_HOURS} h": 1})
    shown[["images/s", "training %"]] = shown[["images/s", "training %"]].round().astype(int)
    filled.table("core_cost", shown,
                 f"The core study's cost on each machine that ran part of it: the runs it recorded "
                 f"and their wall time, all {planned} planned runs projected from them, that as a "
                 f"multiple of the {STUDY_GOAL_HOURS} hours the study aims at, the images a second "
                 f"it trained at and the share of the wall time that was training.")
    best = table.iloc[0]
    images = int(core["images_seen"].median())
    full = best[f"all {planned}, hours"]
    filled.values["cost_core"] = (
        f"The core study's {planned} planned runs of {images:,} training images each take about "
        f"{full:.1f} hours on the fastest machine that ran part of it, the {best.device} "
        f"({best.precision}), projected from its {best.runs} runs: "
        + (f"within the {STUDY_GOAL_HOURS} hours it aims at." if full <= STUDY_GOAL_HOURS else
           f"{full / STUDY_GOAL_HOURS:.1f} times the {STUDY_GOAL_HOURS} hours it aims at. Training is "
           f"{best['training %']:.0f}% of that time, at {best['images/s']:.0f} images/s"
           + _rate_needed(best['images/s'], full, best['training %'] / 100) + ".")
        + _fp32_multiple(records, (best.device, best.precision)))


def _extended_cost(filled: Filled, runs: pd.DataFrame, search):
    """Where the extended study (the Optuna search and its confirmation, the block ablation,
    the recipe's ingredients) ran at this profile and its wall time on each machine (the
    search's pruned trials included), and the hours of it that ran on a CPU in bf16."""
    parts = [("the Optuna search", device_label(r["device"]), r["precision"], r["device"]["type"],
              (r.get("wall_seconds") or 0) / 3600) for r in (search.records if search else [])]
    for name, rows in (
            ("the confirmation of Optuna's best trial",
             (runs["sweep"] == CORE_STUDY.name) & ~runs["variant"].isin(list(CORE_STUDY.variants))),
            ("the block ablation", runs["sweep"] == BLOCK_ABLATION.name),
            ("the recipe's ingredients", runs["sweep"] == FAST_ABLATION.name)):
        parts += [(name, *run, minutes / 60) for *run, minutes in runs.loc[rows, [
            "device", "precision", "device_type", "wall_minutes"]].itertuples(index=False)]
        if not rows.any():
            parts.append((name, None, None, None, 0.0))
    frame = pd.DataFrame(parts, columns=["part", "device", "precision", "type", "hours"])

    def duration(h: float) -> str:
        return f"{h:.1f} hours" if h >= 1 else f"{60 * h:.0f} minutes"

    said = []
    for part, group in frame.groupby("part", sort=False):
        where = group.dropna(subset=["device"]).groupby(["device", "precision"], sort=False)["hours"].sum()
        said.append(f"{part}, " + " and ".join(f"{duration(h)} on the {device} ({precision})"
                                               for (device, precision), h in where.items())
                    if len(where) else f"{part}: not run at this profile")
    on_cpu = frame[(frame["type"] == "cpu") & (frame["precision"] == "bf16")]
    filled.values["cost_extended"] = (
        "As recorded at this profile, the parts took: " + "; ".join(said) + ". "
        + (f"On CPUs in bf16 that is {duration(on_cpu['hours'].sum())} for "
           f"{' and '.join(dict.fromkeys(on_cpu['part']))}, against the {STUDY_GOAL_HOURS} hours "
           f"more the extended study aims at" if len(on_cpu) else "None of it ran on a CPU in bf16")
        + ("; what ran only on a GPU or not at all has no CPU cost measured."
           if (frame.groupby("part")["type"].apply(lambda t: not (t == "cpu").any())).any() else "."))


def _rate_needed(rate: float, hours: float, training_share: float) -> str:
    """The training speed at which a study of `hours` (`training_share` of it training at
    `rate` images/s) fits the hours it aims at, the rest of each run (scoring, start-up)
    taking what it takes now."""
    training, rest = hours * training_share, hours * (1 - training_share)
    if rest >= STUDY_GOAL_HOURS:
        return f"; the rest of each run alone takes more than {STUDY_GOAL_HOURS} hours"
    return (f"; {STUDY_GOAL_HOURS} hours would need about "
            f"{rate * training / (STUDY_GOAL_HOURS - rest):,.0f} images/s of training")


def _fp32_multiple(records: list[dict], here: tuple[str, str]) -> str:
    """How much longer the core study's FastNet runs would take on a CPU that trains in fp32
    than on `here` (device label, precision): the ratio of the median epoch's images/s,
    FastNet on FastNet, as recorded on each machine."""
    rates: dict[tuple[str, str], list[float]] = {}
    named = set()                # machines whose CPU model was recorded: the rest are unnamed
    for r in records:
        if r["config"]["model"] == "fast" and r["device"].get("type") == "cpu":
            key = (device_label(r["device"]), r["precision"])
            rates.setdefault(key, []).extend(h["images_per_second"] for h in r["history"])
            if prose_cpu_name(r["device"]):
                named.add(key)
    slower = [k for k in rates if k[1] == "fp32" and k in named]
    if here not in rates or not slower:
        return ""
    fast_rate = float(np.median(rates[here]))
    return " " + "; ".join(
        f"FastNet trains at a median of {np.median(rates[k]):.0f} images/s an epoch on the {k[0]} "
        f"({k[1]}) against {fast_rate:.0f} on the {here[0]} ({here[1]}), so there the core study "
        f"would take about {fast_rate / np.median(rates[k]):.1f} times as long" for k in slower) + "."


def engine(filled: Filled, results_dir: Path):
    files = sorted((results_dir / "benchmarks").glob("throughput-*.json"))
    if not files:
        return
    rows = []
    for f in files:
        b = json.loads(f.read_text())
        for r in b["rows"]:
            rows.append({"record": f.name, "device": device_label(b["device"]) if "type" in b["device"] else b["device"]["name"],
                         "batch": b["settings"]["batch_size"], "model": r["model"],
                         "variant": r["variant"], "precision": r["precision"],
                         "images/s (median)": round(r["median_img_s"]), "speedup": r["speedup"]})
    filled.values["engine"] = "yes"
    filled.table("engine", pd.DataFrame(rows), "Training throughput: images per second "
                 "(medians of interleaved repeats) per benchmark record; speedups are ratios "
                 "within one record.")
