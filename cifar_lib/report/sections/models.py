"""The sections on the models and recipes: ImprovedNet, the deep and fast recipes, their
budgets, the GPU runs and the coursework's 50 epochs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...study import plots
from ...data import CLASSES
from ...predictions import run_predictions
from ...study.analysis import branch_names, confusion_matrix, reliability
from ...study.sweeps import BLOCK_ABLATION, FAST_ABLATION, FAST_BUDGET
from ...study.tables import (analysed_run, budget_curve, budget_runs, device_label, history_frame, mean_std,
                              newest_finals, runs_frame)

from .common import Filled, _final_table, _scope, _spoken_list, _tta_kind, data_phrase
from .studies import sweep

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
        names = branch_names(record["model"], w.shape[1])
        filled.values["branch_spread"] = f"{w.std(0).mean():.3f}"
        filled.figure("branch_weights_by_class", plots.branch_weights_by_class(w, labels, names),
                      "`fast`: mean branch weight per block and true class.")
        filled.figure("branch_weight_spread", plots.branch_weight_spread(w, names),
                      "`fast`: distribution of branch weights over test images; under each "
                      "block, its branches in colour order.")


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
    analysed = analysed_run(by_config["fast"])
    if analysed:
        _analysis(filled, analysed, results_dir)
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
    finals = [r for r in records if r["config_name"] == "fast" and r["test_read"]]
    fast = runs_frame(finals)
    if len(fast):
        seconds = 60 * fast["train_minutes"]
        filled.values.update(fast_full_tta=mean_std(fast["test_acc_tta"]),
                             fast_full_plain=mean_std(fast["test_acc"]),
                             fast_full_device=fast["device"].iloc[0],
                             fast_full_precision=fast["precision"].iloc[0],
                             fast_full_seconds=f"{seconds.median():.1f}",
                             fast_full_seconds_range=f"{seconds.min():.1f}–{seconds.max():.1f}")
        if ref and ref["device"]["name"] == finals[0]["device"]["name"]:   # ratios on one GPU kind only
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
