"""The sections on the models: the coursework's models at its 50 epochs, `fast`'s final
runs against airbench94, its errors and branch weights, and every recipe's final runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...study import plots
from ...data import CLASSES
from ...predictions import run_predictions
from ...study.analysis import branch_names, confusion_matrix, reliability
from ...study.stats import fixed
from ...study.tables import analysed_run, device_label, history_frame, mean_std, newest_finals, runs_frame

from .common import Filled, RECIPES, signed

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
        analysed_seed=str(record["seed"]), analysed_device=device_label(record["device"]),
        hardest_class=f"{CLASSES[hardest]} ({fixed(per_class['accuracy %'][hardest])}%)",
        easiest_class=f"{CLASSES[easiest]} ({fixed(per_class['accuracy %'][easiest])}%)",
        ece_plain=f"{fixed(100 * plain_ece)}%", ece_tta=f"{fixed(100 * ece)}%")
    # calibration's direction, measured: mean top-class probability against accuracy (no TTA)
    confidence = 100 * preds["probs"].max(1).mean()
    accuracy = 100 * record["final"]["test_acc"]    # as scored (saved probabilities are rounded)
    filled.values.update(mean_confidence=f"{fixed(confidence)}%", plain_accuracy=f"{fixed(accuracy)}%")
    if confidence < accuracy:
        filled.values["underconfident"] = "yes"
    filled.table("per_class", per_class, f"`fast`, seed {record['seed']}: test accuracy per "
                                         f"class, with TTA.")
    filled.figure("errors", plots.errors_side_by_side(counts, plain_rows, plain_ece, "no TTA"),
                  "`fast` on the test set: confusion matrix with TTA (left) and reliability "
                  "diagram without it (right).")
    if "branch_weights" in preds:
        w = preds["branch_weights"]
        names = branch_names(record["model"], w.shape[1])
        filled.values["branch_spread"] = f"{w.std(0).mean():.3f}"
        filled.figure("branch_weights_by_class", plots.branch_weights_by_class(w, labels, names),
                      f"`fast`, seed {record['seed']}: each true class's mean branch weight minus the "
                      f"branch's mean over all test images.")


def fast(filled: Filled, by_config: dict, ref: dict | None, results_dir: Path):
    """The fast recipe: its final runs (all 50,000 images, test read once) and airbench94 on
    the same data as the yardstick."""
    runs = runs_frame(by_config.get("fast", []))
    if runs.empty:
        return
    final = runs[runs["test_acc_tta"].notna()]
    if final.empty:
        return
    filled.values.update(fast_tta=mean_std(final["test_acc_tta"]), fast_plain=mean_std(final["test_acc"]),
                         fast_images=f"{final['images_seen'].iloc[0]:,}",
                         fast_minutes=f"{final['wall_minutes'].mean():.1f}",
                         fast_device=" and ".join(sorted(set(final["device"] + ", " + final["precision"]))))
    analysed = analysed_run(by_config["fast"])
    if analysed:
        _analysis(filled, analysed, results_dir)
    if ref:
        filled.values.update(
            airbench_tta=f"{fixed(100 * ref['test_acc_tta']['mean'])} ± {fixed(100 * ref['test_acc_tta']['std'])}%",
            airbench_seconds=f"{ref['train_seconds']['mean']:.1f}",
            airbench_device=ref["device"]["name"], airbench_runs=str(ref["runs"]),
            fast_gap=_gap_phrase(final["test_acc_tta"], 100 * ref["test_acc_tta"]["mean"],
                                 100 * ref["test_acc_tta"]["std"], ref["runs"]))


def _gap_phrase(ours: pd.Series, theirs: float, their_std: float, their_runs: int) -> str:
    """How a mean over our seeds compares with a reference's mean ± std over its runs,
    claiming nothing smaller than the larger of the two spreads."""
    gap, spread = ours.mean() - theirs, max(their_std, ours.std() if len(ours) > 1 else 0.0)
    seeds = f"{len(ours)} seed{'s' * (len(ours) > 1)} against {their_runs} run{'s' * (their_runs > 1)}"
    if abs(gap) <= spread:
        return (f"{signed(gap)} points ({seeds}), smaller than the {fixed(spread)}-point run-to-run "
                f"spread (a comparison of levels, not a test)")
    return f"{signed(gap)} points ({seeds}), more than the {fixed(spread)}-point run-to-run spread"


def gpu(filled: Filled, records: list[dict], ref: dict | None):
    """The `full`-profile (GPU) runs, where records of them exist: `fast`'s final runs against
    airbench94 on the same GPU kind, and the coursework's two models at its 50 epochs."""
    if not records:
        return
    finals = [r for r in records if r["config_name"] == "fast" and r["test_read"]]
    fast = runs_frame(finals)
    if len(fast):
        seconds = 60 * fast["train_minutes"]
        filled.values.update(fast_full_tta=mean_std(fast["test_acc_tta"]),
                             fast_full_device=fast["device"].iloc[0],
                             fast_full_precision=fast["precision"].iloc[0],
                             fast_full_seconds=f"{seconds.median():.1f}")
        if ref and ref["device"]["name"] == finals[0]["device"]["name"]:   # ratios on one GPU kind only
            filled.values.update(
                fast_full_ratio=f"{seconds.median() / ref['train_seconds']['mean']:.1f}",
                fast_full_gap=_gap_phrase(fast["test_acc_tta"], 100 * ref["test_acc_tta"]["mean"],
                                          100 * ref["test_acc_tta"]["std"], ref["runs"]))
    by_config = newest_finals(records)
    if "seed_basic" in by_config:
        r = by_config["seed_basic"]
        filled.values.update(basic_full_test=f"{fixed(100 * r['final']['test_acc'])}%",
                             basic_full_device=device_label(r["device"]))
    if "seed_improved" in by_config:
        r = by_config["seed_improved"]
        filled.values.update(seed_full_test=f"{fixed(100 * r['final']['test_acc'])}%",
                             seed_full_seed=str(r["seed"]),
                             seed_full_device=device_label(r["device"]))
        if "val_acc" in r["final"]:             # a run on all 50,000 images has no validation split
            filled.values["seed_full_val"] = f"{fixed(100 * r['final']['val_acc'])}%"
        basic = by_config.get("seed_basic")
        if basic and device_label(basic["device"]) == device_label(r["device"]):   # one machine
            gap = r["final"]["test_acc"] - basic["final"]["test_acc"]
            filled.values["improved_over_basic_full"] = f"{100 * gap:.1f}"


