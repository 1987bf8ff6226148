"""Nothing lost, nothing executed: resume after SIGKILL, clean stop on SIGTERM, atomic
records under concurrency, divergence guard, unwritable folders, unsafe checkpoints."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar_lib.config import ConfigError
from cifar_lib.checkpoints import load_model
from conftest import Evil

REPO = Path(__file__).resolve().parent.parent
TIMING = {"train_seconds", "images_per_second"}   # the only fields allowed to differ

TINY = """
model = "improved"
augment = ["crop", "flip", "rotate"]
rotate_degrees = 10.0
optimizer = "rmsprop"
lr = 1e-3
schedule = "onecycle"
batch_size = 64
epochs = 3
train_subset = 1024
eval_subset = 500
"""


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def train_cmd(config, tmp_path, cifar_folder, *extra):
    return [sys.executable, "-m", "cifar_lib", "train", "--config", str(config), "--profile",
            "cpu", "--quiet", "--data-root", cifar_folder.root,
            "--results-dir", str(tmp_path / "results"),
            "--checkpoint-dir", str(tmp_path / "ckpt"), *extra]


def records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))]


def comparable(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def wait_for(predicate, proc, timeout=120):
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def stop_after_first_epoch(cmd, checkpoints: Path):
    """Start a training command, SIGTERM it once its first progress checkpoint exists."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(checkpoints.glob("*.progress.pt")), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc, err


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_unbroken_run(tmp_path, cifar_folder, tiny_config):
    unbroken = subprocess.run(train_cmd(tiny_config, tmp_path / "a", cifar_folder),
                              cwd=REPO, capture_output=True, text=True, timeout=600)
    assert unbroken.returncode == 0, unbroken.stderr
    [expected] = records(tmp_path / "a" / "results")

    cmd = train_cmd(tiny_config, tmp_path / "b", cifar_folder)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "b" / "ckpt"
    # The first progress checkpoint is the event: epoch 2 of 3 has just begun.
    wait_for(lambda: any(ckpt.glob("*.progress.pt")), proc)
    assert proc.poll() is None
    proc.kill()                           # SIGKILL: no handler, no cleanup
    proc.wait()
    [progress] = ckpt.glob("*.progress.pt")
    state = torch.load(progress, weights_only=True)
    assert 1 <= state["position"]["epoch"] < 3
    assert records(tmp_path / "b" / "results") == []     # no record, not even half of one

    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    [got] = records(tmp_path / "b" / "results")
    assert got["status"] == "complete"
    assert got["resumed_at_epochs"] == [state["position"]["epoch"]]
    assert comparable(got["history"]) == comparable(expected["history"])
    assert got["final"] == expected["final"]
    assert not any(ckpt.glob("*.progress.pt"))          # finished: nothing left to resume


def _killed_after_first_epoch(cmd, ckpt: Path) -> Path:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(ckpt.glob("*.progress.pt")), proc)
    proc.kill()
    proc.wait()
    [progress] = ckpt.glob("*.progress.pt")
    return progress


@pytest.mark.slow
def test_a_checkpoint_saved_before_a_setting_existed_resumes(tmp_path, cifar_folder, tiny_config):
    """Every checkpoint written before `compile_mode` existed lacks it: it counts as its
    default, as it does when a finished record is reused."""
    cmd = train_cmd(tiny_config, tmp_path, cifar_folder)
    progress = _killed_after_first_epoch(cmd, tmp_path / "ckpt")
    state = torch.load(progress, weights_only=True)
    del state["config"]["compile_mode"]
    torch.save(state, progress)
    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    [record] = records(tmp_path / "results")
    assert record["status"] == "complete" and record["resumed_at_epochs"] == [state["position"]["epoch"]]


