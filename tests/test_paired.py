"""The study's protocol in its tables: differences only between runs of the same seed on
the same device and precision, the paired spread pooled over a declared family, and
Bonferroni intervals that hold over the whole family at once."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cifar_lib.study.stats import budget_interaction, compare_to_base, detectable_difference
from cifar_lib.study.tables import describe_pairing, device_label, summarise_effects

XEON = {"type": "cpu", "cpu": "Intel(R) Xeon(R) Processor", "cpu_count": 2, "threads": 2,
        "name": "Intel(R) Xeon(R) Processor (2 cores)"}


def _runs(rows):
    """rows: (variant, seed, val_acc[, device, precision])."""
    full = [(*r, "cpu A", "bf16")[:5] if len(r) == 3 else r for r in rows]
    frame = pd.DataFrame(full, columns=["variant", "seed", "val_acc", "device", "precision"])
    return frame.assign(machine=frame["device"] + " · " + frame["precision"])


def _family(shifts, noise=0.2, seeds=4, rng=None, base_noise=0.3):
    """The base and one variant per shift, every seed, with a seed effect they share."""
    rng = rng or np.random.default_rng(0)
    seed_effect = rng.normal(0, base_noise, seeds)
    rows = [("base", s, 85 + seed_effect[s] + rng.normal(0, noise)) for s in range(seeds)]
    for name, shift in shifts.items():
        rows += [(name, s, 85 + shift + seed_effect[s] + rng.normal(0, noise)) for s in range(seeds)]
    return _runs(rows)


def test_a_balanced_family_gets_the_two_way_residual_and_bonferroni_intervals():
    runs = _family({"a": 1.0, "b": 0.0, "c": -0.5})
    table = compare_to_base(runs, "base", ["a", "b", "c"])
    # The textbook two-way layout, by hand: residual = y - row mean - column mean + grand mean.
    y = runs.pivot(index="variant", columns="seed", values="val_acc").loc[["base", "a", "b", "c"]].to_numpy()
    residual = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    df = (4 - 1) * (4 - 1)
    variance = (residual ** 2).sum() / df
    se = np.sqrt(2 * variance / 4)
    half = stats.t.ppf(1 - 0.05 / (2 * 3), df) * se
    diff_a = (y[1] - y[0]).mean()
    assert table.loc["a", "diff"] == pytest.approx(diff_a)
    assert table.loc["a", "low"] == pytest.approx(diff_a - half)
    assert table.loc["a", "high"] == pytest.approx(diff_a + half)
    assert table.attrs["standard_errors"]["a"] == {"se": pytest.approx(se), "df": df, "pooled_alone": False}
    assert table.attrs["comparisons"] == 3
    assert table.attrs["pooled_sd_diff"]["cpu A · bf16"] == pytest.approx(np.sqrt(2 * variance))
    assert table.loc["a", "resolved"]
    assert (table.drop("base")["resolved"] == (table.drop("base")["p"] < 0.05)).all()
    assert describe_pairing(table) == ("seeds 0–3 on one cpu A (bf16); 95% intervals, "
                                       "simultaneous over 3 comparisons")


def test_the_interval_labels_follow_alpha():
    table = compare_to_base(_family({"a": 1.0}), "base", ["a"], alpha=0.10)
    assert "90% intervals" in describe_pairing(table) and "95%" not in describe_pairing(table)


def test_the_family_is_what_was_declared_not_what_ran():
    runs = _family({"a": 1.0, "b": 0.0})
    two = compare_to_base(runs, "base", ["a", "b"])
    six = compare_to_base(runs, "base", ["a", "b", "c", "d", "e", "f"])
    assert six.loc["a", "diff"] == pytest.approx(two.loc["a", "diff"])
    assert (six.loc["a", "high"] - six.loc["a", "low"]) > (two.loc["a", "high"] - two.loc["a", "low"])
    assert six.loc["c", "runs"] == 0 and np.isnan(six.loc["c", "low"])
    assert "4 of the 6 declared variants have no runs yet" in summarise_effects(six)


def test_bonferroni_intervals_cover_every_effect_of_a_family_at_once():
    rng = np.random.default_rng(1)
    shifts = {"a": 0.0, "b": 0.5, "c": -0.3, "d": 0.0, "e": 1.0, "f": 0.2}
    misses = 0
    for _ in range(200):
        table = compare_to_base(_family(shifts, rng=rng), "base", list(shifts))
        misses += any(not table.loc[v, "low"] <= shift <= table.loc[v, "high"]
                      for v, shift in shifts.items())
    assert misses / 200 <= 0.05 + 0.03          # family-wise, not per interval


def test_the_planned_power_is_what_the_pooled_design_delivers():
    rng = np.random.default_rng(2)
    noise = 0.3 / np.sqrt(2)                 # a paired difference then has sd 0.30
    effect = detectable_difference(0.30, m=6, n=4)
    found = np.mean([compare_to_base(_family({"x": effect, **{f"z{i}": 0.0 for i in range(5)}},
                                             noise=noise, rng=rng), "base",
                                     ["x", *[f"z{i}" for i in range(5)]]).loc["x", "resolved"]
                     for _ in range(200)])
    assert 0.70 <= found <= 0.90
    assert 0.5 < effect < 0.65


def test_a_run_that_fails_to_train_is_a_failure_not_an_effect():
    runs = _family({"a": 1.0, "b": 0.0})
    collapsed = _runs([("dead", s, 10.0 + s) for s in range(4)])
    half = _runs([("shaky", 0, 10.0), *[("shaky", s, 85.5 + s / 50) for s in range(1, 4)]])
    table = compare_to_base(pd.concat([runs, collapsed, half]), "base", ["a", "b", "dead", "shaky"],
                            failure_below=0.5)
    alone = compare_to_base(runs, "base", ["a", "b", "dead", "shaky"])
    assert table.loc["dead", "failed"] == 4 and np.isnan(table.loc["dead", "diff"])
    assert not table.loc["dead", "resolved"]
    # the collapse changes nobody else's interval: it is not in the pool
    assert table.loc["a", "low"] == pytest.approx(alone.loc["a", "low"])
    assert table.loc["shaky", "failed"] == 1 and table.loc["shaky", "pairs"] == 3
    assert "Failed to train: dead (4 of 4 runs); shaky (1 of 4 runs)" in summarise_effects(table)
    assert {r["variant"] for r in table.attrs["failed_runs"]} == {"dead", "shaky"}
    # a table as printed says each failure in its row: as the effect when no pair is left,
    # beside the name when some seeds trained
    from cifar_lib.study.tables import readable
    shown = readable(table)
    dead = shown.loc["dead (4 of 4 runs failed)"]
    assert dead["diff"] == "failed" and dead["pairs"] == "" and "dead" not in shown.index
    assert shown.loc["shaky (1 of 4 runs failed)", "pairs"] == 3 and "shaky" not in shown.index


def test_a_variant_whose_spread_is_out_of_line_gets_its_own_interval_and_a_flag():
    rng = np.random.default_rng(3)
    runs = _family({"a": 0.5, "b": 0.0, "c": 0.0, "d": 0.0}, noise=0.1, seeds=6, rng=rng)
    wild = runs[runs["variant"] == "base"].assign(variant="wild")
    wild["val_acc"] += np.array([3.0, -3.0, 2.5, -2.0, 3.5, -3.5])
    table = compare_to_base(pd.concat([runs, wild]), "base", ["a", "b", "c", "d", "wild"])
    assert table.loc["wild", "own_spread"] and not table.loc["a", "own_spread"]
    diffs = wild["val_acc"].to_numpy() - runs.loc[runs["variant"] == "base", "val_acc"].to_numpy()
    half = stats.t.ppf(1 - 0.05 / (2 * 5), 5) * diffs.std(ddof=1) / np.sqrt(6)
    assert table.loc["wild", "high"] == pytest.approx(diffs.mean() + half)
    # and the pool is the rest's: the wild variant does not widen a's interval
    without = compare_to_base(runs, "base", ["a", "b", "c", "d", "wild"])
    assert table.loc["a", "high"] == pytest.approx(without.loc["a", "high"])


def test_a_notebook_shows_a_compared_table_as_a_paper_prints_it():
    from cifar_lib.study.tables import readable

    rng = np.random.default_rng(3)
    runs = _family({"a": 2.0, "b": 0.0}, noise=0.1, seeds=4, rng=rng)
    table = compare_to_base(runs, "base", ["a", "b"])
    shown = readable(table)
    # one machine: said once above the table, not in every row; no flag column without a flag
    assert "device" not in shown and "precision" not in shown and "own_spread" not in shown
    assert shown.loc["a", "resolved"] == "✓" and shown.loc["b", "resolved"] == ""
    assert shown.loc["a", "p"] == "< 0.0001" and shown.loc["base", "p"] == ""
    assert shown.loc["b", "p"] == f"{table.loc['b', 'p']:#.2g}"
    assert shown.loc["a", "diff"] == round(table.loc["a", "diff"], 2) and shown.loc["base", "diff"] == ""
    assert shown.loc["a", "pairs"] == 4 and shown.loc["base", "pairs"] == ""
    # c ran on another machine, with the base there: two machines, each row says where it ran
    other = runs[runs["variant"].isin(["base", "a"])].replace({"variant": {"a": "c"}}).assign(
        device="cpu B", machine="cpu B · bf16")
    both = compare_to_base(pd.concat([runs, other]), "base", ["a", "b", "c"])
    assert both.attrs["devices"] == ["cpu A", "cpu B"] and "device" in readable(both)


def test_an_exact_tie_rounds_to_the_even_digit_wherever_a_number_is_printed():
    from cifar_lib.report.document import format_cell
    from cifar_lib.report.sections.common import signed
    from cifar_lib.study.stats import fixed
    from cifar_lib.study.tables import readable

    # accuracies are multiples of 0.02 points, so a mean of paired differences often ends in
    # 5: −1.665 and −5.235 are ties, stored as floats just above and just below them
    runs = _runs([("base", 0, 89.12), ("base", 1, 89.10), ("a", 0, 87.46), ("a", 1, 87.43),
                  ("b", 0, 83.88), ("b", 1, 83.87)])
    table = compare_to_base(runs, "base", ["a", "b"])
    assert table.loc["a", "diff"] == pytest.approx(-1.665) and table.loc["b", "diff"] == pytest.approx(-5.235)
    shown = readable(table)
    assert (shown.loc["a", "diff"], shown.loc["b", "diff"]) == (-1.66, -5.24)
    assert (signed(table.loc["a", "diff"]), signed(table.loc["b", "diff"])) == ("−1.66", "−5.24")
    assert (format_cell(table.loc["a", "diff"]), format_cell(table.loc["b", "diff"])) == ("−1.66", "−5.24")
    # a tie as float32 accuracies deliver it (the 2-epoch dropout 0.1 effect's record value)
    assert fixed(-5.2349999547004415) == "-5.24" and fixed(-1.5100017189978985) == "-1.51"
    # away from a tie, the nearest value; no negative zero
    assert (fixed(0.126), fixed(0.134), fixed(-0.004), fixed(0.125, 1), fixed(3.0, plus=True)) == \
        ("0.13", "0.13", "0.00", "0.1", "+3.00")


def test_every_seed_moved_alike_resolves_nothing_but_counts_its_pairs():
    runs = _runs([("base", 0, 85.0), ("base", 1, 86.0), ("v", 0, 86.0), ("v", 1, 87.0)])
    table = compare_to_base(runs, "base", ["v"])
    assert table.loc["v", "pairs"] == 2 and table.loc["v", "diff"] == pytest.approx(1.0)
    assert np.isnan(table.loc["v", "low"]) and not table.loc["v", "resolved"]
    assert "Fewer than two" not in summarise_effects(table)


def test_runs_on_another_device_or_precision_are_never_paired():
    runs = _runs([("base", s, 85.0 + s / 10, "cpu A", "bf16") for s in range(3)] +
                 [("base", s, 80.0 + s / 10, "cpu B", "bf16") for s in range(3)] +
                 [("v", s, 86.0 + s / 10 + (s == 1) / 50, "cpu A", "bf16") for s in range(3)] +
                 [("w", s, 79.0 + s / 10 + (s == 1) / 50, "cpu B", "bf16") for s in range(3)] +
                 [("x", s, 90.0, "cpu A", "fp32") for s in range(3)])
    table = compare_to_base(runs, "base", ["v", "w", "x"])
    assert table.loc["v", "device"] == "cpu A" and table.loc["w", "device"] == "cpu B"
    assert table.loc["v", "diff"] == pytest.approx(1.0 + 0.02 / 3)
    assert table.loc["w", "diff"] == pytest.approx(-1.0 + 0.02 / 3)     # each on its own machine
    assert table.loc["x", "pairs"] == 0 and np.isnan(table.loc["x", "diff"])   # fp32: no base there
    assert "the device named in each row (cpu A or cpu B)" in describe_pairing(table)


def test_a_change_of_effect_with_budget_is_tested_with_both_intervals():
    short = compare_to_base(_family({"aug": 0.4, "drop": -5.0, "same": 1.0}, rng=np.random.default_rng(4)),
                            "base", ["aug", "drop", "same"])
    long = compare_to_base(_family({"none": -3.8, "d": -1.4, "s": 1.0}, rng=np.random.default_rng(5)),
                           "base", ["none", "d", "s"])
    table = budget_interaction(short, long, {"none": "aug", "d": "drop", "s": "same", "gone": "x"})
    assert list(table.index) == ["none", "d", "s"]
    assert table.loc["none", "change"] == pytest.approx(long.loc["none", "diff"] - short.loc["aug", "diff"])
    assert table.loc["none", "resolved"] and table.loc["d", "resolved"] and not table.loc["s", "resolved"]
    assert table.loc["s", "change_low"] < 0 < table.loc["s", "change_high"]
    assert table.attrs["comparisons"] == 4      # the declared changes, "gone" included
    wider = budget_interaction(short, long, {"none": "aug", "d": "drop", "s": "same"})
    assert wider.attrs["comparisons"] == 3
    assert (table["change_high"] - table["change_low"] > wider["change_high"] - wider["change_low"]).all()
    # the appendix's figure: one row per change, named (in bold where its change with budget
    # is resolved), on an axis that holds every interval
    from cifar_lib.study import plots

    fig = plots.budget_transfer(table)
    ax = fig.axes[0]
    labels = {t.get_text(): t.get_fontweight() for t in ax.get_yticklabels()}
    assert labels == {v: "bold" if table.loc[v, "resolved"] else "normal" for v in table.index}
    low, high = ax.get_xlim()
    assert low <= table["short_low"].min() and table["short_high"].max() <= high
    assert low <= table["long_low"].min() and table["long_high"].max() <= high


def test_a_variant_alone_on_its_machine_is_marked_in_the_budget_table():
    rng = np.random.default_rng(5)
    runs = _family({"a": -1.0, "b": 0.5, "c": 0.0}, noise=0.2, seeds=4, rng=rng)
    # b ran on another machine, with the base there: its pool there is its own spread
    other = runs[runs["variant"].isin(["base", "b"])].assign(device="cpu B", machine="cpu B · bf16")
    both = pd.concat([runs[runs["variant"] != "b"], other])
    long = compare_to_base(both, "base", ["a", "b", "c"])
    assert long.attrs["standard_errors"]["b"]["pooled_alone"] and not long.attrs["standard_errors"]["a"]["pooled_alone"]
    short = compare_to_base(runs, "base", ["a", "b", "c"])     # one machine: a pool of three
    table = budget_interaction(short, long, {"a": "a", "b": "b", "c": "c"})
    assert table.loc["b", "own_spread"] and not table.loc["a", "own_spread"]


def test_devices_are_named_as_prose_names_them():
    assert device_label(XEON) == "2-core Intel Xeon"
    assert device_label({"type": "cpu", "cpu": "AMD EPYC 7B13 64-Core Processor", "cpu_count": 2}) \
        == "2-core AMD EPYC 7B13"
    assert device_label({"type": "cuda", "name": "NVIDIA H200", "cpu": "x"}) == "NVIDIA H200"
    assert device_label({"type": "cpu", "cpu": "x86_64", "cpu_count": 2}) == "2-core CPU (model not recorded)"


def test_one_cpu_model_with_and_without_amx_is_two_devices(monkeypatch):
    import torch
    from cifar_lib import records

    xeon = "fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile".split()
    monkeypatch.setattr(records, "cpu_model", lambda: "Intel(R) Xeon(R) Processor")
    seen = {}
    for machine, flags in {"amx": xeon, "hidden amx": xeon[:-2], "old": ["sse2", "avx2"]}.items():
        monkeypatch.setattr(records, "cpu_flags", lambda flags=flags: set(flags))
        seen[machine] = records.device_info(torch.device("cpu"))
    assert len({d["name"] for d in seen.values()}) == 3       # pairing compares the names
    assert [device_label(d).split(" with ")[1] for d in seen.values()] == ["AMX", "AVX512-BF16", "AVX2"]
    assert records.matrix_units(set()) == "" and device_label(XEON) == "2-core Intel Xeon"


def test_budget_agreement_ranks_the_shared_variants_of_two_budgets():
    from cifar_lib.study.tables import budget_agreement

    cheap = pd.DataFrame({"diff": [np.nan, -1.0, 0.2, -0.5, 0.1]},
                         index=["base", "none", "flip", "noLS", "extra"])
    full = pd.DataFrame({"diff": [-3.0, 0.4, -0.2]}, index=["no augmentation", "random flips", "no ls"])
    table = budget_agreement(cheap, full, {"none": "no augmentation", "flip": "random flips",
                                           "noLS": "no ls", "missing": "nowhere"})
    assert list(table.index) == ["none", "flip", "noLS"]
    assert table.loc["none"].tolist() == [-1.0, -3.0]
    assert table.attrs["shared"] == 3 and table.attrs["spearman"] == 1.0     # the same order
    assert table.attrs["p"] == 2 / 6          # of 3! orderings, this one and its reverse


def test_every_recorded_variant_run_has_a_base_run_of_its_seed_on_its_device():
    """The committed records keep the protocol: each variant run of a sweep (outside
    results/archive/) has the baseline's run of the same sweep, profile, seed, device and
    precision, so no table has a variant it cannot pair."""
    from cifar_lib.study.sweeps import SWEEPS
    from cifar_lib.study.tables import load_records

    committed = Path(__file__).resolve().parent.parent / "results"
    records = [r for p in ("cpu", "full") for r in load_records(committed, profile=p)
               if r.get("tags", {}).get("sweep")]
    assert records, "no sweep records under results/"
    assert {r["tags"]["sweep"] for r in records} <= set(SWEEPS)

    def where(r):
        return r["tags"]["sweep"], r["profile"], r["seed"], r["device"]["name"], r["precision"]

    def is_base(r):
        return r["tags"]["variant"] == SWEEPS[r["tags"]["sweep"]].baseline

    bases = {where(r) for r in records if is_base(r)}
    unpaired = [(r["tags"]["variant"], *where(r)) for r in records if not is_base(r) and where(r) not in bases]
    assert not unpaired, unpaired


def test_one_seed_pair_is_summarised_as_a_difference_without_an_interval():
    """Was (D12): the table showed +1.2 and the sentence under it said that no variant had
    runs paired with the base yet."""
    runs = _runs([("base", 0, 85.0), ("a", 0, 86.2)])
    table = compare_to_base(runs, "base", ["a"])
    assert table.loc["a", "diff"] == pytest.approx(1.2) and np.isnan(table.loc["a", "low"])
    said = summarise_effects(table)
    assert "Too few seed pairs for an interval: a +1.20 (1 pair)." in said
    assert "No variant has runs paired" not in said
