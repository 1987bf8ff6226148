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
from .evaluation import score
from .recipe import set_rates


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

    def __init__(self, message: str, resumable: bool = True):
        super().__init__(message)
        self.resumable = resumable


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
def _lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def train_one_epoch(model, loader, optimizer, *, precision: Precision, scaler,
                    lr_schedule=None, label_smoothing: float = 0.0, sum_loss: bool = False,
                    epoch: int = 0, progress: bool = True, trace_points: int = 20) -> dict:
    """One pass over `loader`. Returns mean loss, accuracy, seconds, images/s and
    `loss_trace` (EpochMeter). `lr_schedule(step)` gives every group's rate at a global step
    (recipe.make_lr_schedule); with `sum_loss` the gradient is that of the summed (not
    averaged) batch loss. `scaler` carries over from epoch to epoch."""
    model.train()
    device = precision.device
    meter = EpochMeter(len(loader), device, epoch, progress, trace_points)
    first = epoch * len(loader)                  # the global step of this epoch's first batch
    for step, (x, y) in enumerate(loader):
        if STOP:                                 # SIGINT / SIGTERM: stop between steps
            meter.close()
            raise TrainingInterrupted(f"{STOP.signal} in epoch {epoch + 1} before step {step + 1}")
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)   # [B, 3, 32, 32], [B]
        lr = _lr(optimizer)
        # the step: forward, loss, backward, update, schedule
        with precision.autocast():
            logits = model(x)                                                      # [B, 10]
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss * len(y) if sum_loss else loss).backward()   # summed: airbench's units
        scaler.step(optimizer)
        scaler.update()
        if lr_schedule is not None:
            set_rates(optimizer, lr_schedule(first + step + 1))        # the next step's rates
        meter.add(step, loss.detach(), logits, y, lr)
    return meter.close()


class EpochMeter:
    """The bookkeeping of one epoch, apart from the step: loss and accuracy sums, the loss
    trace (the mean loss over each of about `trace_points` equal stretches, as [step, loss]
    pairs), the divergence check, images/s and the progress bar."""

    def __init__(self, steps: int, device, epoch: int, progress: bool, trace_points: int):
        zero = lambda dtype=None: torch.zeros((), device=device, dtype=dtype)   # noqa: E731
        self.steps, self.epoch = steps, epoch
        self.loss_sum, self.stretch_sum, self.worst = zero(), zero(), zero()
        self.correct = zero(torch.long)
        self.seen, self.stretch_seen, self.trace = 0, 0, []
        # Reading a value makes the host wait for the device: on a GPU only every few steps
        # (and at trace points), on a CPU it is free.
        self.check_every = 1 if device.type == "cpu" else 20
        self.trace_every = max(1, steps // trace_points)
        self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}", disable=not progress,
                        leave=False, dynamic_ncols=True, file=progress_stream())
        self.start = time.perf_counter()

    def add(self, step: int, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, lr: float):
        self.worst = torch.maximum(self.worst, loss)       # NaN propagates through maximum
        self.loss_sum += loss * len(y)
        self.stretch_sum += loss * len(y)
        self.correct += (logits.argmax(1) == y).sum()
        self.seen += len(y)
        self.stretch_seen += len(y)
        last = step + 1 == self.steps
        if (step + 1) % self.check_every == 0 or last:
            _check_finite(self.worst.item(), self.epoch, step, lr)
            self.worst.zero_()
            elapsed = time.perf_counter() - self.start
            self.bar.set_postfix(loss=f"{self.loss_sum.item() / self.seen:.3f}",
                                 acc=f"{self.correct.item() / self.seen:.3f}",
                                 img_s=f"{self.seen / elapsed:.0f}", refresh=False)
        if (step + 1) % self.trace_every == 0 or last:
            self.trace.append([step + 1, round(self.stretch_sum.item() / self.stretch_seen, 5)])
            self.stretch_sum.zero_()
            self.stretch_seen = 0
        self.bar.update(1)

    def close(self) -> dict:
        self.bar.close()
        seconds = time.perf_counter() - self.start
        seen = max(self.seen, 1)
        return {"train_loss": self.loss_sum.item() / seen, "train_acc": self.correct.item() / seen,
                "train_seconds": seconds, "images_per_second": self.seen / seconds,
                "loss_trace": self.trace}


def _check_finite(worst_loss: float, epoch: int, step: int, lr: float) -> None:
    if not (math.isfinite(worst_loss) and worst_loss <= DIVERGED_LOSS):
        raise DivergenceError(
            f"loss reached {worst_loss:.3g} in epoch {epoch + 1} by step {step + 1} "
            f"at learning rate {lr:.3g} (over {DIVERGED_LOSS:g} or not a number means "
            "the weights blew up); lower the learning rate (--lr) or use a warm-up schedule")


def fit(model, train_loader, val_loader, *, epochs: int, optimizer, lr_schedule=None,
        plateau=None, precision: Precision, scaler=None, label_smoothing: float = 0.0,
        sum_loss: bool = False, history: list | None = None,
        progress: bool | str = True, name: str = "train"):
    """Train until `epochs` epochs are done, evaluating on the validation split after each
    (`val_loader` None: a final run on all training images, nothing to validate on), and
    yield each epoch's row, where the caller checkpoints (`list(fit(...))`: every row).

    Each row is also appended to `history` in place, so a run stopped by divergence or a
    signal still holds every epoch it finished; a non-empty `history` means those epochs
    are done and training resumes after them (pass the optimizer, plateau and scaler
    states that go with them). The rates follow `lr_schedule` step by step, or `plateau`
    (a ReduceLROnPlateau) on the validation loss after each epoch: the schedule never sees
    the test set. `progress`: True shows a bar per epoch and one over epochs, "epochs" only
    the latter (what notebooks want), False none.
    """
    history = [] if history is None else history
    scaler = scaler or precision.scaler()
    bar = tqdm(range(len(history), epochs), desc=name, disable=not progress,
               initial=len(history), total=epochs, dynamic_ncols=True, file=progress_stream())
    for epoch in bar:
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        lr = _lr(optimizer)
        stats = train_one_epoch(model, train_loader, optimizer, precision=precision,
                                scaler=scaler, label_smoothing=label_smoothing, sum_loss=sum_loss,
                                lr_schedule=lr_schedule, epoch=epoch, progress=progress is True)
        val = score(model, val_loader, precision=precision) if val_loader else \
            {"loss": None, "acc": None}
        if plateau is not None:
            plateau.step(val["loss"])
        row = {"epoch": epoch + 1, **stats, "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr}
        history.append(row)
        shown = {"train_acc": f"{stats['train_acc']:.3f}", "img_s": f"{stats['images_per_second']:.0f}"}
        if val["acc"] is not None:                       # a final run has no validation split
            shown["val_acc"] = f"{val['acc']:.3f}"
        bar.set_postfix(shown)
        yield row                          # the caller checkpoints here
