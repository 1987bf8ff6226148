"""The Optuna search at 2 epochs (Appendix B): what it ran and found, and the settings'
importances. Its winner's answer at 8 epochs is a family of the recipe study."""
from __future__ import annotations

from ...study import plots
from ...study.reuse import machine_key
from ...study.stats import fixed
from ...study.sweeps import Sweep, sweep_records
from ...study.tables import compare_sweep, device_label, runs_frame

from .common import Filled
from .studies import _count, effect_phrase


def optuna_search(filled: Filled, records: list[dict], sweep: Sweep, search):
    """The stored search on `sweep`'s base (search.read_search; None: nothing said)."""
    from ...study.search import against_one_setting, agreed_choice, describe_settings, describe_space
    from ...study.tuning import confirmation

    if search is None:
        return
    cfg = sweep.config(sweep.baseline, records[0]["profile"])
    trials, complete, best = search.trials, search.complete, search.study.best_trial
    top, share = next(iter(search.importances.items()))
    filled.values.update(
        optuna_trials=str(len(trials)), optuna_complete=str(len(complete)),
        # a pruned trial may have run every epoch: stopped after its last one
        optuna_full=str(int((trials["epochs"] == cfg.epochs).sum())),
        optuna_epochs=str(cfg.epochs), optuna_space=describe_space(cfg),
        optuna_device="; ".join(f"{device_label(device)}, {precision}"
                                for device, precision in search.machines),
        optuna_best=f"{fixed(100 * best.value)}%", optuna_best_trial=str(best.number),
        optuna_best_settings=describe_settings(best.params, cfg),
        optuna_median=f"{fixed(complete['val_acc'].median())}%",
        optuna_top=f"{top} ({fixed(share)} of the total)", optuna_top_trials=_count(search.top_tenth))
    # the winner retrained with the declared seeds, paired with the base (`optuna_confirmed`)
    check = confirmation(sweep, search.study, records[0]["profile"])
    confirmed = sweep_records(records, check)
    if check.baseline in {r["tags"]["variant"] for r in confirmed}:
        winner = compare_sweep(check, runs_frame(confirmed)).drop(check.baseline).iloc[0]
        if winner["pairs"] > 0:
            filled.values["optuna_confirmed"] = effect_phrase(winner)
        # a declared seed that the winning trial itself trained with repeats the selection's
        # run, so its retraining keeps part of the selection's optimism: said, not hidden
        chosen = {r["seed"] for r in search.records if r["tags"].get("trial") == best.number}
        if repeated := sorted(chosen & set(check.seeds)):
            filled.values["optuna_selection_seed"] = ", ".join(map(str, repeated))
    # the winner decomposed: the one choice the best trials agreed on, made alone by a declared
    # variant, against the winner's settings, paired seed by seed (what its other settings add)
    agreed = agreed_choice(search, cfg)
    alone = agreed and against_one_setting(sweep, check, agreed)
    if alone:
        (key, value), = agreed.items()
        filled.values.update(optuna_agreed=describe_settings(agreed, cfg),
                             optuna_agreed_trials=f"{int((trials[key] == value).sum())} of {len(trials)}")
        mine = sweep_records(records, alone)
        if alone.baseline in {r["tags"]["variant"] for r in mine}:
            beyond = compare_sweep(alone, runs_frame(mine)).drop(alone.baseline)
            if len(beyond) and beyond.iloc[0]["pairs"] > 0:
                filled.values.update(optuna_alone=alone.baseline,
                                     optuna_beyond_alone=effect_phrase(beyond.iloc[0]))
                if not beyond.iloc[0]["resolved"]:
                    filled.values["optuna_beyond_alone__unresolved"] = "yes"
    base_label, base_value = "", None
    if len(search.machines) == 1:    # the base's seed-0 run on the machine the trials ran on
        [(device, precision)] = search.machines
        base = [r for r in sweep_records(records, sweep) if r["tags"]["variant"] == sweep.baseline
                and r["seed"] == 0 and machine_key(r) == (device["name"], precision)]
        if base:
            base_value = 100 * base[-1]["final"]["val_acc"]
            base_label = f"fast, seed 0 ({fixed(base_value)}%)"
    filled.figure("optuna_search", plots.optuna_search(trials, search.importances, base_value, base_label),
                  f"The Optuna search at {cfg.epochs} epochs. Left: each complete trial's validation "
                  f"accuracy in run order, the best so far, and trials stopped early as ticks. "
                  f"Right: PED-ANOVA importance for reaching the best tenth.")
