"""One experiment: a config and a seed in, a trained model and a results record out."""
from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .analysis import recording_branch_weights, save_predictions, stack_branch_weights
from .checkpoints import CHECKPOINT_DIR, find_progress, load_model, load_progress, save_model, save_progress, set_rng_state
from .config import Config, ConfigError
from .data import CIFAR10, load_cifar10, stratified_split
from .loaders import make_loader
from .models import build_model, count_flops, count_parameters, engine_defaults
from .records import (RESULTS_DIR, SCHEMA, check_writable, device_info, git_commit, read_record,
                      run_folder, run_prefix, versions, write_record)
from .train import (DivergenceError, Precision, TrainingInterrupted, evaluate, fit, make_optimizer,
                    make_scheduler, pick_device, predict, resolve_precision, score,
                    stop_on_signals)



@dataclass
class Splits:
    """uint8 images and labels for train / val / test after the config's subsetting."""
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    test_indices: np.ndarray       # positions in the official test set, for looking images up


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
                  test=(data.test_images[test_idx], data.test_labels[test_idx]),
                  test_indices=test_idx)


def loader_args(cfg: Config) -> dict:
    return {"augment": tuple(cfg.augment), "crop_padding": cfg.crop_padding,
            "rotate_degrees": cfg.rotate_degrees, "cutout_size": cfg.cutout_size,
            "normalize": cfg.normalize}


def resolved_model_args(cfg: Config, device: torch.device) -> dict:
    """The config's model arguments, with the engine's choice for `device` wherever the
    config leaves one open. Records and checkpoints keep the result, so a model trained
    on one device rebuilds identically on another."""
    return {**engine_defaults(device), **cfg.model_args}


