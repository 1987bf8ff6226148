"""The report's answers for the coursework's own model: the coursework study's declared paired
analysis (its stage's 97.5% intervals), and the transfer from FastNet at 8 epochs, on the
committed recipe study's records beside ImprovedNet records made from a real one."""
import copy
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from cifar_lib.report.build import TEMPLATE, render
from cifar_lib.report.sections import Filled, coursework, transfer
from cifar_lib.report.sections.common import signed
from cifar_lib.study.sweeps import COURSEWORK_STUDY, RECIPE_STUDY, sweep_records
from cifar_lib.study.tables import load_records

REPO = Path(__file__).resolve().parent.parent
# validation accuracy (%) of each arm at seeds 0 and 1
ACCURACY = {"coursework recipe": (85.0, 85.4), "no augmentation": (80.0, 80.6),
            "no rotation": (85.4, 85.6), "no dropout": (85.3, 85.5), "no batch norm": (75.0, 76.0),
            "learning rate x2": (84.0, 84.6), "learning rate x0.5": (84.8, 85.0)}


def _improved_records():
    """One record per arm and seed, each a copy of the committed pilot record (an ImprovedNet
    run on this kind of machine) with the study's tags, seed and accuracy."""
    real = next(r for f in sorted((REPO / "results/cpu/coursework_pilot").glob("*.json"))
                if (r := json.loads(f.read_text()))["status"] == "complete")
    records = []
    for variant, accs in ACCURACY.items():
        for seed, acc in enumerate(accs):
            r = copy.deepcopy(real)
            r.update(id=f"coursework_study-cpu-seed{seed}-{len(records)}", config_name="coursework_study", seed=seed,
                     tags={"sweep": COURSEWORK_STUDY.name, "variant": variant,
                           "factor": COURSEWORK_STUDY.factors[variant]})
            r["final"]["val_acc"] = acc / 100
            records.append(r)
    return records


def _without_coursework(records):
    """The committed records less the coursework study's own (its runs are landing)."""
    return [r for r in records if r.get("tags", {}).get("sweep") != COURSEWORK_STUDY.name]


def _fast_contrast(records, variant, against):
    """FastNet's effect of a change, paired seed by seed on one machine, computed here."""
    runs = [r for r in records if r.get("tags", {}).get("sweep") == RECIPE_STUDY.name]
    acc = {(r["tags"]["variant"], r["seed"]): 100 * r["final"]["val_acc"] for r in runs}
    diffs = [acc[(variant, s)] - acc[(against, s)] for s in RECIPE_STUDY.seeds]
    return np.mean(diffs)


def test_the_coursework_model_is_answered_by_its_declared_analysis_and_set_beside_fastnet(tmp_path):
    improved = _improved_records()
    # the recipe study's records alone: FastNet's other sweeps (their runs are landing) stay out
    recipe = sweep_records(load_records(REPO / "results", profile="cpu", diverged=True), RECIPE_STUDY)
    filled = Filled(tmp_path)
    paired = coursework(filled, improved + recipe, COURSEWORK_STUDY)
    values = filled.values
    # each arm's effect is its mean paired difference, at the stage's level
    diff = np.mean(np.subtract(ACCURACY["no augmentation"], ACCURACY["coursework recipe"]))
    assert values["coursework__no_augmentation"].startswith(f"{signed(diff)} points (")
    assert values["coursework__no_augmentation__down"] == "yes"
    assert values["coursework_level"] == "97.5%" and values["coursework_runs"] == str(len(improved))
    table, caption = filled.tables["coursework"]
    assert list(table["change"]) == [v for v in COURSEWORK_STUDY.groups["the coursework's questions"]]
    assert "97.5%" in caption and (tmp_path / "coursework_sweep.png").is_file()
    # the transfer: FastNet's side computed here from the recipe study's records
    transfer(filled, improved + recipe, COURSEWORK_STUDY, paired)
    changes = {c: s for c, s in COURSEWORK_STUDY.transfer.items()
               if s.get("sweep", "recipe_study") == "recipe_study" and c in ACCURACY}
    same = sum(np.sign(np.mean(np.subtract(ACCURACY[c], ACCURACY["coursework recipe"])))
               == np.sign(_fast_contrast(recipe, s["variant"], s.get("against", RECIPE_STUDY.baseline)))
               for c, s in changes.items())
    assert values["transfer_signs"] == f"{same} of {len(changes)}"
    shown, caption = filled.tables["transfer"]
    assert [c for c in shown["change"] if c] == list(changes) and "97.5%" in caption
    # each change: ImprovedNet's effect, FastNet's, then their difference, which is resolved
    # exactly where its interval excludes 0
    assert len(shown) == 3 * len(changes) and list(shown["effect on"])[2::3] == ["difference"] * len(changes)
    assert (shown["resolved"] == "✓").tolist() == ((shown["low"] > 0) | (shown["high"] < 0)).tolist()
    assert (tmp_path / "transfer.png").is_file()


