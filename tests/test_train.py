import json

import numpy as np
import pytest
import torch

from cifar_lib.blocks import FusedIntermediateBlock
from cifar_lib.config import load_config
from cifar_lib.checkpoints import load_model
from cifar_lib.experiment import run_experiment
from cifar_lib.loaders import TensorLoader
from cifar_lib.models import build_model
from cifar_lib.records import iter_records, read_record
from cifar_lib.device import Precision
from cifar_lib.evaluation import score
from cifar_lib.recipe import make_optimizer
from cifar_lib.train import train_one_epoch
from conftest import learnable_images, tiny_dataset


@pytest.mark.parametrize("model_name", ["basic", "improved"])
@pytest.mark.slow
def test_a_few_epochs_lower_the_loss(model_name):
    torch.manual_seed(0)
    x, y = learnable_images()
    cfg = load_config("seed_improved", "smoke", model=model_name, lr=2e-3)
    model = build_model(model_name, widths=(16, 32))
    opt = make_optimizer(cfg, model)
    precision = Precision("fp32", torch.device("cpu"))
    loader = TensorLoader(x, y, 32, train=True, augment=("flip",))
    before = score(model, TensorLoader(x, y, 128), precision=precision)["loss"]
    for epoch in range(3):
        loader.set_epoch(epoch)
        stats = train_one_epoch(model, loader, opt, precision=precision, scaler=precision.scaler(),
                                progress=False)
    after = score(model, TensorLoader(x, y, 128), precision=precision)["loss"]
    assert after < 0.7 * before
    assert stats["images_per_second"] > 0 and 0 <= stats["train_acc"] <= 1


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.slow
def test_results_record_round_trips(tmp_path, fused):
    cfg = load_config("seed_improved", "smoke", val_size=100, epochs=2,
                      model_args={"widths": [8, 16, 16], "fused": fused})
    record, path = run_experiment(cfg, profile="smoke", seed=1, data=tiny_dataset(),
                                  results_dir=tmp_path / "results",
                                  checkpoint_dir=tmp_path / "ckpt", progress=False)
    assert path.parent == tmp_path / "results" / "smoke" / "seed_improved"
    assert read_record(path) == json.loads(json.dumps(record))
    assert record["status"] == "complete" and record["seed"] == 1
    assert record["data"]["official"] is False and record["data"]["fingerprint"] == "tiny"
    assert record["data"]["val_images"] == 100 and record["data"]["train_images"] == 400
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "train_seconds",
                "images_per_second"):
        assert key in record["history"][0]
    final = record["final"]
    assert 0 <= final["val_acc"] <= 1 and 0 <= final["test_acc"] <= 1
    assert record["wall_seconds"] >= record["train_seconds"] > 0
    assert {"torch", "torchvision", "python"} <= set(record["versions"])
    assert record["device"]["type"] == "cpu"
    assert record["config"]["model_args"] == {"widths": [8, 16, 16], "fused": fused}
    assert record["model"]["args"]["fused"] is fused
    # smoke records are kept apart from what the report reads
    assert list(iter_records(tmp_path / "results")) == []
    assert len(list(iter_records(tmp_path / "results", include_smoke=True))) == 1
    # the checkpoint reloads (weights only) into the same model
    model, cfg2 = load_model(record["checkpoint"], torch.device("cpu"))
    assert cfg2 == cfg
    assert sum(p.numel() for p in model.parameters()) == record["model"]["parameters"]
    assert isinstance(model.blocks[0], FusedIntermediateBlock) is fused


@pytest.mark.slow
def test_smoke_run_on_unofficial_data_is_marked_so(cifar_folder, tmp_path):
    cfg = load_config("seed_improved", "smoke", train_subset=256, eval_subset=200)
    record, _ = run_experiment(cfg, profile="smoke", data=cifar_folder,
                               results_dir=tmp_path, checkpoint_dir=tmp_path, progress=False)
    assert record["data"]["official"] is False
    assert record["data"]["fingerprint"] == cifar_folder.fingerprint
    assert record["model"]["parameters"] == 1_118_300


@pytest.mark.slow
def test_tuning_run_never_touches_the_test_set(tmp_path):
    data = tiny_dataset()
    data.test_labels = np.full_like(data.test_labels, 99)   # any read of these would crash
    cfg = load_config("deep_sgd", "smoke", val_size=100, model_args={"widths": [8, 8, 16, 16, 16]})
    record, _ = run_experiment(cfg, profile="smoke", data=data, results_dir=tmp_path,
                               checkpoint_dir=tmp_path, progress=False, read_test=False)
    assert record["test_read"] is False
    assert set(record["final"]) == {"val_acc", "val_loss", "val_acc_tta"}


