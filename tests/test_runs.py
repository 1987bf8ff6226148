"""What runs leave behind: compiled runs, stopped runs, parallel sweeps, the report's
imports and an installed (non-editable) package."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cifar_lib.experiment as experiment
from cifar_lib import train
from cifar_lib.predictions import run_predictions
from cifar_lib.config import load_config
from cifar_lib.experiment import run_experiment
from cifar_lib.study.runner import Sweep, run_sweep
from conftest import tiny_dataset

REPO = Path(__file__).resolve().parent.parent
SMALL = {"deep": {"widths": [8, 8, 8, 16, 16]}, "improved": {"widths": [8, 8, 16]},
         "basic": {"widths": [8, 8]}, "fast": {"widths": [8, 8, 16]}}


@pytest.mark.parametrize("model, extra", [
    ("improved", {}), ("improved", {"fused": True}), ("deep", {}), ("basic", {}), ("fast", {})])
@pytest.mark.slow
def test_compiled_run_writes_a_complete_record_with_branch_weights(tmp_path, model, extra):
    # aot_eager traces the model with dynamo and AOT autograd like inductor does, without
    # generating code: it is what made the branch-weight hooks record nothing.
    cfg = load_config("deep", "smoke", model=model, model_args={**SMALL[model], **extra},
                      val_size=100, eval_subset=0, epochs=1, batch_size=100, compile=True,
                      compile_backend="aot_eager")
    record, path = run_experiment(cfg, profile="smoke", data=tiny_dataset(), results_dir=tmp_path,
                                  checkpoint_dir=tmp_path, progress=False)
    assert record["status"] == "complete" and "warnings" not in record
    assert json.loads(path.read_text())["predictions"] == record["predictions"]
    weights = run_predictions(record, tmp_path)["branch_weights"]
    widths = len(SMALL[model]["widths"])
    blocks = 1 + 2 * widths if model == "fast" else widths      # FastNet: whitening + pairs
    assert weights.shape[:2] == (100, blocks) and np.isfinite(weights).all()


def _stop_after_first_epoch(monkeypatch, how):
    save = experiment.save_progress

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        if how == "signal":
            train.STOP.signal = "SIGTERM"          # what the SIGTERM handler does
        else:                                      # blow the weights up: epoch 2 diverges
            with torch.no_grad():
                for p in kwargs["model"].parameters():
                    p.fill_(float("nan"))
    monkeypatch.setattr(experiment, "save_progress", save_then_stop)


@pytest.mark.parametrize("how, status, error", [("signal", "interrupted", train.TrainingInterrupted),
                                                 ("nan", "failed", train.DivergenceError)])
@pytest.mark.slow
def test_stopped_runs_keep_every_finished_epoch(tmp_path, monkeypatch, how, status, error):
    _stop_after_first_epoch(monkeypatch, how)
    cfg = load_config("seed_improved", "smoke", val_size=100, epochs=3,
                      model_args={"widths": [8, 8, 8]})
    with pytest.raises(error):
        run_experiment(cfg, profile="smoke", data=tiny_dataset(), results_dir=tmp_path,
                       checkpoint_dir=tmp_path, progress=False)
    record = json.loads(next(tmp_path.rglob("*.json")).read_text())
    assert record["status"] == status
    assert [h["epoch"] for h in record["history"]] == [1]
    assert record["history"][0]["val_acc"] is not None and record["history"][0]["loss_trace"]


def _sweep():
    tiny = {"epochs": 2, "eval_subset": 200, "train_subset": 500, "batch_size": 100,
            "model_args": {"widths": [8, 8, 8]}}
    return Sweep(name="jobs", base="seed_improved", seeds=(0, 1),
                 variants={"flip": {"augment": ["flip"], **tiny}, "none": {"augment": [], **tiny}})


def _summary(records):
    return sorted((r["tags"]["variant"], r["seed"], round(r["final"]["val_acc"], 4),
                   [round(h["train_loss"], 4) for h in r["history"]]) for r in records)


@pytest.mark.slow
def test_a_run_that_diverges_is_a_failure_the_sweep_reports_and_keeps(tmp_path, monkeypatch, capsys):
    from cifar_lib.study.tables import compare_sweep, sweep_runs

    tiny = {"epochs": 2, "eval_subset": 200, "train_subset": 500, "batch_size": 100, "val_size": 100,
            "model_args": {"widths": [8, 8, 8]}}
    sweep = Sweep(name="diverging", base="seed_improved", seeds=(0, 1), failure_below=0.0,
                  variants={"base": tiny, "lr 1e6": {**tiny, "lr": 1e6}})
    kw = dict(results_dir=tmp_path / "results", checkpoint_dir=tmp_path / "checkpoints")
    records = run_sweep(sweep, "smoke", tiny_dataset(), **kw)          # goes on past each divergence
    assert [(r["tags"]["variant"], r["seed"], r["status"]) for r in records] == [
        ("base", 0, "complete"), ("base", 1, "complete"), ("lr 1e6", 0, "failed"), ("lr 1e6", 1, "failed")]
    assert capsys.readouterr().err.count("recorded as a failure to train") == 2
    # a rerun trains nothing: the same seed would diverge again
    monkeypatch.setattr(experiment, "run_experiment", lambda *a, **k: pytest.fail("trained again"))
    assert [r["id"] for r in run_sweep(sweep, "smoke", tiny_dataset(), **kw)] == [r["id"] for r in records]
    # the table counts both runs as failures to train, never as an effect
    table = compare_sweep(sweep, sweep_runs(sweep, "smoke", tmp_path / "results"))
    row = table.loc["lr 1e6"]
    assert (row["runs"], row["failed"], row["pairs"]) == (2, 2, 0) and not row["resolved"]
    assert {f["variant"] for f in table.attrs["failed_runs"]} == {"lr 1e6"}


@pytest.mark.slow
def test_sweep_with_two_jobs_gives_the_records_of_one_job(tmp_path, monkeypatch, cifar_folder):
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, os.cpu_count() // 2))   # what each of 2 workers gets: same maths
    try:
        serial = run_sweep(_sweep(), "smoke", cifar_folder, results_dir=tmp_path / "one",
                           checkpoint_dir=tmp_path / "ck1")
        # A worker killed mid-run: here a run stopped after its first epoch, checkpoint kept.
        _stop_after_first_epoch(monkeypatch, "signal")
        with pytest.raises(train.TrainingInterrupted):
            run_experiment(_sweep().config("none", "smoke"), profile="smoke", seed=1,
                           data=cifar_folder, results_dir=tmp_path / "two",
                           checkpoint_dir=tmp_path / "ck2", progress=False,
                           tags={"sweep": "jobs", "variant": "none", "factor": "none"})
        monkeypatch.undo()
    finally:
        torch.set_num_threads(threads)

    parallel = run_sweep(_sweep(), "smoke", cifar_folder, jobs=2, results_dir=tmp_path / "two",
                         checkpoint_dir=tmp_path / "ck2")
    assert _summary(parallel) == _summary(serial)            # the same runs, the same numbers
    files = sorted((tmp_path / "two").rglob("*.json"))
    assert len(files) == 4                                    # nothing done twice
    records = [json.loads(f.read_text()) for f in files]
    assert all(r["status"] == "complete" for r in records)
    resumed = [r for r in records if r["resumed_at_epochs"]]
    assert [(r["tags"]["variant"], r["seed"], r["resumed_at_epochs"]) for r in resumed] == [("none", 1, [1])]
    assert not list((tmp_path / "ck2").glob("*.progress.pt"))


def test_the_report_never_imports_the_training_code():
    out = subprocess.run([sys.executable, "-c", "import sys, cifar_lib.report.build; "
                          "print(sorted(m for m in sys.modules if m.startswith('cifar_lib')))"],
                         capture_output=True, text=True, check=True)
    loaded = eval(out.stdout)
    assert "cifar_lib.report.build" in loaded
    assert not {"cifar_lib.train", "cifar_lib.experiment", "cifar_lib.recipe"} & set(loaded)


@pytest.mark.slow
def test_an_installed_package_runs_from_any_folder(tmp_path, cifar_folder):
    """A non-editable install: configs come as package data; results go to the working
    directory, never into the installed package."""
    # Build from a copy: setuptools leaves build/ beside the sources it builds.
    source = tmp_path / "source"
    source.mkdir()
    for part in ("pyproject.toml", "README.md", "cifar_lib", "configs"):
        copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy
        copy(REPO / part, source / part if (REPO / part).is_dir() else source)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(source)], check=True,
                   capture_output=True)
    assert (target / "cifar_lib" / "configs" / "fast.toml").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "cifar_lib", *a], cwd=work, env=env,  # noqa: E731
                                    capture_output=True, text=True)
    where = subprocess.run([sys.executable, "-c", "import cifar_lib.paths as p; "
                            "print(p.PACKAGE_DIR, p.RESULTS_DIR)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert where == [str(target / "cifar_lib"), str(work / "results")]
    listed = run("configs")
    assert listed.returncode == 0 and "fast" in listed.stdout and "seed_improved" in listed.stdout
    trained = run("train", "--config", "seed_improved", "--profile", "smoke", "--quiet",
                  "--data-root", cifar_folder.root)
    assert trained.returncode == 0, trained.stderr
    # one's own run: under runs/ of the working folder, never among the study's results/
    assert len(list((work / "runs" / "smoke" / "seed_improved").glob("*.json"))) == 1
    assert not (work / "results").exists()
    assert list((work / "checkpoints").glob("*.pt"))
    assert not list((target / "cifar_lib").rglob("*.json")) and not (target / "results").exists()


@pytest.mark.slow
def test_gpu_check_runs_every_stage_with_commands_the_kit_accepts(tmp_path):
    """The GPU script's plumbing, on a machine without a GPU: `nvidia-smi` and `python3`
    are stand-ins that log their arguments; then every kit command it ran is parsed by the
    kit's own parser and its config or sweep looked up, as the real run would."""
    from cifar_lib.cli import build_parser
    from cifar_lib.study.sweeps import SWEEPS

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: stand-in'\n")
    (bin_dir / "python3").write_text(f"#!{sys.executable}\nimport json, sys\n"
                                     f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RESULTS": str(tmp_path / "r")}
    out = subprocess.run(["bash", str(REPO / "benchmarks/gpu_check.sh")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "stopped or failed" not in out.stdout and "skipped" not in out.stdout, out.stdout
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    kit = [build_parser().parse_args(c[2:]) for c in calls if c[:2] == ["-m", "cifar_lib"]]
    for ns in kit:
        # every run on the GPU at the recipes' budgets; the core study at its own 2 epochs
        # (`cpu`: profiles are budgets), so both budgets of the comparison share the GPU
        two_epochs = ns.command == "sweep" and ns.name == "core_study"
        assert ns.device == "cuda" and ns.profile == ("cpu" if two_epochs else "full")
        if ns.command == "train":
            load_config(ns.config, ns.profile)
        elif ns.command == "tune":      # the core study's base, its best trial confirmed
            assert ns.n_trials >= 40 and ns.confirm and ns.config is None
            SWEEPS[ns.sweep].config(SWEEPS[ns.sweep].baseline, ns.profile)
        else:
            SWEEPS[ns.name].config(next(iter(SWEEPS[ns.name].variants)), ns.profile)
    # the studies first (the coursework study with its pilot and FastNet's pilot and curve
    # beside it, recipe, core, block ablation, Optuna), then the coursework's 50-epoch
    # ImprovedNet, then `fast`'s final runs and the rest; FastNet's arm without batch norm
    # runs once its file exists
    what = {"sweep": "name", "tune": "sweep", "train": "config"}
    order = [(ns.command, getattr(ns, what[ns.command])) for ns in kit]
    arm = [("sweep", "fastnet_without_bn")] if "fastnet_without_bn" in SWEEPS else []
    assert order[:10 + len(arm)] == [("sweep", "coursework_pilot"), ("sweep", "fastnet_bn_pilot"),
                         ("sweep", "fastnet_bn_pilot2"), *arm,
                         ("sweep", "fastnet_lr_curve"), ("sweep", "coursework_study"),
                         ("sweep", "recipe_study"), ("sweep", "core_study"), ("sweep", "block_ablation"),
                         ("tune", "core_study"),
                         ("train", "improved_tuned_50")]
    assert [(ns.config, ns.seed, ns.final) for ns in kit if ns.command == "train"] == [
        ("improved_tuned_50", 0, False)] + [("fast", s, True) for s in range(5)] + [
        ("deep", 0, False), ("seed_improved", 0, False), ("seed_basic", 0, False)]
    assert [ns.name for ns in kit if ns.command == "sweep"] == [
        "coursework_pilot", "fastnet_bn_pilot", "fastnet_bn_pilot2", *(n for _, n in arm), "fastnet_lr_curve", "coursework_study", "recipe_study", "core_study", "block_ablation", "fast_budget", "fast_ablation", "augmentation",
        "hyperparameters"]
    assert any("benchmarks/throughput.py" in c for c in calls) and calls[-1][0] == "-"  # summary


SHARED_WORKER = """
import sys, torch
torch.set_num_threads(1)
from cifar_lib.data import load_cifar10
from cifar_lib.study.runner import run_sweep_shared
from cifar_lib.study.sweeps import Sweep
tiny = {"epochs": 2, "eval_subset": 200, "train_subset": 500, "batch_size": 100,
        "model_args": {"widths": [8, 8, 8]}}
sweep = Sweep(name="jobs", base="seed_improved", seeds=(0, 1),
              variants={"flip": {"augment": ["flip"], **tiny}, "none": {"augment": [], **tiny}})
root, storage, results, checkpoints = sys.argv[1:]
run_sweep_shared(sweep, "smoke", load_cifar10(root, download=False), storage, heartbeat=3,
                 results_dir=results, checkpoint_dir=checkpoints)
"""


@pytest.mark.slow
def test_workers_sharing_a_sweep_through_a_storage_give_the_records_of_one_job(tmp_path, cifar_folder):
    """Three workers on one SQLite storage (as on three machines sharing a disk): the first
    is killed in its first run; the two started after it take the queued runs and the
    dead worker's run (its heartbeat stopped), which resumes from its checkpoint."""
    import time

    threads = torch.get_num_threads()
    torch.set_num_threads(1)                              # what each worker uses: same maths
    try:
        serial = run_sweep(_sweep(), "smoke", cifar_folder, results_dir=tmp_path / "one",
                           checkpoint_dir=tmp_path / "ck1")
    finally:
        torch.set_num_threads(threads)
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    cmd = [sys.executable, "-c", SHARED_WORKER, cifar_folder.root, storage,
           str(tmp_path / "shared"), str(tmp_path / "ck")]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list((tmp_path / "ck").glob("*.progress.pt")):
        assert first.poll() is None, first.communicate()[1]
        assert time.time() < deadline
        time.sleep(0.05)
    first.kill()
    first.wait()
    # its heartbeat is now stale (2 x 3 s); a live worker's beat, every 3 s, stays fresh even
    # on a loaded machine (at 1 s a starved beat let a live run be taken twice)
    time.sleep(7)
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
    files = sorted((tmp_path / "shared").rglob("*.json"))
    records = [json.loads(f.read_text()) for f in files]
    assert len(files) == 4 and all(r["status"] == "complete" for r in records)   # none twice
    assert _summary(records) == _summary(serial)          # the same runs, the same numbers
    assert [r["resumed_at_epochs"] for r in records if r["resumed_at_epochs"]] == [[1]]
    assert not list((tmp_path / "ck").glob("*.progress.pt"))


@pytest.mark.slow
def test_a_worker_on_another_kind_of_machine_cannot_join_a_shared_sweep(tmp_path, cifar_folder, monkeypatch):
    import cifar_lib.study.runner as studies
    from cifar_lib.config import ConfigError

    sweep = _sweep().subset(["none"])
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    kw = dict(seeds=[0], results_dir=tmp_path / "shared", checkpoint_dir=tmp_path / "ck")
    real = studies.running_here
    monkeypatch.setattr(studies, "running_here", lambda cfg, device=None: ("Other CPU (2 cores)", "bf16"))
    assert len(studies.run_sweep_shared(sweep, "smoke", cifar_folder, storage, **kw)) == 1
    monkeypatch.setattr(studies, "running_here", real)
    with pytest.raises(ConfigError, match=r"runs on Other CPU \(2 cores\) at bf16, and this worker is .*would not pair"):
        studies.run_sweep_shared(sweep, "smoke", cifar_folder, storage, **kw)
    assert len(list((tmp_path / "shared").rglob("*.json"))) == 1


@pytest.mark.slow
def test_a_shared_sweep_trains_its_baseline_where_its_variants_train(tmp_path, cifar_folder):
    """The rule of run_sweep holds for --storage too: a base recorded on another machine
    is trained again here, so every variant run has its partner (defect: 0 pairs, 2 unpaired)."""
    from cifar_lib.study.runner import run_sweep_shared
    from cifar_lib.study.stats import compare_to_base
    from cifar_lib.study.tables import runs_frame

    sweep = _sweep()
    kw = dict(results_dir=tmp_path / "shared", checkpoint_dir=tmp_path / "ck")
    run_sweep(sweep.subset([sweep.baseline]), "smoke", cifar_folder, **kw)     # the base, elsewhere
    other = {"type": "cpu", "cpu": "Other CPU", "cpu_count": 2, "threads": 2, "name": "Other CPU (2 cores)"}
    for path in (tmp_path / "shared").rglob("*.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "device": other}))
    records = run_sweep_shared(sweep, "smoke", cifar_folder, f"sqlite:///{tmp_path / 's.db'}", **kw)
    here = {r["device"]["name"] for r in records}
    assert len(records) == 4 and here != {other["name"]} and len(here) == 1
    variant = next(v for v in sweep.variants if v != sweep.baseline)
    table = compare_to_base(runs_frame(records), sweep.baseline, [variant])
    assert table.loc[variant, "pairs"] == 2


@pytest.mark.slow
def test_the_analysis_after_a_run_keeps_the_run_but_hides_no_bug(tmp_path, cifar_folder, monkeypatch):
    """Was: save_analysis caught every Exception, so a bug silently cost the report its
    analysis. An expected failure (out of memory) becomes a warning in the record; anything
    else is raised, after the complete record is on disk."""
    cfg = load_config("seed_improved", "smoke", model_args={"widths": [8, 8, 8]})
    kw = dict(profile="smoke", seed=0, data=cifar_folder, progress=False,
              results_dir=tmp_path / "results", checkpoint_dir=tmp_path / "ck")

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(experiment, "branch_weights", out_of_memory)
    record, _ = run_experiment(cfg, **kw)
    assert record["status"] == "complete" and "branch weights not saved: out of memory" in record["warnings"][0]

    def bug(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(experiment, "branch_weights", bug)
    with pytest.raises(KeyError, match="a bug"):
        run_experiment(cfg, **{**kw, "seed": 1})
    written = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*seed1*.json")]
    assert [r["status"] for r in written] == ["complete"]


JOBS_SWEEP = """
import sys
from cifar_lib.data import load_cifar10
from cifar_lib.study.runner import run_sweep
from cifar_lib.study.sweeps import Sweep
tiny = {"epochs": 3, "eval_subset": 200, "train_subset": 500, "batch_size": 100,
        "model_args": {"widths": [8, 8, 8]}}
sweep = Sweep(name="stop", base="seed_improved", seeds=(0, 1, 2, 3),
              variants={"flip": {"augment": ["flip"], **tiny}, "none": {"augment": [], **tiny}})
root, results, checkpoints = sys.argv[1:]
run_sweep(sweep, "smoke", load_cifar10(root, download=False), jobs=2,
          results_dir=results, checkpoint_dir=checkpoints)
"""


@pytest.mark.slow
def test_ctrl_c_stops_a_sweep_with_jobs_without_training_the_queued_runs(tmp_path, cifar_folder):
    """Was: the running runs stopped, then the pool trained every queued run before exiting."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-c", JOBS_SWEEP, str(cifar_folder.root),
                             str(tmp_path / "r"), str(tmp_path / "c")], cwd=REPO,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list((tmp_path / "c").glob("*.progress.pt")):    # a run is under way
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)                 # Ctrl-C reaches the whole group
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    complete = [r for r in (json.loads(p.read_text()) for p in (tmp_path / "r").rglob("*.json"))
                if r["status"] == "complete"]
    assert len(complete) <= 2                          # at most the runs under way: of 8


@pytest.mark.slow
def test_a_stop_in_the_first_epoch_promises_no_resume(tmp_path, monkeypatch):
    """Was: the message said "add --resume" and the record `resume_with`, and --resume then
    answered "nothing to resume"."""
    lr = train._lr

    def stop_at_first_step(optimizer):
        train.STOP.signal = "SIGINT"               # what the SIGINT handler does
        return lr(optimizer)
    monkeypatch.setattr(train, "_lr", stop_at_first_step)
    cfg = load_config("seed_improved", "smoke", val_size=100, epochs=2, model_args={"widths": [8, 8, 8]})
    with pytest.raises(train.TrainingInterrupted) as stop:
        run_experiment(cfg, profile="smoke", data=tiny_dataset(), results_dir=tmp_path,
                       checkpoint_dir=tmp_path, progress=False)
    assert stop.value.resumable is False
    record = json.loads(next(tmp_path.rglob("*.json")).read_text())
    assert record["status"] == "interrupted" and "resume_with" not in record
    assert not list(tmp_path.glob("*.progress.pt"))


@pytest.mark.slow
def test_ctrl_c_while_scoring_keeps_the_run_and_resume_only_scores_it(tmp_path, monkeypatch):
    """Was: a bare "interrupted", exit 130 and no record, though the run had finished training."""
    cfg = load_config("seed_improved", "smoke", val_size=100, epochs=2, model_args={"widths": [8, 8, 8]})
    score = experiment.score_run

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(experiment, "score_run", ctrl_c)
    kw = dict(profile="smoke", data=tiny_dataset(), results_dir=tmp_path, checkpoint_dir=tmp_path,
              progress=False)
    with pytest.raises(train.TrainingInterrupted, match="while scoring") as stop:
        run_experiment(cfg, **kw)
    assert stop.value.resumable is True
    [path] = tmp_path.rglob("*.json")
    stopped = json.loads(path.read_text())
    assert stopped["status"] == "interrupted" and stopped["resume_with"] == "--resume"
    assert len(stopped["history"]) == 2
    monkeypatch.setattr(experiment, "score_run", score)
    monkeypatch.setattr(train, "train_one_epoch", lambda *a, **k: pytest.fail("trained again"))
    record, _ = run_experiment(cfg, resume=True, **kw)
    assert record["status"] == "complete" and record["resumed_at_epochs"] == [2]
    assert record["history"] == stopped["history"] and "test_acc" in record["final"]
