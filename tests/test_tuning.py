"""Optuna tuning: trials are kit runs on the validation split, shared by several workers
through one study database; pruned trials are recorded as pruned."""
import json
import subprocess
import sys

import optuna
import pytest

from cifar_lib.config import load_config
from cifar_lib.study.search import describe_space, trial_records
from cifar_lib.study.tuning import median_pruner, search_space, suggest, tune

TINY = """
model = "improved"
model_args = { widths = [8, 8, 8] }
optimizer = "sgd"
lr = 0.05
schedule = "onecycle"
augment = ["flip"]
epochs = 2
batch_size = 128
train_subset = 600
eval_subset = 100
"""


# A worker as a separate process: `tune` on a shared storage, with a pruner that prunes
# every odd-numbered trial after its first epoch, so the study holds both kinds.
WORKER = """
import sys, optuna
from cifar_lib.config import load_config
from cifar_lib.data import load_cifar10
from cifar_lib.study.tuning import tune

class OddPruner(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return trial.number % 2 == 1

config, data_root, storage, results = sys.argv[1:]
tune(load_config(config, "cpu"), profile="cpu", data=load_cifar10(data_root, download=False),
     n_trials=3, study_name="shared", storage=storage, results_dir=results,
     checkpoint_dir=results + "/ckpt", pruner=OddPruner())
"""


def _two_workers_share_one_study(tmp_path, cifar_folder, storage, read_storage):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    cmd = [sys.executable, "-c", WORKER, str(config), cifar_folder.root, storage,
           str(tmp_path / "results")]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=read_storage)
    assert sorted(t.number for t in study.trials) == list(range(6))        # none lost or doubled
    states = {t.number: t.state for t in study.trials}
    assert all(s == (optuna.trial.TrialState.PRUNED if n % 2 else optuna.trial.TrialState.COMPLETE)
               for n, s in states.items())
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")]
    assert sorted(r["tags"]["trial"] for r in records) == list(range(6))   # a record per trial
    by_trial = {r["tags"]["trial"]: r for r in records}
    for t in study.trials:
        record = by_trial[t.number]
        assert not record.get("test_read") and "test_acc" not in record.get("final", {})
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert record["status"] == "complete" and t.value == record["final"]["val_acc"]
            assert record["config"]["batch_size"] == t.params["batch_size"]
        else:
            assert record["status"] == "pruned" and len(record["history"]) == 1


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path, cifar_folder):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _two_workers_share_one_study(tmp_path, cifar_folder, storage, storage)


@pytest.mark.slow
def test_two_workers_share_one_study_in_a_journal_file(tmp_path, cifar_folder):
    from cifar_lib.study.tuning import open_storage

    path = tmp_path / "shared-disk" / "study.log"
    _two_workers_share_one_study(tmp_path, cifar_folder, f"journal:{path}",
                                 open_storage(f"journal:{path}"))


@pytest.mark.slow
def test_two_workers_share_one_study_on_a_postgresql_server(tmp_path, cifar_folder, postgres_url):
    _two_workers_share_one_study(tmp_path, cifar_folder, postgres_url, postgres_url)


@pytest.mark.slow
def test_the_cli_shares_a_study_through_a_storage_url(tmp_path, cifar_folder):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    path = tmp_path / "study.log"
    cmd = [sys.executable, "-m", "cifar_lib", "tune", str(config), "--n-trials", "2",
           "--profile", "cpu", "--storage", f"journal:{path}", "--study-name", "cli",
           "--data-root", cifar_folder.root, "--results-dir", str(tmp_path / "results"),
           "--checkpoint-dir", str(tmp_path / "ckpt")]
    for _ in range(2):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
    from cifar_lib.study.tuning import open_storage
    assert len(optuna.load_study(study_name="cli", storage=open_storage(f"journal:{path}")).trials) == 4


@pytest.mark.slow
def test_pruned_trials_are_recorded_as_pruned(tmp_path, cifar_folder):
    cfg = load_config("seed_improved", "smoke", val_size=100, epochs=3, train_subset=600,
                      eval_subset=100, model_args={"widths": [8, 8, 8]})
    study = tune(cfg, profile="smoke", data=cifar_folder, n_trials=2, study_name="prune",
                 storage=f"sqlite:///{tmp_path / 'p.db'}", results_dir=tmp_path, checkpoint_dir=tmp_path,
                 pruner=optuna.pruners.ThresholdPruner(lower=1.01))   # no accuracy passes 101%
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    records = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json")]
    assert [r["status"] for r in records] == ["pruned", "pruned"]
    assert all(len(r["history"]) == 1 and "test_acc" not in r.get("final", {}) for r in records)
    assert not list(tmp_path.glob("*.progress.pt"))
    # top_up counts pruned trials as finished: a study that has 2 runs 1 more to reach 3,
    # and none when asked for 2 again (a notebook run twice reuses its study).
    kwargs = dict(profile="smoke", data=cifar_folder, study_name="prune", results_dir=tmp_path,
                  storage=f"sqlite:///{tmp_path / 'p.db'}", checkpoint_dir=tmp_path,
                  pruner=optuna.pruners.ThresholdPruner(lower=1.01))
    assert len(tune(cfg, n_trials=3, top_up=True, **kwargs).trials) == 3
    assert len(tune(cfg, n_trials=2, top_up=True, **kwargs).trials) == 3