def test_records_are_written_whole_with_ordinary_permissions(tmp_path):
    import os

    from cifar_lib.records import write_record

    path = write_record({"a": 1}, tmp_path / "x" / "r.json")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert read_record(path) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]   # no temp file left


def test_auto_precision_is_bf16_on_bf16_cpus_fp16_on_old_gpus_fp32_otherwise(monkeypatch):
    from cifar_lib import device as dev

    cpu = torch.device("cpu")
    monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: True)
    assert dev.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: False)
    assert dev.resolve_precision("auto", cpu) == "fp32"
    assert dev.resolve_precision("bf16", cpu) == "bf16"              # asked for: kept
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dev.resolve_precision("auto", torch.device("cuda")) == "fp16"   # a T4
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dev.resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert dev.resolve_precision("auto", torch.device("mps")) == "fp32"
    # Only fp16 needs a gradient scaler.
    assert Precision("fp16", cpu).scaler().is_enabled()
    assert not Precision("bf16", cpu).scaler().is_enabled()


def test_a_cpu_that_cannot_be_asked_about_bf16_says_so(monkeypatch):
    from cifar_lib import device as dev

    def renamed():
        raise AttributeError("no op named _is_mkldnn_bf16_supported")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", renamed, raising=False)
    with pytest.warns(RuntimeWarning, match=r"could not ask oneDNN .* training in fp32"):
        assert dev.cpu_has_fast_bf16() is False


@pytest.mark.slow
def test_the_plateau_schedule_lowers_the_rate_when_validation_loss_stops_falling():
    from cifar_lib.recipe import make_plateau
    from cifar_lib.train import fit

    torch.manual_seed(0)
    x, y = learnable_images(128)
    cfg = load_config("seed_improved", "smoke", plateau_patience=0, plateau_factor=0.5, lr=1e-3)
    model = build_model("basic", widths=(8, 8))
    opt = make_optimizer(cfg, model)
    precision = Precision("fp32", torch.device("cpu"))
    noise = torch.Generator().manual_seed(1)
    # Validation images the model cannot learn from (labels shuffled): its loss stalls.
    val = TensorLoader(x, y[torch.randperm(len(y), generator=noise).numpy()], 128)
    history = list(fit(model, TensorLoader(x, y, 32, train=True), val, epochs=6, optimizer=opt,
                       plateau=make_plateau(cfg, opt), precision=precision, progress=False))
    rates = [h["lr"] for h in history]
    assert rates[0] == 1e-3 and min(rates) < rates[0]
    # Each drop follows an epoch whose validation loss was no new low, and halves the rate.
    losses = [h["val_loss"] for h in history]
    for i in range(1, len(rates)):
        if rates[i] < rates[i - 1]:
            assert losses[i - 1] >= min(losses[:i - 1] or [float("inf")]) * (1 - 1e-4)
            assert rates[i] == pytest.approx(rates[i - 1] * 0.5)


@pytest.mark.slow
def test_fp16_training_steps_through_the_gradient_scaler():
    torch.manual_seed(0)
    x, y = learnable_images(128)
    cfg = load_config("seed_improved", "smoke", lr=2e-3)
    model = build_model("basic", widths=(8, 16))
    opt = make_optimizer(cfg, model)
    precision = Precision("fp16", torch.device("cpu"))        # CPU autocast runs fp16 too
    scaler = precision.scaler()
    assert scaler.is_enabled()
    loader = TensorLoader(x, y, 32, train=True)
    before = score(model, TensorLoader(x, y, 128), precision=precision)["loss"]
    for epoch in range(3):
        loader.set_epoch(epoch)
        train_one_epoch(model, loader, opt, precision=precision, scaler=scaler, progress=False)
    # The scaler took part: it holds a scale and its growth tracker counted the steps.
    assert scaler.get_scale() > 0 and scaler._get_growth_tracker() > 0
    assert score(model, TensorLoader(x, y, 128), precision=precision)["loss"] < before


def test_progress_bars_go_to_stdout_in_a_notebook_and_stderr_in_a_terminal(monkeypatch):
    """A notebook styles stderr as an error: a training bar there looked like one."""
    import sys

    from cifar_lib.train import progress_stream

    import types

    class ZMQInteractiveShell:                 # the shell class of a Jupyter kernel
        pass

    kernel = types.SimpleNamespace(get_ipython=lambda: ZMQInteractiveShell())
    terminal = types.SimpleNamespace(get_ipython=lambda: None)    # IPython loaded, no kernel
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert progress_stream() is sys.stderr
    monkeypatch.setitem(sys.modules, "IPython", terminal)
    assert progress_stream() is sys.stderr
    monkeypatch.setitem(sys.modules, "IPython", kernel)
    assert progress_stream() is sys.stdout


