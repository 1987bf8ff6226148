"""Hyperparameter search with Optuna on the validation split: TPE sampling, median pruning
on each epoch's validation accuracy, every trial a kit run with its own record.

The study lives in a database (SQLite under results/ by default), so many workers (the
same command, on one machine or many, with one `--storage` URL) can share it: Optuna
hands each worker its own trials. The test set is never read. Reading a stored study
(`study_for`, `trials_frame`) imports no training code, so the report can do it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from ..config import Config, ConfigError, validate
from ..data import CIFAR10
from ..paths import CHECKPOINT_DIR, RESULTS_DIR
from .reuse import machine_key

if TYPE_CHECKING:
    import pandas as pd

# What a trial may change, and over which range (log: sampled on a log scale).
SEARCH_SPACE = {
    "lr": ("log", 0.25, 4.0),                 # x the config's own rate
    "weight_decay": ("log", 1e-5, 1e-2),
    "label_smoothing": ("float", 0.0, 0.3),
    "dropout": ("float", 0.0, 0.3),           # models that take model_args.dropout
    "batch_size": ("choice", (128, 256, 512)),
}


def default_storage(results_dir: Path, profile: str, create: bool = True) -> str | None:
    """The SQLite file under results/<profile>/tune/; without `create`, None if it is not there."""
    folder = Path(results_dir) / profile / "tune"
    if not create and not (folder / "optuna.db").is_file():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


# The database drivers SQLAlchemy loads for a storage URL's scheme, and the extra that
# brings them (SQLAlchemy 2 reads a bare postgresql:// as psycopg 3).
DRIVERS = {"postgresql": ("psycopg", "distributed"), "postgresql+psycopg": ("psycopg", "distributed"),
           "postgresql+psycopg2": ("psycopg2", "psycopg2-binary"),
           "mysql+pymysql": ("pymysql", "PyMySQL"), "mysql": ("MySQLdb", "mysqlclient")}


def open_storage(url: str, heartbeat: int | None = None, retry_stale: bool = False):
    """The Optuna storage a URL names, ready for many workers:
    - `journal:PATH`: a journal file, for workers on several machines that share a disk
      (Optuna's advice for NFS, where SQLite locks are unreliable);
    - `sqlite:///PATH`: one machine;
    - `postgresql://user@host:port/db` (or mysql+pymysql://): a database server, for many
      machines; its driver is checked here, so a missing one is a clear error, not a traceback.
    With `heartbeat` (seconds, database storages), a trial whose worker stops beating for
    2x that is failed, and with `retry_stale` queued again (up to 3 times)."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split("://", 1)[0]
    if scheme not in DRIVERS and not scheme.startswith("sqlite"):
        raise ConfigError(f"storage {url!r}: unknown scheme {scheme!r}; use journal:PATH, "
                          f"sqlite:///PATH or one of {', '.join(DRIVERS)}")
    if scheme in DRIVERS:
        import importlib.util

        module, extra = DRIVERS[scheme]
        if importlib.util.find_spec(module) is None:
            fix = (f'pip install -e ".[{extra}]"' if extra == "distributed" else f"pip install {extra}")
            raise ConfigError(f"storage {url.split('@')[-1]!r} needs the database driver {module!r}, "
                              f"which is not installed; fix: {fix}")
    kwargs = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat} if heartbeat else {}
    if heartbeat and retry_stale:
        # Optuna 4.9 renamed failed_trial_callback; take whichever this Optuna has.
        import inspect

        callback = optuna.storages.RetryFailedTrialCallback(max_retry=3)
        accepted = inspect.signature(optuna.storages.RDBStorage).parameters
        key = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in accepted
               else "failed_trial_callback")
        kwargs[key] = callback
    # Workers started together on a new database race to create its tables and types (seen
    # on PostgreSQL: a duplicate key in pg_type); the loser retries and finds them made.
    return _retrying(lambda: optuna.storages.RDBStorage(url, **kwargs))


def _retrying(make, attempts: int = 8):
    import random
    import time

    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            return make()
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def _open_study(name: str, storage, pruner, sampler=None) -> optuna.Study:
    """Create the study or join it; workers racing to create it retry (see open_storage)."""
    return _retrying(lambda: optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        pruner=pruner, sampler=sampler or optuna.samplers.TPESampler()))