def test_while_the_study_runs_it_says_how_many_changes_have_both_seeds_and_waits_to_draw(tmp_path):
    """The recipe and one change with both seeds, a second change with one: both get an
    interval (one pair borrows the pool's spread), the count is said in words, and the forest
    plot waits for the first stage (a pool of one df would show only its width); with one
    pair in all there is no spread to pool, so no interval."""
    improved = _improved_records()
    recipe = _without_coursework(load_records(REPO / "results", profile="cpu", diverged=True))
    variant = lambda r: r["tags"]["variant"]
    landed = [r for r in improved if variant(r) in ("coursework recipe", "no augmentation")
              or (variant(r) == "no rotation" and r["seed"] == 0)]
    filled = Filled(tmp_path)
    paired = coursework(filled, landed + recipe, COURSEWORK_STUDY)
    assert paired.loc[["no augmentation", "no rotation"], "low"].notna().all()
    assert paired.loc["no rotation", "pairs"] == 1
    assert filled.values["coursework_in_progress"] == "yes" and "coursework_complete" not in filled.values
    assert (filled.values["coursework_done"], filled.values["coursework_questions"]) == ("one", "six")
    assert not (tmp_path / "coursework_sweep.png").exists() and "coursework" in filled.tables
    # the recipe and one change with one seed each: a table, no interval, so no figure
    filled = Filled(tmp_path / "one")
    alone = coursework(filled, [r for r in landed if r["seed"] == 0 and variant(r) != "no rotation"] + recipe,
                       COURSEWORK_STUDY)
    assert alone["low"].isna().all() and "coursework" in filled.tables and not (tmp_path / "one" / "coursework_sweep.png").exists()
    assert filled.values["coursework_done"] == "none"


def test_with_only_the_recipe_recorded_the_in_progress_sentences_wait_for_its_section(tmp_path):
    """The study's first state: the recipe's runs and no change yet. Every part that says the
    study is in progress renders, none points at its section (not yet written), and the
    pilot's paragraph waits for that section."""
    recipe_runs = [r for r in _improved_records() if r["tags"]["variant"] == "coursework recipe"]
    filled = Filled(tmp_path)
    coursework(filled, recipe_runs, COURSEWORK_STUDY)
    assert filled.values["coursework_in_progress"] == "yes" and "tab_coursework" not in filled.values
    filled.values["fast_epochs"] = "8"      # FastNet's side, as its own section fills it
    text = TEMPLATE.read_text()
    parts = [b for b in text.split("\n\n") if b.startswith(("[[if coursework_in_progress", "[[if coursework_pilot"))]
    parts += re.findall(r"\[\[if coursework_in_progress[\w ]*:.*?\]\]", text, flags=re.S)  # sentences
    assert len(parts) >= 6
    md = render("\n\n".join(parts), filled).markdown(tmp_path)
    assert "Section" not in md and "Without batch norm, ImprovedNet trains" not in md


def test_a_section_heading_appears_only_once_its_answers_exist(tmp_path):
    template = "[[if answer]] ### 3.9 A question\n\n[[if answer]] It is {answer}.\n\n## 4 Next"
    filled = Filled(tmp_path)
    assert "3.9" not in render(template, filled).markdown(tmp_path)
    filled.values["answer"] = "yes"
    md = render(template, filled).markdown(tmp_path)
    assert "### 3.9 A question" in md and "It is yes." in md


def test_without_a_record_of_the_coursework_study_the_report_says_nothing_of_it(tmp_path):
    filled = Filled(tmp_path)
    recipe = _without_coursework(load_records(REPO / "results", profile="cpu", diverged=True))
    assert coursework(filled, recipe, COURSEWORK_STUDY) is None
    transfer(filled, recipe, COURSEWORK_STUDY, None)
    assert not [k for k in filled.values if k.startswith(("coursework", "transfer_"))]


