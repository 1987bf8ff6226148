"""Figures for the notebooks and the report: each function takes data (arrays, data frames)
and returns a matplotlib Figure with labelled axes and units (grids of images: pictures.py)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import MaxNLocator

from ..data import CLASSES
from .stats import fixed

sns.set_theme(style="whitegrid", context="notebook")


def _close(fig):
    # Figures are returned for display or saving; closing the pyplot handle keeps notebooks
    # from drawing each one twice and the report from accumulating open figures.
    plt.close(fig)
    return fig






def intermediate_block_diagram(num_convs: int = 3, fast: bool = False):
    """A drawing of one intermediate block: L convolutions of the same input, each scaled
    by its weight a_l, summed; the weights come from a fully connected layer and a gate
    applied to the input's channel means (dashed: the path that computes them). With
    `fast`, FastNet's block: a 3×3 and a 1×1 branch, one batch norm after the mix."""
    if fast:
        num_convs = 2
    fig, ax = plt.subplots(figsize=(9.6, 6.0))
    ax.set_xlim(0, 10.4), ax.set_ylim(-0.3, 6.2), ax.axis("off")
    ax.set_aspect("equal")                       # circles stay round

    def box(x, y, text, color, w=1.8, h=0.8):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05",
                                    fc=color, ec="black", lw=1, zorder=2))
        ax.text(x, y, text, ha="center", va="center", fontsize=11.5, zorder=3)

    def circle(x, y, text, r=0.26):
        ax.add_patch(plt.Circle((x, y), r, fc="white", ec="black", lw=1, zorder=2))
        ax.text(x, y, text, ha="center", va="center", fontsize=12.5, zorder=3)

    def arrow(a, b, style="-", color="black", rad=0.0):
        ax.annotate("", xy=b, xytext=a, zorder=1, arrowprops=dict(
            arrowstyle="-|>", lw=1.2, color=color, linestyle=style, shrinkA=0, shrinkB=0,
            connectionstyle=f"arc3,rad={rad}"))

    box(0.95, 3.4, "input $x$\n$C_{in}\\times H \\times W$", "#dddddd", w=1.6, h=1.0)
    ys = np.linspace(5.3, 1.9, num_convs)
    mix_x, sum_xy = 5.6, (7.0, 3.4)
    for l, y in enumerate(ys, start=1):
        box(3.4, y, f"conv$_{l}$ {'3×3' if not fast or l == 1 else '1×1'}"
            + ("" if fast else "\n(+ batch norm)"), "#cfe2ff")
        arrow((1.75, 3.4), (2.5, y))
        arrow((4.3, y), (mix_x - 0.26, y))
        circle(mix_x, y, "×")
        # the weight's name up-left of its ×, clear of the dashed wire that comes from below
        ax.text(mix_x - 0.32, y + 0.3, f"$a_{l}$", color="#b05a00", fontsize=12.5, ha="right")
        arrow((mix_x + 0.26, y), (sum_xy[0] - 0.22 * np.sign(sum_xy[0] - mix_x), sum_xy[1] +
                                  0.26 * np.sign(y - sum_xy[1])))
    circle(*sum_xy, "$\\Sigma$", r=0.3)
    box(3.4, 0.25, "mean over $H, W$: $\\bar{x} \\in \\mathbb{R}^{C_{in}}$", "#ffe0b3", w=3.0, h=0.7)
    box(6.9, 0.25, "$a = \\mathrm{gate}(W\\bar{x} + b) \\in \\mathbb{R}^{L}$", "#ffe0b3", w=3.2, h=0.7)
    arrow((0.95, 2.9), (2.1, 0.25), style="--", color="#b05a00", rad=0.25)
    arrow((4.7, 0.25), (5.5, 0.25), style="--", color="#b05a00")
    for l, y in enumerate(ys, start=1):   # each weight wired to its branch's multiplication
        arrow((6.9 - 0.4 * (l - 2), 0.6), (mix_x + 0.05, y - 0.26), style="--", color="#b05a00",
              rad=-0.15)
    # FastNet pools only after the first block of each pair (3 of its 7 blocks)
    box(9.4, 3.4, "(max-pool,)\nbatch norm,\nGELU" if fast else "activation\n(dropout, pool)",
        "#eeeeee", w=1.8, h=1.1 if fast else 0.8)
    arrow((sum_xy[0] + 0.3, sum_xy[1]), (8.5, 3.4))
    ax.text(7.9, 3.9, "$\\sum_l a_l\\, \\mathrm{conv}_l(x)$", ha="center", va="bottom", fontsize=12.5)
    ax.set_title(f"FastNet's intermediate block (L = {num_convs})" if fast else
                 f"An intermediate block with L = {num_convs} convolutions", fontsize=12.5)
    return _close(fig)


