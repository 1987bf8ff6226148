"""Training and evaluation loops: device and precision choice, optimizers, schedules,
one epoch of training, evaluation with optional test-time augmentation, and `fit`."""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm   # plain text bars: they read the same in a terminal and a saved notebook

from .config import Config


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the message names epoch, step and learning rate."""


# A cross-entropy above this means the true class gets probability below e^-100 (guessing
# gives 2.3): weights have blown up even if no NaN has appeared yet, so it counts as NaN.
DIVERGED_LOSS = 100.0


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; training stopped at a step boundary."""


class _StopFlag:
    """Set by SIGINT / SIGTERM while `stop_on_signals()` is active; read between steps, so
    a step (and the optimizer state) is never left half-done."""

    def __init__(self):
        self.signal = None

    def __bool__(self):
        return self.signal is not None


STOP = _StopFlag()


@contextlib.contextmanager
def stop_on_signals():
    """Turn SIGINT / SIGTERM into a clean stop at the next step boundary."""
    if threading.current_thread() is not threading.main_thread():
        yield                       # handlers can only be set from the main thread
        return

    def handler(signum, _frame):
        STOP.signal = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    STOP.signal = None
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        STOP.signal = None


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


def schedule_stepping(scheduler) -> str:
    """When a scheduler steps: every 'batch', on the 'val_loss' after each epoch, or 'none'."""
    if scheduler is None:
        return "none"
    return "val_loss" if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) else "batch"


def make_scheduler(cfg: Config, optimizer, steps_per_epoch: int):
    """The learning-rate schedule of `cfg` (None for a constant rate)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, pct_start=cfg.warmup_fraction,
            anneal_strategy="linear", cycle_momentum=False)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return None


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
    worst = torch.zeros((), device=device)       # largest step loss since the last check
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    # Reading a value forces the host to wait for the device; on a GPU we do it every
    # few steps, on a CPU it is free.
    check_every = 1 if device.type == "cpu" else 20
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}", disable=not progress,
               leave=False, dynamic_ncols=True)
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        if STOP:
            bar.close()
            raise TrainingInterrupted(f"{STOP.signal} in epoch {epoch + 1} before step {step + 1}")
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        lr = _lr(optimizer)
        with precision.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        loss = loss.detach()
        worst = torch.maximum(worst, loss)           # NaN propagates through maximum
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if (step + 1) % check_every == 0 or step + 1 == len(loader):
            worst_loss = worst.item()
            if not (math.isfinite(worst_loss) and worst_loss <= DIVERGED_LOSS):
                bar.close()
                raise DivergenceError(
                    f"loss reached {worst_loss:.3g} in epoch {epoch + 1} by step {step + 1} "
                    f"at learning rate {lr:.3g} (over {DIVERGED_LOSS:g} or not a number means "
                    "the weights blew up); lower the learning rate (--lr) or use a warm-up "
                    "schedule")
            worst.zero_()
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                            img_s=f"{seen / elapsed:.0f}", refresh=False)
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum.item() / max(seen, 1), "train_acc": correct.item() / max(seen, 1),
            "train_seconds": seconds, "images_per_second": seen / seconds}


def tta_views(x: torch.Tensor, shift: int = 0):
    """(weight, view) pairs for test-time augmentation: the image and its mirror, and with
    `shift`, both also moved by +-shift pixels diagonally (reflect-padded). The unshifted pair
    keeps half the weight, as in airbench: shifted views see slightly less of the image."""
    yield from (((0.5 if shift else 1.0) / 2, v) for v in (x, x.flip(3)))
    if shift:
        padded = F.pad(x, (shift,) * 4, mode="reflect")
        h, w = x.shape[-2:]
        for dy in (0, 2 * shift):
            moved = padded[..., dy:dy + h, dy:dy + w]
            yield from ((0.25 / 2, v) for v in (moved, moved.flip(3)))


@torch.no_grad()
def predict(model, loader, *, precision: Precision, tta: bool = False, tta_shift: int = 0):
    """(logits float32 [N, 10], labels [N]) for every image of `loader`; with `tta`, the
    weighted mean of the logits over `tta_views`."""
    model.eval()
    device = precision.device
    outs, labels = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        with precision.autocast():
            if tta:
                logits = sum(w * model(v).float() for w, v in tta_views(x, tta_shift))
            else:
                logits = model(x).float()
        outs.append(logits)
        labels.append(y.to(device))
    return torch.cat(outs), torch.cat(labels)


def evaluate(model, loader, *, precision: Precision, tta: bool = False, tta_shift: int = 0) -> dict:
    return score(*predict(model, loader, precision=precision, tta=tta, tta_shift=tta_shift))


def score(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    return {"loss": F.cross_entropy(logits, labels).item(),
            "acc": (logits.argmax(1) == labels).float().mean().item()}


def fit(model, train_loader, val_loader, cfg: Config, *, precision: Precision,
        start_epoch: int = 0, optimizer=None, scheduler=None, scaler=None, history=None,
        on_epoch_end=None, progress: bool | str = True) -> list[dict]:
    """Train for cfg.epochs, evaluating on the validation split after every epoch.

    The learning-rate schedule only ever sees validation numbers, never the test set.
    `on_epoch_end(epoch, history, optimizer, scheduler, scaler)` is where callers
    checkpoint; passing their states back with `start_epoch` resumes. Without an optimizer,
    fit builds the config's optimizer and schedule; with one, `scheduler` is used as given
    (None means a constant learning rate). `progress`: True shows a bar per epoch and one
    over epochs, "epochs" only the latter (what notebooks want), False none.
    """
    if optimizer is None:
        optimizer = make_optimizer(cfg, model)
        scheduler = make_scheduler(cfg, optimizer, len(train_loader))
    stepped = schedule_stepping(scheduler)
    scaler = scaler or precision.scaler()
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
                                progress=progress is True)
        val = evaluate(model, val_loader, precision=precision)
        if stepped == "val_loss":
            scheduler.step(val["loss"])
        row = {"epoch": epoch + 1, **stats, "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr}
        history.append(row)
        epochs.set_postfix(train_acc=f"{stats['train_acc']:.3f}", val_acc=f"{val['acc']:.3f}",
                           img_s=f"{stats['images_per_second']:.0f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, history, optimizer, scheduler, scaler)
    return history
