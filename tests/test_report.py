"""Experiments as data: reuse of finished runs, sweeps, tables and the generated report."""
import dataclasses
import json
import re
from pathlib import Path

import pytest
import numpy as np
import pandas as pd

from cifar_lib.predictions import run_predictions
from cifar_lib.study.analysis import confusion_matrix, reliability
from cifar_lib.cli import main
from cifar_lib.config import ConfigError, load_config
from cifar_lib.experiment import find_record, run_or_load
from cifar_lib.study.notebook import notebook_profile, show_recorded_sweep
from cifar_lib.report.build import build_report
from cifar_lib.study.runner import Sweep, run_sweep
from cifar_lib.study.sweeps import load_sweep
from cifar_lib.records import machine_key
from cifar_lib.study.stats import compare_to_base
from cifar_lib.study.tables import (device_label, budget_curve, compare_sweep, final_runs, load_records,
                              mean_std, runs_frame, seed_summary, study_cost)
from conftest import tiny_dataset

TINY = {"val_size": 100, "epochs": 1, "eval_subset": 50}
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_run_or_load_reuses_only_an_identical_finished_run(tmp_path):
    data = tiny_dataset()
    cfg = load_config("seed_improved", "cpu", model_args={"widths": [8, 8, 8]}, **TINY)
    kw = dict(profile="cpu", data=data, results_dir=tmp_path, checkpoint_dir=tmp_path, progress=False)
    first, path = run_or_load(cfg, seed=0, **kw)
    again, path2 = run_or_load(cfg, seed=0, **kw)
    assert path2 == path and again == first
    other_seed, path3 = run_or_load(cfg, seed=1, **kw)
    assert path3 != path
    changed = load_config("seed_improved", "cpu", model_args={"widths": [8, 8, 8]}, **{**TINY, "lr": 2e-3})
    assert find_record(changed, profile="cpu", seed=0, data=data, results_dir=tmp_path) is None
    # A tuning run does not stand in for a final one: that one must read the test set.
    tune_cfg = load_config("seed_improved", "cpu", model_args={"widths": [8, 8, 8]}, **{**TINY, "lr": 3e-3})
    run_or_load(tune_cfg, seed=0, read_test=False, **kw)
    assert find_record(tune_cfg, profile="cpu", seed=0, data=data, results_dir=tmp_path) is None
    assert find_record(tune_cfg, profile="cpu", seed=0, data=data, results_dir=tmp_path,
                       read_test=False) is not None
    # Other data (a different fingerprint) is never mixed up with this one.
    data.fingerprint = "other"
    assert find_record(cfg, profile="cpu", seed=0, data=data, results_dir=tmp_path) is None


def _tiny_sweep():
    return Sweep(name="augmentation", base="study", seeds=(0, 1),
                 variants={"none": {"augment": [], **TINY, "model_args": {"widths": [8, 8, 8]}},
                           "flip": {"augment": ["flip"], **TINY, "model_args": {"widths": [8, 8, 8]}}})


@pytest.mark.slow
def test_sweep_runs_are_tagged_and_summarised(tmp_path, capsys):
    records = run_sweep(_tiny_sweep(), "cpu", tiny_dataset(), results_dir=tmp_path,
                        checkpoint_dir=tmp_path)
    # each run shows its epochs as it trains (a CPU sweep runs for hours), named by variant and seed
    shown = capsys.readouterr().err
    assert all(f"augmentation {v} seed {s}: 100%" in shown for v in ("none", "flip") for s in (0, 1))
    assert [(r["tags"]["variant"], r["seed"]) for r in records] == [
        ("none", 0), ("none", 1), ("flip", 0), ("flip", 1)]
    assert all(r["test_read"] is False and "test_acc" not in r["final"] for r in records)
    table = seed_summary(runs_frame(records), order=["none", "flip"])
    assert list(table.index) == ["none", "flip"]
    assert list(table.columns) == ["mean", "std", "seeds"] and table["seeds"].tolist() == [2, 2]
    for variant in ("none", "flip"):
        accs = [100 * r["final"]["val_acc"] for r in records if r["tags"]["variant"] == variant]
        assert table.loc[variant, "mean"] == pytest.approx(sum(accs) / 2, abs=0.006)


@pytest.mark.slow
def test_a_final_sweep_trains_on_every_image_and_reads_the_test_set_once_per_run(tmp_path):
    small = {**TINY, "model_args": {"widths": [8, 8, 8]}, "schedule": "linear"}
    sweep = Sweep(name="budget", base="study", seeds=(0,), final=True,
                  variants={"1 epoch": small, "2 epochs": {**small, "epochs": 2}})
    data = tiny_dataset()
    kw = dict(results_dir=tmp_path, checkpoint_dir=tmp_path)
    records = run_sweep(sweep, "cpu", data, **kw)
    assert sweep.metric == "test_acc" and _tiny_sweep().metric == "val_acc"
    for r in records:       # all 500 training images, no validation split, the test set read
        assert r["test_read"] and r["data"]["train_images"] == 500 and "val_acc" not in r["final"]
        assert r["tags"]["sweep"] == "budget" and r["config"]["final"]
    curve = budget_curve(runs_frame(records))
    assert curve.index.tolist() == [500, 1000] and curve["seeds"].tolist() == [1, 1]
    assert curve["test % mean"].tolist() == [round(100 * r["final"]["test_acc"], 2) for r in records]
    assert [r["id"] for r in run_sweep(sweep, "cpu", data, **kw)] == [r["id"] for r in records]


