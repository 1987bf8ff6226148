import json

import numpy as np
import pytest
import torch

from cifar_lib.blocks import FusedIntermediateBlock
from cifar_lib.config import load_config
from cifar_lib.experiment import load_checkpoint, run_experiment
from cifar_lib.loaders import TensorLoader
from cifar_lib.models import build_model
from cifar_lib.records import iter_records, read_record
from cifar_lib.device import Precision
from cifar_lib.evaluation import evaluate
from cifar_lib.recipe import make_optimizer
from cifar_lib.train import train_one_epoch
from conftest import learnable_images, tiny_dataset


@pytest.mark.parametrize("model_name", ["basic", "improved"])
def test_a_few_epochs_lower_the_loss(model_name):
    torch.manual_seed(0)
    x, y = learnable_images()
    cfg = load_config("seed_improved", "smoke", model=model_name, lr=2e-3)
    model = build_model(model_name, widths=(16, 32))
    opt = make_optimizer(cfg, model)
    precision = Precision("fp32", torch.device("cpu"))
    loader = TensorLoader(x, y, 32, train=True, augment=("flip",))
    before = evaluate(model, TensorLoader(x, y, 128), precision=precision)["loss"]
    for epoch in range(3):
        loader.set_epoch(epoch)
        stats = train_one_epoch(model, loader, opt, precision=precision, progress=False)
    after = evaluate(model, TensorLoader(x, y, 128), precision=precision)["loss"]
    assert after < 0.7 * before
    assert stats["images_per_second"] > 0 and 0 <= stats["train_acc"] <= 1


@pytest.mark.parametrize("fused", [False, True])
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
    model, cfg2 = load_checkpoint(record["checkpoint"], torch.device("cpu"))
    assert cfg2 == cfg
    assert sum(p.numel() for p in model.parameters()) == record["model"]["parameters"]
    assert isinstance(model.blocks[0], FusedIntermediateBlock) is fused


def test_smoke_run_on_unofficial_data_is_marked_so(cifar_folder, tmp_path):
    cfg = load_config("seed_improved", "smoke", train_subset=256, eval_subset=200)
    record, _ = run_experiment(cfg, profile="smoke", data=cifar_folder,
                               results_dir=tmp_path, checkpoint_dir=tmp_path, progress=False)
    assert record["data"]["official"] is False
    assert record["data"]["fingerprint"] == cifar_folder.fingerprint
    assert record["model"]["parameters"] == 1_118_300


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
