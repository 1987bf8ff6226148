"""Training and evaluation loops: device and precision choice, optimizers, schedules,
one epoch of training, evaluation with optional test-time augmentation, and `fit`."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import Config


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the message names epoch, step and learning rate."""


# --------------------------------------------------------------------------- device
def pick_device(requested: str | None = None) -> torch.device:
    """CUDA > MPS > CPU unless a device is named."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    # oneDNN runs bf16 convolutions natively on AVX512-BF16 / AMX CPUs; elsewhere bf16 is
    # emulated and slower than fp32.
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> the fastest precision the device does well: bf16 on Ampere+ GPUs and on
    CPUs with native bf16, fp16 (with a gradient scaler) on older GPUs such as the T4,
    fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


@dataclass
class Precision:
    """Autocast context and gradient scaler for one precision on one device."""
    name: str
    device: torch.device

    @property
    def dtype(self):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self):
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")


# --------------------------------------------------------------------------- recipe
def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def make_scheduler(cfg: Config, optimizer, steps_per_epoch: int):
    """(scheduler, stepped) where stepped is 'batch', 'epoch' or 'val_loss'."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience), "val_loss"
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, pct_start=cfg.warmup_fraction,
            anneal_strategy="linear", cycle_momentum=False), "batch"
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), "batch"
    return None, "none"


# --------------------------------------------------------------------------- loops
def _lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def train_one_epoch(model, loader, optimizer, *, precision: Precision, scaler=None,
                    scheduler=None, label_smoothing: float = 0.0, epoch: int = 0,
                    progress: bool = True) -> dict:
    """One pass over `loader`. Returns mean loss, accuracy, seconds and images/s."""
    model.train()
    device = precision.device
    scaler = scaler or precision.scaler()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    # Reading the loss forces the host to wait for the device; on a GPU we do it every
    # few steps, on a CPU it is free.
    check_every = 1 if device.type == "cpu" else 20
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}", disable=not progress,
               leave=False, dynamic_ncols=True)
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if (step + 1) % check_every == 0 or step + 1 == len(loader):
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                raise DivergenceError(
                    f"loss became {mean_loss} in epoch {epoch + 1}, step {step + 1} "
                    f"(learning rate {_lr(optimizer):.3g}); lower the learning rate "
                    "(--lr) or use a warm-up schedule")
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{correct.item() / seen:.3f}",
                            img_s=f"{seen / elapsed:.0f}", refresh=False)
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum.item() / max(seen, 1), "train_acc": correct.item() / max(seen, 1),
            "train_seconds": seconds, "images_per_second": seen / seconds}


@torch.no_grad()
def predict(model, loader, *, precision: Precision, tta: bool = False):
    """(logits float32 [N, 10], labels [N]) for every image of `loader`; with `tta`, the
    logits of each image and its mirror image are averaged."""
    model.eval()
    device = precision.device
    outs, labels = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(x).float()
            if tta:
                logits = (logits + model(x.flip(3)).float()) / 2
        outs.append(logits)
        labels.append(y.to(device))
    return torch.cat(outs), torch.cat(labels)


def evaluate(model, loader, *, precision: Precision, tta: bool = False) -> dict:
    logits, labels = predict(model, loader, precision=precision, tta=tta)
    return {"loss": F.cross_entropy(logits, labels).item(),
            "acc": (logits.argmax(1) == labels).float().mean().item()}


def fit(model, train_loader, val_loader, cfg: Config, *, precision: Precision,
        start_epoch: int = 0, optimizer=None, scheduler=None, history=None,
        on_epoch_end=None, progress: bool = True) -> list[dict]:
    """Train for cfg.epochs, evaluating on the validation split after every epoch.

    The learning-rate schedule only ever sees validation numbers, never the test set.
    `on_epoch_end(epoch, history, optimizer, scheduler)` is where callers checkpoint.
    """
    optimizer = optimizer or make_optimizer(cfg, model)
    if scheduler is None:
        scheduler, stepped = make_scheduler(cfg, optimizer, len(train_loader))
    else:
        stepped = {"ReduceLROnPlateau": "val_loss", "OneCycleLR": "batch",
                   "CosineAnnealingLR": "batch"}.get(type(scheduler).__name__, "none")
    scaler = precision.scaler()
    history = list(history or [])
    epochs = tqdm(range(start_epoch, cfg.epochs), desc=cfg.name, disable=not progress,
                  initial=start_epoch, total=cfg.epochs, dynamic_ncols=True)
    for epoch in epochs:
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        lr = _lr(optimizer)
        stats = train_one_epoch(model, train_loader, optimizer, precision=precision,
                                scaler=scaler, label_smoothing=cfg.label_smoothing, epoch=epoch,
                                scheduler=scheduler if stepped == "batch" else None,
                                progress=progress)
        val = evaluate(model, val_loader, precision=precision)
        if stepped == "val_loss":
            scheduler.step(val["loss"])
        row = {"epoch": epoch + 1, **stats, "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr}
        history.append(row)
        epochs.set_postfix(train_acc=f"{stats['train_acc']:.3f}", val_acc=f"{val['acc']:.3f}",
                           img_s=f"{stats['images_per_second']:.0f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, history, optimizer, scheduler)
    return history