# How learning curves draw each split; captions say it with CURVE_STYLES_TEXT, made from
# the same table, so a caption cannot disagree with its figure.
CURVE_STYLES = {"training": ("solid", ""), "validation": ("dashed", (4, 2))}
CURVE_STYLES_TEXT = ", ".join(f"{split} ({name})" for split, (name, _) in CURVE_STYLES.items())


def learning_curves(history: pd.DataFrame, hue: str = "config", x: str = "epoch"):
    """Loss and accuracy per split (styles: CURVE_STYLES) against epochs or minutes, one
    colour per `hue` value, mean and std over the seeds of each."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(7.5, 3.4))
    history = history.assign(**{hue: history[hue].astype(str)})
    ids = list(dict.fromkeys([hue, "seed", x]))
    dashes = {split: dash for split, (_, dash) in CURVE_STYLES.items()}
    few = history[x].nunique() <= 3            # a line of one or two points needs its markers
    for ax, metric, label in ((loss_ax, "loss", "loss"), (acc_ax, "acc", "accuracy")):
        long = history.melt(id_vars=ids, value_vars=[f"train_{metric}", f"val_{metric}"],
                            var_name="split", value_name=label)
        long["split"] = long["split"].map({f"train_{metric}": "training", f"val_{metric}": "validation"})
        sns.lineplot(long, x=x, y=label, hue=hue, style="split", style_order=list(CURVE_STYLES),
                     dashes=dashes, markers=few, ax=ax, errorbar="sd")
    xlabel = "training time (minutes)" if x == "minutes" else "epoch"
    loss_ax.set(xlabel=xlabel, ylabel="cross-entropy loss", title="Loss")
    acc_ax.set(xlabel=xlabel, ylabel="accuracy (%)", title="Accuracy")
    if x == "epoch":                                   # epochs are whole numbers
        for ax in (loss_ax, acc_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # one legend, below the plots, where it covers no curve and keeps the figure A4-wide
    handles, labels = acc_ax.get_legend_handles_labels()
    for ax in (loss_ax, acc_ax):
        ax.get_legend().remove()
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False,
               fontsize=9, ncol=2)      # seaborn's entries: hue title and values, then style's
    return _close(fig)


def forest_plot(table: pd.DataFrame, title: str = "", label: str = "difference to the base"):
    """Each variant's effect against the base (a `stats.compare_to_base` table) with its
    simultaneous interval: sorted, a zero line, resolved effects filled and unresolved ones
    hollow, a variant with its own spread marked. Variants without an interval (failed,
    or fewer than two pairs) are left out; the caption says so (table.attrs)."""
    low, high = "low", "high"
    rows = table.dropna(subset=[low, high]).sort_values("diff")
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * max(len(rows), 1) + 1.4))
    y = np.arange(len(rows))
    # The axis holds every interval, unless one reaches more than 4x further from 0 than
    # the rest: that one is cut at the edge, with an arrow and its value written beside it.
    sizes = np.maximum(rows[low].abs(), rows[high].abs()).sort_values().to_numpy()
    far = len(sizes) >= 3 and sizes[-1] > 4 * sizes[-2]
    reach = 1.05 * (sizes[-2] if far else sizes[-1]) + 0.1 if len(sizes) else 1.0
    left = max(min(0.0, rows[low].min()), -reach) if len(rows) else -reach
    right = min(max(0.0, rows[high].max()), reach) if len(rows) else reach
    pad = 0.06 * (right - left) + 0.2
    x0, x1 = left - pad, right + pad
    ax.axvline(0, color="0.5", lw=1, zorder=0)
    ax.hlines(y, rows[low].clip(x0, x1), rows[high].clip(x0, x1), color="C0", lw=2)
    for edge, cut, marker in ((x0, rows[low] < x0, "<"), (x1, rows[high] > x1, ">")):
        cut = cut.to_numpy()
        ax.scatter(np.full(cut.sum(), edge), y[cut], marker=marker, color="C0", s=30)
    shown = rows["diff"].clip(x0, x1)
    for yi, diff, at in zip(y, rows["diff"], shown):
        if diff != at:                      # off the axis: say where it is
            ax.annotate(f"{diff:+.1f}", (at, yi), xytext=(8 if at == x0 else -8, 6),
                        textcoords="offset points", ha="left" if at == x0 else "right", fontsize=8)
    resolved = rows["resolved"].to_numpy(bool)
    ax.scatter(shown[resolved], y[resolved], color="C0", s=36, zorder=3, label="resolved")
    ax.scatter(shown[~resolved], y[~resolved], facecolor="white", edgecolor="C0", s=36,
               zorder=3, label="interval contains 0")
    # measured on more than one machine (the base on each): each row says where it is paired
    several = "device" in rows and len(table.attrs.get("devices", [])) > 1
    names = [f"{v} ({d})" if several else v for v, d in zip(rows.index, rows["device"])]
    names = [f"{n} †" if own else n for n, own in zip(names, rows["own_spread"].astype(bool))]
    ax.set_yticks(y, names)
    ax.set(xlabel=f"{label} (points of validation accuracy)", ylabel="", title=title)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(x0 - 0.03 * (x1 - x0), x1 + 0.03 * (x1 - x0))    # edge markers drawn whole
    # the legend sits above the axes, where it can cover no interval
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False, fontsize=8,
              borderaxespad=0.2) if len(rows) else None
    if title:
        ax.set_title(title, pad=22)
    fig.tight_layout()
    return _close(fig)


def budget_transfer(table: pd.DataFrame, short: str = "2 epochs", long: str = "8 epochs"):
    """Each change's effect at a short budget and at the recipe's, one row per change, both
    with their simultaneous intervals (a `stats.budget_interaction` table), an arrow from the
    one to the other; a change whose effect moves with the budget (resolved) is named in bold.
    Rows, not a scatter of one against the other: a dozen changes near zero cannot be labelled
    on a scatter without their names colliding."""
    rows = table.iloc[::-1]                      # the table's first row at the top
    fig, ax = plt.subplots(figsize=(7.5, 0.3 * len(rows) + 1.1))
    y = np.arange(len(rows))
    ax.axvline(0, color="0.5", lw=1, zorder=0)
    # The axis holds every effect; an interval reaching past it (a wide short-budget one)
    # is cut at the edge with an arrowhead, so a few wide ones do not squeeze the rest.
    points = rows[["short", "long"]].to_numpy()
    x0, x1 = min(points.min(), 0) - 1.5, max(points.max(), 0) + 1.5
    for offset, budget, style in ((0.17, "short", dict(color="0.55", marker="s", mfc="white")),
                                  (-0.17, "long", dict(color="C0", marker="o"))):
        low, high = rows[f"{budget}_low"].clip(x0, x1), rows[f"{budget}_high"].clip(x0, x1)
        ax.errorbar(rows[budget], y + offset, xerr=[rows[budget] - low, high - rows[budget]],
                    ls="none", elinewidth=1.6, ms=6, zorder=3, **style,
                    label=f"{short if budget == 'short' else long}")
        for edge, cut, marker in ((x0, rows[f"{budget}_low"] < x0, "<"), (x1, rows[f"{budget}_high"] > x1, ">")):
            cut = cut.to_numpy()
            ax.scatter(np.full(cut.sum(), edge), (y + offset)[cut], marker=marker, color=style["color"], s=30)
    for yi, (a, b) in zip(y, rows[["short", "long"]].to_numpy()):   # how the effect moved
        ax.annotate("", (b, yi - 0.17), (a, yi + 0.17), zorder=2,
                    arrowprops=dict(arrowstyle="->", color="0.35", lw=0.9, shrinkA=4, shrinkB=4))
    own = rows["own_spread"].astype(bool) if "own_spread" in rows else [False] * len(rows)
    ax.set_yticks(y, [f"{v} †" if o else v for v, o in zip(rows.index, own)])
    ax.grid(axis="y", visible=False)             # a grid line would run between a row's two marks
    for label, moved in zip(ax.get_yticklabels(), rows["resolved"].astype(bool)):
        label.set_fontweight("bold" if moved else "normal")
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlim(x0 - 0.02 * (x1 - x0), x1 + 0.02 * (x1 - x0))     # edge markers drawn whole
    ax.set(xlabel="effect against the base (points of validation accuracy)", ylabel="")
    # the legend sits above the axes, where it can cover no interval
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False, fontsize=10,
              borderaxespad=0.2)
    fig.tight_layout()
    return _close(fig)


def optuna_search(trials: pd.DataFrame, importances: dict[str, float], base: float | None = None,
                  base_label: str = "the base"):
    """An Optuna search (a `search.trials_frame`): left, each complete trial's validation
    accuracy in the order it ran (hollow: pruned at its last epoch, so a final accuracy too),
    the best so far as a step line, the base as a dashed line and the trials stopped early as
    ticks along the bottom (an accuracy halfway through a schedule is not comparable with a
    final one, so it is not drawn as one); right, each setting's importance
    (optuna.importance, normalised to sum to 1)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.5, 3.8), width_ratios=[1.8, 1])
    complete = trials[trials["state"] == "complete"]
    # a trial pruned at its last epoch ran its whole budget: its accuracy is a final one
    late = trials[(trials["state"] == "pruned") & (trials["epochs"] == complete["epochs"].max())]
    pruned = trials[(trials["state"] == "pruned") & ~trials.index.isin(late.index)]
    # A trial whose settings stop it training sits far below the rest: the axis follows the
    # better half of the trials, and those below it are drawn on its lower edge.
    values = complete["val_acc"]
    middle = values.median()
    low = max(min(middle - 3 * (values.max() - middle), base if base is not None else middle) - 1,
              values.min() - 1)
    shown = complete[complete["val_acc"] >= low]
    below = complete[complete["val_acc"] < low]
    left.scatter(shown["trial"], shown["val_acc"], color="C0", s=28, zorder=3, label="complete")
    left.scatter(late["trial"], late["val_acc"].clip(lower=low), facecolor="white", edgecolor="C0",
                 s=28, zorder=3, label="ran to the end, marked pruned" if len(late) else None)
    left.scatter(below["trial"], np.full(len(below), low), marker="v", color="C0", s=30, zorder=3,
                 label=f"complete, below the axis ({len(below)}: {below['val_acc'].min():.0f}–"
                       f"{below['val_acc'].max():.0f}%)" if len(below) else None)
    # drawn two trials past the last one, so that a best found by the last trial shows
    # beside its marker rather than under it
    left.step([*complete["trial"], trials["trial"].max() + 2],
              [*complete["best so far"], complete["best so far"].iloc[-1]], where="post", color="C1",
              lw=1.5, label="best complete so far")
    if base is not None:
        left.axhline(base, color="0.3", ls="--", lw=1, label=base_label)
    left.scatter(pruned["trial"], np.full(len(pruned), low - 0.4), marker="|", color="C3", s=60,
                 zorder=3, label=f"stopped early ({len(pruned)})" if len(pruned) else None)
    left.set_ylim(low - 0.8, values.max() + 1)
    left.set(xlabel="trial (in the order it ran)", ylabel="validation accuracy (%)")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.legend(loc="upper center", bbox_to_anchor=(0.6, -0.2), ncol=2, fontsize=9, frameon=False)
    names = list(importances)[::-1]
    right.barh(names, [importances[n] for n in names], color="C0")
    right.set(xlabel="importance (share of the total)", xlim=(0, 1))
    fig.tight_layout()
    return _close(fig)


