"""One experiment: a config and a seed in, a trained model and a results record out."""
from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import Config
from .data import CIFAR10, REPO_ROOT, load_cifar10, stratified_split
from .loaders import make_loader
from .models import build_model, count_flops, count_parameters
from .records import (RESULTS_DIR, SCHEMA, check_writable, device_info, git_commit, versions,
                      write_record)
from .train import DivergenceError, Precision, evaluate, fit, pick_device, resolve_precision

CHECKPOINT_DIR = REPO_ROOT / "checkpoints"


@dataclass
class Splits:
    """uint8 images and labels for train / val / test after the config's subsetting."""
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def _subset(n_total: int, n: int) -> np.ndarray:
    # A fixed random subset (seed 0), so smoke runs of every config see the same images.
    if n <= 0 or n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(0).permutation(n_total)[:n])


def make_splits(data: CIFAR10, cfg: Config) -> Splits:
    train_idx, val_idx = stratified_split(data.train_labels, cfg.val_size)
    train_idx = train_idx[_subset(len(train_idx), cfg.train_subset)]
    val_idx = val_idx[_subset(len(val_idx), cfg.eval_subset)]
    test_idx = _subset(len(data.test_labels), cfg.eval_subset)
    return Splits(train=(data.train_images[train_idx], data.train_labels[train_idx]),
                  val=(data.train_images[val_idx], data.train_labels[val_idx]),
                  test=(data.test_images[test_idx], data.test_labels[test_idx]))


def loader_args(cfg: Config) -> dict:
    return {"augment": tuple(cfg.augment), "crop_padding": cfg.crop_padding,
            "rotate_degrees": cfg.rotate_degrees, "cutout_size": cfg.cutout_size,
            "normalize": cfg.normalize}


def make_model(cfg: Config, device: torch.device) -> torch.nn.Module:
    model = build_model(cfg.model, **cfg.model_args).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def run_experiment(cfg: Config, *, profile: str, seed: int = 0, data: CIFAR10 | None = None,
                   data_root=None, device: str | None = None,
                   results_dir: Path = RESULTS_DIR, checkpoint_dir: Path = CHECKPOINT_DIR,
                   progress: bool = True) -> tuple[dict, Path]:
    """Train `cfg` with `seed`, evaluate once on the test set, write the record.

    Returns (record, path). A diverged run still writes its record (status 'failed') and
    then raises DivergenceError, so a failure is never mistaken for a result.
    """
    results_dir = Path(results_dir) / profile / cfg.name
    check_writable(results_dir)
    wall_start = time.perf_counter()
    started = dt.datetime.now(dt.timezone.utc)
    run_id = f"{cfg.name}-{profile}-seed{seed}-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    path = results_dir / f"{run_id}.json"

    data = data or load_cifar10(data_root)
    dev = pick_device(device)
    precision = Precision(resolve_precision(cfg.precision, dev), dev)
    torch.manual_seed(seed)
    splits = make_splits(data, cfg)
    train_loader = make_loader(cfg.pipeline, *splits.train, cfg.batch_size, device=dev,
                               train=True, seed=seed, **loader_args(cfg))
    val_loader = make_loader(cfg.pipeline, *splits.val, 500, device=dev, **loader_args(cfg))
    model = make_model(cfg, dev)
    if cfg.compile:
        model = torch.compile(model)

    record = {
        "schema": SCHEMA, "id": run_id, "status": "running", "config_name": cfg.name,
        "profile": profile, "seed": seed, "config": cfg.to_dict(),
        "data": {**data.identity, "train_images": len(splits.train[1]),
                 "val_images": len(splits.val[1]), "test_images": len(splits.test[1])},
        "device": device_info(dev), "precision": precision.name, "versions": versions(),
        "git_commit": git_commit(),
        "model": {"name": cfg.model, "parameters": count_parameters(model),
                  "forward_flops_per_image": count_flops(model)},
        "started_at": started.isoformat(timespec="seconds"), "history": [],
    }
    try:
        train_start = time.perf_counter()
        record["history"] = fit(model, train_loader, val_loader, cfg, precision=precision,
                                progress=progress)
        train_seconds = time.perf_counter() - train_start
    except DivergenceError as e:
        record.update(status="failed", error=str(e),
                      wall_seconds=time.perf_counter() - wall_start)
        write_record(record, path)
        raise

    # The test set is read here, once, after all training and tuning decisions are made.
    test_loader = make_loader(cfg.pipeline, *splits.test, 500, device=dev, **loader_args(cfg))
    val = evaluate(model, val_loader, precision=precision)
    test = evaluate(model, test_loader, precision=precision)
    final = {"val_acc": val["acc"], "val_loss": val["loss"], "test_acc": test["acc"],
             "test_loss": test["loss"]}
    if cfg.tta:
        final["test_acc_tta"] = evaluate(model, test_loader, precision=precision, tta=True)["acc"]
    checkpoint = Path(checkpoint_dir) / f"{run_id}.pt"
    save_checkpoint(checkpoint, model, cfg, run_id)
    record.update(status="complete", final=final, train_seconds=train_seconds,
                  wall_seconds=time.perf_counter() - wall_start, checkpoint=str(checkpoint),
                  finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    write_record(record, path)
    return record, path


def save_checkpoint(path: Path, model, cfg: Config, run_id: str) -> None:
    import io

    from .records import atomic_write_bytes

    model = getattr(model, "_orig_mod", model)   # unwrap torch.compile
    buf = io.BytesIO()
    torch.save({"run_id": run_id, "config": cfg.to_dict(), "model_state": model.state_dict()}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path, device: torch.device) -> tuple[torch.nn.Module, Config]:
    """Model and config from a checkpoint; weights_only=True, so loading runs no code."""
    state = torch.load(path, map_location=device, weights_only=True)
    cfg = Config(**state["config"])
    model = make_model(cfg, device)
    model.load_state_dict(state["model_state"])
    return model, cfg
