"""The settings the studies chose by measuring, as the report says them: each recorded pilot
under its declared rule (on the committed pilot's records), and FastNet's learning-rate
curve on records made from a real `fast` run."""
import copy
import re
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from cifar_lib.report.build import TEMPLATE, render
from cifar_lib.report.sections import Filled, learning_rate_curve, pilot
from cifar_lib.report.sections.common import signed
from cifar_lib.study.curve import multipliers
from cifar_lib.study.sweeps import SWEEPS

REPO = Path(__file__).resolve().parent.parent


def _committed(folder):
    return [json.loads(f.read_text()) for f in sorted((REPO / "results/cpu" / folder).glob("*.json"))]


def test_a_pilot_is_said_setting_by_setting_with_the_one_its_rule_chose(tmp_path):
    records = _committed("coursework_pilot")
    sweep = SWEEPS["coursework_pilot"]
    acc = {r["tags"]["variant"]: r["final"]["val_acc"] if r["status"] == "complete" else None for r in records}
    best = max((v for v in acc if acc[v] is not None and acc[v] >= sweep.failure_below), key=acc.get)
    filled = Filled(tmp_path)
    pilot(filled, records, sweep, "coursework_pilot")
    said = filled.values["coursework_pilot"]
    for variant, a in acc.items():
        rate = variant.split("rate ")[1].replace("x", "×")
        shown = ("diverged" if a is None else f"{100 * a:.2f}%, failed to train" if a < sweep.failure_below
                 else f"{100 * a:.2f}%")
        assert f"rate {rate}: {shown}" in said
    assert said.count("(chosen)") == 1 and filled.values["coursework_pilot_chosen"] == best
    assert filled.values["coursework_pilot_budget"] == "8 epochs, one seed"
    # a setting that has not run yet: nothing is said, and nothing is chosen
    filled = Filled(tmp_path)
    pilot(filled, records[:1], sweep, "coursework_pilot")
    assert "coursework_pilot" not in filled.values


def test_a_pilot_whose_every_setting_failed_says_so_once(tmp_path):
    """FastNet's first batch-norm pilot: all four settings failed to train (its records)."""
    records = _committed("fastnet_bn_pilot")
    sweep = SWEEPS["fastnet_bn_pilot"]
    assert len(records) == len(sweep.variants) == 4
    filled = Filled(tmp_path)
    pilot(filled, records, sweep, "fast_bn_pilot")
    said = filled.values["fast_bn_pilot"]
    assert said.startswith("all four settings failed to train (") and said.count("failed") == 1
    for r in records:
        setting = r["tags"]["variant"].removeprefix("gain and shift, ")
        shown = f"{100 * r['final']['val_acc']:.2f}%" if r["status"] == "complete" else "diverged"
        assert f"{setting}: {shown}" in said
    assert "diverged" in said and "fast_bn_pilot_chosen" not in filled.values


def _curve_records(rng):
    """Two seeds a multiplier of fastnet_lr_curve, each a copy of a committed `fast` run:
    accuracy on a quadratic in log rate peaking at 2^0.3, x4 failing to train."""
    sweep = SWEEPS["fastnet_lr_curve"]
    real = next(r for r in _committed("recipe_study") if r["tags"]["variant"] == "fast")
    records = []
    for variant, m in multipliers(sweep).items():
        for seed in sweep.seeds:
            r = copy.deepcopy(real)
            acc = 0.10 if m > 3 else 0.90 - 0.006 * (np.log2(m) - 0.3) ** 2 + rng.normal(0, 0.003)
            r.update(id=f"{sweep.name}-cpu-seed{seed}-{len(records)}", config_name=sweep.name, seed=seed,
                     tags={"sweep": sweep.name, "variant": variant, "factor": sweep.factors[variant]})
            r["final"]["val_acc"] = float(acc)
            records.append(r)
    return sweep, records