def test_trials_never_batch_more_images_than_the_subset_holds():
    cfg = load_config("study", "smoke")                      # 256 training images
    sampled = {suggest(optuna.trial.FixedTrial({"lr": 1.0, "weight_decay": 1e-4,
                                                "label_smoothing": 0.1, "dropout": 0.1,
                                                "batch_size": b}), cfg).batch_size
               for b in (128, 256)}
    assert sampled == {128, 256}
    with pytest.raises(ValueError):                          # 512 is not among the choices
        suggest(optuna.trial.FixedTrial({"lr": 1.0, "weight_decay": 1e-4, "label_smoothing": 0.1,
                                         "dropout": 0.1, "batch_size": 512}), cfg)


def test_dropout_is_searched_exactly_for_models_that_take_it(monkeypatch):
    from cifar_lib import models

    assert "dropout" in search_space(load_config("study", "cpu"))
    assert "dropout" in search_space(load_config("fast", "cpu"))      # FastBlock takes dropout
    taking = models.model_arguments
    monkeypatch.setattr(models, "model_arguments",
                        lambda name: [a for a in taking(name) if a != "dropout"])
    assert "dropout" not in search_space(load_config("fast", "cpu"))


def test_a_storage_whose_driver_is_missing_names_the_extra_to_install(monkeypatch, tmp_path):
    import importlib.util

    from cifar_lib.config import ConfigError
    from cifar_lib.study.tuning import open_storage

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "psycopg" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs the database driver 'psycopg'.*"
                                          r'pip install -e "\.\[distributed\]"'):
        open_storage("postgresql://kit:secret@db.example:5432/optuna")
    with pytest.raises(ConfigError, match=r"unknown scheme 'redis'"):
        open_storage("redis://localhost/0")
    journal = open_storage(f"journal:{tmp_path / 'shared' / 'study.log'}")
    assert type(journal).__name__ == "JournalStorage" and (tmp_path / "shared").is_dir()


def _study_with(cfg, trials):
    """An in-memory study holding finished trials with these (params, value)."""
    space = search_space(cfg)
    study = optuna.create_study(direction="maximize")
    for params, value in trials:
        probe = optuna.trial.FixedTrial(params)
        suggest(probe, cfg)                                   # the params are in the space
        distributions = {k: (optuna.distributions.FloatDistribution(*spec, log=True) if kind == "log"
                             else optuna.distributions.FloatDistribution(*spec) if kind == "float"
                             else optuna.distributions.CategoricalDistribution(spec[0]))
                         for k, (kind, *spec) in space.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=value))
    return study