@pytest.mark.slow
def test_a_recorded_sweep_shows_its_differences_or_the_command_that_measures_it(tmp_path, capsys):
    sweep = _tiny_sweep()
    assert show_recorded_sweep(sweep, "cpu", title="t", results_dir=tmp_path) is None
    assert "python -m cifar_lib sweep augmentation --profile cpu" in capsys.readouterr().out
    run_sweep(sweep, "cpu", tiny_dataset(), results_dir=tmp_path, checkpoint_dir=tmp_path)
    # outside IPython, display() prints the table's repr: wide enough to show every column
    with pd.option_context("display.width", 400, "display.max_columns", None):
        table = show_recorded_sweep(sweep, "cpu", title="t", results_dir=tmp_path)
    assert list(table.index) == ["none", "flip"] and table.loc["flip", "pairs"] == 2
    shown = capsys.readouterr().out
    assert " low " in shown and "resolved" in shown
    assert "Figure" not in shown            # one comparison: its row says all a forest plot would
    assert "seeds 0–1 on one " in shown
    assert "planned runs" not in shown
    show_recorded_sweep(dataclasses.replace(sweep, seeds=(0, 1, 2)), "cpu", title="t",
                        results_dir=tmp_path)
    assert "4 of the 6 planned runs are recorded at the cpu profile" in capsys.readouterr().out


@pytest.mark.slow
def test_a_subset_of_a_sweep_asks_its_own_question_of_the_same_records(tmp_path, capsys):
    sweep = _tiny_sweep()
    with pytest.raises(ValueError, match=r"no variant\(s\) \['rotate'\]; its variants: \['none', 'flip'\]"):
        sweep.subset(["flip", "rotate"])
    flip_first = sweep.subset(["flip", "none"])          # the same runs, compared with flip
    assert flip_first.baseline == "flip" and flip_first.planned_runs == 4
    assert flip_first.command("cpu") == ("python -m cifar_lib sweep augmentation --profile cpu "
                                         "--variant flip --variant none")
    run_sweep(sweep.subset(["none"]), "cpu", tiny_dataset(), results_dir=tmp_path, checkpoint_dir=tmp_path)
    # only `none` ran: the view without its baseline says what is missing
    assert show_recorded_sweep(flip_first, "cpu", title="t", results_dir=tmp_path) is None
    shown = capsys.readouterr().out
    assert "2 of the 4 planned runs are recorded" in shown
    assert "the baseline, flip, has no record yet" in shown and " low " not in shown
    # a view never borrows another variant's records from the same sweep
    assert show_recorded_sweep(sweep.subset(["flip"]), "cpu", title="t", results_dir=tmp_path) is None


def test_every_variant_of_a_sweep_runs_the_declared_seeds_and_groups_ask_one_question(tmp_path):
    file = tmp_path / "augmentation.toml"
    body = '''base = "study"
seeds = [0, 1]
baseline = "none"
[variants]
none = { augment = [] }
flip = { augment = ["flip"] }
crop = { augment = ["crop"] }
[groups]
mirror = ["flip"]
'''
    file.write_text(body)
    sweep = load_sweep(file)
    assert sweep.describe_plan() == "6 runs (3 variants × 2 seeds)"
    assert sweep.runs() == [("none", 0), ("none", 1), ("flip", 0), ("flip", 1), ("crop", 0), ("crop", 1)]
    assert sweep.runs(seeds=[2]) == [("none", 2), ("flip", 2), ("crop", 2)]   # --seeds: every variant
    # A partly measured sweep says which runs are still to come; a run outside the plan
    # (another seed) does not count towards it.
    assert sweep.progress([("none", 0), ("none", 1), ("flip", 1), ("flip", 7)], "cpu") == (
        "3 of the 6 planned runs are recorded at the cpu profile; not yet run: crop; "
        "still short of seeds: flip (1 of 2 seeds).")
    assert sweep.progress(sweep.runs(), "cpu") == ""
    # A group is its variants beside the baseline, on the same runs.
    mirror = sweep.group("mirror")
    assert list(mirror.variants) == ["none", "flip"] and mirror.baseline == "none"
    assert mirror.command("cpu").endswith("--variant none --variant flip")
    # Seeds for some variants only (added after seeing results) are refused, and so is a
    # group naming a variant the sweep lacks.
    file.write_text(body + "[variant_seeds]\nflip = [0, 1, 2, 3]\n")
    with pytest.raises(ValueError, match=r"every variant must run the sweep's seeds"):
        load_sweep(file)
    file.write_text(body.replace('mirror = ["flip"]', 'mirror = ["flop"]'))
    with pytest.raises(ValueError, match=r"groups.mirror names 'flop', which is not one of its variants"):
        load_sweep(file)


def test_mean_std_quotes_sample_spread_and_seed_count():
    assert mean_std([88.0, 89.0, 90.0]) == "89.00 ± 1.00% (3 seeds)"     # sample std (n - 1)
    assert mean_std([88.03, None]) == "88.03% (1 seed)"                  # missing runs are not seeds