def accuracy_vs_images(runs: pd.DataFrame, reference: dict | None = None):
    """Test accuracy of final runs against the training images they saw: every run a dot,
    the mean per budget a line (with TTA solid, without dashed); `reference` (an external
    record such as airbench94's) as a star with its std."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for metric, label, style, colour in (("test_acc_tta", "with TTA", "-", "C0"),
                                         ("test_acc", "without TTA", "--", "C1")):
        means = runs.groupby("images_seen")[metric].mean()
        ax.plot(means.index / 1e3, means.values, style, color=colour, label=f"mean, {label}")
        ax.scatter(runs["images_seen"] / 1e3, runs[metric], s=16, color=colour, alpha=0.6)
    if reference:
        x, mean = reference["images_seen"] / 1e3, 100 * reference["test_acc_tta"]["mean"]
        std = 100 * reference["test_acc_tta"]["std"]
        name = reference["name"].split(" ")[0]
        ax.errorbar(x, mean, yerr=std, fmt="*", markersize=12, color="C3", capsize=4,
                    label=f"{name} with TTA (± std)")
        # its spread is a fraction of a point: drawn again, magnified, so it can be seen
        inset = ax.inset_axes([0.58, 0.08, 0.38, 0.38])
        inset.errorbar([x], [mean], yerr=std, fmt="*", markersize=10, color="C3", capsize=4)
        near = runs[(runs["images_seen"] / 1e3 - x).abs() < 1]
        inset.scatter(near["images_seen"] / 1e3, near["test_acc_tta"], s=16, color="C0", alpha=0.6)
        inset.set_xticks([])
        inset.set_title(f"at {x:,.0f}k images", fontsize=8)
        inset.tick_params(labelsize=7)
    ax.set(xlabel="training images seen (thousands)", ylabel="test accuracy (%)",
           title="Accuracy against training images")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    return _close(fig)


def time_to_accuracy(history: pd.DataFrame, hue: str = "config"):
    """Validation accuracy against training wall time: what each recipe buys per minute."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sns.lineplot(history, x="minutes", y="val_acc", hue=hue, units="id", estimator=None,
                 marker="o", markersize=3, ax=ax)
    ax.set(xlabel="training time on this machine (minutes)", ylabel="validation accuracy (%)",
           title="Time to accuracy")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=9)
    fig.tight_layout()
    return _close(fig)


