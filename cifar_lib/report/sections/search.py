"""The coursework's answers gathered, and the Optuna search with its confirmation."""
from __future__ import annotations


import pandas as pd

from ...study import plots
from ...records import machine_key
from ...study.sweeps import CORE_STUDY, sweep_records
from ...study.stats import compare_to_base
from ...study.tables import (device_label, runs_frame)

from .common import Filled, LEVEL, _spoken_list
from .studies import sweep

COURSEWORK_QUESTIONS = ("dropout 0.1", "dropout 0.2", "no batch norm", "filter lr x0.25",
                        "filter lr x0.5", "filter lr x2", "filter lr x4", "rotation only",
                        "crop + random flips", "crop + random flips + rotation")


def coursework_answers(filled: Filled, sections=("regularisation_full", "optimisation_full",
                                                  "augmentation_full"), name="coursework_answers"):
    """The core study's answers to the coursework's questions in `sections`' tables: each
    variant's paired difference to the base where it rests on two seed pairs or more (one
    pair has no interval), resolved ones first."""
    tables = [filled.paired[s] for s in sections if s in filled.paired]
    if not tables:
        return
    rows = pd.concat(tables)
    failed = [f"{v} ({int(rows.loc[v, 'failed'])} of {int(rows.loc[v, 'runs'])} runs)"
              for v in COURSEWORK_QUESTIONS if v in rows.index and rows.loc[v, "failed"] > 0]
    rows = rows.loc[[v for v in COURSEWORK_QUESTIONS if v in rows.index and pd.notna(rows.loc[v, "diff"])
                     and rows.loc[v, "pairs"] >= 2 and rows.loc[v, "failed"] == 0]]
    if rows.empty and not failed:
        return
    def listed(part):
        return _spoken_list([f"{v} ({d:+.2f} points)" for v, d in part["diff"].items()])
    verdicts = [f"resolved, {listed(rows[rows['resolved']])}" if rows["resolved"].any() else "",
                f"not resolved, {listed(rows[~rows['resolved']])}" if (~rows["resolved"]).any() else "",
                f"failed to train, {_spoken_list(failed)}" if failed else ""]
    filled.values[name] = "; ".join(v for v in verdicts if v)


def _search_values(filled: Filled, search, cfg) -> None:
    """The search's own numbers: its trials, how they ended, its best and median, its top setting."""
    from ...study.tuning import describe_settings, describe_space

    trials, complete, best = search.trials, search.complete, search.study.best_trial
    late = search.pruned_at_the_end(cfg.epochs)
    top, share = next(iter(search.importances.items()))
    filled.values.update(
        optuna_trials=str(len(trials)), optuna_complete=str(len(complete)),
        optuna_pruned=f"{len(search.pruned) - len(late)} were stopped early by the pruner" + (
            f", and {len(late)} ran every epoch but were marked pruned at the last, below the median "
            f"there (their accuracies are final ones, drawn hollow)" if len(late) else ""),
        optuna_epochs=str(cfg.epochs), optuna_space=describe_space(cfg),
        optuna_device="; ".join(f"{device_label(device)}, {precision}"
                                for device, precision in search.machines),
        optuna_best=f"{100 * best.value:.2f}%", optuna_best_trial=str(best.number),
        optuna_best_settings=describe_settings(best.params),
        optuna_median=f"{complete['val_acc'].median():.2f}%",
        optuna_top=f"{top}, with {share:.2f} of the total",
        optuna_hours=f"{search.hours:.1f}")