def test_the_learning_rate_curve_gives_its_best_multiplier_and_where_it_collapses(tmp_path):
    sweep, records = _curve_records(np.random.default_rng(0))
    filled = Filled(tmp_path)
    learning_rate_curve(filled, records, sweep)
    values = filled.values
    assert values["lr_curve_points"] == "7" and values["lr_curve_lowest"] == "×0.25"
    assert abs(np.log2(float(values["lr_curve_best"].lstrip("×"))) - 0.3) < 0.25
    low, high = (float(x) for x in re.findall(r"×([\d.]+)", values["lr_curve_interval"]))
    assert low < 2 ** 0.3 < high
    assert values["lr_curve_collapse"] == "at ×4"
    assert (tmp_path / "lr_curve.png").is_file()
    paragraph = next(b for b in TEMPLATE.read_text().split("\n\n") if b.startswith("[[if lr_curve_points"))
    md = render(paragraph + "\n\n[[figure lr_curve]]", filled).markdown(tmp_path)
    assert f"puts the best multiplier at {values['lr_curve_best']}" in md


def test_until_every_multiplier_has_its_seeds_the_curve_says_how_far_along_it_is(tmp_path):
    """A partial curve (a pair at some multipliers, none at others) is not fitted or drawn:
    the declared fit rests on every multiplier's seeds."""
    sweep, records = _curve_records(np.random.default_rng(0))
    landed = records[:5]            # x1's two seeds, x0.25's two, one of x0.5's
    filled = Filled(tmp_path)
    learning_rate_curve(filled, landed, sweep)
    assert (filled.values["lr_curve_runs"], filled.values["lr_curve_planned"]) == ("5", str(len(records)))
    assert (filled.values["lr_curve_lowest"], filled.values["lr_curve_highest"]) == ("×0.25", "×4")
    assert "lr_curve_points" not in filled.values and not filled.figures
    paragraph = next(b for b in TEMPLATE.read_text().split("\n\n") if b.startswith("[[if lr_curve_runs"))
    md = render(paragraph, filled).markdown(tmp_path)
    assert "seven multipliers from ×0.25 to ×4 with two seeds each, is incomplete (5 of 14 runs recorded)" in md


def test_without_its_records_the_report_says_nothing_of_the_curve_or_the_pilots(tmp_path):
    filled = Filled(tmp_path)
    learning_rate_curve(filled, _committed("coursework_pilot"), SWEEPS["fastnet_lr_curve"])
    pilot(filled, [], SWEEPS["fastnet_bn_pilot"], "fast_bn_pilot")
    assert not filled.values and not filled.figures


def test_notebooks_show_a_pilot_and_the_curve_from_the_records_under_results(tmp_path, monkeypatch, capsys):
    import IPython.display

    from cifar_lib.study.notebook import show_pilot, show_rate_curve

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    assert show_rate_curve("cpu", tmp_path) is None and show_pilot("fastnet_bn_pilot", "cpu", tmp_path) is None
    out = capsys.readouterr().out
    assert "python -m cifar_lib sweep fastnet_lr_curve --profile cpu" in out and "runs the pilot" in out
    table = show_pilot("coursework_pilot", "cpu", REPO / "results")
    assert table["chosen"].sum() == 1 and shown[-1].index.tolist() == list(SWEEPS["coursework_pilot"].variants)
    sweep, records = _curve_records(np.random.default_rng(0))
    folder = tmp_path / "cpu" / sweep.name
    folder.mkdir(parents=True)
    for r in records:
        (folder / f"{r['id']}.json").write_text(json.dumps(r))
    for r in records[2:]:           # x1's two seeds alone: the fit waits, saying how far along
        (folder / f"{r['id']}.json").unlink()
    assert show_rate_curve("cpu", tmp_path) is None
    assert "2 of the 14 planned runs" in capsys.readouterr().out
    for r in records:
        (folder / f"{r['id']}.json").write_text(json.dumps(r))
    curve = show_rate_curve("cpu", tmp_path)
    assert len(curve) == 7 and curve.attrs["collapse_high"] == curve.loc["rates x4", "multiplier"]
    assert "best multiplier" in capsys.readouterr().out and len(shown[-1].axes) == 1


