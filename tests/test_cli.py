import json
import pytest
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "cifar_lib", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_smoke_training_run_writes_a_record(cifar_folder, tmp_path):
    out = run_cli("train", "--config", "seed_improved", "--profile", "smoke", "--quiet",
                  "--data-root", cifar_folder.root, "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "NOT the official release" in out.stderr
    summary = out.stdout.strip().splitlines()[-1]
    assert summary.startswith("seed_improved [smoke] seed 0: val_acc ")
    assert "test_acc" in summary and "NOT official data" in summary
    records = list(tmp_path.rglob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["data"]["official"] is False and record["profile"] == "smoke"
    if sys.platform.startswith("linux"):     # a CPU run reuses freed memory (cifar_lib.device)
        assert record["host_malloc"] == "glibc, freed memory kept"
    ckpt = record["checkpoint"]
    ev = run_cli("evaluate", ckpt, "--data-root", cifar_folder.root)
    assert ev.returncode == 0, ev.stderr
    # evaluate scores as the run did: the same accuracy, and no TTA for a config without it
    assert f"test_acc {100 * record['final']['test_acc']:.2f}%" in ev.stdout
    assert "tta" not in ev.stdout
    assert f"on {len(cifar_folder.test_labels)} images" in ev.stdout
    Path(ckpt).unlink()


@pytest.mark.slow
def test_sweep_trains_only_the_named_variants_and_seeds(cifar_folder, tmp_path):
    args = ("sweep", "augmentation", "--profile", "smoke", "--data-root", cifar_folder.root,
            "--results-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path))
    out = run_cli(*args, "--variant", "crop+flip", "--seeds", "1", "3")
    assert out.returncode == 0, out.stderr
    records = [json.loads(f.read_text()) for f in tmp_path.rglob("*.json")]
    # the named variant and the baseline it is paired with ("none"), seed by seed
    assert sorted((r["tags"]["variant"], r["seed"]) for r in records) == [
        ("crop+flip", 1), ("crop+flip", 3), ("none", 1), ("none", 3)]
    bad = run_cli(*args, "--variant", "none", "--variant", "crop + flip")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "no variant(s) ['crop + flip']" in bad.stderr and "'crop+flip'" in bad.stderr
    assert len(list(tmp_path.rglob("*.json"))) == 4            # the bad call trained nothing


@pytest.mark.slow
def test_missing_data_offline_is_a_short_clear_error(tmp_path):
    out = run_cli("train", "--config", "seed_improved", "--profile", "smoke",
                  "--data-root", str(tmp_path / "empty"),
                  env={"CIFAR10_URL": "http://127.0.0.1:9/cifar-10-python.tar.gz"})
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert str(tmp_path / "empty" / "cifar-10-batches-py") in out.stderr
    assert "--data-root" in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 3


@pytest.mark.slow
def test_bad_setting_fails_before_any_work(tmp_path):
    out = run_cli("train", "--config", "seed_improved", "--profile", "smoke", "--lr", "-1",
                  "--data-root", str(tmp_path / "empty"))
    assert out.returncode == 2
    assert "lr must be positive" in out.stderr and "Traceback" not in out.stderr


def test_time_to_accuracy_counts_training_time_up_to_the_first_epoch_at_target():
    from cifar_lib.cli import time_to_accuracy

    history = [{"epoch": e, "train_seconds": 60.0, "train_loss": 1.0, "val_loss": 1.0,
                "train_acc": 0.9, "val_acc": acc, "lr": 0.1}
               for e, acc in enumerate([0.80, 0.95, 0.93, 0.96], start=1)]
    record = {"id": "r", "config_name": "c", "seed": 0, "history": history}
    assert time_to_accuracy(record, 0.94) == "val >= 94% after 2 epochs (2.0 min)"
    assert time_to_accuracy(record, 0.97) == "val never reached 97%"


def test_an_unknown_model_argument_is_refused_before_any_data_is_read(tmp_path, capsys, monkeypatch):
    from cifar_lib import cli, data

    def no_reading(*args, **kwargs):
        raise AssertionError("the data was read before the config was checked")
    monkeypatch.setattr(data, "load_cifar10", no_reading)
    config = tmp_path / "typo.toml"
    config.write_text('base = "seed_improved"\nmodel_args = { widht = 3 }\n')
    assert cli.main(["train", "--config", str(config), "--profile", "smoke",
                     "--data-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "unknown model_args widht for model 'improved'" in err and "widths" in err
    assert not (tmp_path / "nowhere").exists()


def test_the_training_line_counts_the_images_the_run_trains_on():
    """Was: every final run announced 'all 50,000 training images', a smoke run's 1,024 too."""
    from cifar_lib.cli import training_line
    from cifar_lib.config import load_config
    from conftest import tiny_dataset

    data = tiny_dataset()                                     # 500 training images
    smoke = load_config("fast", "smoke", final=True, train_subset=200, val_size=100)
    assert "on 200 training images (final: the validation split's included)" in \
        training_line(smoke, "smoke", 0, data)
    whole = load_config("fast", "smoke", train_subset=0, val_size=100)
    assert training_line(whole, "smoke", 0, data).endswith("on 400 training images")


def test_an_unexpected_missing_file_inside_the_kit_is_not_dressed_as_a_user_error(monkeypatch):
    """Was: any FileNotFoundError became a bare 'error: ...' and exit 2, hiding a bug."""
    from cifar_lib import cli

    def broken(*args, **kwargs):
        raise FileNotFoundError("an internal file")

    monkeypatch.setattr(cli, "load_config", broken)
    with pytest.raises(FileNotFoundError, match="an internal file"):
        cli.main(["train", "--config", "fast", "--profile", "smoke"])


def test_ones_own_runs_go_to_runs_and_the_studys_to_results():
    """`train` (and so `bash run.sh`) writes to the git-ignored runs/; sweeps and searches
    write the study's evidence to results/."""
    from cifar_lib.cli import build_parser
    from cifar_lib.paths import RESULTS_DIR, RUNS_DIR

    parse = build_parser().parse_args
    assert parse(["train", "--config", "fast"]).results_dir == RUNS_DIR != RESULTS_DIR
    assert parse(["sweep", "recipe_study"]).results_dir == RESULTS_DIR
    assert parse(["tune", "fast", "--n-trials", "1"]).results_dir == RESULTS_DIR
    assert parse(["train", "--config", "fast", "--results-dir", "x"]).results_dir == Path("x")


def test_an_interrupted_sweep_says_that_running_it_again_resumes(monkeypatch, capsys):
    """Was: a stopped sweep told the user to add --resume, which `sweep` does not accept."""
    from cifar_lib import cli
    from cifar_lib.train import TrainingInterrupted

    def stopped(args):
        raise TrainingInterrupted("SIGTERM in epoch 2 before step 14")

    monkeypatch.setattr(cli, "cmd_sweep", stopped)
    assert cli.main(["sweep", "recipe_study", "--profile", "cpu"]) == 130
    err = capsys.readouterr().err
    assert "--resume" not in err and "run the same command again to continue" in err
    monkeypatch.setattr(cli, "cmd_train", stopped)
    assert cli.main(["train", "--config", "fast"]) == 130
    assert "add --resume to the same command" in capsys.readouterr().err


def test_a_stop_before_any_checkpoint_says_there_is_nothing_to_resume(monkeypatch, capsys):
    from cifar_lib import cli
    from cifar_lib.train import TrainingInterrupted

    def stopped(args):
        raise TrainingInterrupted("SIGINT in epoch 1 before step 3", resumable=False)
    monkeypatch.setattr(cli, "cmd_train", stopped)
    assert cli.main(["train", "--config", "fast"]) == 130
    err = capsys.readouterr().err
    assert "--resume" not in err and "no checkpoint to resume from" in err


@pytest.mark.parametrize("command", [["train", "--config", "fast"], ["sweep", "recipe_study"],
                                     ["tune", "fast", "--n-trials", "1"]])
@pytest.mark.parametrize("device", ["gpu", "cuda:7"])
def test_a_device_this_machine_lacks_is_one_sentence_before_the_data_loads(command, device,
                                                                           monkeypatch, capsys):
    """Was (D7): a raw traceback after the data had loaded."""
    from cifar_lib import cli

    monkeypatch.setattr(cli, "_data", lambda args: pytest.fail("the data was loaded"))
    assert cli.main([*command, "--profile", "cpu", "--device", device]) == 2
    err = capsys.readouterr().err
    assert f"--device '{device}' is not a device this machine can train on; it has: cpu" in err
    assert "Traceback" not in err


def test_evaluate_names_a_wrong_file_and_scores_a_progress_checkpoint(tmp_path, tiny_cifar, capsys):
    """Was (D8): a record, a predictions file or a progress checkpoint each gave a traceback."""
    import json

    import numpy as np
    import torch

    from cifar_lib import cli
    from cifar_lib.checkpoints import save_progress
    from cifar_lib.config import load_config
    from cifar_lib.models import build_model

    data = ["--data-root", str(tiny_cifar.parent)]
    record = tmp_path / "run.json"
    record.write_text(json.dumps({"status": "complete", "checkpoint": "checkpoints/run.pt"}))
    np.savez(tmp_path / "run.predictions.npz", logits=np.zeros((2, 10)))
    for path, said in [(record, "is a results record, not a model; its model is checkpoints/run.pt"),
                       (tmp_path / "run.predictions.npz", "holds a run's saved test predictions"),
                       (tmp_path / "README.md", "no checkpoint file at")]:
        assert cli.main(["evaluate", str(path), *data]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert cli.main(["evaluate", str(tmp_path / "junk.pt"), *data]) == 2
    assert "is not a checkpoint the kit wrote" in capsys.readouterr().err

    args = {"widths": [8, 8, 8]}
    cfg = load_config("seed_improved", "smoke", model_args=args)
    model = build_model(cfg.model, device="cpu", channels_last=cfg.channels_last, **args)
    save_progress(tmp_path / "run.progress.pt", run_id="run", epoch=0, model=model,
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1), plateau=None,
                  scaler=torch.amp.GradScaler("cpu", enabled=False), history=[],
                  device=torch.device("cpu"), extra={"config": cfg.to_dict(), "model_args": args})
    assert cli.main(["evaluate", str(tmp_path / "run.progress.pt"), *data]) == 0
    assert "test_acc" in capsys.readouterr().out


def test_cli_edges_are_one_sentence_before_the_data_loads(tmp_path, monkeypatch, capsys):
    """Was (D11): `--final --tune` trained and printed no score, `--jobs 0` meant 1, and the
    report's empty-results advice named `train`, whose records the report never reads."""
    from cifar_lib import cli
    from cifar_lib.config import config_path

    assert config_path("fast.toml") == config_path("fast")       # was: fast.toml.toml
    monkeypatch.setattr(cli, "_data", lambda args: pytest.fail("the data was loaded"))
    for argv, said in [(["train", "--config", "fast", "--final", "--tune"], "nothing would be scored"),
                       (["sweep", "recipe_study", "--jobs", "0"], "--jobs 0: the number of runs"),
                       (["report", "--results-dir", str(tmp_path), "--figures-dir", str(tmp_path / "f"),
                         "--report-dir", str(tmp_path / "r")], "sweep recipe_study --profile cpu")]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err


@pytest.mark.slow
def test_setup_skips_the_install_while_pyproject_is_unchanged(tmp_path):
    """Was (D11): every `bash run.sh` command reinstalled the kit (about 12 s)."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls"
    fake = venv / "bin" / "python"          # records how it is called, and succeeds
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    stamp = subprocess.run("cksum < pyproject.toml", shell=True, cwd=repo, capture_output=True,
                           text=True).stdout
    (venv / ".kit-installed").write_text(stamp)
    subprocess.run(["bash", "run.sh", "setup"], cwd=repo, env={"VENV": str(venv), "PATH": "/usr/bin:/bin"},
                   check=True, timeout=60)
    assert "pip" not in log.read_text()     # only the import check ran
    (venv / ".kit-installed").write_text("an older pyproject\n")
    subprocess.run(["bash", "run.sh", "setup"], cwd=repo, env={"VENV": str(venv), "PATH": "/usr/bin:/bin"},
                   check=True, timeout=60)
    assert "pip install --quiet -e .[dev]" in log.read_text()
    assert (venv / ".kit-installed").read_text() == stamp
