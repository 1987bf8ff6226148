"""One experiment: a config and a seed in, a trained model and a results record out.

`run_experiment` reads top to bottom: build (data splits, loaders, model, optimizer),
fit, score (validation, then the test set once), record; the analysis saved beside the
record comes last, after the weights and the record are safely on disk.
"""
from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import torch

from .checkpoints import resume_state, save_model, save_progress, set_rng_state
from .config import Config, ConfigError
from .data import CIFAR10, load_cifar10, split_data
from .device import Precision, keep_freed_memory, malloc_mode, pick_device
from .evaluation import EVAL_BATCH, score
from .loaders import make_loader
from .models import build_model, count_flops, count_trainable_parameters, engine_defaults
from .paths import CHECKPOINT_DIR, RESULTS_DIR
from .predictions import branch_weights, save_predictions
from .recipe import make_lr_schedule, make_optimizer, make_plateau, set_rates
from .runlock import run_lock
from .records import SCHEMA, RunFiles, RunRecord, device_info, git_commit, run_prefix, versions
from .train import DivergenceError, Pruned, TrainingInterrupted, fit, progress_stream, stop_on_signals


# --------------------------------------------------------------------------- the run
def run_experiment(cfg: Config, *, profile: str, seed: int = 0, data: CIFAR10 | None = None,
                   data_root=None, device: str | None = None,
                   results_dir: Path = RESULTS_DIR, checkpoint_dir: Path = CHECKPOINT_DIR,
                   progress: bool | str = True, resume: bool | Path = False,
                   read_test: bool = True, tags: dict | None = None,
                   epoch_callback=None) -> tuple[dict, Path]:
    """Train `cfg` with `seed`, score it (the test set once, at the end), write the record;
    returns (record, path). `resume` (True: the newest progress checkpoint of this config,
    profile and seed; or a path) continues a stopped run; read_test=False (a tuning run)
    never touches the test set; `tags` go into the record; `epoch_callback(epoch, row)` runs
    after each epoch's checkpoint (raising train.Pruned ends the run as 'pruned'). Divergence
    writes 'failed' and raises DivergenceError; SIGINT / SIGTERM write 'interrupted' and raise
    TrainingInterrupted (both keep every finished epoch)."""
    # one process per run: a second sweep or a --resume beside a live run is refused
    with run_lock(cfg, profile, seed, checkpoint_dir):
        wall_start = time.perf_counter()
        dev = pick_device(device)
        state, files = start_point(cfg, profile, seed, dev, resume, results_dir, checkpoint_dir)
        spent = state["spent"] if state else {"train_seconds": 0.0, "wall_seconds": 0.0}

        # build: splits and loaders, the model, its optimizer and schedule, the precision
        data = data or load_cifar10(data_root)
        torch.manual_seed(seed)          # weight initialisation; restored below when resuming
        splits, train_loader, val_loader = make_loaders(cfg, data, seed, dev)
        model_args = state["model_args"] if state else resolved_model_args(cfg, dev)
        model = build_model(cfg.model, device=dev, channels_last=cfg.channels_last, **model_args)
        if not state and hasattr(model, "init_from_data"):    # e.g. FastNet's whitening filters
            model.init_from_data(train_loader.normalized(5000))
        optimizer = make_optimizer(cfg, model)
        lr_schedule = make_lr_schedule(cfg, optimizer, len(train_loader))
        plateau = make_plateau(cfg, optimizer)
        precision = Precision.resolve(cfg.precision, dev)
        scaler = precision.scaler()
        if state:
            restore(state, model, optimizer, lr_schedule, plateau, scaler, dev, len(train_loader))
        trained = compiled(cfg, model)   # the module trained: torch.compile's when cfg.compile
        record = new_record(cfg, profile, seed, splits, precision, model, model_args, data,
                            files, state, tags)

        # fit, saving the full training state after every epoch (for --resume)
        train_start = time.perf_counter()
        label = f"{cfg.name} {tags['variant']}" if tags and "variant" in tags else cfg.name
        try:
            with stop_on_signals():
                for row in fit(trained, train_loader, val_loader, epochs=cfg.epochs,
                               optimizer=optimizer, lr_schedule=lr_schedule, plateau=plateau,
                               precision=precision, scaler=scaler,
                               label_smoothing=cfg.label_smoothing,
                               sum_loss=cfg.loss_reduction == "sum", history=record.history,
                               progress=progress, name=f"{label} seed {seed}"):
                    save_epoch(files, record, cfg, model, model_args, optimizer, plateau, scaler,
                               dev, _seconds(spent, train_start, wall_start))
                    if epoch_callback is not None:
                        epoch_callback(row["epoch"] - 1, row)
        except (DivergenceError, TrainingInterrupted, Pruned) as e:
            stopped = {DivergenceError: "failed", TrainingInterrupted: "interrupted", Pruned: "pruned"}[type(e)]
            if stopped == "pruned":
                files.progress.unlink(missing_ok=True)     # ended on purpose: nothing to resume
            # a stop inside the first epoch leaves no checkpoint: nothing to resume from
            e.resumable = files.progress.exists()
            record.stop(stopped, str(e), _seconds(spent, train_start, wall_start), resumable=e.resumable)
            raise
        train_seconds = _seconds(spent, train_start, wall_start)["train_seconds"]
        save_model(files.model, model, cfg, files.run_id, model_args)   # nothing can lose it now

        # score (Ctrl-C here keeps the trained run: its last checkpoint resumes straight to scoring)
        try:
            final, test = score_run(cfg, model, val_loader, splits, precision, read_test, progress)
        except KeyboardInterrupt:
            record.stop("interrupted", "SIGINT while scoring", _seconds(spent, train_start, wall_start))
            raise TrainingInterrupted("SIGINT while scoring the trained run") from None

        # record
        wall_seconds = _seconds(spent, train_start, wall_start)["wall_seconds"]
        record.complete(final, read_test, {"train_seconds": train_seconds, "wall_seconds": wall_seconds},
                        files.model, _now().isoformat(timespec="seconds"))
        files.progress.unlink(missing_ok=True)       # complete: nothing left to resume
        if test is not None:
            save_analysis(cfg, record, files, model, splits, precision, test)
        return record.fields, files.record


