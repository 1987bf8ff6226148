"""FastNet's learning-rate curve as its sweep file declares it: a quadratic in log rate
through the paired effects, its vertex with a Fieller interval that holds its level, and
where training collapses on each side of x1."""
import numpy as np
import pandas as pd

from cifar_lib.study.curve import multipliers, quadratic_vertex, rate_curve, rate_curve_figure
from cifar_lib.study.sweeps import SWEEPS

CURVE = SWEEPS["fastnet_lr_curve"]
X = np.log2([0.25, 0.5, 0.71, 1, 1.41, 2, 4])


def _truth(x):
    return -0.6 * (x - 0.3) ** 2


def test_an_exact_quadratic_gives_back_its_vertex():
    vertex = quadratic_vertex(X, _truth(X) + 2.0, np.full(len(X), 2), var=0.1, df=6)
    assert np.isclose(vertex.x, 0.3) and vertex.low < 0.3 < vertex.high
    assert np.allclose(vertex.coefficients, (2.0 - 0.6 * 0.09, 0.36, -0.6))


def test_the_fieller_interval_covers_the_true_vertex_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    sd, pairs, df, covered, trials = 0.35, 2, 6, 0, 2000
    for _ in range(trials):
        y = _truth(X) + rng.normal(0, sd / np.sqrt(pairs), len(X))
        var = sd ** 2 * rng.chisquare(df) / df          # the pool's estimate, at its df
        v = quadratic_vertex(X, y, np.full(len(X), pairs), var=var, df=df)
        covered += v.x is None or v.low is None or v.low <= 0.3 <= v.high
    assert 0.93 <= covered / trials <= 0.97


def test_an_unresolved_curvature_gives_an_interval_without_bounds_and_a_flat_one_no_vertex():
    rng = np.random.default_rng(1)
    y = -0.01 * X ** 2 + rng.normal(0, 0.3, len(X))
    wide = quadratic_vertex(X, y, np.full(len(X), 2), var=0.5, df=6)
    assert wide.low is None and wide.high is None
    assert quadratic_vertex(X, 0.2 * X ** 2, np.full(len(X), 2), var=0.1, df=6).x is None


def _curve_runs(effects, rng):
    """Two seeds a multiplier (variant names from the sweep file), with a shared seed
    effect; an effect of None is a run that failed to train (10% accuracy)."""
    seed_effect = rng.normal(0, 0.3, 2)
    rows = [(v, s, 10.0 if e is None else 90 + e + seed_effect[s] + rng.normal(0, 0.1), "cpu A", "bf16")
            for v, e in effects.items() for s in (0, 1)]
    frame = pd.DataFrame(rows, columns=["variant", "seed", "val_acc", "device", "precision"])
    return frame.assign(machine=frame["device"] + " · " + frame["precision"])


def test_the_curve_reads_each_multiplier_from_its_config_and_finds_the_best_and_the_collapses():
    factor = multipliers(CURVE)
    assert np.allclose(sorted(factor), [0.25, 0.5, 0.71, 1, 1.41, 2, 4], atol=0.005)
    effects = {v: float(_truth(np.log2(m))) for v, m in factor.items()}
    effects["rates x0.25"] = -7.0          # trains, but loses more than 5 points
    effects["rates x4"] = None             # fails to train
    effects = {v: (e - effects["fast"] if e is not None else None) for v, e in effects.items()}
    curve = rate_curve(CURVE, _curve_runs(effects, np.random.default_rng(2)))
    assert list(curve.index) == sorted(factor.index, key=factor.get)
    assert curve.attrs["collapse_low"] == factor["rates x0.25"]
    assert curve.attrs["collapse_high"] == factor["rates x4"]
    assert curve.loc["fast", "diff"] == 0 and curve.loc["rates x4", "failed"] == 2
    # fitted on the five that did not collapse: the vertex near 2^0.3, inside its interval
    assert abs(np.log2(curve.attrs["best"]) - 0.3) < 0.1
    assert curve.attrs["best_low"] < curve.attrs["best"] < curve.attrs["best_high"]
    assert curve.attrs["df"] == 5        # six arms of two pairs, less the one that failed
    fig = rate_curve_figure(curve)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][0] == "×0.25"


def test_without_four_multipliers_that_trained_the_curve_has_no_vertex():
    effects = {"fast": 0.0, "rates x0.5": -0.5, "rates x2": -0.6, "rates x4": None}
    curve = rate_curve(CURVE, _curve_runs(effects, np.random.default_rng(3)))
    assert np.isnan(curve.attrs["best"]) and curve.attrs["collapse_high"] == curve.loc["rates x4", "multiplier"]
