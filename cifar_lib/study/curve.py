"""FastNet's learning-rate curve (configs/sweeps/fastnet_lr_curve.toml), analysed as its file
declares: each multiplier's paired effect against x1 (paired.declared_table), a quadratic
in log2(multiplier) fitted to those effects weighted by their pairs, its vertex as the best
multiplier with a Fieller interval, and where training collapses on either side.

Why Fieller: the vertex -b / 2c is a ratio of two fitted coefficients, and a ratio's
normal approximation fails exactly when the curvature c is poorly known; Fieller's interval
inverts the t test of b + 2c*x = 0 instead, so it comes out wide (or unbounded) then.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from .paired import declared_table
from .stats import ALPHA

COLLAPSE_POINTS = 5.0       # a multiplier losing more than this (or failing) has collapsed


@dataclass(frozen=True)
class Vertex:
    """A fitted quadratic's maximum in x = log2(multiplier), with its interval (None: unbounded)."""
    x: float | None                 # None: the fit is not concave, so it has no maximum
    low: float | None
    high: float | None
    coefficients: tuple[float, float, float]      # a + b x + c x^2


def quadratic_vertex(x, y, weights, var: float, df: int, alpha: float = ALPHA) -> Vertex:
    """Weighted least squares of y on (1, x, x^2), each point's variance `var / weight`;
    the vertex -b / 2c and its 1 - alpha Fieller interval with t at `df` degrees of freedom."""
    x, y, w = (np.asarray(v, float) for v in (x, y, weights))
    design = np.column_stack([np.ones_like(x), x, x ** 2])
    information = design.T @ (w[:, None] * design)
    cov = var * np.linalg.inv(information)
    a, b, c = np.linalg.solve(information, design.T @ (w * y))
    if c >= 0:
        return Vertex(None, None, None, (a, b, c))
    t2 = stats.t.ppf(1 - alpha / 2, df) ** 2
    # every x where |b + 2c x| is within t standard errors: A x^2 + B x + C <= 0
    A = 4 * c * c - 4 * t2 * cov[2, 2]
    B = 4 * b * c - 4 * t2 * cov[1, 2]
    C = b * b - t2 * cov[1, 1]
    if A <= 0:                  # the curvature is not resolved: the interval has no bounds
        return Vertex(-b / (2 * c), None, None, (a, b, c))
    root = np.sqrt(B * B - 4 * A * C)
    return Vertex(-b / (2 * c), (-B - root) / (2 * A), (-B + root) / (2 * A), (a, b, c))


def multipliers(sweep, profile: str = "cpu") -> pd.Series:
    """Each variant's learning-rate multiplier, read from its config (Muon's rate over the
    baseline's), not from its name."""
    base = sweep.config(sweep.baseline, profile).lr
    return pd.Series({v: sweep.config(v, profile).lr / base for v in sweep.variants})


def rate_curve(sweep, runs: pd.DataFrame, profile: str = "cpu") -> pd.DataFrame:
    """One row per multiplier (x1 included, at 0): its paired effect and interval, pairs and
    failed runs, and whether it collapsed. attrs: the fitted `vertex` (log2 scale), the best
    multiplier and its interval (`best`, `best_low`, `best_high`; NaN where unbounded or
    not concave) and the collapse points below and above x1 (`collapse_low`, `collapse_high`;
    NaN where none)."""
    table = declared_table(sweep, runs)
    factor = multipliers(sweep, profile)
    base_pairs = int((runs["variant"] == sweep.baseline).sum())
    curve = table[["pairs", "failed", "diff", "low", "high"]].copy()
    curve.loc[sweep.baseline] = {"pairs": base_pairs, "failed": 0, "diff": 0.0, "low": 0.0, "high": 0.0}
    curve["multiplier"] = curve.index.map(factor)
    curve = curve.sort_values("multiplier")
    curve["collapsed"] = (curve["failed"] > 0) | (curve["diff"] < -COLLAPSE_POINTS)
    below = curve[(curve["multiplier"] < 1) & curve["collapsed"]]["multiplier"]
    above = curve[(curve["multiplier"] > 1) & curve["collapsed"]]["multiplier"]
    curve.attrs.update(collapse_low=below.max() if len(below) else np.nan,
                       collapse_high=above.min() if len(above) else np.nan)
    pool = table.attrs["pools"][next(iter(sweep.groups))]
    # a collapse is reported as one, not fitted as an effect
    fitted = curve[~curve["collapsed"] & (curve["pairs"] > 0)].dropna(subset=["diff"])
    if len(fitted) < 4 or not pool["df"]:           # a quadratic needs a point to spare
        curve.attrs.update(vertex=None, best=np.nan, best_low=np.nan, best_high=np.nan)
        return curve
    vertex = quadratic_vertex(np.log2(fitted["multiplier"]), fitted["diff"], fitted["pairs"],
                              pool["sd_diff"] ** 2, pool["df"])
    power = lambda v: 2.0 ** v if v is not None else np.nan        # noqa: E731
    curve.attrs.update(vertex=vertex, best=power(vertex.x), best_low=power(vertex.low),
                       best_high=power(vertex.high), sd_diff=pool["sd_diff"], df=pool["df"])
    return curve


def rate_curve_figure(curve: pd.DataFrame):
    """Each multiplier's effect with its interval on a log axis, the fitted quadratic, and
    the best multiplier's interval shaded; a collapsed multiplier drawn as a cross."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ok = curve[~curve["collapsed"] & curve["diff"].notna()]
    ax.axhline(0, color="0.5", lw=1, zorder=0)
    ax.errorbar(ok["multiplier"], ok["diff"], yerr=[ok["diff"] - ok["low"], ok["high"] - ok["diff"]],
                fmt="o", color="C0", capsize=3, label="effect against ×1")
    gone = curve[curve["collapsed"]]
    floor = min(ok["low"].min(), 0) - 0.5 if len(ok) else -1.0
    ax.scatter(gone["multiplier"], np.full(len(gone), floor), marker="x", color="C3", s=50,
               label=f"failed or lost > {COLLAPSE_POINTS:g} points" if len(gone) else None)
    vertex = curve.attrs.get("vertex")
    if vertex is not None and vertex.x is not None:
        xs = np.linspace(np.log2(ok["multiplier"]).min(), np.log2(ok["multiplier"]).max(), 100)
        a, b, c = vertex.coefficients
        ax.plot(2 ** xs, a + b * xs + c * xs ** 2, color="C1", lw=1.5, label="quadratic in log rate")
        if vertex.low is not None:      # drawn within the tested range; the text gives it whole
            ax.axvspan(2 ** max(vertex.low, xs[0]), 2 ** min(vertex.high, xs[-1]), color="C1",
                       alpha=0.15, label="best multiplier, 95% interval")
    ax.set_xscale("log", base=2)
    ticks = curve["multiplier"].to_numpy()
    ax.set_xticks(ticks, [f"×{m:.3g}" for m in ticks])
    ax.set_xlim(ticks.min() / 1.25, ticks.max() * 1.25)
    ax.minorticks_off()
    ax.set(xlabel="every learning rate times", ylabel="effect (points of validation accuracy)")
    # below the axes, where it covers no point
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    fig.tight_layout()
    plt.close(fig)
    return fig
