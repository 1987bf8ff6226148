"""The paired analysis (study/paired.py): checked by hand on small layouts, against Cochran's
published critical values, and recomputed from the recipe study's own records."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cifar_lib.study.paired import cochran_p, holm, paired_table


def _runs(rows):
    frame = pd.DataFrame(rows, columns=["variant", "seed", "val_acc"])
    return frame.assign(machine="cpu A · bf16", device="cpu A", precision="bf16")


@pytest.mark.parametrize("k, df, critical", [(5, 3, 0.5981), (3, 3, 0.7977), (10, 1, 0.6020)])
def test_cochrans_c_matches_its_published_5_percent_critical_values(k, df, critical):
    rest = (1 - critical) / (k - 1)
    assert cochran_p([critical] + [rest] * (k - 1), df) == pytest.approx(0.05, abs=0.002)


def test_holm_is_the_step_down_adjustment():
    p = pd.Series({"a": 0.01, "b": 0.04, "c": 0.03, "d": np.nan})
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1, made monotone: 0.03, 0.06, 0.06
    assert holm(p).round(10).to_dict() == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": np.nan},
                                                         nan_ok=True)
    # over 4 declared comparisons, one not yet measured: 0.01, 0.03, 0.04 times 4, 3, 2
    assert holm(p, m=4).round(10).to_dict() == pytest.approx({"a": 0.04, "b": 0.09, "c": 0.09, "d": np.nan},
                                                             nan_ok=True)


def test_the_pool_is_the_paired_differences_own_variance_and_an_outlier_keeps_its_own():
    rng = np.random.default_rng(0)
    base = 85 + rng.normal(0, 0.1, 4)
    shifts = {"a": (1.0, 0.2), "b": (0.0, 0.25), "c": (-0.5, 0.2), "d": (0.3, 0.3), "noisy": (-2.0, 3.0)}
    rows = [("base", s, base[s]) for s in range(4)]
    diffs = {}
    for arm, (shift, sd) in shifts.items():
        d = shift + rng.normal(0, sd, 4)
        diffs[arm] = d
        rows += [(arm, s, base[s] + d[s]) for s in range(4)]
    table = paired_table(_runs(rows), "base", {"one": ["a", "b", "c"], "two": ["d", "noisy"]})
    assert table.attrs["screened"] == ["noisy"] and table.loc["noisy", "own_spread"]
    # family "one": the pool is the mean of its arms' variances (equal pairs), 9 df
    pool = np.mean([diffs[a].var(ddof=1) for a in "abc"])
    se = np.sqrt(pool / 4)
    half = stats.t.ppf(1 - 0.05 / (2 * 3), 9) * se
    assert table.loc["a", "diff"] == pytest.approx(diffs["a"].mean())
    assert table.loc["a", ["low", "high"]].tolist() == pytest.approx([diffs["a"].mean() - half,
                                                                      diffs["a"].mean() + half])
    assert table.attrs["pools"]["one"] == {"sd_diff": pytest.approx(np.sqrt(pool)), "df": 9,
                                           "arms": ["a", "b", "c"]}
    # the outlier: its own variance and 3 df; its family's pool is d's alone
    own = stats.t.ppf(1 - 0.05 / 4, 3) * diffs["noisy"].std(ddof=1) / 2
    assert table.loc["noisy", "high"] - table.loc["noisy", "diff"] == pytest.approx(own)
    assert table.attrs["pools"]["two"]["arms"] == ["d"]
    # Holm over the study's five comparisons, from the unadjusted p-values
    raw = {a: 2 * stats.t.sf(abs(table.loc[a, "diff"]) / table.loc[a, "se"], table.loc[a, "df"])
           for a in shifts}
    assert table["p_holm"].to_dict() == pytest.approx(holm(pd.Series(raw)).to_dict())


def test_the_recipe_studys_regularisation_family_recomputed_from_its_records():
    """Dropout 0.1 against `fast`, from the raw records: with dropout 0.2 screened out (its
    paired sd is out of line with every other arm's), its interval comes from its own
    family's pool, which is dropout 0.1's differences alone."""
    from cifar_lib.study.sweeps import RECIPE_STUDY
    from cifar_lib.study.tables import sweep_runs

    results = Path(__file__).resolve().parents[1] / "results"      # the study's own records
    records = [json.loads(p.read_text()) for p in (results / "cpu" / "recipe_study").glob("*.json")]
    acc = {(r["tags"]["variant"], r["seed"]): 100 * r["final"]["val_acc"]
           for r in records if r["status"] == "complete"}
    d = np.array([acc["dropout 0.1", s] - acc["fast", s] for s in range(4)])
    runs = sweep_runs(RECIPE_STUDY, "cpu", results)
    table = paired_table(runs, "fast", dict(RECIPE_STUDY.groups),
                         failure_below=RECIPE_STUDY.failure_below, spread_alpha=RECIPE_STUDY.spread_alpha)
    assert "dropout 0.2" in table.attrs["screened"]
    half = stats.t.ppf(1 - 0.05 / (2 * 3), 3) * d.std(ddof=1) / 2
    assert table.loc["dropout 0.1", "diff"] == pytest.approx(d.mean())
    assert table.loc["dropout 0.1", "high"] - table.loc["dropout 0.1", "diff"] == pytest.approx(half)
    assert table.loc["no batch norm", "failed"] == 4 and np.isnan(table.loc["no batch norm", "low"])


def test_the_recipe_study_keeps_its_declared_analysis_with_the_paired_one_beside_it():
    from cifar_lib.study.paired import beside_declared
    from cifar_lib.study.sweeps import RECIPE_STUDY
    from cifar_lib.study.tables import compare_sweep, sweep_runs

    runs = sweep_runs(RECIPE_STUDY, "cpu", Path(__file__).resolve().parents[1] / "results")
    table = beside_declared(RECIPE_STUDY, runs)
    declared = compare_sweep(RECIPE_STUDY.group("augmentation"), runs)
    assert table.loc["crop only", "declared_low"] == declared.loc["crop only", "low"]
    assert table.attrs["arms"] == 17                     # 18 declared, no batch norm failed
    assert table.attrs["agree"] == int((table["declared_resolved"] == table["paired_resolved"]).sum())
    tta = beside_declared(RECIPE_STUDY, runs, metric="val_acc_tta")
    assert tta.attrs["metric"] == "val_acc_tta" and (tta["diff"] != table["diff"]).any()


def test_the_transfer_table_sets_each_change_on_both_models_beside_each_other():
    """Two studies on two machines: ImprovedNet's paired effects and FastNet's contrasts
    (a variant against the base, or against another variant), their signs, rank
    correlation and the interaction, recomputed by hand."""
    from cifar_lib.study.sweeps import Sweep
    from cifar_lib.study.transfer import transfer_table

    rng = np.random.default_rng(3)
    big = {"base": 0.0, "no aug": -3.0, "no drop": 0.4, "lr x2": -1.0}
    rows = [(v, s, 80 + shift + rng.normal(0, 0.3)) for v, shift in big.items() for s in range(2)]
    improved = _runs(rows)
    small = {"fast": 0.0, "none": -3.5, "dropout 0.1": -1.5, "rates x2": -0.6}
    rows = [(v, s, 90 + shift + rng.normal(0, 0.2)) for v, shift in small.items() for s in range(4)]
    fast = _runs(rows).assign(machine="cpu B · bf16")
    study = Sweep(name="cw", base="seed_improved", seeds=(0, 1), variants={v: {} for v in big},
                  groups={"q": ["no aug", "no drop", "lr x2"]},
                  transfer={"no aug": {"variant": "none"},
                            "no drop": {"variant": "fast", "against": "dropout 0.1"},
                            "lr x2": {"variant": "rates x2"}})
    other = Sweep(name="recipe_study", base="fast", seeds=(0, 1, 2, 3), variants={v: {} for v in small})
    paired = paired_table(improved, "base", dict(study.groups))
    table = transfer_table(study, paired, {"recipe_study": fast}, {"recipe_study": other})
    acc = fast.set_index(["variant", "seed"])["val_acc"]
    d = np.array([acc["fast", s] - acc["dropout 0.1", s] for s in range(4)])
    assert table.loc["no drop", "fast"] == pytest.approx(d.mean())
    half = stats.t.ppf(1 - 0.05 / 6, 3) * d.std(ddof=1) / 2
    assert table.loc["no drop", "fast_high"] - table.loc["no drop", "fast"] == pytest.approx(half)
    assert table.loc["no aug", "improved"] == pytest.approx(paired.loc["no aug", "diff"])
    assert table.loc["no aug", "interaction"] == pytest.approx(
        table.loc["no aug", "improved"] - table.loc["no aug", "fast"])
    assert table.attrs["signs_agree"] == 3 and table.attrs["changes"] == 3
    assert table.attrs["spearman"] == pytest.approx(stats.spearmanr(table["improved"], table["fast"])[0])


def test_the_second_stage_is_owed_by_the_arms_the_first_left_open_and_only_by_them():
    from cifar_lib.study.paired import second_stage_owed
    from cifar_lib.study.sweeps import SWEEPS

    study = SWEEPS["coursework_study"]                  # stage 1: seeds 0-1; stage 2: seed 2
    first_family = next(iter(study.families.values()))
    # "no augmentation" moves every seed by -5 points (resolved); the rest by about nothing
    shift = {arm: (-5.0 if arm == "no augmentation" else 0.0) for arm in first_family}
    noise = {0: 0.1, 1: -0.1, 2: 0.05}
    rows = [(study.baseline, s, 80.0) for s in (0, 1)]
    rows += [(arm, s, 80.0 + shift[arm] + noise[s] * (i + 1)) for i, arm in enumerate(first_family)
             for s in (0, 1)]
    runs = _runs(rows)
    assert second_stage_owed(study, runs.iloc[:-1])            # the first stage not yet in
    assert second_stage_owed(study, runs)                      # five arms left open
    # a seed-2 run of the resolved arm and of the baseline does not settle what is owed
    topped = _runs(rows + [(study.baseline, 2, 80.0), ("no augmentation", 2, 75.0)])
    assert second_stage_owed(study, topped)
    open_arms = [a for a in first_family if a != "no augmentation"]
    done = _runs(rows + [(study.baseline, 2, 80.0)] + [(a, 2, 80.0 + noise[2]) for a in open_arms])
    assert not second_stage_owed(study, done)
    assert not second_stage_owed(dataclasses.replace(study, second_stage_seeds=()), runs)
