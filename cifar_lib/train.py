"""The training loop: one epoch of steps, `fit` over epochs with validation after each,
and clean stops (divergence, SIGINT / SIGTERM) at step boundaries."""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm   # plain text bars: they read the same in a terminal and a saved notebook

from .device import Precision
from .evaluation import evaluate


def progress_stream():
    """Where progress bars go: stderr in a terminal; stdout in a Jupyter kernel, whose
    stderr box is styled as an error."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return sys.stdout if type(shell).__name__ == "ZMQInteractiveShell" else sys.stderr


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the message names epoch, step and learning rate."""


# A cross-entropy above this means the true class gets probability below e^-100 (guessing
# gives 2.3): weights have blown up even if no NaN has appeared yet, so it counts as NaN.
DIVERGED_LOSS = 100.0


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; training stopped at a step boundary. `resumable`: the
    run left a checkpoint to continue from (none before its first epoch ends)."""
    resumable = True


class Pruned(Exception):
    """A caller's per-epoch check (an Optuna pruner, say) stopped the run early."""


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


# --------------------------------------------------------------------------- loops
def schedule_stepping(scheduler) -> str:
    """When a scheduler steps: every 'batch', on the 'val_loss' after each epoch, or 'none'."""
    if scheduler is None:
        return "none"
    return "val_loss" if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) else "batch"


def _lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def train_one_epoch(model, loader, optimizer, *, precision: Precision, scaler,
                    scheduler=None, label_smoothing: float = 0.0, sum_loss: bool = False,
                    epoch: int = 0, progress: bool = True, trace_points: int = 20) -> dict:
    """One pass over `loader`. Returns mean loss, accuracy, seconds, images/s and
    `loss_trace`: the mean training loss over each of about `trace_points` equal stretches
    of the epoch, as [step, loss] pairs (curves with within-epoch detail).
    With `sum_loss` the gradient is that of the summed (not averaged) batch loss. `scaler`
    is the run's gradient scaler (its state carries over from epoch to epoch)."""
    model.train()
    device = precision.device
    loss_sum = torch.zeros((), device=device)
    stretch_sum = torch.zeros((), device=device)   # loss summed since the last trace point
    worst = torch.zeros((), device=device)          # largest step loss since the last check
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, stretch_seen, trace = 0, 0, []
    # Reading a value makes the host wait for the device: on a GPU only every few steps
    # (and at trace points), on a CPU it is free.
    check_every = 1 if device.type == "cpu" else 20
    trace_every = max(1, len(loader) // trace_points)
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}", disable=not progress,
               leave=False, dynamic_ncols=True, file=progress_stream())
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
        scaler.scale(loss * len(y) if sum_loss else loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        loss = loss.detach()
        worst = torch.maximum(worst, loss)           # NaN propagates through maximum
        loss_sum += loss * len(y)
        stretch_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        stretch_seen += len(y)
        last = step + 1 == len(loader)
        if (step + 1) % check_every == 0 or last:
            _check_finite(worst.item(), epoch, step, lr)
            worst.zero_()
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                            img_s=f"{seen / elapsed:.0f}", refresh=False)
        if (step + 1) % trace_every == 0 or last:
            trace.append([step + 1, round(stretch_sum.item() / stretch_seen, 5)])
            stretch_sum.zero_()
            stretch_seen = 0
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum.item() / max(seen, 1), "train_acc": correct.item() / max(seen, 1),
            "train_seconds": seconds, "images_per_second": seen / seconds, "loss_trace": trace}


def _check_finite(worst_loss: float, epoch: int, step: int, lr: float) -> None:
    if not (math.isfinite(worst_loss) and worst_loss <= DIVERGED_LOSS):
        raise DivergenceError(
            f"loss reached {worst_loss:.3g} in epoch {epoch + 1} by step {step + 1} "
            f"at learning rate {lr:.3g} (over {DIVERGED_LOSS:g} or not a number means "
            "the weights blew up); lower the learning rate (--lr) or use a warm-up schedule")


def fit(model, train_loader, val_loader, *, epochs: int, optimizer, scheduler=None,
        precision: Precision, scaler=None, label_smoothing: float = 0.0, sum_loss: bool = False,
        history: list | None = None, on_epoch_end=None, progress: bool | str = True,
        name: str = "train") -> list[dict]:
    """Train until `epochs` epochs are done, evaluating on the validation split after each
    (`val_loader` None: a final run on all training images, nothing to validate on).

    One row per epoch is appended to `history` in place, so a run stopped by divergence
    or a signal still holds every epoch it finished; a non-empty `history` means those
    epochs are done and training resumes after them (pass the optimizer, scheduler and
    scaler states that go with them). The schedule only ever sees validation numbers,
    never the test set. `on_epoch_end(epoch, history, optimizer, scheduler, scaler)` is
    where callers checkpoint. `progress`: True shows a bar per epoch and one over epochs,
    "epochs" only the latter (what notebooks want), False none.
    """
    history = [] if history is None else history
    stepped = schedule_stepping(scheduler)
    scaler = scaler or precision.scaler()
    bar = tqdm(range(len(history), epochs), desc=name, disable=not progress,
               initial=len(history), total=epochs, dynamic_ncols=True, file=progress_stream())
    for epoch in bar:
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        lr = _lr(optimizer)
        stats = train_one_epoch(model, train_loader, optimizer, precision=precision,
                                scaler=scaler, label_smoothing=label_smoothing, sum_loss=sum_loss,
                                scheduler=scheduler if stepped == "batch" else None,
                                epoch=epoch, progress=progress is True)
        val = evaluate(model, val_loader, precision=precision) if val_loader else \
            {"loss": None, "acc": None}
        if stepped == "val_loss":
            scheduler.step(val["loss"])
        history.append({"epoch": epoch + 1, **stats, "val_loss": val["loss"],
                        "val_acc": val["acc"], "lr": lr})
        shown = {"train_acc": f"{stats['train_acc']:.3f}", "img_s": f"{stats['images_per_second']:.0f}"}
        if val["acc"] is not None:                       # a final run has no validation split
            shown["val_acc"] = f"{val['acc']:.3f}"
        bar.set_postfix(shown)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history, optimizer, scheduler, scaler)
    return history
