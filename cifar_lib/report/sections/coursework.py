"""The coursework study: the coursework's questions asked of its own ImprovedNet at its own
50 epochs (the study's declared paired analysis, one table and forest plot), and the
transfer, each change's effect on ImprovedNet at 50 epochs beside the same change on
FastNet at 8 (study/transfer.py), with the model x change interaction."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...study import plots
from ...study.paired import declared_table, second_stage_owed, stage_alpha
from ...study.stats import detectable_difference, fixed, format_p, interval_label
from ...study.sweeps import Sweep, sweep_records
from ...study.tables import every_seed_ran, mean_std, runs_frame, seed_range
from ...study.transfer import counterpart_sweeps, study_transfer

from .common import Filled, _spoken_list, signed, where_phrase
from .studies import _count, effect_phrase, slug, verdict


def coursework(filled: Filled, records: list[dict], study: Sweep):
    """`study`'s answers as `coursework__{arm}` (with verdict flags), its table and forest
    plot, and how far along it is (`coursework_runs` of `coursework_required`)."""
    mine = sweep_records(records, study)
    if not mine:
        return None
    runs = runs_frame(mine)
    paired = declared_table(study, runs).assign(runs=lambda t: t["pairs"] + t["failed"])
    base = runs.loc[runs["variant"] == study.baseline, "val_acc"]
    level = interval_label(stage_alpha(study))
    recorded = study.recorded(runs)
    filled.values.update(coursework_runs=str(len(recorded)), coursework_required=str(len(study.required_runs())),
                         coursework_level=level)
    if resumed := study.done((r["tags"]["variant"], r["seed"]) for r in mine if r.get("resumed_at_epochs")):
        filled.values["coursework_resumed"] = f"{_count(len(resumed))} of {_count(len(recorded))}"
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
    where = where_phrase(runs["device"], runs["precision"], runs["seed"])
    filled.table("coursework", shown,
                 f"ImprovedNet at {study.config(study.baseline, 'cpu').epochs} epochs: each change's "
                 f"paired effect against the coursework's recipe, {level} intervals within its "
                 f"family, p adjusted over the study (Holm) ({where}).")
    if measured["low"].isna().all() or not paired.attrs["first_family_ran"]:
        return paired
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
                         coursework_failure_below=f"{100 * study.failure_below:.0f}%",
                         coursework_seed_count=_count(len(study.seeds)))
    if study.second_stage_seeds:
        filled.values["coursework_stage2"] = seed_range(study.second_stage_seeds)


# What each of the coursework's changes takes away or does, for answers said plainly
REMOVED = {"no augmentation": "augmentation", "no rotation": "rotation", "no dropout": "dropout",
           "no batch norm": "batch norm"}
DONE = {"learning rate x2": "doubling the learning rate", "learning rate x0.5": "halving the learning rate"}


def subject(change: str) -> str:
    """What a change is about, as the subject of an answer: 'augmentation', 'halving the learning rate'."""
    return REMOVED.get(change) or DONE.get(change, change)


def answer(change: str, row: pd.Series, said: str) -> str:
    """A resolved or failed change's answer in words (`said`, its verdict): 'augmentation
    helps (without it: −4.90 points)', 'doubling the learning rate costs accuracy (−0.90 points)'."""
    thing = subject(change)
    if change in REMOVED:
        if said == "failed":
            return f"without {thing} ImprovedNet failed to train"
        # a removal that costs accuracy means the component helps
        effect = f"without it: {signed(row['diff'])} points"
        return {"down": f"{thing} helps ({effect})", "up": f"{thing} hurts ({effect})"}[said]
    effect = f"{signed(row['diff'])} points"
    return {"failed": f"with {thing} ImprovedNet failed to train", "down": f"{thing} costs accuracy ({effect})",
            "up": f"{thing} helps ({effect})"}[said]


def answers(said: dict[str, str], paired: pd.DataFrame) -> str:
    """The answers in words, given each change's verdict (`said`, in the family's order), the
    unresolved ones together at the end: '...; rotation, dropout and halving the learning
    rate make no resolved difference'."""
    words = [answer(c, paired.loc[c], v) for c, v in said.items() if v not in ("", "unresolved")]
    if open_ := [subject(c) for c, v in said.items() if v == "unresolved"]:
        words.append(f"{_spoken_list(open_)} make{'s' * (len(open_) == 1)} no resolved difference")
    return "; ".join(words)


