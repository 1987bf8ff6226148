"""What a stored Optuna search found, as the notebooks and the report tell it: its trials
(`trials_frame`), the runs they trained, the settings' importances, its settings in prose,
and its winner set beside the one choice its best trials agreed on. Reading imports no
training code."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from ..config import Config
from ..paths import RESULTS_DIR
from .reuse import machine_key
from .tuning import search_space, study_for, trial_config_name

if TYPE_CHECKING:
    import pandas as pd


# What a trial's settings are called in prose.
SETTING_NAMES = {"lr": "lr", "weight_decay": "weight decay", "label_smoothing": "label smoothing",
                 "dropout": "dropout", "batch_size": "batch"}


def _value(key: str, v) -> str:
    # the learning rate is searched as a factor of the config's own
    if key == "lr":
        return f"×{v:.2g}"
    if isinstance(v, int):
        return str(v)
    if v == 0 or abs(v) >= 1e-3:
        return f"{v:.2g}"
    # below 0.001, a power of ten as print sets it (7.1×10⁻⁴) rather than a run of zeros
    mantissa, exponent = f"{v:.1e}".split("e")
    power = "10" + str(int(exponent)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return power if mantissa == "1.0" else f"{mantissa}×{power}"


def setting_name(key: str, cfg: Config | None = None) -> str:
    """A searched setting's prose name. Under Muon the search scales `lr`, the filters' rate,
    and leaves the head's, the shifts' and the mixers' alone: 'filter lr', not 'lr'."""
    if key == "lr" and cfg is not None and cfg.optimizer == "muon":
        return "filter lr"
    return SETTING_NAMES.get(key, key)


def describe_settings(params: dict, cfg: Config | None = None) -> str:
    """'lr ×1.3, weight decay 0.0012, label smoothing 0.21, dropout 0.02, batch 2000'
    ('filter lr' for a Muon config: setting_name)."""
    return ", ".join(f"{setting_name(k, cfg)} {_value(k, v)}" for k, v in params.items())


def describe_space(cfg: Config) -> str:
    """The search space as prose: 'lr ×0.25 to ×4 (log scale); ...; batch 1000, 2000 or 4000'."""
    parts = []
    for key, (kind, *spec) in search_space(cfg).items():
        name = setting_name(key, cfg)
        if kind == "choice":
            choices = [str(c) for c in spec[0]]
            parts.append(f"{name} {', '.join(choices[:-1])} or {choices[-1]}")
        else:
            low, high = (_value(key, float(v)) for v in spec)
            parts.append(f"{name} {low} to {high}" + (" (log scale)" if kind == "log" else ""))
    return "; ".join(parts)


def agreed_choice(search: Search, cfg: Config) -> dict | None:
    """A choice (of a setting picked from a list, such as the batch size) that every one of
    the best quarter of the complete trials made alike, where it is not `cfg`'s own, as a
    change of `cfg`: {"batch_size": 1000}. The search's clearest pointer to one setting."""
    best_quarter = search.complete.nlargest(max(2, len(search.complete) // 4), "val_acc")
    for key, (kind, *_) in search_space(cfg).items():
        if kind == "choice" and key in best_quarter and best_quarter[key].nunique() == 1:
            value = best_quarter[key].iloc[0].item()
            if value != getattr(cfg, key):
                return {key: value}
    return None


def against_one_setting(sweep, check, change: dict):
    """The best trial of `check` (a sweep's `confirmation`) beside the sweep's one-setting
    variant that makes `change` alone, as a sweep with that variant for its baseline (both
    trained with the declared seeds): what the trial's other settings add to that one. None
    if the sweep has no such variant."""
    alone = next((v for v, c in sweep.variants.items() if c == change), None)
    if alone is None:
        return None
    trial = next(v for v in check.variants if v != check.baseline)
    return dataclasses.replace(check, baseline=alone,
                               variants={alone: sweep.variants[alone], trial: check.variants[trial]})


def trials_frame(study: optuna.Study):
    """One row per finished trial: its number, state, the validation accuracy (%) it ended
    on (a pruned trial's at the epoch it stopped), the epochs it ran, the best complete value
    so far, and its settings as the config got them (the filter rate as a factor)."""
    import pandas as pd

    rows, best = [], None
    for t in sorted(study.trials, key=lambda t: t.number):
        if t.state == optuna.trial.TrialState.COMPLETE:
            value, epochs = t.value, len(t.intermediate_values) or None
            best = value if best is None else max(best, value)
        elif t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
            epochs = max(t.intermediate_values) + 1
            value = t.intermediate_values[epochs - 1]
        else:
            continue                      # running, waiting or failed: nothing measured yet
        rows.append({"trial": t.number, "state": t.state.name.lower(), "val_acc": 100 * value,
                     "epochs": epochs,
                     "best so far": None if best is None else 100 * best, **t.params})
    return pd.DataFrame(rows)


def trial_records(results_dir: Path, profile: str, study_name: str) -> list[dict]:
    """Every record a study's trials wrote, pruned ones included: where the trials trained.
    Only the trials' own folder is read, not the whole results tree."""
    from ..records import iter_records, run_folder

    folder = run_folder(results_dir, profile, trial_config_name(study_name))
    return [r for _, r in iter_records(folder) if r.get("tags", {}).get("study") == study_name]


def importances(study: optuna.Study, cfg: Config | None = None) -> dict[str, float]:
    """Each setting's share of the importance, by prose name, largest first: PED-ANOVA, named
    (it is Optuna's default only from 4.x on; fANOVA before), how much a setting decides
    whether a trial reaches the best tenth of the complete ones (deterministic, unlike
    fANOVA's random forest)."""
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    return {setting_name(k, cfg): v for k, v in
            optuna.importance.get_param_importances(study, evaluator=evaluator).items()}


@dataclasses.dataclass
class Search:
    """A stored search as the notebook and the report tell it: its trials, where they trained,
    what they cost, and the settings' importances."""
    study: optuna.Study
    trials: pd.DataFrame                    # trials_frame(study)
    records: list[dict]                     # trial_records: every trial's run, pruned ones included
    importances: dict[str, float]

    @property
    def top_tenth(self) -> int:
        """How many trials PED-ANOVA's importances rest on: the complete ones in the best
        tenth (its default quantile, cut as it cuts it: the ceiling)."""
        return max(1, math.ceil(0.1 * len(self.complete)))

    @property
    def complete(self):
        return self.trials[self.trials["state"] == "complete"]

    @property
    def pruned(self):
        return self.trials[self.trials["state"] == "pruned"]

    @property
    def machines(self) -> list[tuple[dict, str]]:
        """(device, precision) of the machines the trials trained on, one each."""
        seen = {machine_key(r): r["device"] for r in self.records}
        return [(device, precision) for (_, precision), device in sorted(seen.items())]

    @property
    def hours(self) -> float:
        return sum(r.get("wall_seconds") or 0 for r in self.records) / 3600


def read_search(sweep, profile: str, results_dir: Path = RESULTS_DIR) -> Search | None:
    """The stored search on a sweep's baseline (`tune --sweep NAME`), or None while it has
    fewer than two complete trials (importances need two)."""
    cfg = sweep.config(sweep.baseline, profile)
    study = study_for(cfg, profile, results_dir=results_dir)
    if study is None:
        return None
    trials = trials_frame(study)
    if trials.empty or (trials["state"] == "complete").sum() < 2:
        return None
    return Search(study, trials, trial_records(results_dir, profile, study.study_name),
                  importances(study, cfg))