@pytest.mark.slow
def test_resuming_with_changed_settings_names_them(tmp_path, cifar_folder, tiny_config):
    cmd = train_cmd(tiny_config, tmp_path, cifar_folder)
    progress = _killed_after_first_epoch(cmd, tmp_path / "ckpt")
    before = progress.read_bytes()
    changed = subprocess.run(cmd + ["--resume", "--lr", "0.01", "--batch-size", "32"], cwd=REPO,
                             capture_output=True, text=True, timeout=600)
    assert changed.returncode == 2
    assert "(changed: batch_size, lr)" in changed.stderr and "Traceback" not in changed.stderr
    assert progress.read_bytes() == before                 # the checkpoint is untouched


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_marks_the_record_interrupted(tmp_path, cifar_folder, tiny_config):
    cmd = train_cmd(tiny_config, tmp_path, cifar_folder)
    proc, err = stop_after_first_epoch(cmd, tmp_path / "ckpt")
    assert proc.returncode == 130
    assert "--resume" in err and "Traceback" not in err
    [record] = records(tmp_path / "results")
    assert record["status"] == "interrupted" and "SIGTERM" in record["error"]
    assert "final" not in record
    assert len(list((tmp_path / "ckpt").glob("*.progress.pt"))) == 1
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    [record] = records(tmp_path / "results")                # the same record, now complete
    assert record["status"] == "complete" and len(record["history"]) == 3


TINY_FAST = """
base = "fast"
model_args = { widths = [16, 32, 32] }
batch_size = 128
epochs = 4
train_subset = 1024
eval_subset = 500
"""


@pytest.mark.slow
def test_a_stopped_fast_run_resumes_as_if_never_stopped(tmp_path, cifar_folder):
    # FastNet freezes its whitening filters: a resumed run must build the same optimizer
    # groups as the run that wrote the checkpoint (a sweep resumed on a GPU once failed here).
    config = tmp_path / "tiny_fast.toml"
    config.write_text(TINY_FAST)
    unbroken = subprocess.run(train_cmd(config, tmp_path / "a", cifar_folder),
                              cwd=REPO, capture_output=True, text=True, timeout=600)
    assert unbroken.returncode == 0, unbroken.stderr
    [expected] = records(tmp_path / "a" / "results")

    cmd = train_cmd(config, tmp_path / "b", cifar_folder)
    proc, err = stop_after_first_epoch(cmd, tmp_path / "b" / "ckpt")
    assert proc.returncode == 130, err
    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    [got] = records(tmp_path / "b" / "results")
    assert got["status"] == "complete" and got["resumed_at_epochs"]
    assert comparable(got["history"]) == comparable(expected["history"])
    assert got["final"] == expected["final"]


