"""Optuna tuning: trials are kit runs on the validation split, shared by several workers
through one study database; pruned trials are recorded as pruned."""
import json
import subprocess
import sys

import optuna
import pytest

from cifar_lib.config import load_config
from cifar_lib.tuning import search_space, suggest, tune

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


def test_two_workers_share_one_sqlite_study(tmp_path, cifar_folder):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cmd = [sys.executable, "-m", "cifar_lib", "tune", str(config), "--n-trials", "3",
           "--profile", "cpu", "--storage", storage, "--study-name", "shared",
           "--data-root", cifar_folder.root, "--results-dir", str(tmp_path / "results"),
           "--checkpoint-dir", str(tmp_path / "ckpt")]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 6
    assert sorted(t.number for t in study.trials) == list(range(6))        # none lost or doubled
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
               for t in study.trials)
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")]
    assert sorted(r["tags"]["trial"] for r in records) == list(range(6))   # a record per trial
    assert all(r["test_read"] is False if r["status"] == "complete" else True for r in records)
    by_trial = {r["tags"]["trial"]: r for r in records}
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value == by_trial[t.number]["final"]["val_acc"]
            assert by_trial[t.number]["config"]["batch_size"] == t.params["batch_size"]


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


def test_models_without_dropout_are_not_searched_over_it():
    assert "dropout" in search_space(load_config("study", "cpu"))
    assert "dropout" not in search_space(load_config("fast", "cpu"))