def _without_bn_records():
    """fastnet_without_bn as declared (one comparison, no families), every seed of both
    variants a copy of a committed `fast` run with a chosen accuracy."""
    sweep = SWEEPS["fastnet_without_bn"]
    arm = "no batch norm, best settings"
    real = next(r for r in _committed("recipe_study") if r["tags"]["variant"] == "fast")
    accuracy = {"fast": [89.1, 89.3, 88.9, 89.2], arm: [87.0, 87.6, 86.5, 87.4]}
    records = []
    for variant, accs in accuracy.items():
        for seed, acc in enumerate(accs):
            r = copy.deepcopy(real)
            r.update(id=f"{sweep.name}-{variant}-{seed}", config_name=sweep.name, seed=seed,
                     tags={"sweep": sweep.name, "variant": variant})
            r["final"]["val_acc"] = acc / 100
            records.append(r)
    return sweep, arm, accuracy, records


def test_notebook_3_shows_the_arm_without_batch_norm_once_every_seed_has_run(tmp_path, monkeypatch, capsys):
    import IPython.display

    from cifar_lib.study.notebook import show_paired_arm

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    sweep, arm, accuracy, records = _without_bn_records()
    folder = tmp_path / "cpu" / sweep.name
    folder.mkdir(parents=True)
    for r in records[:-1]:
        (folder / f"{r['id']}.json").write_text(json.dumps(r))
    assert show_paired_arm(sweep.name, "cpu", tmp_path) is None and not shown
    assert "7 of the 8 planned runs are recorded" in capsys.readouterr().out
    (folder / f"{records[-1]['id']}.json").write_text(json.dumps(records[-1]))
    table = show_paired_arm(sweep.name, "cpu", tmp_path)
    diffs = np.subtract(accuracy[arm], accuracy["fast"])
    assert table.loc[arm, "diff"] == pytest.approx(diffs.mean()) and table.loc[arm, "pairs"] == 4
    assert shown[-1].loc[arm, "val %"] == pytest.approx(np.mean(accuracy[arm]), abs=0.005)   # shown rounded


def test_fastnet_without_batch_norm_is_said_against_fast_once_every_seed_has_run(tmp_path):
    from cifar_lib.report.sections import without_batch_norm

    sweep, arm, accuracy, records = _without_bn_records()
    filled = Filled(tmp_path)
    without_batch_norm(filled, records[:-1], sweep)            # a seed still to run: only how far along
    assert filled.values == {"fast_without_bn_runs": "seven", "fast_without_bn_planned": "eight"}
    without_batch_norm(filled, records, sweep)
    diffs = np.subtract(accuracy[arm], accuracy["fast"])
    half = stats.t.ppf(0.975, 3) * diffs.std(ddof=1) / 2       # one arm: its own spread, 3 df
    assert filled.values["fast_without_bn"] == (f"{signed(diffs.mean())} points ({signed(diffs.mean() - half)} "
                                                f"to {signed(diffs.mean() + half)})")
    assert filled.values["fast_without_bn_acc"].startswith(f"{np.mean(accuracy[arm]):.2f} ± ")
    assert filled.values["fast_without_bn_seeds"] == "seeds 0–3"
    # an arm that fails to train is said as a failure, never in the sentences that say it trains
    for r in records:
        if r["tags"]["variant"] == arm and r["seed"] == 0:
            r["final"]["val_acc"] = 0.10
    filled = Filled(tmp_path)
    without_batch_norm(filled, records, sweep)
    assert filled.values == {"fast_without_bn_failed": "failed to train in 1 of 4 runs"}