def start_point(cfg: Config, profile: str, seed: int, dev: torch.device, resume,
                results_dir, checkpoint_dir) -> tuple[dict | None, RunFiles]:
    """Where a run starts (the state to resume, or None) and where its files go: every
    check that needs no data (a checkpoint to resume, writable folders), so a command
    can make them before it spends time loading the data."""
    state = resume_state(cfg, resume, Path(checkpoint_dir), run_prefix(cfg.name, profile, seed),
                         dev) if resume else None
    return state, RunFiles.make(cfg, profile, seed, results_dir, checkpoint_dir, state)


# --------------------------------------------------------------------------- build
def loader_args(cfg: Config) -> dict:
    return {"augment": tuple(cfg.augment), "crop_padding": cfg.crop_padding,
            "rotate_degrees": cfg.rotate_degrees, "cutout_size": cfg.cutout_size,
            "normalize": cfg.normalize, "num_workers": cfg.num_workers}


def eval_loader(cfg: Config, images, labels, device):
    """An unaugmented loader for scoring, with the one evaluation batch size."""
    return make_loader(cfg.pipeline, images, labels, EVAL_BATCH, device=device, **loader_args(cfg))


def resolved_model_args(cfg: Config, device: torch.device) -> dict:
    """The config's model arguments, with the engine's choice for `device` wherever the
    config leaves one open. Records and checkpoints keep the result, so a model trained
    on one device rebuilds identically on another."""
    return {**engine_defaults(device, cfg.model), **cfg.model_args}


def make_loaders(cfg: Config, data: CIFAR10, seed: int, dev: torch.device):
    """The run's splits, its training loader (augmented, in an order its seed fixes) and its
    validation loader (None for a final run, which has no validation split)."""
    if dev.type == "cuda":            # fixed shapes: let cuDNN time its algorithms once
        torch.backends.cudnn.benchmark = True
    if dev.type == "cpu":             # the same buffers every step: reuse them, not re-map them
        keep_freed_memory()
    splits = split_data(data, cfg.val_size, final=cfg.final, train_subset=cfg.train_subset,
                        eval_subset=cfg.eval_subset)
    train_loader = make_loader(cfg.pipeline, *splits.train, cfg.batch_size, device=dev,
                               train=True, seed=seed, **loader_args(cfg))
    if len(train_loader) == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the "
                          f"{len(splits.train[1])} training images: lower --batch-size")
    val_loader = eval_loader(cfg, *splits.val, dev) if len(splits.val[1]) else None
    return splits, train_loader, val_loader


def compiled(cfg: Config, model):
    """The model as training calls it: compiled by torch.compile when the config asks."""
    if not cfg.compile:
        return model
    return torch.compile(model, backend=cfg.compile_backend,
                         mode=cfg.compile_mode if cfg.compile_backend == "inductor" else None)


def save_epoch(files: RunFiles, record: RunRecord, cfg: Config, model, model_args: dict,
               optimizer, plateau, scaler, dev, seconds: dict) -> None:
    """The full training state after the record's last epoch, for --resume."""
    save_progress(files.progress, run_id=files.run_id, epoch=record.history[-1]["epoch"] - 1,
                  model=model, optimizer=optimizer, plateau=plateau, scaler=scaler,
                  history=record.history, device=dev,
                  extra={"config": cfg.to_dict(), "model_args": model_args,
                         "started_at": record["started_at"],
                         "resumed_at_epochs": record["resumed_at_epochs"],
                         "ran_on": [record["device"]["name"], record["precision"]],
                         "spent": seconds})


