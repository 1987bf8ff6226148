"""Experiments as data: reuse of finished runs, sweeps, tables and the generated report."""
import dataclasses
import json
from pathlib import Path

import pytest
import numpy as np
import pandas as pd

from cifar_lib.cli import main
from cifar_lib.config import ConfigError, load_config
from cifar_lib.study.reuse import find_record, run_or_load
from cifar_lib.study.notebook import notebook_profile, show_recorded_sweep
from cifar_lib.study.runner import Sweep, run_sweep
from cifar_lib.study.sweeps import load_sweep
from cifar_lib.study.stats import compare_to_base
from cifar_lib.study.tables import budget_curve, load_records, mean_std, runs_frame, seed_summary
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
    assert sweep.planned_runs == 6
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


def test_conditional_paragraphs_follow_the_values_the_records_gave(tmp_path):
    from cifar_lib.report.build import Filled, render

    filled = Filled(tmp_path)
    filled.values["measured"] = "88.1%"
    doc = render("[[if measured]] Got {measured}.\n\n[[unless measured]] Not measured.\n\n"
                 "[[if other]] Got {other}.\n\n[[unless other]] No other yet.", filled)
    assert [text for kind, text in doc.parts] == ["Got 88.1%.", "No other yet."]
    # several keys: the paragraph needs every one of them
    filled.values["other"] = "1"
    doc = render("[[if measured other]] Both.\n\n[[if measured missing]] Not both.\n\n"
                 "[[unless measured missing]] One is missing.", filled)
    assert [text for kind, text in doc.parts] == ["Both.", "One is missing."]
    # a sentence inside a paragraph, on the same rule; a paragraph left empty is dropped
    doc = render("Start. [[if measured other:\nBoth: {measured}.]] [[if missing: Gone {missing}.]]\n"
                 "[[unless missing: No such key.]] End.\n\n[[if missing: Only this.]]", filled)
    assert [text for kind, text in doc.parts] == ["Start. Both: 88.1%. No such key. End."]
    # a clause left out leaves no space before the full stop
    doc = render("At 0.1 [[if measured: and at {measured}]]. At 0.2 [[if missing: and more]].", filled)
    assert [text for kind, text in doc.parts] == ["At 0.1 and at 88.1%. At 0.2."]


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


def test_table_cells_read_as_a_paper_prints_them():
    from cifar_lib.report.document import format_cell

    assert (format_cell(True), format_cell(False), format_cell(np.bool_(True))) == ("✓", "", "✓")
    assert format_cell(0.0042, "p (adjusted)") == "0.0042" and format_cell(0.31234, "p") == "0.31"
    assert format_cell(0.0100, "p") == "0.010" and format_cell(1.0, "p (Holm)") == "1.0"   # two figures, zeros kept
    assert format_cell(3e-7, "p") == "< 0.0001" and format_cell(0.0042, "diff") == "0.00"
    assert format_cell(-3.333, "effect") == "−3.33"           # a minus sign, not a hyphen
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




def test_the_appendices_start_on_a_page_of_their_own(tmp_path):
    import pypdfium2 as pdfium

    from cifar_lib.report.document import Document, paper_shape

    doc = Document()
    doc.heading(2, "Abstract")
    doc.text("A short paper.")
    doc.heading(2, "References")
    for name in ("Appendix A: one", "Appendix B: two"):
        doc.heading(2, name)
        doc.text("More.")
    pdf = doc.pdf(tmp_path / "paper.pdf")
    pages = [p.get_textpage().get_text_range() for p in pdfium.PdfDocument(str(pdf))]
    # the first appendix opens page 2; the second follows it on the same page
    assert len(pages) == 2 and "Appendix A" in pages[1] and "Appendix B" in pages[1]
    assert paper_shape(doc.markdown(tmp_path), pdf)["pages"] == 1


def test_a_long_table_at_a_page_foot_goes_on_over_the_break_and_a_short_one_moves_whole(tmp_path):
    """Was: every table kept whole, so a long one at a page's foot left a fifth of it empty."""
    import pypdfium2 as pdfium

    from cifar_lib.report.document import LONG_TABLE_ROWS, Document

    def laid_out(rows: int) -> list[str]:
        doc = Document()
        for _ in range(7):                  # text to about a page's last fifth
            doc.text("filler " * 90)
        frame = pd.DataFrame({"machine name": [f"row{i:02d}" for i in range(rows)], "x": range(rows)})
        doc.artefact("table", frame, "A table.")
        pdf = doc.pdf(tmp_path / f"{rows}.pdf")
        return [p.get_textpage().get_text_range() for p in pdfium.PdfDocument(str(pdf))]

    long = laid_out(3 * LONG_TABLE_ROWS)
    assert len(long) == 2 and "A table." in long[0] and "row00" in long[0]   # starts on page 1
    assert "row29" in long[1] and "machine name" in long[1]                  # header repeated
    short = laid_out(LONG_TABLE_ROWS)                   # it would fit on page 2's top, whole
    assert len(short) == 2 and "row00" not in short[0] and "A table." in short[1] and "row09" in short[1]


@pytest.mark.slow
def test_a_sweep_worker_that_was_stopped_or_lost_its_sweep_starts_no_queued_run(tmp_path, monkeypatch):
    """The pool hands each worker runs ahead of time: after a signal stopped one of its
    runs, or once the sweep's process is gone, a worker must not train them unwatched."""
    import os

    from cifar_lib.study import runner
    from cifar_lib.train import TrainingInterrupted

    sweep, kw = _tiny_sweep(), {"results_dir": tmp_path / "r", "checkpoint_dir": tmp_path / "c"}
    worker = {"device": None, "data": tiny_dataset(), "parent": os.getppid()}
    monkeypatch.setattr(runner, "_WORKER", worker)
    # a healthy worker trains its run: a record lands
    assert runner._worker_run(sweep, "cpu", "none", 0, kw, False)["status"] == "complete"
    assert len(list((tmp_path / "r").rglob("*.json"))) == 1
    # orphaned (its parent is not the sweep that started it): nothing more trains
    worker["parent"] = -1
    assert runner._worker_run(sweep, "cpu", "none", 1, kw, False) is None
    worker["parent"] = os.getppid()
    # a run stopped by a signal marks the worker stopped, and its queued runs start nothing
    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("SIGTERM at step 3")
    with monkeypatch.context() as m:
        m.setattr(runner, "_run", interrupted)
        with pytest.raises(TrainingInterrupted):
            runner._worker_run(sweep, "cpu", "flip", 0, kw, False)
    assert worker["stopped"] and runner._worker_run(sweep, "cpu", "flip", 1, kw, False) is None
    assert len(list((tmp_path / "r").rglob("*.json"))) == 1
