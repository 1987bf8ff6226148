"""The coursework study: the coursework's questions asked of its own ImprovedNet at its own
50 epochs (the study's declared paired analysis, one table and forest plot), and the
transfer, each change's effect on ImprovedNet at 50 epochs beside the same change on
FastNet at 8 (study/transfer.py), with the model x change interaction."""
from __future__ import annotations

import pandas as pd

from ...study import plots
from ...study.paired import declared_table, stage_alpha
from ...study.stats import fixed, format_p, interval_label
from ...study.sweeps import Sweep, sweep_records
from ...study.tables import mean_std, runs_frame, seed_range
from ...study.transfer import study_transfer

from .common import Filled, machine_phrase, signed
from .studies import _count, effect_phrase, slug, verdict


def coursework(filled: Filled, records: list[dict], study: Sweep):
    """`study`'s answers as `coursework__{arm}` (with verdict flags), its table and forest
    plot, and how far along it is (`coursework_runs` of `coursework_planned`)."""
    mine = sweep_records(records, study)
    if not mine:
        return None
    runs = runs_frame(mine)
    paired = declared_table(study, runs).assign(runs=lambda t: t["pairs"] + t["failed"])
    base = runs.loc[runs["variant"] == study.baseline, "val_acc"]
    level = interval_label(stage_alpha(study))
    filled.values.update(coursework_runs=str(len(mine)), coursework_planned=str(study.planned_runs),
                         coursework_level=level)
    if len(base):
        filled.values["coursework_base"] = mean_std(base)
        _protocol(filled, study)
    measured = paired[(paired["pairs"] > 0) | (paired["failed"] > 0)]
    for arm, row in measured.iterrows():
        key = f"coursework__{slug(arm)}"
        filled.values[key] = effect_phrase(row)
        if said := verdict(row):
            filled.values[f"{key}__{said}"] = "yes"
    _answered(filled, study, paired, runs)
    if measured.empty:
        return paired
    means = runs.groupby("variant")["val_acc"].mean()
    shown = pd.DataFrame({
        "change": measured.index, "val %": measured.index.map(means),
        "pairs": measured["pairs"].astype(int), "effect": measured["diff"],
        "low": measured["low"], "high": measured["high"],
        "p (Holm)": measured["p_holm"].map(format_p),
        "resolved": measured["resolved"].map({True: "✓", False: ""})})
    where = machine_phrase(_where(runs))
    filled.table("coursework", shown,
                 f"ImprovedNet at {study.config(study.baseline, 'cpu').epochs} epochs: each change's "
                 f"paired effect against the coursework's recipe, {level} intervals within its "
                 f"family, p adjusted over the study (Holm) ({where}).")
    filled.figure("coursework_sweep", plots.forest_plot(paired.assign(device=paired["machine"]),
                                                       label="effect against the coursework's recipe"),
                  f"ImprovedNet at its own budget: effects with {level} intervals (filled: resolved).")
    return paired


def _protocol(filled: Filled, study: Sweep):
    """What Methods says of the study: its recipe, budget, seeds and declared analysis."""
    cfg = study.config(study.baseline, "cpu")
    filled.values.update(coursework_epochs=str(cfg.epochs), coursework_lr=f"{cfg.lr:g}",
                         coursework_batch=str(cfg.batch_size), coursework_seeds=seed_range(study.seeds),
                         coursework_spread_alpha=f"{study.spread_alpha:g}",
                         coursework_seed_count=_count(len(study.seeds)))
    if study.second_stage_seeds:
        filled.values["coursework_stage2"] = seed_range(study.second_stage_seeds)


def _answered(filled: Filled, study: Sweep, paired: pd.DataFrame, runs: pd.DataFrame):
    """`coursework_complete` once the recipe and every change of the study's first family
    (the coursework's questions) have run with every declared seed; then how they came out
    (`coursework_tally_*`) and the smallest effect that family finds 80% of the time."""
    family = next(iter(study.groups))
    seeds = set(study.seeds)
    ran = runs.groupby("variant")["seed"].agg(set)
    if not all(seeds <= ran.get(v, set()) for v in (study.baseline, *study.groups[family])):
        return
    said = [verdict(row) for _, row in paired.loc[list(study.groups[family])].iterrows()]
    counts = {v: said.count(v) for v in ("up", "down", "failed")}
    filled.values.update(coursework_complete="yes", coursework_changes=_count(len(said)),
                         coursework_tally_up=_count(counts["up"]), coursework_tally_down=_count(counts["down"]),
                         coursework_tally_failed=_count(counts["failed"]),
                         coursework_tally_unresolved=_count(len(said) - sum(counts.values())),
                         coursework_detectable=fixed(paired.attrs["detectable"][family]))


def _where(runs: pd.DataFrame) -> pd.DataFrame:
    """An empty table whose attrs say where `runs` trained, as machine_phrase reads them."""
    table = pd.DataFrame()
    table.attrs.update(devices=sorted(set(runs["device"])), precisions=sorted(set(runs["precision"])),
                       seeds=sorted(set(runs["seed"])))
    return table


def transfer(filled: Filled, records: list[dict], study: Sweep, paired: pd.DataFrame | None):
    """Each change of `study.transfer` on ImprovedNet beside FastNet: the table, the figure,
    sign agreement, rank correlation and the resolved interactions (`transfer_*`)."""
    if paired is None or not study.transfer:
        return
    table = study_transfer(study, paired, lambda other: runs_frame(sweep_records(records, other)))
    both = table.dropna(subset=["improved_low", "fast_low"])
    if both.empty:
        return
    level = interval_label(stage_alpha(study))
    filled.values.update(transfer_changes=_count(len(both)),
                         transfer_signs=f"{table.attrs['signs_agree']} of {table.attrs['changes']}",
                         transfer_interactions=_count(int(both["interaction_resolved"].sum())),
                         transfer_declared=_count(table.attrs["comparisons"]))
    if len(both) >= 3:
        filled.values["transfer_spearman"] = fixed(table.attrs["spearman"])
    # what the conclusion may say: the direction carries (every sign agrees) and the size too
    # (no interaction resolved), only the direction, or not even that
    agree = table.attrs["signs_agree"] == table.attrs["changes"]
    differ = bool(both["interaction_resolved"].any())
    filled.values["transfer_" + ("signs_differ" if not agree else "sizes_differ" if differ else "carries")] = "yes"
    def effect(side):
        return [f"{signed(r[side])} ({signed(r[f'{side}_low'])} to {signed(r[f'{side}_high'])})"
                for _, r in both.iterrows()]
    filled.table("transfer", pd.DataFrame({
        "change": both.index, "ImprovedNet, 50 epochs": effect("improved"),
        "FastNet, 8 epochs": effect("fast"), "difference": effect("interaction"),
        "resolved": both["interaction_resolved"].map({True: "✓", False: ""}).to_numpy()}),
        f"Each change on ImprovedNet and on FastNet, and their difference (points), with "
        f"{level} intervals over {table.attrs['comparisons']} declared changes.")
    drawn = both.rename(columns={"fast": "short", "fast_low": "short_low", "fast_high": "short_high",
                                 "improved": "long", "improved_low": "long_low",
                                 "improved_high": "long_high", "interaction_resolved": "resolved"})
    filled.figure("transfer", plots.budget_transfer(drawn, "FastNet, 8 epochs", "ImprovedNet, 50 epochs"),
                  f"Each change on FastNet at 8 epochs (squares) and on ImprovedNet at 50 (dots), "
                  f"with {level} intervals; bold: the two models' effects differ.")