@pytest.mark.slow
def test_report_is_rebuilt_from_records_alone_and_deterministically(tmp_path):
    results, data = tmp_path / "results", tiny_dataset()
    kw = dict(profile="cpu", data=data, results_dir=results, checkpoint_dir=tmp_path, progress=False)
    run_sweep(_tiny_sweep(), "cpu", data, results_dir=results, checkpoint_dir=tmp_path)
    deep, _ = run_or_load(load_config("deep", "cpu", model_args={"widths": [8, 8, 16, 16, 16]}, **TINY), **kw)
    # the fast recipe: a validation run (test never read) and a final run on all images
    small_fast = dict(model_args={"widths": [8, 8, 16]}, batch_size=100, **TINY)
    fast_val, _ = run_or_load(load_config("fast", "cpu", **small_fast), read_test=False, **kw)
    fast_final, _ = run_or_load(load_config("fast", "cpu", final=True, **small_fast), **kw)
    longer = Sweep(name="fast_budget", base="fast", seeds=(0,), final=True,
                   variants={"2 epochs": {**small_fast, "epochs": 2}})
    [fast_longer] = run_sweep(longer, "cpu", data, results_dir=results, checkpoint_dir=tmp_path)
    # smoke records never reach the report
    run_or_load(load_config("seed_improved", "smoke", val_size=100), **{**kw, "profile": "smoke"})

    # final runs of several recipes side by side, in the order asked: validation runs left out
    finals = final_runs(["fast", "deep"], results)
    budget = lambda r: [r["config_name"], "cpu", r["config"]["epochs"] * r["data"]["train_images"],
                        100 * r["final"]["test_acc"]]
    assert finals[["config", "profile", "images_seen", "test_acc"]].values.tolist() == [
        budget(fast_final), budget(deep)]
    assert final_runs(["fast"], tmp_path / "nothing").empty

    md_path = build_report(results, tmp_path / "figures", tmp_path / "report")
    text = md_path.read_text()
    # figures/ holds only what the report shows: every file written is referenced
    written = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert written and all(f"figures/{name})" in text for name in written)
    html = (tmp_path / "report" / "report.html").read_text()
    assert "NOT the official release" in text
    assert f"{100 * deep['final']['test_acc_tta']:.2f}" in text
    assert f"{100 * fast_final['final']['test_acc_tta']:.2f}% (1 seed) test accuracy" in text
    assert f"{100 * fast_val['final']['val_acc_tta']:.2f}% (1 seed) with TTA" in text
    # the accuracy-vs-images curve: the recipe's budget, then the longer one of the final sweep
    assert (f"reaches {100 * fast_final['final']['test_acc_tta']:.2f}% (1 seed) from 500 and "
            f"{100 * fast_longer['final']['test_acc_tta']:.2f}% (1 seed) from 1,000 training images") in text
    assert "What more images buy: from 500 images to 1,000" in text
    assert "seed_improved" not in text                      # the smoke run
    # every figure the markdown points to exists, and the HTML carries them inline
    figures = re.findall(r"\]\(\.\./figures/([\w.]+)\)", text)
    assert figures and all((tmp_path / "figures" / f).is_file() for f in figures)
    assert html.count("data:image/png;base64,") == len(figures) and "../figures" not in html
    # the PDF: numbered pages, and on them exactly the report's figures
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    pdf = pdfium.PdfDocument(tmp_path / "report" / "report.pdf")
    images = sum(len(list(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE]))) for page in pdf)
    assert len(pdf) >= 2 and images == len(figures)
    assert pdf[0].get_textpage().get_text_range().count("1 / ") == 1     # the page number
    # every percentage in the report is a record's number, a mean or std over a sweep's seeds,
    # or computed from the saved test predictions (per-class accuracy, calibration error)
    records = load_records(results)
    allowed = {f"{100 * r['final'][k]:.2f}" for r in records for k in r["final"] if "acc" in k}
    runs = runs_frame(records).dropna(subset=["variant"])
    for stat in ("mean", "std"):
        allowed |= {f"{v:.2f}" for v in runs.groupby("variant")["val_acc"].agg(stat)}
    preds = run_predictions(fast_final, results)        # the analyses are of the recommended recipe
    counts = confusion_matrix(preds["labels"], preds["probs_tta"].argmax(1))
    allowed |= {f"{100 * a:.2f}" for a in counts.diagonal() / counts.sum(1)}
    allowed |= {f"{100 * reliability(preds[k], preds['labels'])[1]:.2f}" for k in ("probs", "probs_tta")}
    found = re.findall(r"(\d+\.\d\d)%", text)
    assert found and set(found) <= allowed, set(found) - allowed
    build_report(results, tmp_path / "figures", tmp_path / "report")
    assert md_path.read_text() == text
    # a paper's sections, with the hand-written prose around the numbers
    headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
    for section in ("Abstract", "1 Introduction", "2 Data", "3 Methods", "4 Experiments",
                    "5 Discussion", "6 Limitations", "7 Conclusion", "References"):
        assert section in headings
    # every figure and table is numbered and referred to in the text, not only its caption
    for label in re.findall(r"^\*((?:Figure|Table) \d+)\. ", text, flags=re.M):
        prose = [line for line in text.splitlines() if label in line
                 and not line.startswith(("*Figure", "*Table", "!["))]
        assert prose, f"{label} is never referred to"
    assert not re.search(r"\{\w+\}", text), "a placeholder was left unfilled"
    # what the records cost, per study (a sweep, or a config outside sweeps)
    cost = study_cost(runs_frame(records)).reset_index()
    assert cost.groupby("study")["runs"].sum().loc["augmentation"] == 4
    assert cost["runs"].sum() == len(records)
    assert cost.groupby(["study", "device"]).ngroups == len(cost)   # no device pooled
    wall = sum(r["wall_seconds"] for r in records) / 3600
    device = runs_frame(records)["device"].iloc[0]
    assert f"{len(records)} runs took {wall:.1f} hours of wall time on the {device}" in " ".join(text.split())