def test_the_best_trial_becomes_a_variant_of_the_sweep_it_searched_from():
    from cifar_lib.study.sweeps import CORE_STUDY
    from cifar_lib.study.tuning import confirmation

    base = CORE_STUDY.config(CORE_STUDY.baseline, "cpu")     # fast at the core study's budget
    assert search_space(base)["batch_size"][1] == (base.batch_size // 2, base.batch_size,
                                                   2 * base.batch_size)
    good = {"lr": 2.0, "weight_decay": 1e-3, "label_smoothing": 0.1, "dropout": 0.05,
            "batch_size": base.batch_size // 2}
    study = _study_with(base, [({**good, "lr": 0.5}, 0.70), (good, 0.80), ({**good, "dropout": 0.2}, 0.75)])
    check = confirmation(CORE_STUDY, study, "cpu")
    assert list(check.variants) == ["fast", "Optuna trial 1"] and check.seeds == CORE_STUDY.seeds
    tuned = check.config("Optuna trial 1", "cpu")
    assert tuned.lr == pytest.approx(2.0 * base.lr) and tuned.batch_size == base.batch_size // 2
    assert (tuned.weight_decay, tuned.label_smoothing, tuned.model_args["dropout"]) == (1e-3, 0.1, 0.05)
    assert tuned.epochs == base.epochs and tuned.name == "core_study"   # the sweep's budget, its folder
    assert check.factor("Optuna trial 1").startswith("Optuna's best settings")
    assert check.command("cpu") == "python -m cifar_lib tune --sweep core_study --profile cpu --n-trials 0 --confirm"


def test_tune_refuses_a_confirmation_without_a_sweep_before_reading_data(capsys):
    from cifar_lib.cli import main

    assert main(["tune", "fast", "--n-trials", "2", "--confirm", "--data-root", "/nowhere"]) == 2
    assert "name the sweep with --sweep NAME" in capsys.readouterr().err
    assert main(["tune", "fast", "--sweep", "core_study", "--n-trials", "2"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["tune", "--sweep", "core_study", "--n-trials", "0", "--data-root", "/nowhere"]) == 2
    assert "--n-trials must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_a_confirmed_best_trial_is_paired_with_the_baseline_seed_by_seed(tmp_path, cifar_folder):
    from cifar_lib.study.runner import Sweep, run_sweep
    from cifar_lib.study.tables import compare_sweep, runs_frame
    from cifar_lib.study.tuning import confirmation

    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    sweep = Sweep(name="tiny_study", base=str(config), seeds=(0, 1), variants={"base": {}})
    where = dict(results_dir=tmp_path / "results", checkpoint_dir=tmp_path / "ckpt")
    study = tune(sweep.config("base", "cpu"), profile="cpu", data=cifar_folder, n_trials=2,
                 pruner=optuna.pruners.NopPruner(), **where)
    check = confirmation(sweep, study, "cpu")
    records = run_sweep(check, "cpu", cifar_folder, **where)
    name = f"Optuna trial {study.best_trial.number}"
    assert [(r["tags"]["variant"], r["seed"]) for r in records] == [
        ("base", 0), ("base", 1), (name, 0), (name, 1)]
    assert all(r["config"]["batch_size"] == study.best_params["batch_size"]
               for r in records if r["tags"]["variant"] == name)
    table = compare_sweep(check, runs_frame(records))
    assert table.loc[name, "pairs"] == 2 and not any(r["test_read"] for r in records)


@pytest.mark.parametrize("epochs, first_pruned_epoch", [(2, 1), (8, 4), (1, 1)])
def test_the_median_pruner_stops_a_poor_trial_from_half_its_budget(epochs, first_pruned_epoch):
    study = optuna.create_study(direction="maximize", pruner=median_pruner(epochs))
    for value in (0.80, 0.81, 0.82, 0.83):           # four whole trials set the median
        trial = study.ask()
        for step in range(epochs):
            trial.report(value, step)
        study.tell(trial, value)
    poor = study.ask()
    pruned_at = None
    for step in range(epochs):
        poor.report(0.10, step)
        if poor.should_prune():
            pruned_at = step + 1
            break
    assert pruned_at == first_pruned_epoch


@pytest.mark.slow
def test_a_trial_is_never_pruned_after_its_last_epoch(tmp_path, cifar_folder):
    """A pruner that would stop any trial: one epoch of one is already the whole budget, so
    the trial is complete, with its value, not pruned with nothing saved."""
    cfg = load_config("seed_improved", "smoke", val_size=100, epochs=1, train_subset=600,
                      eval_subset=100, model_args={"widths": [8, 8, 8]})
    study = tune(cfg, profile="smoke", data=cifar_folder, n_trials=1, study_name="last",
                 storage=f"sqlite:///{tmp_path / 'l.db'}", results_dir=tmp_path, checkpoint_dir=tmp_path,
                 pruner=optuna.pruners.ThresholdPruner(lower=1.01))
    [trial] = study.trials
    [record] = trial_records(tmp_path, "smoke", "last")
    # the value is the run's own final accuracy (which may be anything from 0 to 1 with the
    # settings this unseeded sampler draws), told to Optuna as the trial's result
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.value == record["final"]["val_acc"] and 0 <= trial.value <= 1
    assert list(trial.intermediate_values) == [0]


def test_the_choice_the_best_quarter_of_a_search_agreed_on_is_found_only_where_it_differs():
    import pandas as pd

    from cifar_lib.study.search import Search, agreed_choice

    cfg = load_config("fast", "cpu")                      # batch 2000

    def search(batches):
        trials = pd.DataFrame({"state": ["complete"] * 8 + ["pruned"],
                               "val_acc": [84, 83.5, 80, 79, 78, 77, 76, 75, 99],   # a pruned
                               "batch_size": batches + [4000]})                      # value never counts
        return Search(study=None, trials=trials, records=[], importances={})

    # the best quarter of 8 complete trials is 2: both chose 1000
    assert agreed_choice(search([1000, 1000, 2000, 2000, 4000, 2000, 2000, 2000]), cfg) == {"batch_size": 1000}
    assert agreed_choice(search([1000, 4000, 1000, 1000, 1000, 1000, 1000, 1000]), cfg) is None
    # agreeing on the recipe's own batch points at nothing new
    assert agreed_choice(search([2000, 2000, 1000, 1000, 1000, 1000, 1000, 1000]), cfg) is None


def test_a_trial_s_settings_read_as_print_sets_them():
    from cifar_lib.study.search import describe_settings

    said = describe_settings({"lr": 1.0904, "weight_decay": 0.0016378, "label_smoothing": 0.219,
                              "dropout": 0.00071461, "batch_size": 1000})
    assert said == "lr ×1.1, weight decay 0.0016, label smoothing 0.22, dropout 7.1×10⁻⁴, batch 1000"
    assert describe_settings({"dropout": 0.0}) == "dropout 0"
    # under Muon the searched rate is the filters' alone (the head's, shifts' and mixers' stay)
    space = describe_space(load_config("fast", "smoke"))
    assert space.startswith("filter lr ×0.25 to ×4 (log scale); weight decay 10⁻⁵ to 0.01 (log scale)")
    assert describe_settings({"lr": 1.0904}, load_config("fast")) == "filter lr ×1.1"
    assert describe_settings({"lr": 1.0904}, load_config("seed_improved")) == "lr ×1.1"
