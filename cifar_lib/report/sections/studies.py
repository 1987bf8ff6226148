"""The sections on the studies: methods, one family of the recipe study (its table, forest
plot and each variant's answer), the runs that failed to train, and the appendix that sets
the recipe study beside the same changes at 2 epochs."""
from __future__ import annotations

import re

import pandas as pd

from ...config import load_config
from ...study import plots
from ...study.stats import ALPHA, detectable_difference, fixed
from ...study.sweeps import Sweep, sweep_records
from ...study.tables import budget_family, compare_sweep, history_frame, mean_std, readable, runs_frame, seed_range

from .common import Filled, LEVEL, RECIPES, _spoken_list, _tta_kind, machine_phrase, signed

# as a paper writes counts: words up to ten, numerals above
NUMBER_WORDS = dict(enumerate("one two three four five six seven eight nine ten".split(), 1))


def methods(filled: Filled, runs: pd.DataFrame, records: list[dict], study: Sweep,
            finals: list[dict] = ()):
    """The split, the models and recipes (each as its newest run in `finals`, any profile,
    ran it), and `study`'s declared design."""
    val = records[0]["config"]["val_size"]
    filled.values.update(train_size=f"{50000 - val:,}", val_size=f"{val:,}")
    filled.figure("intermediate_block", plots.intermediate_block_diagram(fast=True),
                  "FastNet's intermediate block: a 3×3 and a 1×1 convolution of one input, "
                  "mixed by weights computed from its channel means; the first block of each "
                  "pair max-pools.")
    named = runs[runs["config"].isin(RECIPES)]    # sweeps vary models (e.g. without batch norm)
    models = ((named if len(named) else runs).drop_duplicates("model")[["model", "parameters"]]
              .sort_values("parameters").reset_index(drop=True))
    filled.table("models", models, "The networks and the parameters their optimizers train "
                                    "(FastNet's frozen whitening filters and batch-norm scales left out).")
    latest = {}
    # the newest final run of each recipe says what it is (tuning runs vary)
    for rec in sorted(finals or records, key=lambda r: r["started_at"]):
        if rec["config_name"] in RECIPES and rec.get("test_read"):
            latest[rec["config_name"]] = rec["config"]
    rows = [{"recipe": name, "model": c["model"], "optimizer": c["optimizer"], "lr": c["lr"],
             "batch": c["batch_size"], "epochs": c["epochs"], "schedule": c["schedule"],
             "weight decay": c["weight_decay"], "label smoothing": c["label_smoothing"],
             "augmentation": "+".join(c["augment"]) or "none", "TTA": _tta_kind(c)}
            for name, c in sorted(latest.items(), key=lambda kv: RECIPES.index(kv[0]))]
    if rows:
        filled.table("recipes", pd.DataFrame(rows).astype({"lr": str, "weight decay": str}),
                     "Each final recipe's settings, as its latest final run ran them.")
    fast = study.config(study.baseline, records[0]["profile"])
    rotated = next(c for v, c in study.variants.items() if "rotate_degrees" in c)
    filled.values.update(fast_epochs=str(fast.epochs), fast_batch=f"{fast.batch_size:,}",
                         fast_smoothing=f"{fast.label_smoothing:g}", fast_crop=str(fast.crop_padding),
                         rotate_degrees=f"{rotated['rotate_degrees']:g}",
                         coursework_crop=str(load_config("seed_improved").crop_padding))
    families = list(study.groups.values())
    n = len(study.seeds)
    filled.values.update(
        level=LEVEL, alpha=f"{ALPHA:g}", study_seeds=seed_range(study.seeds), study_seed_count=_count(n),
        failure_below=f"{100 * study.failure_below:.0f}%", spread_alpha=f"{study.spread_alpha:g}")
    if study.planned_sd_diff:
        widest = max(len(f) for f in families)
        filled.values.update(planned_sd=fixed(study.planned_sd_diff),
                             detectable=fixed(detectable_difference(study.planned_sd_diff, widest, n)))
    if resumed := [r for r in sweep_records(records, study) if r.get("resumed_at_epochs")]:
        filled.values["resumed_runs"] = _count(len(resumed))
    done = study.done((r["tags"]["variant"], r["seed"]) for r in sweep_records(records, study))
    if done and len(done) < study.planned_runs:
        filled.values["study_progress"] = (
            f"{len(done)} of the {study.planned_runs} planned runs are recorded. Tables show the "
            f"variants that have run; every interval is still adjusted over its whole declared family.")