@pytest.mark.slow
def test_full_profile_fast_runs_are_timed_against_airbench_only_on_its_own_device(tmp_path):
    results, data = tmp_path / "results", tiny_dataset()
    small_fast = dict(model_args={"widths": [8, 8, 16]}, batch_size=100, final=True, **TINY)
    for profile in ("cpu", "full"):          # the report needs cpu records; full ones add a paragraph
        run_or_load(load_config("fast", profile, **small_fast), profile=profile, data=data,
                    results_dir=results, checkpoint_dir=tmp_path, progress=False)
    basic, _ = run_or_load(load_config("seed_basic", "full", model_args={"widths": [8, 8]}, **TINY),
                           profile="full", data=data, results_dir=results, checkpoint_dir=tmp_path,
                           progress=False)
    improved, _ = run_or_load(load_config("seed_improved", "full", model_args={"widths": [8, 8, 8]},
                                          **TINY), profile="full", data=data, results_dir=results,
                              checkpoint_dir=tmp_path, progress=False)
    # the coursework's recipe at a cpu budget of other epochs does not stand in for it
    run_or_load(load_config("seed_improved", "cpu", model_args={"widths": [8, 8, 8]},
                            **{**TINY, "epochs": 2}), profile="cpu", data=data, results_dir=results,
                checkpoint_dir=tmp_path, progress=False)
    # the tuned ImprovedNet at the coursework's epochs (the config keeps them at every profile)
    tuned, _ = run_or_load(load_config("improved_tuned_50", "cpu", model_args={"widths": [8, 8, 8]},
                                       **TINY), profile="cpu", data=data, results_dir=results,
                           checkpoint_dir=tmp_path, progress=False)
    [full] = load_records(results, profile="full", config="fast")
    reference = json.loads((REPO / "results" / "benchmarks" / "airbench94-h200-20261126.json").read_text())
    (results / "benchmarks").mkdir()

    def report_with_reference_on(device: str) -> str:
        reference["device"]["name"] = device
        (results / "benchmarks" / "airbench94-h200-20261126.json").write_text(json.dumps(reference))
        return build_report(results, tmp_path / "figures", tmp_path / "report").read_text()

    elsewhere = report_with_reference_on("NVIDIA H200")
    assert f"At the `full` profile ({device_label(full['device'])}" in elsewhere
    assert f"{100 * full['final']['test_acc_tta']:.2f}% (1 seed) test accuracy with TTA" in elsewhere
    assert "× airbench94" not in elsewhere                  # different machines: no ratio
    # the basic model at the full profile's budget, beside its cpu-profile curve
    assert (f"at the `full` profile's 1 epochs reach {100 * basic['final']['test_acc']:.2f}% test "
            f"accuracy (Figure ") in " ".join(elsewhere.split())
    assert (f"; {basic['train_seconds'] / 60:.1f} minutes of training on {device_label(basic['device'])})"
            in " ".join(elsewhere.split()))
    # the two coursework models side by side at the coursework's own budget
    gap = 100 * (improved["final"]["test_acc"] - basic["final"]["test_acc"])
    assert f"256 channels) is worth {gap:.1f} points of test accuracy" in " ".join(elsewhere.split())
    assert (tmp_path / "figures" / "basic_full_curves.png").is_file()
    tuned_test = 100 * tuned["final"]["test_acc"]
    assert (f"for 1 epochs reaches {tuned_test:.2f}% test accuracy "
            f"({100 * tuned['final']['test_acc_tta']:.2f}% with flip TTA; one run on the "
            f"{device_label(tuned['device'])}, {tuned['precision']}") in " ".join(elsewhere.split())
    assert (f"That is {tuned_test - 87.33:+.2f} points against the coursework's reported 87.33%"
            in " ".join(elsewhere.split()))
    assert (f"the tuned recipe is {tuned_test - 100 * improved['final']['test_acc']:+.2f} points of "
            f"test accuracy, one run each") in " ".join(elsewhere.split())
    same = report_with_reference_on(full["device"]["name"])
    ratio = full["train_seconds"] / reference["train_seconds"]["mean"]
    assert f"{ratio:.1f}× airbench94's" in same


def test_conditional_paragraphs_follow_the_values_the_records_gave(tmp_path):
    from cifar_lib.report.build import Filled, render

    filled = Filled(tmp_path)
    filled.values["measured"] = "88.1%"
    doc = render("[[if measured]] Got {measured}.\n\n[[unless measured]] Not measured.\n\n"
                 "[[if other]] Got {other}.\n\n[[unless other]] No other yet.", filled)
    assert [text for kind, text in doc.parts] == ["Got 88.1%.", "No other yet."]


def test_report_without_records_says_what_to_do(tmp_path, capsys):
    assert main(["report", "--results-dir", str(tmp_path), "--figures-dir", str(tmp_path / "f"),
                 "--report-dir", str(tmp_path / "r")]) == 2
    assert "no complete 'cpu' records" in capsys.readouterr().err
    assert not (tmp_path / "r" / "report.md").exists()


def test_notebook_profile_follows_the_environment(monkeypatch):
    monkeypatch.setenv("CIFAR_PROFILE", "smoke")
    assert notebook_profile("auto") == "smoke"
    monkeypatch.delenv("CIFAR_PROFILE")
    assert notebook_profile("auto") in {"cpu", "full"}
    assert notebook_profile("full") == "full"
    monkeypatch.setenv("CIFAR_PROFILE", "fast")
    with pytest.raises(ConfigError, match="unknown profile 'fast'.*valid: auto, smoke, cpu, full"):
        notebook_profile("auto")