def confusion_heatmap(counts: np.ndarray, ax=None):
    """Row-normalised confusion matrix (percent of each true class), on `ax` if given."""
    share = 100 * counts / counts.sum(1, keepdims=True)
    fig, ax = plt.subplots(figsize=(7.5, 6.2)) if ax is None else (ax.figure, ax)
    sns.heatmap(share, annot=True, fmt=".0f", cmap="Blues", xticklabels=CLASSES,
                yticklabels=CLASSES, cbar_kws={"label": "% of the true class"}, ax=ax)
    ax.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix (test set)")
    fig.tight_layout()
    return _close(fig)


def reliability_diagram(rows: np.ndarray, ece: float, label: str = "", ax=None):
    """Accuracy against confidence per bin, on `ax` if given; the diagonal is perfect calibration."""
    fig, ax = plt.subplots(figsize=(5, 5)) if ax is None else (ax.figure, ax)
    ax.plot([0, 100], [0, 100], color="grey", ls="--", lw=1, label="perfectly calibrated")
    ax.plot(100 * rows[:, 0], 100 * rows[:, 1], marker="o", label=f"{label} (ECE {fixed(100 * ece)}%)")
    ax.set(xlabel="confidence (%)", ylabel="accuracy (%)", xlim=(0, 100), ylim=(0, 100),
           title="Reliability diagram (test set)")
    # a curve above the diagonal: accuracy above confidence, an under-confident model
    ax.legend(loc="lower right", fontsize=10)
    fig.tight_layout()
    return _close(fig)