def restore(state: dict, model, optimizer, lr_schedule, plateau, scaler, dev,
            steps_per_epoch: int) -> None:
    """Put a stopped run back where its checkpoint left it. Step-wise rates are recomputed
    from the config at the resume step (a checkpoint's stored rates are never trusted: one
    made before a schedule was fixed would bring its old rates back)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if lr_schedule is not None:
        set_rates(optimizer, lr_schedule(state["position"]["epoch"] * steps_per_epoch))
    if plateau is not None:
        plateau.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"], dev)


# --------------------------------------------------------------------------- record
def _seconds(spent: dict, train_start: float, wall_start: float) -> dict:
    """Training and wall seconds: this process's, plus those of the runs it continues."""
    now = time.perf_counter()
    return {"train_seconds": spent["train_seconds"] + now - train_start,
            "wall_seconds": spent["wall_seconds"] + now - wall_start}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_record(cfg, profile, seed, splits, precision: Precision, model, model_args: dict,
               data: CIFAR10, files: RunFiles, state, tags) -> RunRecord:
    """The record as it stands before training: what runs, on what, with what."""
    start_epoch = state["position"]["epoch"] if state else 0
    facts = {"name": cfg.model, "args": model_args, "parameters": count_trainable_parameters(model),
             "forward_flops_per_image": count_flops(model)}
    return RunRecord(files.record, {
        "schema": SCHEMA, "id": files.run_id, "status": "running", "config_name": cfg.name,
        "profile": profile, "seed": seed, "config": cfg.to_dict(), "tags": dict(tags or {}),
        "data": {**data.identity, "train_images": len(splits.train[1]),
                 "val_images": len(splits.val[1]), "test_images": len(splits.test[1])},
        "device": device_info(precision.device), "precision": precision.name,
        "host_malloc": malloc_mode(), "versions": versions(), "git_commit": git_commit(),
        "model": facts,
        "started_at": state["started_at"] if state else _now().isoformat(timespec="seconds"),
        "resumed_at_epochs": [*state["resumed_at_epochs"], start_epoch] if state else [],
        "history": list(state["history"]) if state else [],
    })


# --------------------------------------------------------------------------- score
def score_run(cfg: Config, model, val_loader, splits, precision: Precision,
              read_test: bool, progress=False) -> tuple[dict, dict | None]:
    """Final validation numbers and, unless a tuning run, the test set's (read here once,
    after every training decision). Scored on the uncompiled module: compiling pays for
    training, not for a few forward passes. Returns (final, the test outputs or None)."""
    tta = (cfg.tta, cfg.tta_shift)
    if progress is True:    # a minute or more on a CPU with TTA: say what runs (bars on, as in `train`)
        splits_read = " and ".join(n for n, used in (("the validation split", val_loader),
                                                     ("the test set", read_test)) if used)
        print(f"scoring {splits_read}" + (" with test-time augmentation" if cfg.tta else ""),
              file=progress_stream())
    final = {}
    if val_loader:
        val = score(model, val_loader, precision=precision, tta=tta[0], tta_shift=tta[1])
        final.update(val_acc=val["acc"], val_loss=val["loss"], **_tta_only(val, "val"))
    if not read_test:
        return final, None
    test = score(model, eval_loader(cfg, *splits.test, precision.device),
                       precision=precision, tta=tta[0], tta_shift=tta[1])
    final.update(test_acc=test["acc"], test_loss=test["loss"], **_tta_only(test, "test"))
    return final, test


def _tta_only(scores: dict, split: str) -> dict:
    return {f"{split}_acc_tta": scores["acc_tta"]} if "acc_tta" in scores else {}


def save_analysis(cfg: Config, record: RunRecord, files: RunFiles, model, splits,
                  precision: Precision, test: dict) -> None:
    """Test-set probabilities and branch weights beside the record. The weights and the
    record are already written: a failure here leaves a warning in the record, not a
    lost run."""
    try:
        weights = branch_weights(model, eval_loader(cfg, *splits.test, precision.device),
                                 precision=precision)
    except RuntimeError as e:   # out of memory on a second pass: the run itself is kept
        weights = None
        record.warn(f"branch weights not saved: {e}")
    try:
        save_predictions(files.predictions, labels=test["labels"].cpu(),
                         indices=splits.test_indices, logits=test["logits"].cpu(),
                         logits_tta=None if test["logits_tta"] is None else test["logits_tta"].cpu(),
                         branch_weights=weights)
        record.attach(predictions=files.predictions.name)
    except OSError as e:        # a full disk or a folder gone: the record says so
        record.warn(f"predictions not saved: {e}")
    record.write()