def test_the_short_budget_is_set_beside_the_full_one_change_by_change(tmp_path):
    """The committed core-study records (short budget, CPU) against the committed full-budget
    ablation (GPU): each shared change's two differences, each paired on its own device."""
    from cifar_lib.report.sections import Filled, cheap_budget_agreement
    from cifar_lib.study.sweeps import CORE_STUDY, FAST_ABLATION
    from cifar_lib.study.tables import sweep_runs

    results = REPO / "results"
    cpu, full = load_records(results, profile="cpu"), load_records(results, profile="full")
    filled = Filled(tmp_path)
    cheap_budget_agreement(filled, cpu, full)
    shown, caption = filled.tables["budget_agreement"]
    cheap_runs, full_runs = sweep_runs(CORE_STUDY, "cpu", results), sweep_runs(FAST_ABLATION, "full", results)
    cheap = compare_sweep(CORE_STUDY, cheap_runs)
    whole = compare_sweep(FAST_ABLATION, full_runs)
    short, long = f"{cheap_runs['epochs'].iloc[0]} epochs", f"{full_runs['epochs'].iloc[0]} epochs"
    names = CORE_STUDY.counterparts["fast_ablation"]
    assert len(shown) >= 2
    for _, row in shown.iterrows():
        assert row[short] == round(cheap.loc[row["variant"], "diff"], 2)
        assert row[long] == round(whole.loc[names[row["variant"]], "diff"], 2)
    same = int(sum((row[short] > 0) == (row[long] > 0) for _, row in shown.iterrows()))
    assert f"{same} of the {len(shown)} {'has' if same == 1 else 'have'} the same sign" in filled.values["budget_agreement"]
    assert "Intel Xeon" in caption and "NVIDIA H200" in caption
    # Without the full budget's records nothing is claimed.
    alone = Filled(tmp_path)
    cheap_budget_agreement(alone, cpu, [])
    assert "budget_agreement" not in alone.values and not alone.tables


def test_a_variant_that_brings_a_companion_setting_is_named_as_such():
    import dataclasses

    from cifar_lib.report.sections import _what_changes
    from cifar_lib.study.sweeps import SWEEPS

    # SGD and AdamW bring their own rate and weight decay; the fast ablation is one setting each.
    assert _what_changes(SWEEPS["hyperparameters"]).endswith(
        " (SGD sets optimizer together with lr and weight decay; "
        "AdamW sets optimizer together with lr and weight decay)")
    assert _what_changes(SWEEPS["fast_ablation"]) == "Each variant changes one setting of the `fast` config"
    # Settings the baseline variant already has do not count: "L=2, equal compute" changes
    # only the widths of L=2, "L=3, equal compute" the branches and the widths.
    block = _what_changes(SWEEPS["block_ablation"])
    assert "L=3, equal compute sets kernel sizes together with widths" in block
    assert "L=2, equal compute" not in block
    # A sweep of one variant that changes several settings at once (a search's best trial)
    # says so, rather than claiming one setting per variant.
    fast = SWEEPS["fast_ablation"]
    best = dataclasses.replace(fast, variants={fast.baseline: fast.variants[fast.baseline],
                                               "trial 7": {"lr": 0.3, "label_smoothing": 0.1,
                                                           "model_args": {"dropout": 0.05}}})
    assert _what_changes(best) == ("trial 7 changes lr, label smoothing and dropout of the "
                                   "`fast` config together")


def test_a_sweep_with_only_its_baseline_measured_shows_no_empty_table(tmp_path):
    from cifar_lib.report.sections import Filled, sweep
    from cifar_lib.study.sweeps import CORE_STUDY

    records = [r for r in load_records(REPO / "results", profile="cpu")
               if r.get("tags", {}).get("sweep") == "core_study"]
    augmentation = CORE_STUDY.group("augmentation")
    only_base = Filled(tmp_path)
    sweep(only_base, [r for r in records if r["tags"]["variant"] == "fast"], augmentation, "t", "aug")
    assert "aug_setup" not in only_base.values and not only_base.tables and not only_base.figures
    assert only_base.values["aug_planned"] == augmentation.describe_plan()   # the template says what is to come
    measured = Filled(tmp_path)
    sweep(measured, records, augmentation, "t", "aug")
    shown, _ = measured.tables["aug"]
    assert "no augmentation" in set(shown["variant"]) and "aug_sweep" in measured.figures


def test_a_table_of_one_seed_pair_claims_no_difference(tmp_path):
    """One seed of a variant and of the base on one machine (a single run at a long budget):
    the row has its difference, but no interval, and the text resolves nothing."""
    from cifar_lib.report.sections import Filled, sweep
    from cifar_lib.study.sweeps import CORE_STUDY

    records = [r for r in load_records(REPO / "results", profile="cpu")
               if r.get("tags", {}).get("sweep") == "core_study" and r["seed"] == 0
               and r["tags"]["variant"] in ("fast", "dropout 0.1")]
    dropout = next(r for r in records if r["tags"]["variant"] == "dropout 0.1")
    records = [r for r in records if r["device"]["name"] == dropout["device"]["name"]]
    filled = Filled(tmp_path)
    sweep(filled, records, CORE_STUDY.group("regularisation"), "t", "one")
    row = filled.paired["one"].loc["dropout 0.1"]
    assert row["pairs"] == 1 and not row["resolved"]
    base = next(r for r in records if r["tags"]["variant"] == "fast")
    assert row["diff"] == pytest.approx(100 * (dropout["final"]["val_acc"] - base["final"]["val_acc"]))
    assert "these rows say what each run reached, and resolve nothing" in filled.values["one_result"]
    assert "Differences the seeds resolve" not in filled.values["one_result"]
    assert "no intervals" in filled.tables["one"][1] and "simultaneous" not in filled.tables["one"][1]