def optuna_search(filled: Filled, records: list[dict], search):
    """The Optuna search on the core study's base (all settings at once, one seed a trial):
    its trials, the best one's settings, the settings' importances, and the paired
    confirmation of the best trial with the core study's declared seeds. `search` is the
    stored search (tuning.read_search), or None where there is none."""
    from ...study.tuning import (SETTING_NAMES, against_one_setting, agreed_choice, confirmation)

    profile = records[0]["profile"]
    cfg = CORE_STUDY.config(CORE_STUDY.baseline, profile)
    if search is None:
        return
    _search_values(filled, search, cfg)
    trials, complete, best = search.trials, search.complete, search.study.best_trial
    check = confirmation(CORE_STUDY, search.study, profile)
    agreed = agreed_choice(search, cfg)
    check_alone = agreed and against_one_setting(CORE_STUDY, check, agreed)
    # at a fixed number of epochs a smaller batch is more steps: the discussion's reading
    smaller_batch = bool(agreed) and agreed.get("batch_size", cfg.batch_size) < cfg.batch_size
    if agreed:
        [(key, value)] = agreed.items()
        filled.values["optuna_agreed"] = (
            f"all of the best quarter of the complete trials chose {SETTING_NAMES.get(key, key)} "
            f"{value}, against the recipe's {getattr(cfg, key)}"
            + (f": at a fixed number of epochs that is {'more' if smaller_batch else 'fewer'} steps"
               if key == "batch_size" else "")
            + (f", which the core study's one-setting variant `{check_alone.baseline}` asks alone"
               if check_alone else ""))
    base_label, base_value = "", None
    if len(search.machines) == 1:    # the base's seed-0 run on the machine the trials ran on
        [(device, precision)] = search.machines
        base = [r for r in sweep_records(records, CORE_STUDY) if r["tags"]["variant"] == CORE_STUDY.baseline
                and r["seed"] == 0 and machine_key(r) == (device["name"], precision)]
        if base:
            base_value = 100 * base[-1]["final"]["val_acc"]
            filled.values["optuna_base_seed0"] = f"{base_value:.2f}%"
            base_label = f"fast, seed 0, same machine ({base_value:.2f}%)"
    filled.figure("optuna_search", plots.optuna_search(trials, search.importances, base_value, base_label),
                  f"Optuna's search on `fast` at the core study's budget ({len(trials)} trials, seed 0 "
                  f"each, validation split; {filled.values['optuna_device']}): left, each complete "
                  f"trial's validation accuracy in the order it ran (trials stopped early as ticks "
                  f"along the bottom; a triangle on the lower edge is a complete trial below the "
                  f"axis), the "
                  f"best complete trial so far"
                  + (" and `fast`'s own seed-0 run on the same machine" if base_value else "") + "; right, "
                  f"each setting's PED-ANOVA importance for reaching the best tenth of the "
                  f"{len(complete)} complete trials.")
    sweep(filled, records, check, "Optuna's best trial against `fast`, whole training split",
          "optuna_confirm")
    if "optuna_confirm_setup" not in filled.values:
        filled.values["optuna_unconfirmed"] = check.command(profile)
        return
    confirmed = filled.paired["optuna_confirm"].drop(check.baseline).iloc[0]
    filled.values["optuna_confirm_verdict"] = (
        f"they are {confirmed['diff']:+.2f} points of validation accuracy against it "
        f"({int(confirmed['pairs'])} seed pairs, {LEVEL} interval {confirmed['low']:+.2f} to "
        f"{confirmed['high']:+.2f}): "
        + ("resolved" if confirmed["resolved"] else "not resolved, so the search's gain is not "
                                                     "shown to hold beyond its own seed"))
    if check_alone and _trial_against_one_setting(filled, records, check_alone, confirmed):
        recipe = CORE_STUDY.config(CORE_STUDY.baseline, "full").epochs
        filled.values["optuna_abstract"] = (
            f"Asked of `fast` at {cfg.epochs} of its {recipe} epochs, an Optuna search over "
            f"{len(best.params)} of its settings finds a gain of {confirmed['diff']:+.2f} points "
            f"of validation accuracy (confirmed on {int(confirmed['pairs'])} declared seeds, "
            f"paired), and one of those settings alone, `{check_alone.baseline}`, is not told "
            f"apart from it")
        if smaller_batch:
            filled.values["optuna_smaller_batch"] = check_alone.baseline


def _trial_against_one_setting(filled: Filled, records: list[dict], check, confirmed: pd.Series) -> bool:
    """The best trial against the core study's variant that makes only the choice the
    search's best trials agreed on, seed by seed on one machine: what the trial's other
    settings add to that one (`confirmed` is the trial's row against the base). True when
    that one setting carries the search's gain: the trial is not told from it, and the most
    the other settings could add (the interval's top) is a small part of the confirmed gain."""
    alone, trial = check.baseline, confirmed.name
    runs = runs_frame(sweep_records(records, check))
    if set(runs["variant"]) != {alone, trial}:
        return False
    paired = compare_to_base(runs, alone, [trial])
    row = paired.loc[trial]
    if row["pairs"] < 2:
        return False
    filled.values["optuna_vs_alone"] = (
        f"The best trial against the one-setting variant `{alone}` "
        f"({paired.loc[alone, 'mean']:.2f}%), seed by seed on one machine: {row['diff']:+.2f} "
        f"points ({int(row['pairs'])} seed pairs, {LEVEL} interval {row['low']:+.2f} to "
        f"{row['high']:+.2f}), " + (
            f"resolved: its other settings {'add to' if row['diff'] > 0 else 'take from'} what "
            f"{alone} gives" if row["resolved"] else
            f"not resolved, so these seeds cannot tell the best trial from {alone} alone"))
    if not (confirmed["resolved"] and not row["resolved"] and row["high"] < confirmed["diff"] / 2):
        return False
    filled.values["optuna_alone_verdict"] = (
        f"The one-setting variant `{alone}` is not told apart from that trial on the same "
        f"seeds ({row['diff']:+.2f} points between them, {LEVEL} interval {row['low']:+.2f} to "
        f"{row['high']:+.2f}, against the trial's {confirmed['diff']:+.2f} over `fast`): as "
        f"far as {int(row['pairs'])} seeds can tell, that one setting carries the search's gain "
        f"at this budget")
    return True