def _answered(filled: Filled, study: Sweep, paired: pd.DataFrame, runs: pd.DataFrame):
    """How far the study is (`coursework_in_progress`, `coursework_done` of `_questions`) until
    the recipe and every change of its first family (the coursework's questions) have run
    with every declared seed; then `coursework_complete`, each question answered in words
    (`coursework_answers`), how they came out (`coursework_tally_*`) and the smallest effect
    that family finds 80% of the time."""
    family = next(iter(study.families))
    if second_stage_owed(study, runs):
        filled.values["coursework_stage2_pending"] = "yes"
    if not paired.attrs["first_family_ran"]:   # a pool of a few df answers nothing yet
        done = [c for c in study.families[family] if every_seed_ran(runs, (study.baseline, c), study.seeds)]
        filled.values.update(coursework_in_progress="yes", coursework_done=_count(len(done)),
                             coursework_questions=_count(len(study.families[family])))
        pool = paired.attrs["pools"][family]
        if study.planned_sd_diff and pool["df"]:        # the power the spread so far promises
            detectable = detectable_difference(pool["sd_diff"], len(study.families[family]),
                                               len(study.seeds), alpha=stage_alpha(study))
            filled.values.update(coursework_sd_so_far=fixed(pool["sd_diff"]),
                                 coursework_sd_planned=fixed(study.planned_sd_diff),
                                 coursework_detectable_projected=fixed(detectable))
        return
    said = {change: verdict(paired.loc[change]) for change in study.families[family]}
    if words := answers(said, paired):
        filled.values["coursework_answers"] = words
    counts = {v: list(said.values()).count(v) for v in ("up", "down", "failed")}
    filled.values.update(coursework_complete="yes", coursework_changes=_count(len(said)),
                         coursework_tally_up=_count(counts["up"]), coursework_tally_down=_count(counts["down"]),
                         coursework_tally_failed=_count(counts["failed"]),
                         coursework_tally_unresolved=_count(len(said) - sum(counts.values())),
                         coursework_detectable=fixed(paired.attrs["detectable"][family]),
                         coursework_sd=fixed(paired.attrs["pools"][family]["sd_diff"]))


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
    if other := [c for c in both.index if study.transfer[c].get("sweep", "recipe_study") != "recipe_study"]:
        filled.values["transfer_other_arms"] = _spoken_list(other)      # FastNet's side from its own arm
    # what the conclusion may say, from resolved effects only (an unresolved sign is noise):
    # some change goes opposite ways on the two models, or only the sizes differ, or no
    # difference between the models is resolved (and how wide its intervals are)
    def resolved(side):
        return (both[f"{side}_low"] > 0) | (both[f"{side}_high"] < 0)
    opposed = both[resolved("improved") & resolved("fast") & (np.sign(both["improved"]) != np.sign(both["fast"]))]
    differ = both[both["interaction_resolved"]]
    if len(differ):
        filled.values["transfer_differ_names"] = _spoken_list(list(differ.index))
    if len(opposed):
        filled.values["transfer_opposed"] = _spoken_list(list(opposed.index))
    elif len(differ):
        filled.values["transfer_sizes_differ"] = "yes"
    else:
        widest = ((both["interaction_high"] - both["interaction_low"]) / 2).max()
        filled.values.update(transfer_no_difference="yes", transfer_widest=fixed(widest))
    others = counterpart_sweeps(study)

    def compared(change):           # the two arms of FastNet's sweep that stand for the change
        spec = study.transfer[change]
        return f"{spec['variant']} − {spec.get('against', others[spec.get('sweep', 'recipe_study')].baseline)}"
    # three rows a change (each model's effect, then their difference), each with its own
    # low and high columns, as in the other effect tables
    filled.table("transfer", pd.DataFrame([
        {"change": change if side == "improved" else "", "effect on": name, "effect": r[side],
         "low": r[f"{side}_low"], "high": r[f"{side}_high"],
         "resolved": "✓" if r[f"{side}_low"] > 0 or r[f"{side}_high"] < 0 else ""}
        for change, r in both.iterrows()
        for side, name in (("improved", "ImprovedNet, 50 epochs"),
                           ("fast", f"FastNet, 8 epochs: {compared(change)}"), ("interaction", "difference"))]),
        f"Each change on ImprovedNet and on FastNet (FastNet's two variants named), and their "
        f"difference (points), with {level} intervals, Bonferroni over the "
        f"{table.attrs['comparisons']} declared changes.")
    drawn = both.rename(columns={"fast": "short", "fast_low": "short_low", "fast_high": "short_high",
                                 "improved": "long", "improved_low": "long_low",
                                 "improved_high": "long_high", "interaction_resolved": "resolved"})
    if not paired.attrs["first_family_ran"]:
        return              # as the study's own forest plot: drawn once its first stage is in
    filled.figure("transfer", plots.budget_transfer(drawn, "FastNet, 8 epochs", "ImprovedNet, 50 epochs"),
                  f"Each change on FastNet at 8 epochs (squares) and on ImprovedNet at 50 (dots), "
                  f"with {level} intervals; bold: the two models' effects differ.")