@pytest.mark.parametrize("stage_seeds, level", [((2,), "97.5%"), ((), "95%")])
def test_a_declared_second_stage_halves_each_looks_error_rate(stage_seeds, level):
    import dataclasses

    from cifar_lib.study.paired import stage_alpha
    from cifar_lib.study.stats import interval_label

    assert interval_label(stage_alpha(dataclasses.replace(COURSEWORK_STUDY, second_stage_seeds=stage_seeds))) == level


def test_notebook_04_shows_only_the_changes_that_have_paired_runs(tmp_path, monkeypatch, capsys):
    import IPython.display

    from cifar_lib.study.notebook import show_coursework_study

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    folder = tmp_path / "results" / "cpu" / COURSEWORK_STUDY.name
    folder.mkdir(parents=True)
    landed = [r for r in _improved_records() if r["tags"]["variant"] in ("coursework recipe", "no augmentation")]
    for r in landed[:2]:        # the base's two seeds, no change yet
        (folder / f"{r['id']}.json").write_text(json.dumps(r))
    table, carried = show_coursework_study("cpu", tmp_path / "results")
    assert "no change has a run paired with coursework recipe yet" in capsys.readouterr().out
    assert not shown and carried is None and (table["pairs"] == 0).all()
    for r in landed[2:]:        # no augmentation lands: its row alone is shown, its figure waits
        (folder / f"{r['id']}.json").write_text(json.dumps(r))
    table, carried = show_coursework_study("cpu", tmp_path / "results")
    assert list(shown[0].index) == ["no augmentation"] and shown[0].loc["no augmentation", "pairs"] == 2
    assert len(shown) == 1 and carried.empty     # no recipe-study records here: nothing to set beside
    assert "the forest plot waits until every question has all its seeds" in capsys.readouterr().out
    for r in _improved_records():   # every question with both seeds: the forest plot is drawn
        (folder / f"{r['id']}.json").write_text(json.dumps(r))
    shown.clear()
    show_coursework_study("cpu", tmp_path / "results")
    assert len(shown) == 2 and hasattr(shown[1], "savefig")


@pytest.mark.slow
def test_with_the_coursework_study_complete_the_report_leads_with_improvednet_within_its_limits(tmp_path):
    import shutil

    from cifar_lib.report.build import build_report
    from test_paper import check_paper
    from test_settings_report import _curve_records, _without_bn_records

    results = tmp_path / "results"
    curve, records = _curve_records(np.random.default_rng(0))      # FastNet's curve, too
    without_bn, _, _, without_bn_records = _without_bn_records()  # and its arm without batch norm
    # the committed records less the studies made up here (their real runs are landing)
    shutil.copytree(REPO / "results", results,
                    ignore=shutil.ignore_patterns(COURSEWORK_STUDY.name, curve.name, without_bn.name))
    for sweep, made_up in ((COURSEWORK_STUDY, _improved_records()), (curve, records),
                           (without_bn, without_bn_records)):
        (results / "cpu" / sweep.name).mkdir()
        for r in made_up:
            (results / "cpu" / sweep.name / f"{r['id']}.json").write_text(json.dumps(r))
    md = build_report(results, tmp_path / "figures", tmp_path / "report").read_text()
    check_paper(md, tmp_path / "report" / "report.pdf")
    assert md.startswith("# Intermediate-block CNNs on CIFAR-10: the coursework's questions asked of its own model")
    abstract = md.split("## Abstract", 1)[1].split("\n## ", 1)[0]
    assert "We ask them of it, at the coursework's recipe and 50 epochs, and of FastNet" in abstract
    assert "learning-rate curve peaks at ×" in abstract and "Without batch norm, FastNet gives" in abstract
    # each question answered in words from the study's table: a resolved loss without a
    # component says it helps, with its effect; the unresolved ones are said together
    rows = md.split("ImprovedNet at 50 epochs: each change's", 1)[1].split("\n\n", 2)[1].splitlines()[2:]
    table = {row.split("|")[1].strip(): row.split("|") for row in rows}
    conclusion = md.split("## 6 Conclusion", 1)[1].split("\n## ", 1)[0]
    said, unresolved = [], []
    for change, thing in (("no augmentation", "augmentation"), ("no rotation", "rotation"),
                          ("no dropout", "dropout"), ("no batch norm", "batch norm")):
        cells = table[change]
        if cells[8].strip() != "✓":
            unresolved.append(thing)
        elif cells[4].strip().startswith("−"):
            said.append(f"{thing} helps (without it: {cells[4].strip()} points)")
        else:
            said.append(f"{thing} hurts (without it: +{cells[4].strip()} points)")
    # the made-up accuracies leave two of the four removals unresolved, said together
    assert len(unresolved) == 2
    said.append(f"{unresolved[0]}, {unresolved[1]}")
    for text in (abstract, conclusion):
        assert all(s in text for s in said), (said, text)
    # what carried over is said once, from resolved effects only
    assert sum(s in conclusion for s in ("answered for the long one", "not how much it matters",
                                         "do not stand in for")) == 1


