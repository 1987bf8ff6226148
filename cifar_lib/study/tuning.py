"""Hyperparameter search with Optuna on the validation split: TPE sampling, median pruning
on each epoch's validation accuracy, every trial a kit run with its own record.

The study lives in a database (SQLite under results/ by default), so many workers (the
same command, on one machine or many, with one `--storage` URL) can share it: Optuna
hands each worker its own trials. The test set is never read. Reading a stored study
(`study_for`, and what study/search.py reads) imports no training code, so the report
can do it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna

from ..config import Config, ConfigError, validate
from ..data import CIFAR10
from ..paths import CHECKPOINT_DIR, RESULTS_DIR

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


def trial_config_name(study_name: str) -> str:
    """The config name a study's trials run under, so their records share one folder."""
    return f"tune-{study_name}"


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