def _torch_rates(cfg, optimizer, steps_per_epoch: int) -> list[list[float]]:
    """Every group's rate at every step of a whole run, as torch's LambdaLR and OneCycleLR
    (what the kit stepped until its schedules became formulas) give them."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "linear":
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
            pct_start=cfg.warmup_fraction, anneal_strategy="linear", cycle_momentum=False)
    rates = [[g["lr"] for g in optimizer.param_groups]]
    for _ in range(total - 1):
        optimizer.step()
        sched.step()
        rates.append([g["lr"] for g in optimizer.param_groups])
    return rates


@pytest.mark.parametrize("name", ["fast", "deep_sgd", "improved_tuned", "improved_tuned_50"])
def test_the_schedule_formulas_give_torchs_rates_exactly_over_a_whole_run(name):
    """Every group's rate at every step of the whole run (45,000 images, the cpu profile)
    equals, bit for bit, the rate torch's scheduler gave: runs made before the schedules
    became formulas pair with runs made after."""
    from cifar_lib.recipe import make_lr_schedule

    cfg = load_config(name, "cpu")
    steps = -(-45_000 // cfg.batch_size)
    model = build_model(cfg.model, **({"widths": (8, 16, 16)} if cfg.model == "fast" else {}))
    reference = _torch_rates(cfg, make_optimizer(cfg, model), steps)
    rates = make_lr_schedule(cfg, make_optimizer(cfg, model), steps)
    assert len(reference) == cfg.epochs * steps
    assert [rates(step) for step in range(len(reference))] == reference


def test_a_resumed_run_takes_its_rates_from_the_config_not_from_the_checkpoint():
    """Was (D9): resuming a checkpoint made before the onecycle fix brought its old peaks back
    (OneCycleLR kept max_lr = lr for every group in the optimizer's param groups)."""
    from cifar_lib.checkpoints import rng_state
    from cifar_lib.device import Precision
    from cifar_lib.experiment import restore
    from cifar_lib.recipe import make_lr_schedule

    cfg = load_config("fast", "smoke", schedule="onecycle", epochs=4)
    model = build_model("fast", widths=(8, 16, 16))
    optimizer = make_optimizer(cfg, model)
    rates = make_lr_schedule(cfg, optimizer, steps_per_epoch=10)
    scaler = Precision("fp32", torch.device("cpu")).scaler()
    old = optimizer.state_dict()
    for group in old["param_groups"]:        # the old peaks: every group at the filters' rate
        group.update(lr=cfg.lr, max_lr=cfg.lr, initial_lr=cfg.lr / 25)
    state = {"model": model.state_dict(), "optimizer": old, "scheduler": None,
             "scaler": scaler.state_dict(), "rng": rng_state(torch.device("cpu")),
             "position": {"epoch": 2, "step": 0}}
    restore(state, model, optimizer, rates, None, scaler, torch.device("cpu"), 10)
    assert [g["lr"] for g in optimizer.param_groups] == rates(20)
    assert optimizer.param_groups[2]["lr"] < 1e-3          # the mixers' rate, not 0.24


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["onecycle", "linear"])
def test_a_run_starts_at_the_schedules_first_rate(tmp_path, schedule):
    """Was: with the schedules as formulas, a new run took its first step at the peak rate,
    where OneCycleLR had set peak/25 at construction (deep and improved_tuned trained
    differently): every epoch's recorded rate is the formula's at that epoch's first step."""
    from cifar_lib.recipe import rate_at
    from conftest import tiny_dataset

    cfg = load_config("seed_improved", "smoke", schedule=schedule, optimizer="sgd", lr=0.05,
                      epochs=3, val_size=100, batch_size=100, model_args={"widths": [8, 8, 8]})
    record, _ = run_experiment(cfg, profile="smoke", data=tiny_dataset(), results_dir=tmp_path,
                               checkpoint_dir=tmp_path, progress=False)
    steps = 4                                   # 400 training images, batch 100
    assert [h["lr"] for h in record["history"]] == [
        rate_at(schedule, e * steps, 3 * steps, 0.05, cfg.warmup_fraction) for e in range(3)]
    assert record["history"][0]["lr"] == (0.05 / 25 if schedule == "onecycle" else 0.05)