def sweep(filled: Filled, records: list[dict], sweep, title: str, name: str):
    """One family: `{name}` table and `{name}_sweep` figure, `{name}_base` (the base's
    accuracy) and each measured variant's answers (_answers)."""
    mine = sweep_records(records, sweep)
    if sweep.baseline not in {r["tags"]["variant"] for r in mine}:
        return                      # nothing to compare with yet: the template says so
    runs = runs_frame(mine)
    baseline = sweep.baseline
    paired = compare_sweep(sweep, runs)
    filled.paired[name] = paired
    if not paired.attrs["machines"]:
        return                      # no variant is paired with the baseline yet: nothing to show
    here = runs[runs["machine"].isin(paired.attrs["machines"])]     # the runs the table pairs
    filled.values[f"{name}_base"] = mean_std(here.loc[here["variant"] == baseline, "val_acc"])
    _answers(filled, paired, name)
    # the last epoch's training accuracy of each variant (`{name}_fit__{variant}`, the base's
    # `{name}_fit__base`): how closely it fits its training batches, beside what it generalises
    fits = here.groupby("variant")["train_acc"].mean().dropna()
    filled.values.update({f"{name}_fit__{'base' if v == baseline else slug(v)}": f"{fixed(acc)}%"
                          for v, acc in fits.items()})
    # the first epoch's validation accuracy over the seeds (`{name}_first__{variant}`): how a
    # change starts, beside where it ends; `__behind` when its best seed trails the base's worst
    epochs = history_frame(mine)
    first = epochs[(epochs["epoch"] == 1) & epochs["id"].isin(here["id"])].groupby(
        "variant")["val_acc"].agg(["min", "max"]).dropna()
    for v, (low, high) in first.iterrows():
        key = f"{name}_first__{'base' if v == baseline else slug(v)}"
        filled.values[key] = f"{low:.0f}–{high:.0f}%" if round(low) != round(high) else f"{low:.0f}%"
        if v != baseline and baseline in first.index and high < first.loc[baseline, "min"]:
            filled.values[f"{key}__behind"] = "yes"
    ran = ((paired["runs"] > 0) | (paired.index == baseline)).to_numpy()   # the variants that have run
    shown = readable(paired)[ran].rename_axis("variant").reset_index()
    shown = shown[["variant", "mean", "pairs", "diff", "low", "high", "p", "resolved"]]
    where = machine_phrase(paired)
    filled.table(name, shown.rename(columns={"mean": "val %", "diff": "effect", "p": "p (adj.)"}),
                 f"{title}: validation accuracy and each variant's paired effect against "
                 f"`{baseline}` with its simultaneous {LEVEL} interval over {paired.attrs['comparisons']} "
                 f"comparison{'s' * (paired.attrs['comparisons'] != 1)} ({where}).")
    if sweep.single_comparison:     # one row says all a forest plot would
        return
    failed = [v for v, row in paired.iterrows() if row["failed"]]
    filled.figure(f"{name}_sweep", plots.forest_plot(paired, label=f"effect against {baseline}"),
                  f"{title}: effects against `{baseline}` with simultaneous {LEVEL} intervals "
                  f"(filled: resolved{'; † its own spread' * bool(paired['own_spread'].any())})"
                  + (f"; {_spoken_list(failed)} failed to train and has no interval." if failed else "."))


def rebased(filled: Filled, records: list[dict], family: Sweep, name: str):
    """A family's runs paired with one of its own variants instead of the base (its
    `baseline`), each interval adjusted over this comparison's own variants: their answers
    (_answers) and `{name}_comparisons` only, no table (the runs are the family's)."""
    mine = sweep_records(records, family)
    if family.baseline not in {r["tags"]["variant"] for r in mine}:
        return
    paired = compare_sweep(family, runs_frame(mine))
    if _answers(filled, paired, name):
        filled.values[f"{name}_comparisons"] = _count(paired.attrs["comparisons"])


