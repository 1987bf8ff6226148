"""The study's protocol in its tables: differences only between runs of the same seed on
the same device and precision, t intervals on the per-seed differences, Holm across a table."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cifar_lib.study.tables import describe_pairing, device_label, holm_levels, paired_differences

XEON = {"type": "cpu", "cpu": "Intel(R) Xeon(R) Processor", "cpu_count": 2, "threads": 2,
        "name": "Intel(R) Xeon(R) Processor (2 cores)"}


def _runs(rows):
    """rows: (variant, seed, val_acc[, device, precision])."""
    full = [(*r, "cpu A", "bf16")[:5] if len(r) == 3 else r for r in rows]
    frame = pd.DataFrame(full, columns=["variant", "seed", "val_acc", "device", "precision"])
    return frame.assign(device_label=frame["device"])


def test_paired_difference_is_the_mean_per_seed_difference_with_a_t_interval():
    base = [85.0, 85.6, 84.8, 85.3]
    up = [86.1, 86.5, 86.0, 86.2]             # follows the base's seed effects closely
    runs = _runs([("base", s, a) for s, a in enumerate(base)] +
                 [("up", s, a) for s, a in enumerate(up)])
    table = paired_differences(runs, "base")
    diffs = np.subtract(up, base)
    half = stats.t.ppf(0.975, 3) * diffs.std(ddof=1) / 2         # one comparison: no Holm cost
    assert table.loc["up", "diff"] == round(diffs.mean(), 2)
    assert table.loc["up", "95% low"] == round(diffs.mean() - half, 2)
    assert table.loc["up", "95% high"] == round(diffs.mean() + half, 2)
    assert table.loc["up", "pairs"] == 4 and table.loc["up", "resolved"]
    # Welch's unpaired interval on the same numbers is wider: pairing removes the seed effect.
    welch = stats.ttest_ind(up, base, equal_var=False).confidence_interval()
    assert welch.high - welch.low > 2 * half


def test_runs_on_another_device_or_precision_are_never_paired():
    runs = _runs([("base", 0, 85.0), ("base", 1, 85.5),
                  ("v", 0, 86.0, "cpu A", "bf16"), ("v", 1, 90.0, "gpu B", "bf16"),
                  ("w", 0, 85.0, "cpu A", "fp32"), ("w", 1, 85.6, "cpu A", "bf16")])
    table = paired_differences(runs, "base")
    assert table.loc["v", "pairs"] == 1 and table.loc["v", "unpaired"] == 1
    assert table.loc["v", "diff"] == 1.0          # only seed 0: same device, same precision
    assert table.loc["w", "pairs"] == 1 and table.loc["w", "diff"] == 0.1
    # One pair gives no interval, and is never called resolved.
    assert np.isnan(table.loc["v", "95% low"]) and not table.loc["v", "resolved"]
    assert table.attrs["devices"] == ["cpu A", "gpu B"] and table.attrs["comparisons"] == 0
    with pytest.raises(KeyError, match="no val_acc for the base"):
        paired_differences(runs, "nope")


def test_holm_tests_the_smallest_p_hardest_and_stops_at_the_first_failure():
    # m = 3: thresholds 0.05/3, 0.05/2, 0.05/1 in order of p.
    rates = holm_levels([0.04, 0.001, 0.02])
    assert rates[1] == pytest.approx(0.05 / 3)           # smallest p
    assert rates[2] == pytest.approx(0.05 / 2)           # 0.02 < 0.025: rejected
    assert rates[0] == pytest.approx(0.05)               # 0.04 < 0.05: rejected
    # 0.03 fails its step (> 0.05/2): it and everything after keep that rate, unresolved,
    # although 0.034 alone would pass the next step's 0.05.
    rates = holm_levels([0.03, 0.034, 0.0001])
    assert rates.tolist() == pytest.approx([0.025, 0.025, 0.05 / 3])


def test_a_table_resolves_only_what_survives_holm_and_says_what_it_rests_on():
    rng = np.random.default_rng(0)
    base = 85 + rng.normal(0, 0.3, 4)
    rows = [("base", s, a) for s, a in enumerate(base)]
    shifts = {"big": 2.0, "none1": 0.0, "none2": 0.0, "none3": 0.0}
    for name, shift in shifts.items():
        rows += [(name, s, a + shift + rng.normal(0, 0.1)) for s, a in enumerate(base)]
    table = paired_differences(_runs(rows), "base", order=["base", *shifts])
    assert list(table.index) == ["base", *shifts]
    assert table.loc["big", "resolved"]
    for name in ("none1", "none2", "none3"):
        assert table.loc[name, "95% low"] < 0 < table.loc[name, "95% high"]
    # Resolved exactly when the adjusted p is under 5%.
    tested = table.drop("base")
    assert (tested["resolved"] == (tested["p_holm"] < 0.05)).all()
    assert table.attrs["comparisons"] == 4 and table.attrs["seeds"] == [0, 1, 2, 3]
    assert describe_pairing(table).startswith("seeds 0–3, each variant paired")
    assert "Holm-adjusted over 4 comparisons" in describe_pairing(table)


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


def test_a_table_measured_on_two_machines_pairs_each_row_on_its_own_and_says_where():
    runs = _runs([("base", s, 85.0 + s / 10, "cpu A", "bf16") for s in range(3)] +
                 [("base", s, 80.0 + s / 10, "cpu B", "bf16") for s in range(3)] +
                 [("v", s, 86.0 + s / 10, "cpu A", "bf16") for s in range(3)] +
                 [("w", s, 79.0 + s / 10 + (s == 1) / 100, "cpu B", "bf16") for s in range(3)])
    table = paired_differences(runs, "base")
    assert table.loc["v", "device"] == "cpu A" and table.loc["w", "device"] == "cpu B"
    assert table.loc["base", "device"] == "cpu A / cpu B" and table.loc["base", "seeds"] == 3 \
        and table.loc["base", "runs"] == 6
    assert table.loc["v", "diff"] == 1.0 and table.loc["w", "diff"] == -1.0   # each on its own machine
    assert table.loc["v", "pairs"] == table.loc["w", "pairs"] == 3
    assert "on the same device, named in each row (cpu A or cpu B; bf16)" in describe_pairing(table)
    # a table of v alone rests on machine A: the base's runs on B are not in its row
    alone = paired_differences(runs[runs["variant"] != "w"], "base")
    assert alone.loc["base", "device"] == "cpu A" and alone.loc["base", "runs"] == 3
    assert alone.loc["base", "mean"] == 85.1 and alone.attrs["devices"] == ["cpu A"]


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