@pytest.mark.slow
def test_two_runs_writing_one_results_folder_lose_nothing(tmp_path, cifar_folder, tiny_config):
    # two seeds: the same run twice at once is refused (test_runlock.py)
    procs = [subprocess.Popen(train_cmd(tiny_config, tmp_path, cifar_folder, "--epochs", "1",
                                        "--seed", str(seed)),
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for seed in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    files = sorted(p for p in (tmp_path / "results").rglob("*") if p.is_file())
    jsons = [p for p in files if p.suffix == ".json"]
    # each run leaves its record and its test predictions, and nothing else (no temp files)
    assert len(jsons) == 2
    assert sorted(p.name for p in files) == sorted(
        [p.name for p in jsons] + [p.name.replace(".json", ".predictions.npz") for p in jsons])
    recs = [json.loads(p.read_text()) for p in jsons]
    assert {r["status"] for r in recs} == {"complete"}
    assert recs[0]["id"] != recs[1]["id"]


@pytest.mark.slow
def test_divergence_stops_with_a_failed_record(tmp_path, cifar_folder):
    out = subprocess.run([sys.executable, "-m", "cifar_lib", "train", "--config", "seed_improved",
                          "--profile", "smoke", "--lr", "1e6", "--quiet",
                          "--data-root", cifar_folder.root, "--results-dir", str(tmp_path / "r"),
                          "--checkpoint-dir", str(tmp_path / "c")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 3
    assert "diverged" in out.stderr and "epoch 1" in out.stderr and "learning rate 1e+06" in out.stderr
    [record] = records(tmp_path / "r")
    assert record["status"] == "failed" and "final" not in record


@pytest.mark.slow
def test_unwritable_results_folder_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = subprocess.run([sys.executable, "-m", "cifar_lib", "train", "--config", "seed_improved",
                          "--profile", "smoke", "--results-dir", str(blocker / "results")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "cannot write results to" in out.stderr and "--results-dir" in out.stderr


@pytest.mark.slow
def test_resume_without_a_checkpoint_says_so(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cifar_lib", "train", "--config", "seed_improved",
                          "--profile", "smoke", "--resume", "--results-dir", str(tmp_path / "r"),
                          "--checkpoint-dir", str(tmp_path / "c")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "nothing to resume" in out.stderr



def test_a_checkpoint_holding_a_since_removed_setting_still_loads(tmp_path):
    """Was: Config(**saved) raised TypeError on a key Config no longer has; it is now read
    the way resume reads it (config.saved_config)."""
    from cifar_lib.checkpoints import save_model
    from cifar_lib.config import load_config
    from cifar_lib.models import build_model

    cfg = load_config("seed_improved", "smoke", model_args={"widths": [8, 8, 8]})
    model = build_model(cfg.model, device="cpu", channels_last=cfg.channels_last, **cfg.model_args)
    path = tmp_path / "old.pt"
    save_model(path, model, cfg, "old-run", {"widths": [8, 8, 8]})
    state = torch.load(path, weights_only=True)
    state["config"]["a_setting_since_removed"] = 3
    torch.save(state, path)
    loaded, loaded_cfg = load_model(path, torch.device("cpu"))
    assert loaded_cfg.lr == cfg.lr and not hasattr(loaded_cfg, "a_setting_since_removed")
    x = torch.randn(2, 3, 32, 32)
    model.eval(), loaded.eval()
    assert torch.equal(loaded(x), model(x))


def test_a_checkpoint_with_a_retired_model_argument_evaluates(tmp_path, tiny_cifar, capsys):
    """Was (D5): a checkpoint whose model_args held `learn_whitening` (the archived
    fast_ablation runs) raised a TypeError in `evaluate`."""
    from cifar_lib import cli
    from cifar_lib.checkpoints import save_model
    from cifar_lib.config import load_config
    from cifar_lib.models import build_model

    args = {"widths": [8, 16, 16]}
    cfg = load_config("fast", "smoke", model_args=args)
    model = build_model(cfg.model, device="cpu", channels_last=cfg.channels_last, **cfg.model_args)
    save_model(tmp_path / "old.pt", model, cfg, "old-run", {**args, "learn_whitening": True})
    assert cli.main(["evaluate", str(tmp_path / "old.pt"), "--data-root", str(tiny_cifar.parent)]) == 0
    assert "test_acc" in capsys.readouterr().out
    # weights that do not fit today's model: one sentence, exit 2
    save_model(tmp_path / "wide.pt", model, load_config("fast", "smoke", model_args={"widths": [8, 8, 8]}),
               "old-run", {"widths": [8, 8, 8], "learn_whitening": True})
    assert cli.main(["evaluate", str(tmp_path / "wide.pt"), "--data-root", str(tiny_cifar.parent)]) == 2
    err = capsys.readouterr().err
    assert "do not fit today's fast model (it was built with learn_whitening" in err


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "model_state": Evil(marker)}, path)
    with pytest.raises(ConfigError, match="never loaded"):
        load_model(path, torch.device("cpu"))
    assert not marker.exists()


@pytest.mark.slow
def test_a_run_is_dirty_when_code_changed_but_not_when_results_did(tmp_path, monkeypatch):
    from cifar_lib import records

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                       check=True, capture_output=True)
    (tmp_path / "results").mkdir()
    (tmp_path / "model.py").write_text("width = 64\n")
    (tmp_path / "results" / "optuna.db").write_bytes(b"trials: 0")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "code and a study")
    monkeypatch.setattr(records, "REPO_ROOT", tmp_path)
    clean = records.git_commit()
    assert len(clean) == 40
    (tmp_path / "results" / "optuna.db").write_bytes(b"trials: 1")    # a search started
    assert records.git_commit() == clean
    (tmp_path / "model.py").write_text("width = 128\n")               # the code changed
    assert records.git_commit() == clean + "-dirty"


@pytest.mark.slow
def test_train_says_it_is_scoring_and_its_last_line_names_the_model(tmp_path, cifar_folder, tiny_config):
    """Was (D11): a silent minute while the test set was scored with TTA, and a last line
    that never named the trained model's file."""
    cmd = [c for c in train_cmd(tiny_config, tmp_path, cifar_folder, "--epochs", "1") if c != "--quiet"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "scoring the validation split and the test set" in out.stderr
    model = out.stdout.strip().rsplit("| model ", 1)[1]
    assert Path(model).is_file() and Path(model).parent == tmp_path / "ckpt"