def make_model(cfg: Config, device: torch.device, model_args: dict | None = None):
    args = resolved_model_args(cfg, device) if model_args is None else model_args
    model = build_model(cfg.model, **args).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def run_experiment(cfg: Config, *, profile: str, seed: int = 0, data: CIFAR10 | None = None,
                   data_root=None, device: str | None = None,
                   results_dir: Path = RESULTS_DIR, checkpoint_dir: Path = CHECKPOINT_DIR,
                   progress: bool = True, resume: bool | Path = False,
                   read_test: bool = True, tags: dict | None = None) -> tuple[dict, Path]:
    """Train `cfg` with `seed`, evaluate (the test set once, at the end), write the record.

    The full training state is checkpointed after every epoch; `resume` (True: the newest
    progress checkpoint of this config, profile and seed; or a path) continues from it.
    With read_test=False (a tuning run) the test set is never touched: the record's
    `final` holds validation numbers only. `tags` (e.g. a sweep's name and variant) are
    stored in the record for tables to group by.
    Returns (record, path). A diverged run writes its record with status 'failed' and
    raises DivergenceError; SIGINT / SIGTERM stop at a step boundary, write status
    'interrupted' and raise TrainingInterrupted. A failure is never mistaken for a result.
    """
    wall_start = time.perf_counter()
    results_dir = run_folder(results_dir, profile, cfg.name)
    checkpoint_dir = Path(checkpoint_dir)
    check_writable(results_dir)
    check_writable(checkpoint_dir)
    dev = pick_device(device)
    prefix = run_prefix(cfg.name, profile, seed)
    state = _resume_state(cfg, resume, checkpoint_dir, prefix, dev) if resume else None
    now = dt.datetime.now(dt.timezone.utc)
    run_id = state["run_id"] if state else f"{prefix}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    path = results_dir / f"{run_id}.json"
    progress_path = checkpoint_dir / f"{run_id}.progress.pt"
    spent = state["spent"] if state else {"train_seconds": 0.0, "wall_seconds": 0.0}

    data = data or load_cifar10(data_root)
    precision = Precision(resolve_precision(cfg.precision, dev), dev)
    torch.manual_seed(seed)           # weight initialisation; restored below when resuming
    splits = make_splits(data, cfg)
    train_loader = make_loader(cfg.pipeline, *splits.train, cfg.batch_size, device=dev,
                               train=True, seed=seed, **loader_args(cfg))
    val_loader = make_loader(cfg.pipeline, *splits.val, 500, device=dev, **loader_args(cfg))
    model_args = state["model_args"] if state else resolved_model_args(cfg, dev)
    model = make_model(cfg, dev, model_args)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer, len(train_loader))
    scaler = precision.scaler()
    history, start_epoch = [], 0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], dev)
        history, start_epoch = list(state["history"]), state["position"]["epoch"]
    model_facts = {"name": cfg.model, "args": model_args, "parameters": count_parameters(model),
                   "forward_flops_per_image": count_flops(model)}
    if cfg.compile:
        model = torch.compile(model)

    record = {
        "schema": SCHEMA, "id": run_id, "status": "running", "config_name": cfg.name,
        "profile": profile, "seed": seed, "config": cfg.to_dict(), "tags": dict(tags or {}),
        "data": {**data.identity, "train_images": len(splits.train[1]),
                 "val_images": len(splits.val[1]), "test_images": len(splits.test[1])},
        "device": device_info(dev), "precision": precision.name, "versions": versions(),
        "git_commit": git_commit(),
        "model": model_facts,
        "started_at": state["started_at"] if state else now.isoformat(timespec="seconds"),
        "resumed_at_epochs": [*state["resumed_at_epochs"], start_epoch] if state else [],
        "history": history,
    }
    train_start = time.perf_counter()

    def elapsed() -> dict:
        return {"train_seconds": spent["train_seconds"] + time.perf_counter() - train_start,
                "wall_seconds": spent["wall_seconds"] + time.perf_counter() - wall_start}

    def checkpoint(epoch, hist, opt, sched, scl):
        save_progress(progress_path, run_id=run_id, epoch=epoch, model=model, optimizer=opt,
                      scheduler=sched, scaler=scl, history=hist, device=dev,
                      extra={"config": cfg.to_dict(), "model_args": model_args,
                             "started_at": record["started_at"],
                             "resumed_at_epochs": record["resumed_at_epochs"],
                             "spent": elapsed()})

    try:
        with stop_on_signals():
            record["history"] = fit(model, train_loader, val_loader, cfg, precision=precision,
                                    start_epoch=start_epoch, optimizer=optimizer,
                                    scheduler=scheduler, scaler=scaler, history=history,
                                    on_epoch_end=checkpoint, progress=progress)
    except (DivergenceError, TrainingInterrupted) as e:
        failed = isinstance(e, DivergenceError)
        record.update(status="failed" if failed else "interrupted", error=str(e), **elapsed())
        if not failed:
            record["resume_with"] = "--resume"
        write_record(record, path)
        raise
    train_seconds = elapsed()["train_seconds"]

    val = evaluate(model, val_loader, precision=precision)
    final = {"val_acc": val["acc"], "val_loss": val["loss"]}
    if cfg.tta:
        final["val_acc_tta"] = evaluate(model, val_loader, precision=precision, tta=True,
                                    tta_shift=cfg.tta_shift)["acc"]
    if read_test:
        # The test set is read here, once, after all training and tuning decisions are made.
        test_loader = make_loader(cfg.pipeline, *splits.test, 500, device=dev, **loader_args(cfg))
        with recording_branch_weights(model) as captured:
            logits, labels = predict(model, test_loader, precision=precision)
        test = score(logits, labels)
        final.update(test_acc=test["acc"], test_loss=test["loss"])
        logits_tta = None
        if cfg.tta:
            logits_tta, _ = predict(model, test_loader, precision=precision, tta=True,
                                    tta_shift=cfg.tta_shift)
            final["test_acc_tta"] = score(logits_tta, labels)["acc"]
        predictions = save_predictions(
            results_dir / f"{run_id}.predictions.npz", labels=labels.cpu(),
            indices=splits.test_indices, logits=logits.cpu(),
            logits_tta=None if logits_tta is None else logits_tta.cpu(),
            branch_weights=stack_branch_weights(captured))
        record["predictions"] = predictions.name
    model_path = checkpoint_dir / f"{run_id}.pt"
    save_model(model_path, model, cfg, run_id, model_args)
    record.update(status="complete", final=final, test_read=read_test, train_seconds=train_seconds,
                  wall_seconds=elapsed()["wall_seconds"], checkpoint=str(model_path),
                  finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    write_record(record, path)
    progress_path.unlink(missing_ok=True)   # the run is complete: nothing left to resume
    return record, path


def _resume_state(cfg: Config, resume, checkpoint_dir: Path, prefix: str, dev) -> dict:
    found = Path(resume) if not isinstance(resume, bool) else find_progress(checkpoint_dir, prefix)
    if found is None or not found.is_file():
        raise ConfigError(f"nothing to resume: no {prefix}-*.progress.pt in {checkpoint_dir} "
                          "(a run leaves one after each epoch until it completes); "
                          "start without --resume")
    state = load_progress(found, dev)
    if state["config"] != cfg.to_dict():
        changed = sorted(k for k in state["config"] if state["config"][k] != cfg.to_dict().get(k))
        raise ConfigError(f"{found} was made with a different config (changed: "
                          f"{', '.join(changed)}); resume with the same settings")
    return state


def load_checkpoint(path, device: torch.device) -> tuple[torch.nn.Module, Config]:
    """Model and config from a final checkpoint; weights_only=True, so loading runs no code."""
    return load_model(path, device, make_model)


def find_record(cfg: Config, *, profile: str, seed: int, data: CIFAR10,
                results_dir: Path = RESULTS_DIR, read_test: bool = True) -> tuple[dict, Path] | None:
    """The newest complete record of exactly this config, profile and seed on the same data
    (by fingerprint), that read the test set if `read_test` asks for it; None if there is none."""
    folder = run_folder(results_dir, profile, cfg.name)
    wanted = cfg.to_dict()
    for path in sorted(folder.glob(f"{run_prefix(cfg.name, profile, seed)}-*.json"), reverse=True):
        record = read_record(path)
        if (record.get("status") == "complete" and record["config"] == wanted
                and record["data"]["fingerprint"] == data.fingerprint
                and (record["test_read"] or not read_test)):
            return record, path
    return None


def run_or_load(cfg: Config, *, profile: str, seed: int = 0, data: CIFAR10,
                results_dir: Path = RESULTS_DIR, read_test: bool = True, tags: dict | None = None,
                progress: bool | str = "epochs", verbose: bool = True, **kwargs) -> tuple[dict, Path]:
    """Experiments are data: reuse the record of an identical finished run if there is one
    (so notebooks re-run in seconds), otherwise train and write a new one."""
    found = find_record(cfg, profile=profile, seed=seed, data=data, results_dir=results_dir,
                        read_test=read_test)
    if found is not None:
        if verbose:
            print(f"{cfg.name} [{profile}] seed {seed}: reusing {found[1].name} (finished "
                  f"{found[0]['finished_at']}; delete it to train again)")
        return found
    return run_experiment(cfg, profile=profile, seed=seed, data=data, results_dir=results_dir,
                          read_test=read_test, tags=tags, progress=progress, **kwargs)