def median_pruner(epochs: int) -> optuna.pruners.MedianPruner:
    """Stop a trial whose validation accuracy is below the median of earlier trials' at the
    same epoch, from half its budget on (after 4 whole trials set the median). Half, because
    an epoch's accuracy under a rate still far from its end ranks trials poorly; at a
    2-epoch budget that is after the first epoch, the only point where stopping saves time."""
    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=max(0, epochs // 2 - 1))


def search_space(cfg: Config) -> dict:
    """SEARCH_SPACE as it applies to `cfg`: no dropout for a model that takes none, and no batch
    larger than a small training subset (it would leave no full batch to train on)."""
    from ..models import model_arguments

    space = dict(SEARCH_SPACE)
    if "dropout" not in model_arguments(cfg.model):
        del space["dropout"]
    kind, choices = space["batch_size"]
    if cfg.batch_size not in choices:       # a large-batch recipe (fast: 2000): half, same, double
        space["batch_size"] = (kind, (cfg.batch_size // 2, cfg.batch_size, 2 * cfg.batch_size))
    if cfg.train_subset:
        kind, choices = space["batch_size"]
        space["batch_size"] = (kind, tuple(c for c in choices if c <= cfg.train_subset)
                               or (cfg.batch_size,))
    return space


def suggest(trial: optuna.Trial, cfg: Config) -> Config:
    """The config with this trial's settings (the learning rate as a factor of the config's)."""
    values = {}
    for key, (kind, *spec) in search_space(cfg).items():
        if kind == "log":
            values[key] = trial.suggest_float(key, *spec, log=True)
        elif kind == "float":
            values[key] = trial.suggest_float(key, *spec)
        else:
            values[key] = trial.suggest_categorical(key, list(spec[0]))
    model_args = dict(cfg.model_args)
    if "dropout" in values:
        model_args["dropout"] = values.pop("dropout")
    values["lr"] = cfg.lr * values["lr"]
    return validate(dataclasses.replace(cfg, model_args=model_args, **values))


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


def describe_settings(params: dict) -> str:
    """'lr ×1.3, weight decay 0.0012, label smoothing 0.21, dropout 0.02, batch 2000'."""
    return ", ".join(f"{SETTING_NAMES.get(k, k)} {_value(k, v)}" for k, v in params.items())


def describe_space(cfg: Config) -> str:
    """The search space as prose: 'lr ×0.25 to ×4 (log scale); ...; batch 1000, 2000 or 4000'."""
    parts = []
    for key, (kind, *spec) in search_space(cfg).items():
        name = SETTING_NAMES.get(key, key)
        if kind == "choice":
            choices = [str(c) for c in spec[0]]
            parts.append(f"{name} {', '.join(choices[:-1])} or {choices[-1]}")
        else:
            low, high = (_value(key, float(v)) for v in spec)
            parts.append(f"{name} {low} to {high}" + (" (log scale)" if kind == "log" else ""))
    return "; ".join(parts)


def best_settings(study: optuna.Study, cfg: Config) -> dict:
    """The best trial's settings as a change of `cfg` (what a sweep variant holds)."""
    tuned = suggest(optuna.trial.FixedTrial(study.best_trial.params), cfg)
    return {key: getattr(tuned, key) for key in ("lr", "weight_decay", "label_smoothing",
                                                 "batch_size", "model_args")
            if getattr(tuned, key) != getattr(cfg, key)}


def confirmation(sweep, study: optuna.Study, profile: str):
    """The sweep's baseline beside the study's best trial, as a variant of the same sweep:
    trained with the sweep's declared seeds and paired with its baseline seed by seed (the
    search saw one seed each, so its best value is optimistic until this says otherwise).
    The variant is named by its trial, so a later best is a new variant, not a mix."""
    base = sweep.config(sweep.baseline, profile)
    name = f"Optuna trial {study.best_trial.number}"
    change = {**sweep.variants[sweep.baseline], **best_settings(study, base)}
    return dataclasses.replace(sweep, variants={sweep.baseline: sweep.variants[sweep.baseline], name: change},
                      factors={**sweep.factors, name: "Optuna's best settings (several at once)"},
                      is_subset=True, groups={}, counterparts={},
                      made_by=f"python -m cifar_lib tune --sweep {sweep.name} --profile {{profile}} "
                              f"--n-trials 0 --confirm")


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


def default_study_name(cfg: Config, profile: str) -> str:
    """A search's name in its storage unless one is given: <config>-<profile>."""
    return f"{cfg.name}-{profile}"


def check_n_trials(n_trials: int, confirm: bool = False) -> None:
    """A search runs one trial or more; with --confirm, 0 only confirms the stored best."""
    if n_trials < (0 if confirm else 1):
        raise ConfigError(f"--n-trials must be at least {0 if confirm else 1}, got {n_trials}")


def study_for(cfg: Config, profile: str, study_name: str | None = None, storage: str | None = None,
              results_dir: Path = RESULTS_DIR) -> optuna.Study | None:
    """The stored study of `cfg` at `profile` (default name <config>-<profile>), or None."""
    study_name = study_name or default_study_name(cfg, profile)
    url = storage or default_storage(results_dir, profile, create=False)
    if url is None:
        return None
    storage = open_storage(url)
    if study_name not in optuna.study.get_all_study_names(storage):
        return None
    return optuna.load_study(study_name=study_name, storage=storage)


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


def trial_config_name(study_name: str) -> str:
    """The config name a study's trials run under, so their records share one folder."""
    return f"tune-{study_name}"


def trial_records(results_dir: Path, profile: str, study_name: str) -> list[dict]:
    """Every record a study's trials wrote, pruned ones included: where the trials trained.
    Only the trials' own folder is read, not the whole results tree."""
    from ..records import iter_records, run_folder

    folder = run_folder(results_dir, profile, trial_config_name(study_name))
    return [r for _, r in iter_records(folder) if r.get("tags", {}).get("study") == study_name]


def importances(study: optuna.Study) -> dict[str, float]:
    """Each setting's share of the importance, by prose name, largest first: PED-ANOVA, named
    (it is Optuna's default only from 4.x on; fANOVA before), how much a setting decides
    whether a trial reaches the best tenth of the complete ones (deterministic, unlike
    fANOVA's random forest)."""
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    return {SETTING_NAMES.get(k, k): v for k, v in
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
    study = study_for(sweep.config(sweep.baseline, profile), profile, results_dir=results_dir)
    if study is None:
        return None
    trials = trials_frame(study)
    if trials.empty or (trials["state"] == "complete").sum() < 2:
        return None
    return Search(study, trials, trial_records(results_dir, profile, study.study_name),
                  importances(study))



def tune(cfg: Config, *, profile: str, data: CIFAR10, n_trials: int, study_name: str | None = None,
         storage: str | None = None, results_dir: Path = RESULTS_DIR,
         checkpoint_dir: Path = CHECKPOINT_DIR, pruner: optuna.pruners.BasePruner | None = None,
         seed: int = 0, device: str | None = None, top_up: bool = False) -> optuna.Study:
    """Run `n_trials` more trials of the study (created if new) and return it; with
    `top_up`, only as many as it lacks to have `n_trials` finished (complete or pruned)
    ones, so a notebook that runs again reuses its study instead of growing it."""
    from ..experiment import run_experiment
    from ..train import Pruned

    check_n_trials(n_trials)
    study_name = study_name or default_study_name(cfg, profile)
    study = _open_study(study_name, open_storage(storage or default_storage(results_dir, profile)),
                        pruner or median_pruner(cfg.epochs))
    if top_up:
        finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                            optuna.trial.TrialState.PRUNED))
        n_trials -= len(finished)
        if n_trials <= 0:
            return study

    def objective(trial: optuna.Trial) -> float:
        trial_cfg = dataclasses.replace(suggest(trial, cfg), name=trial_config_name(study_name))

        def report(epoch: int, row: dict) -> None:
            trial.report(row["val_acc"], epoch)
            # after the last epoch there is nothing left to save: the trial is complete
            if epoch + 1 < trial_cfg.epochs and trial.should_prune():
                raise Pruned(f"pruned by Optuna after epoch {epoch + 1} "
                             f"(val_acc {row['val_acc']:.4f})")

        try:
            record, _ = run_experiment(trial_cfg, profile=profile, seed=seed, data=data,
                                       device=device, results_dir=results_dir,
                                       checkpoint_dir=checkpoint_dir, progress=False,
                                       read_test=False, epoch_callback=report,
                                       tags={"study": study_name, "trial": trial.number})
        except Pruned as e:
            raise optuna.TrialPruned(str(e)) from None
        return record["final"]["val_acc"]

    study.optimize(objective, n_trials=n_trials)
    return study