def test_the_conclusion_answers_the_coursework_questions_from_the_core_study_tables(tmp_path):
    from cifar_lib.report.sections import COURSEWORK_QUESTIONS, Filled, coursework_answers, sweep
    from cifar_lib.study.sweeps import CORE_STUDY

    records = [r for r in load_records(REPO / "results", profile="cpu")
               if r.get("tags", {}).get("sweep") == "core_study"]
    filled = Filled(tmp_path)
    coursework_answers(filled)                           # nothing measured: nothing said
    assert "coursework_answers" not in filled.values
    for group in ("regularisation", "optimisation", "augmentation"):
        sweep(filled, records, CORE_STUDY.group(group), "t", f"{group}_full")
    coursework_answers(filled)
    answers, _, failures = filled.values["coursework_answers"].partition("; failed to train, ")
    resolved, _, unresolved = answers.partition("; not resolved, ")
    answered = 0
    for name in ("regularisation_full", "optimisation_full", "augmentation_full"):
        table = filled.paired[name]
        for variant in set(COURSEWORK_QUESTIONS) & set(table.index):
            if table.loc[variant, "failed"]:           # a failure, never an effect
                assert f"{variant} ({table.loc[variant, 'failed']} of" in failures
                continue
            said = f"{variant} ({table.loc[variant, 'diff']:+.2f} points)"
            assert said in (resolved if table.loc[variant, "resolved"] else unresolved)
            answered += 1
        assert "no augmentation" not in filled.values["coursework_answers"]    # not the coursework's
    assert answered >= 3


def test_the_coursework_answers_at_the_recipes_epochs_rest_on_two_seed_pairs_or_more(tmp_path):
    from cifar_lib.report.sections import Filled, coursework_answers, sweep
    from cifar_lib.study.sweeps import CORE_STUDY

    records = [r for r in load_records(REPO / "results", profile="full")
               if r.get("tags", {}).get("sweep") == "core_study"]
    filled = Filled(tmp_path)
    sweep(filled, records, CORE_STUDY.group("regularisation"), "t", "regularisation_recipe")
    table = filled.paired["regularisation_recipe"]
    row = table.loc["dropout 0.1"]
    assert row["pairs"] >= 2
    coursework_answers(filled, ("regularisation_recipe",), "recipe")
    said = f"{'resolved' if row['resolved'] else 'not resolved'}, dropout 0.1 ({row['diff']:+.2f} points)"
    assert filled.values["recipe"] == said          # the only coursework question measured there
    # one seed pair has no interval: it answers nothing
    one_pair = [r for r in records if r["seed"] == 0]
    single = Filled(tmp_path)
    sweep(single, one_pair, CORE_STUDY.group("regularisation"), "t", "regularisation_recipe")
    coursework_answers(single, ("regularisation_recipe",), "recipe")
    assert "recipe" not in single.values


def test_the_cost_says_how_much_longer_the_core_study_takes_without_bf16(tmp_path):
    import numpy as np

    from cifar_lib.report.sections import Filled, cost
    from cifar_lib.study.sweeps import CORE_STUDY
    from cifar_lib.study.tuning import read_search

    records = load_records(REPO / "results", profile="cpu")
    filled = Filled(tmp_path)
    cost(filled, runs_frame(records), records, read_search(CORE_STUDY, "cpu", REPO / "results"))
    text = filled.values["cost_core"]
    epochs = lambda device, precision, **tags: [
        h["images_per_second"] for r in records if r["config"]["model"] == "fast"
        and device_label(r["device"]) == device and r["precision"] == precision
        and all(r.get("tags", {}).get(k) == v for k, v in tags.items()) for h in r["history"]]
    # against the fastest machine that ran part of the study (the first row of its cost table)
    projected = filled.tables["core_cost"][0]
    device, precision = projected.iloc[0][["device", "precision"]]
    assert (projected.filter(like="all ").iloc[:, 0].diff().dropna() >= 0).all()
    assert f"about {projected.filter(like='all ').iloc[0, 0]:.1f} hours on the fastest" in text
    # the speed that fits 3 hours: all planned runs' training images over the hours their
    # scoring and start-up leave
    runs = runs_frame(records)
    core = runs[(runs["sweep"] == "core_study") & runs["variant"].isin(list(CORE_STUDY.variants))
                & (runs["device"] == device) & (runs["precision"] == precision)]
    scale = CORE_STUDY.planned_runs / len(core)
    rest_hours = scale * (core["wall_minutes"] - core["train_minutes"]).sum() / 60
    needed = scale * core["images_seen"].sum() / (3600 * (3 - rest_hours))
    assert f"3 hours would need about {needed:,.0f} images/s of training" in text
    here, amd = np.median(epochs(device, precision)), np.median(epochs("2-core AMD EPYC", "fp32"))
    assert f"would take about {here / amd:.1f} times as long" in text and here > amd
    # Without the fp32 machine's records there is no multiple to state.
    no_amd = [r for r in records if device_label(r["device"]) != "2-core AMD EPYC"]
    alone = Filled(tmp_path)
    cost(alone, runs_frame(no_amd), no_amd, read_search(CORE_STUDY, "cpu", REPO / "results"))
    assert "times as long" not in alone.values["cost_core"]