def errors_side_by_side(counts: np.ndarray, rows: np.ndarray, ece: float, label: str = ""):
    """The confusion matrix and the reliability diagram in one row, as a page prints them."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 4.4), width_ratios=(1.3, 1))
    confusion_heatmap(counts, ax=left)
    return reliability_diagram(rows, ece, label, ax=right)


def branch_weights_by_class(weights: np.ndarray, labels: np.ndarray, names=None):
    """How each class's mean branch weight a_l departs from the mean over all images, one
    row per (block, branch): the variation between classes, with the (larger) differences
    between blocks taken out. `names[b][l]` says what branch l of block b is
    (analysis.branch_names)."""
    blocks, branches = weights.shape[1:]
    names = names or [[f"a{l + 1}" for l in range(branches)]] * blocks
    table = np.stack([weights[labels == c].mean(0).reshape(-1) for c in range(len(CLASSES))], 1)
    table = table - weights.mean(0).reshape(-1, 1)
    short = {"2×2 whitening (frozen)": "whitening", "2×2 learned": "learned"}
    columns = [f"{b + 1}: {short.get(names[b][l], names[b][l])}" for b in range(blocks)
               for l in range(branches)]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    # a diverging map centred on 0 (above the branch's mean red, below blue); colour, not
    # printed numbers: 140 cells of two decimals would not be legible at A4 width
    sns.heatmap(pd.DataFrame(table.T, index=CLASSES, columns=columns), cmap="RdBu_r", center=0,
                linewidths=0.5, cbar_kws={"label": "class mean − overall mean"}, ax=ax)
    ax.set(xlabel="block: branch", ylabel="true class",
           title="Branch weights by class, against each branch's mean (test set)")
    fig.tight_layout()
    return _close(fig)


def branch_weight_spread(weights: np.ndarray, names=None):
    """Distribution of each block's branch weights over test images; the x labels name
    each block's branches in hue order (`names`, as in branch_weights_by_class)."""
    n, blocks, branches = weights.shape
    index = pd.MultiIndex.from_product(
        [range(n), [f"block {b + 1}" for b in range(blocks)], [f"branch {l + 1}" for l in range(branches)]],
        names=["image", "block", "branch"])
    long = pd.Series(weights.ravel(), index=index, name="weight").reset_index()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    # saturated colours and a light inner box: grey violins were unreadable at print size
    sns.violinplot(long, x="block", y="weight", hue="branch", cut=0, inner="box", ax=ax,
                   palette="Set1", saturation=1, linewidth=0.6)
    if names:
        ax.set_xticks(range(blocks), [f"block {b + 1}\n" + "\n".join(
            f"{l + 1}: {name.replace(' (frozen)', ', frozen')}" for l, name in enumerate(names[b]))
            for b in range(blocks)], fontsize=7)
    ax.set(xlabel="", ylabel="branch weight a (sigmoid gate)",
           title="How much the weights vary from image to image (test set)")
    ax.legend(title="branch", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return _close(fig)