def _answers(filled: Filled, paired: pd.DataFrame, name: str) -> int:
    """Each measured variant's answer: `{name}__{variant}`, its effect_phrase, and a flag
    `{name}__{variant}__{verdict}` that lets the template's prose say what the interval says,
    and for an unresolved one `__at_most`, the most it can cost. How many were measured."""
    measured = _measured(paired)
    for variant, row in measured.items():
        key = f"{name}__{slug(variant)}"
        filled.values[key] = effect_phrase(row)
        if said := verdict(row):
            filled.values[f"{key}__{said}"] = "yes"
        if said == "unresolved":    # the most the change can cost: the far end of its interval
            filled.values[f"{key}__at_most"] = fixed(max(0.0, -row['low']))
    return len(measured)


def _measured(paired: pd.DataFrame) -> dict[str, pd.Series]:
    """The variants of a paired table that have an answer: a seed pair, or a failure."""
    return {v: row for v, row in paired.iterrows()
            if v != paired.attrs["base"] and (row["pairs"] > 0 or row["failed"])}


def verdict(row: pd.Series) -> str:
    """What a variant's row says: 'failed' (to train), 'up' or 'down' (resolved),
    'unresolved', or '' (no interval yet)."""
    if row["failed"]:
        return "failed"
    if pd.isna(row["low"]):
        return ""
    return ("up" if row["diff"] > 0 else "down") if row["resolved"] else "unresolved"


def pooled_spread(filled: Filled, study: Sweep):
    """The sd of a paired difference pooled within each family that has one, as a range over
    the families (`spread_long`), and the effect the largest measured family resolves with
    80% power at that family's sd (`detectable_measured`): the power the study has, beside
    the power it planned."""
    # (m, sd, df) of each family's pool on each machine: the df its intervals used
    sds = {(table.attrs["comparisons"], sd, table.attrs["pooled_df"][machine])
           for table in filled.paired.values() for machine, sd in table.attrs["pooled_sd_diff"].items()}
    if sds:
        low, high = min(sd for _, sd, _ in sds), max(sd for _, sd, _ in sds)
        filled.values["spread_long"] = fixed(low) if fixed(low) == fixed(high) else f"{fixed(low)}–{fixed(high)}"
        m, sd, df = max(sds)
        filled.values["detectable_measured"] = fixed(detectable_difference(sd, m, len(study.seeds), df=df))
        # each family at its own size, spread and df: the smallest effect it finds 80% of the time
        each = sorted(detectable_difference(sd, m, len(study.seeds), df=df) for m, sd, df in sds)
        filled.values["detectable_range"] = (fixed(each[0]) if fixed(each[0]) == fixed(each[-1])
                                             else f"{fixed(each[0])} to {fixed(each[-1])}")


def tally(filled: Filled, study: Sweep):
    """How the declared changes came out, counted over those with an answer so far (an
    interval or a failure: `tally_*`), and `tally_none_helped` once every declared change
    has one and none beat the base."""
    said = [v for table in filled.paired.values() for row in _measured(table).values() if (v := verdict(row))]
    if not said:
        return
    counts = {v: said.count(v) for v in ("up", "down", "failed")}
    filled.values.update(tally_variants=_count(len(said)), tally_up=_count(counts["up"]),
                         tally_down=_count(counts["down"]), tally_failed=_count(counts["failed"]),
                         tally_unresolved=_count(len(said) - sum(counts.values())))
    declared = {v for group in study.groups.values() for v in group}
    if len(said) == len(declared) and counts["up"] == 0:
        filled.values["tally_none_helped"] = "yes"


def slug(variant: str) -> str:
    """A variant's name as a placeholder's tail: 'crop + random flips' -> 'crop_random_flips'."""
    return re.sub(r"\W+", "_", variant.lower()).strip("_")


def effect_phrase(row: pd.Series) -> str:
    """One variant's answer as the text cites it: its effect in points with its interval, or
    that it failed to train, or that it has too few seed pairs for an interval."""
    if row["failed"]:
        return f"failed to train in {int(row['failed'])} of {int(row['runs'])} runs"
    if pd.isna(row["low"]):
        return f"{signed(row['diff'])} points ({int(row['pairs'])} seed pair{'s' * (row['pairs'] != 1)}, no interval yet)"
    unresolved = "" if row["resolved"] else ", not resolved"
    flag = ", its own spread" if row["own_spread"] else ""
    return f"{signed(row['diff'])} points ({signed(row['low'])} to {signed(row['high'])}{unresolved}{flag})"