def test_the_cost_table_gives_each_study_its_own_rows_and_projection(tmp_path):
    from cifar_lib.report.sections import study_cost
    from cifar_lib.study.tables import runs_frame

    improved = _improved_records()[:-3]                     # three runs still to go
    recipe = _without_coursework(load_records(REPO / "results", profile="cpu", diverged=True))
    filled = Filled(tmp_path)
    study_cost(filled, runs_frame(improved + recipe), {"cost": RECIPE_STUDY, "coursework_cost": COURSEWORK_STUDY})
    table, caption = filled.tables["study_cost"]
    assert list(table["study"]) == ["recipe study", "coursework study"]
    row = table.set_index("study").loc["coursework study"]
    minutes = [r["wall_seconds"] / 60 for r in improved]
    # the projection is over the required runs: the optional arms run only if the cap allows
    required = len(COURSEWORK_STUDY.required_runs())
    assert required < COURSEWORK_STUDY.planned_runs
    assert row["runs"] == len(improved) and row["required"] == required
    projected = (sum(minutes) + (required - len(improved)) * np.median(minutes)) / 60
    assert row["all required, hours"] == f"{projected:.1f}"
    assert filled.values.get("coursework_cost_cap") == (f"{COURSEWORK_STUDY.cap_hours:g}"
                                                        if projected > COURSEWORK_STUDY.cap_hours else None)
    # a projection past the study's cap is said with the cap; a cap the recorded runs have
    # already spent, with runs still to go, is said as spent
    recorded = sum(minutes) / 60
    for cap, spent in ((round((recorded + projected) / 2, 4), False), (round(recorded / 2, 4), True)):
        filled = Filled(tmp_path)
        study_cost(filled, runs_frame(improved), {"coursework_cost": dataclasses.replace(COURSEWORK_STUDY, cap_hours=cap)})
        assert filled.values["coursework_cost_cap"] == f"{cap:g}"
        assert ("coursework_cost_cap_reached" in filled.values) == spent
    assert filled.values["coursework_cost_one_thread"] == "yes" and "cost_projected" not in filled.values


def test_sections_are_numbered_as_shown_so_a_section_held_back_leaves_no_gap(tmp_path):
    template = ("## {#intro} Introduction\n\nSee Section {sec_b}.\n\n## {#results} Results\n\n"
                "[[if answer]] ### {#a} First\n\n### {#b} Second\n\n## References")
    filled = Filled(tmp_path)
    md = render(template, filled).markdown(tmp_path)
    assert "## 2 Results" in md and "### 2.1 Second" in md and "See Section 2.1." in md
    filled.values["answer"] = "yes"
    md = render(template, filled).markdown(tmp_path)
    assert "### 2.1 First" in md and "### 2.2 Second" in md and "See Section 2.2." in md
    assert "## References" in md


@pytest.mark.parametrize("open_, said", [
    (["no rotation"], "augmentation helps (without it: −4.00 points); rotation makes no resolved difference"),
    (["no rotation", "no dropout", "learning rate x0.5"],
     "augmentation helps (without it: −4.00 points); rotation, dropout and halving the learning rate "
     "make no resolved difference")])
def test_the_unresolved_answers_are_said_together_after_the_resolved_ones(open_, said):
    """Each question's verdict from its interval: a resolved loss without a component says it
    helps; the unresolved ones are one clause, its verb agreeing with how many there are;
    a change with no interval yet is not said."""
    import pandas as pd

    from cifar_lib.report.sections.coursework import answers
    from cifar_lib.report.sections.studies import verdict

    family = COURSEWORK_STUDY.families["the coursework's questions"]
    rows = {c: dict(failed=0, diff=0.3, low=-1.0, high=1.6, resolved=False) if c in open_
            else dict(failed=0, diff=np.nan, low=np.nan, high=np.nan, resolved=False) for c in family}
    rows["no augmentation"] = dict(failed=0, diff=-4.0, low=-5.0, high=-3.0, resolved=True)
    paired = pd.DataFrame(rows).T
    assert answers({c: verdict(paired.loc[c]) for c in family}, paired) == said
