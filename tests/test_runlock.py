"""One process per run (runlock.py): a second sweep or a `train --resume` beside a live run
skips or refuses it, and a lock whose owner died is taken over."""
import fcntl
import os
import subprocess
import sys
import textwrap
import time

import pytest

import cifar_lib.experiment as experiment
import cifar_lib.study.reuse as reuse
from cifar_lib.config import load_config
from cifar_lib.runlock import RunInProgress, lock_path, run_lock
from cifar_lib.study.runner import run_sweep
from cifar_lib.study.sweeps import Sweep
from conftest import tiny_dataset

TINY = {"epochs": 1, "eval_subset": 100, "train_subset": 200, "batch_size": 100, "val_size": 100,
        "model_args": {"widths": [8, 8, 8]}}


def _sweep():
    return Sweep(name="locks", base="seed_improved", seeds=(0,),
                 variants={"base": TINY, "no aug": {**TINY, "augment": []}})


def _hold(path):
    """Lock `path` through a descriptor of its own, as another process's lock would be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"pid 4242 on elsewhere\n")
    return fd


def test_a_run_another_process_holds_is_refused_before_anything_is_read(tmp_path, monkeypatch):
    cfg = _sweep().config("base", "smoke")
    fd = _hold(lock_path(cfg, "smoke", 0, tmp_path / "ck"))
    monkeypatch.setattr(experiment, "load_cifar10", lambda *a, **k: pytest.fail("data read"))
    try:
        with pytest.raises(RunInProgress, match=r"pid 4242 on elsewhere.*not trained twice"):
            experiment.run_experiment(cfg, profile="smoke", seed=0, resume=True,
                                      checkpoint_dir=tmp_path / "ck", results_dir=tmp_path / "r")
    finally:
        os.close(fd)


def test_a_second_sweep_skips_the_run_the_first_is_training(tmp_path, monkeypatch, capsys):
    sweep = _sweep()
    held = sweep.config("base", "smoke")
    fd = _hold(lock_path(held, "smoke", 0, tmp_path / "ck"))
    trained = []

    def fake_train(cfg, **kw):                  # records what would train, trains nothing
        trained.append(list(cfg.augment))
        return {"tags": kw["tags"], "status": "complete"}, None
    monkeypatch.setattr(experiment, "run_experiment", fake_train)
    try:
        records = run_sweep(sweep, "smoke", tiny_dataset(), results_dir=tmp_path / "r",
                            checkpoint_dir=tmp_path / "ck")
    finally:
        os.close(fd)
    assert trained == [[]]                      # only the run nobody holds
    assert [r["tags"]["variant"] for r in records] == ["no aug"]
    assert "locks base seed 0: skipped, another process is training it (pid 4242" in capsys.readouterr().err


def test_a_lock_is_free_once_its_owner_is_gone_and_nested_holders_share_it(tmp_path):
    cfg = load_config("seed_improved", "smoke")
    path = lock_path(cfg, "smoke", 3, tmp_path)
    os.close(_hold(path))                       # an owner that died: its descriptor closed
    with run_lock(cfg, "smoke", 3, tmp_path):
        assert f"pid {os.getpid()}" in path.read_text()
        with run_lock(cfg, "smoke", 3, tmp_path):       # the sweep's lookup, then its run
            pass
        with pytest.raises(BlockingIOError):    # still held after the nested block
            os.close(_hold(path))
    assert not path.exists()
    other = load_config("seed_improved", "smoke", lr=0.5)   # another config: another lock
    assert lock_path(other, "smoke", 3, tmp_path) != path


HOLDER = textwrap.dedent("""
    import sys, time
    from cifar_lib.config import load_config
    from cifar_lib.runlock import run_lock
    cfg = load_config("seed_improved", "smoke")
    with run_lock(cfg, "smoke", 0, sys.argv[1]):
        print("holding", flush=True)
        time.sleep(60)
""")


@pytest.mark.slow
def test_train_resume_beside_a_live_run_exits_2_and_a_killed_owner_frees_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "ck")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        out = subprocess.run([sys.executable, "-m", "cifar_lib", "train", "--config",
                              "seed_improved", "--profile", "smoke", "--resume",
                              "--checkpoint-dir", str(tmp_path / "ck"),
                              "--data-root", str(tmp_path / "nowhere")],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr
        assert f"another process (pid {holder.pid}" in out.stderr
        assert "Traceback" not in out.stderr
    finally:
        holder.kill()
        holder.wait()
    cfg = load_config("seed_improved", "smoke")
    deadline = time.time() + 10
    while True:                                 # the killed owner's lock is taken over
        try:
            with run_lock(cfg, "smoke", 0, tmp_path / "ck"):
                break
        except RunInProgress:
            assert time.time() < deadline
            time.sleep(0.1)


def test_sweep_wait_trains_what_another_process_held_once_it_is_free(tmp_path, monkeypatch, capsys):
    """Two terminals running `sweep NAME --wait` share one queue and both end only when the
    whole sweep is recorded."""
    import pandas as pd

    from cifar_lib import cli
    from cifar_lib.study import sweeps, tables

    sweep = _sweep()
    monkeypatch.setitem(sweeps.SWEEPS, "locks", sweep)
    monkeypatch.setattr(cli, "_data", lambda args: tiny_dataset())
    monkeypatch.setattr(tables, "runs_frame", lambda records: pd.DataFrame())
    done = {}

    def fake_train(cfg, **kw):                  # records what trains; its record then exists
        done[kw["tags"]["variant"]] = {"tags": kw["tags"], "status": "complete"}
        return done[kw["tags"]["variant"]], None
    def recorded(cfg, **kw):                    # a trained run's record is found again
        variant = "no aug" if list(cfg.augment) == [] else "base"
        return (done[variant], None) if variant in done else None
    monkeypatch.setattr(experiment, "run_experiment", fake_train)
    monkeypatch.setattr(reuse, "find_record", recorded)
    fd = _hold(lock_path(sweep.config("base", "cpu"), "cpu", 0, tmp_path / "ck"))
    naps = []

    def nap(seconds):                           # the other process finishes while we wait
        naps.append(seconds)
        os.close(fd)
    monkeypatch.setattr(cli.time, "sleep", nap)
    assert cli.main(["sweep", "locks", "--profile", "cpu", "--wait", "--checkpoint-dir",
                     str(tmp_path / "ck"), "--results-dir", str(tmp_path / "r")]) == 0
    assert naps == [120] and set(done) == {"base", "no aug"}
    assert "1 run of locks held by other processes" in capsys.readouterr().err