COURSEWORK_REPORTED_TEST = 87.33   # the coursework's ImprovedNet, official data, 50 epochs


def tuned_at_coursework_budget(filled: Filled, records: list[dict]):
    """ImprovedNet with the kit's tuned recipe at the coursework's 50 epochs (one final run,
    from any profile: the config trains 50 epochs at each), beside the coursework's recipe
    at the same budget and the coursework's reported accuracy."""
    filled.values["coursework_reported"] = f"{fixed(COURSEWORK_REPORTED_TEST)}%"
    finals = newest_finals(records)
    if "improved_tuned_50" not in finals:
        return
    r = finals["improved_tuned_50"]
    test = 100 * r["final"]["test_acc"]
    filled.values.update(tuned_50_test=f"{fixed(test)}%", tuned_50_device=device_label(r["device"]))
    # the coursework's recipe at the same epochs (its records at other budgets do not answer)
    seed = next((s for s in reversed(records) if s["config_name"] == "seed_improved"
                 and s["test_read"] and s["config"]["epochs"] == r["config"]["epochs"]), None)
    if seed is None:
        return
    filled.values["tuned_50_over_seed"] = signed(test - 100 * seed['final']['test_acc'])
    history = history_frame([seed, r]).rename(columns={"config": "recipe"}).replace(
        {"recipe": {"seed_improved": "coursework's", "improved_tuned_50": "tuned"}})
    filled.figure("improved_50_curves", plots.learning_curves(history, hue="recipe"),
                  f"ImprovedNet over 50 epochs, one run per recipe (coursework's: "
                  f"{device_label(seed['device'])}; tuned: {device_label(r['device'])}). The tuned "
                  f"recipe's training loss includes label smoothing; validation loss does not.")


def finals(filled: Filled, records: list[dict]):
    """Appendix: every recipe's final runs (the test set read once each), grouped by the
    machine and epochs they trained at."""
    tested = [r for r in records if r["config_name"] in RECIPES and r["test_read"]]
    if not tested:
        return
    runs = runs_frame(tested)
    table = runs.groupby(["config", "epochs", "train_images", "device", "precision"], sort=False).agg(
        runs=("seed", "size"), test=("test_acc", "mean"), test_tta=("test_acc_tta", "mean")).reset_index()
    order = {name: i for i, name in enumerate(RECIPES)}
    table = table.sort_values(["config", "epochs"], key=lambda c: c.map(order) if c.name == "config" else c)
    filled.table("finals", table.rename(columns={"config": "recipe", "train_images": "trained on",
                                                 "test": "test %", "test_tta": "test % (TTA)"}),
                 "Every recipe's final runs, the test set read once at the end of each (means "
                 "over runs); fewer than all 50,000 training images: the validation split was held out.")