def test_the_extended_study_says_where_each_part_ran_and_what_its_cpu_part_took(tmp_path):
    from cifar_lib.report.sections import Filled, cost
    from cifar_lib.study.sweeps import CORE_STUDY
    from cifar_lib.study.tuning import read_search

    records = load_records(REPO / "results", profile="cpu")
    runs = runs_frame(records)
    search = read_search(CORE_STUDY, "cpu", REPO / "results")
    filled = Filled(tmp_path)
    cost(filled, runs, records, search)
    text = filled.values["cost_extended"]
    # the search counts its pruned trials' wall time as well as its complete ones'
    search_hours = sum(r["wall_seconds"] for r in search.records) / 3600
    assert search_hours > runs.loc[runs["config"] == f"tune-{CORE_STUDY.name}-cpu", "wall_minutes"].sum() / 60
    assert f"the Optuna search, {search_hours:.1f} hours on the" in text
    trial = runs[(runs["sweep"] == CORE_STUDY.name) & ~runs["variant"].isin(list(CORE_STUDY.variants))]
    assert len(trial) and f"the confirmation of Optuna's best trial, {trial['wall_minutes'].sum():.0f} minutes" in text
    on_cpu = search_hours + trial["wall_minutes"].sum() / 60
    assert f"On CPUs in bf16 that is {on_cpu:.1f} hours for the Optuna search and the confirmation" in text
    # the recipe's ingredients ran only at the full profile; the block ablation only on a GPU
    assert "the recipe's ingredients: not run at this profile" in text and "no CPU cost measured" in text
    # without a stored search, only the confirmation's runs are counted
    bare = Filled(tmp_path)
    cost(bare, runs, records, None)
    assert "Optuna search" not in bare.values["cost_extended"]
    assert f"that is {trial['wall_minutes'].sum():.0f} minutes for the confirmation" in bare.values["cost_extended"]


def _move_records(folder: Path, device: dict, variant: str | None = None) -> None:
    """Rewrite records as if they had been made on `device` (another machine)."""
    for path in folder.rglob("*.json"):
        record = json.loads(path.read_text())
        if variant is None or record["tags"]["variant"] == variant:
            path.write_text(json.dumps({**record, "device": device}))


@pytest.mark.slow
def test_a_sweep_trains_its_baseline_again_on_a_machine_where_a_variant_trains(tmp_path):
    other = {"type": "cpu", "cpu": "Other CPU", "cpu_count": 2, "threads": 2, "name": "Other CPU (2 cores)"}
    sweep, data = _tiny_sweep(), tiny_dataset()
    kw = dict(results_dir=tmp_path, checkpoint_dir=tmp_path / "checkpoints")
    run_sweep(sweep.subset(["none"]), "cpu", data, **kw)
    _move_records(tmp_path, other)
    # A variant about to train here would have no partner on this device: the baseline's
    # seeds are trained here too, though the other machine's records of them exist.
    records = run_sweep(sweep, "cpu", data, **kw)
    here = records[0]["device"]["name"]
    assert here != other["name"] and all(r["device"]["name"] == here for r in records)
    assert len(load_records(tmp_path, profile="cpu", config="augmentation")) == 6
    table = compare_to_base(runs_frame(records), "none", ["flip"])
    assert table.loc["flip", "pairs"] == 2 and table.loc["flip", "runs"] == 2
    # Where every run is recorded, nothing trains, whichever machine made them (a notebook
    # reads another machine's study back in seconds).
    _move_records(tmp_path, other)
    recorded = {p.stem for p in tmp_path.rglob("augmentation-*.json")}
    again = run_sweep(sweep, "cpu", data, **kw)
    # (`none` has two records of each seed, made within the same second: either may answer)
    assert {r["id"] for r in again} <= recorded
    assert [(r["tags"]["variant"], r["seed"]) for r in again] == [
        (r["tags"]["variant"], r["seed"]) for r in records]
    assert len(load_records(tmp_path, profile="cpu", config="augmentation")) == 6


def _search_study(results_dir: Path, epochs: int = 2):
    """An Optuna study of the core study's base as `tune --sweep core_study` stores it, its
    trials told by hand: 37 complete (their accuracy rising with the lr factor, so lr is what
    matters), 2 stopped after the first epoch and 1 marked pruned after its last."""
    import optuna

    from cifar_lib.study.tuning import default_storage

    study = optuna.create_study(study_name="core_study-cpu", direction="maximize",
                                storage=default_storage(results_dir, "cpu"),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for number in range(40):
        trial = study.ask()
        lr = trial.suggest_float("lr", 0.25, 4.0, log=True)
        trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True)
        trial.suggest_float("label_smoothing", 0.0, 0.3)
        trial.suggest_float("dropout", 0.0, 0.3)
        trial.suggest_categorical("batch_size", [1000, 2000, 4000])
        value = 0.70 + 0.02 * lr
        trial.report(value - 0.05, 0)
        if number in (3, 5):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        trial.report(value, epochs - 1)
        if number == 7:             # ran every epoch, then fell below the median at the last
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, value)
    return study


def test_the_optuna_search_is_reported_with_its_best_trial_unconfirmed_until_trained(tmp_path):
    from cifar_lib.report.sections import Filled, optuna_search
    from cifar_lib.study.sweeps import CORE_STUDY
    from cifar_lib.study.tuning import read_search

    filled = Filled(tmp_path)
    optuna_search(filled, [{"profile": "cpu", "tags": {}}], read_search(CORE_STUDY, "cpu", tmp_path))
    assert "optuna_trials" not in filled.values            # no study stored: nothing to say
    study = _search_study(tmp_path)
    optuna_search(filled, [{"profile": "cpu", "tags": {}}], read_search(CORE_STUDY, "cpu", tmp_path))
    best = study.best_trial
    values = filled.values
    assert (values["optuna_trials"], values["optuna_complete"]) == ("40", "37")
    assert values["optuna_pruned"].startswith("2 were stopped early by the pruner, and 1 ran every epoch")
    assert values["optuna_best"] == f"{100 * best.value:.2f}%"
    assert values["optuna_best_settings"].startswith(f"lr ×{best.params['lr']:.2g}, weight decay ")
    assert values["optuna_top"].startswith("lr, with ")       # the only setting the value follows
    assert "batch 1000, 2000 or 4000" in values["optuna_space"]
    assert (tmp_path / "optuna_search.png").is_file()
    # Its best trial has no runs with the declared seeds yet: the report says how to train them.
    assert values["optuna_unconfirmed"].endswith("--n-trials 0 --confirm")
    assert "optuna_confirm_setup" not in values