def failures(filled: Filled, records: list[dict], study: Sweep):
    """`study`'s runs that failed to train, beside the base's runs of their seeds."""
    failed = {row["id"]: row for table in filled.paired.values() for row in table.attrs["failed_runs"]}
    if not failed:
        return
    seeds = {row["seed"] for row in failed.values()}
    variants = sorted({row["variant"] for row in failed.values()})
    shown = [r for r in sweep_records(records, study)
             if r["seed"] in seeds and r["tags"]["variant"] in {study.baseline, *variants}]
    filled.values["failures"] = _spoken_list(variants)
    filled.figure("failures", plots.learning_curves(history_frame(shown), hue="variant"),
                  f"Runs that failed to train, beside `{study.baseline}` with the same seeds. "
                  f"The training loss includes label smoothing; the validation loss does not.")


def budget_transfer(filled: Filled, records: list[dict], study: Sweep, short_study: Sweep):
    """Appendix A: each change of `study` against the same change in `short_study` at a
    shorter budget, family by family, the change with budget tested over every declared
    counterpart (Bonferroni)."""
    families = [f for group in study.groups if (f := budget_family(records, study, short_study, group))]
    rows = [table for table, *_ in families if len(table)]
    if not rows:
        return
    table = pd.concat(rows)
    shorts, longs = [short for _, short, _ in families], [long for *_, long in families]
    short_epochs, long_epochs = (s.config(s.baseline, records[0]["profile"]).epochs for s in (short_study, study))
    family = len(study.counterparts[short_study.name])
    filled.values["transfer_family"] = str(family)
    short_machines = {d for t in shorts for d in t.attrs["devices"]}
    if short_machines != {d for t in longs for d in t.attrs["devices"]}:
        # pairs never cross machines, but the two budgets did
        filled.values["budget_machines"] = _count(len(short_machines))
    if table["resolved"].any():
        filled.values["transfer_changed"] = "yes"
    filled.values.update(transfer_rows=_count(len(table)), transfer_resolved=_count(table["resolved"].sum()),
                         short_epochs=str(short_epochs), long_epochs=str(long_epochs))
    filled.values.update({f"transfer__{slug(v)}": f"{signed(row['short'])} points at {short_epochs} "
                          f"epochs and {signed(row['long'])} at {long_epochs}" for v, row in table.iterrows()})
    filled.values.update({f"transfer__{slug(v)}__short_unresolved": "yes" for v, row in table.iterrows()
                          if row["short_low"] <= 0 <= row["short_high"]})
    filled.figure("budget_transfer", plots.budget_transfer(table, f"{short_epochs} epochs", f"{long_epochs} epochs"),
                  f"Each change's effect at {short_epochs} epochs (squares) and at {long_epochs} "
                  f"(dots), with simultaneous {LEVEL} intervals; arrows: from {short_epochs} to {long_epochs} "
                  f"epochs; triangles: intervals cut at the axis; bold: the change with budget is "
                  f"resolved{'; †: own spread' * bool(table['own_spread'].any())}.")
    shown = table[["short", "long", "change", "change_low", "change_high", "p", "resolved"]].reset_index()
    if table["own_spread"].any():     # where an effect's interval rests on its own spread
        shown["†"] = table["own_spread"].to_numpy()
    filled.table("budget_transfer", shown.rename(columns={
        "short": f"{short_epochs} epochs", "long": f"{long_epochs} epochs", "change_low": "low",
        "change_high": "high", "p": "p (adj.)"}),
        f"Effects at two budgets and their change (points), {LEVEL} intervals over "
        f"{family} changes{' (†: an effect with its own spread)' * bool(table['own_spread'].any())}. "
        f"{short_epochs} epochs: {machine_phrase(*shorts)}. {long_epochs} epochs: {machine_phrase(*longs)}.")


def _count(n: int) -> str:
    return "none" if n == 0 else NUMBER_WORDS.get(int(n), str(int(n)))