def test_the_search_in_the_records_is_confirmed_with_the_declared_seeds_on_its_own_machine(tmp_path):
    """The committed Optuna search of the core study's base: its best trial's confirmation
    pairs every declared seed with fast's run on the machine the trials ran on, and the
    conclusion's verdict is that table's."""
    from cifar_lib.report.sections import Filled, optuna_search
    from cifar_lib.study.sweeps import CORE_STUDY
    from cifar_lib.study.tuning import read_search

    records = load_records(REPO / "results", profile="cpu")
    filled = Filled(tmp_path)
    optuna_search(filled, records, read_search(CORE_STUDY, "cpu", REPO / "results"))
    assert int(filled.values["optuna_trials"]) >= 40
    table = filled.paired["optuna_confirm"]
    row = table.drop(CORE_STUDY.baseline).iloc[0]
    assert row["pairs"] == row["runs"] == len(CORE_STUDY.seeds)
    assert table.attrs["devices"] == [filled.values["optuna_device"].rsplit(", ", 1)[0]]
    verdict = filled.values["optuna_confirm_verdict"]
    assert f"{row['diff']:+.2f} points" in verdict
    assert verdict.endswith("resolved") == bool(row["resolved"])
    # The best trials all chose batch 1000, which the core study also asks alone: the trial
    # against that variant is a difference of runs of the same seed on the same machine.
    trial = row.name
    by_seed = {}
    for r in records:
        if r.get("tags", {}).get("sweep") == CORE_STUDY.name and r["tags"].get("variant") in ("batch 1000", trial) \
                and " · ".join(machine_key(r)) in table.attrs["machines"]:
            by_seed.setdefault(r["seed"], {})[r["tags"]["variant"]] = 100 * r["final"]["val_acc"]
    diffs = [v[trial] - v["batch 1000"] for v in by_seed.values() if len(v) == 2]
    if len(diffs) < 2:
        assert "optuna_vs_alone" not in filled.values
    else:
        text = filled.values["optuna_vs_alone"]
        assert f"{sum(diffs) / len(diffs):+.2f} points ({len(diffs)} seed pairs" in text
        # the abstract says so only where the conclusion does, with the confirmed gain
        if "optuna_alone_verdict" in filled.values:
            assert f"a gain of {row['diff']:+.2f} points" in filled.values["optuna_abstract"]
        else:
            assert "optuna_abstract" not in filled.values


def test_table_cells_read_as_a_paper_prints_them():
    from cifar_lib.report.document import format_cell

    assert (format_cell(True), format_cell(False), format_cell(np.bool_(True))) == ("✓", "", "✓")
    assert format_cell(0.0042, "p (adjusted)") == "0.0042" and format_cell(0.31234, "p") == "0.31"
    assert format_cell(3e-7, "p") == "< 0.0001" and format_cell(0.0042, "diff") == "0.00"
    assert format_cell(float("nan"), "p") == "" and format_cell(12345) == "12,345"


def test_an_unchanged_report_rebuilds_a_byte_identical_pdf(tmp_path):
    """Was: report.pdf changed on every build (fontTools stamps each font subset with the time)."""
    import time

    from cifar_lib.report.document import Document

    import os

    before = os.environ.get("SOURCE_DATE_EPOCH")
    doc = Document()
    doc.heading(1, "A title")
    doc.text("Some **bold** and *italic* words with `code`.")
    doc.artefact("table", pd.DataFrame({"variant": ["a"], "p": [0.0042], "resolved": [True]}), "A table.")
    first = doc.pdf(tmp_path / "a.pdf").read_bytes()
    time.sleep(1.1)
    assert doc.pdf(tmp_path / "b.pdf").read_bytes() == first
    assert os.environ.get("SOURCE_DATE_EPOCH") == before          # the environment is left as it was


def test_every_variant_of_a_sweep_section_can_be_cited_by_name(tmp_path):
    """Each variant's answer is a value the template can cite ({name}__{slug}): its effect
    with its interval, a failure as a failure, never a bare number."""
    from cifar_lib.report.sections import Filled, sweep
    from cifar_lib.report.sections.studies import effect_phrase, slug
    from cifar_lib.study.sweeps import CORE_STUDY

    records = [r for r in load_records(REPO / "results", profile="cpu")
               if r.get("tags", {}).get("sweep") == "core_study"]
    filled = Filled(tmp_path)
    sweep(filled, records, CORE_STUDY.group("regularisation"), "t", "reg")
    table = filled.paired["reg"]
    assert slug("crop + random flips + rotation") == "crop_random_flips_rotation"
    for variant, row in table.drop(CORE_STUDY.baseline).iterrows():
        said = filled.values[f"reg__{slug(variant)}"]
        assert said == effect_phrase(row)
        if row["failed"]:
            assert said.startswith("failed to train (")
        else:
            assert said.startswith(f"{row['diff']:+.2f} points ({row['low']:+.2f} to {row['high']:+.2f}")
            assert ("not resolved" in said) != bool(row["resolved"])
