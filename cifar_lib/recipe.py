"""A config's optimizer and learning-rate schedule, built for one model (so the training
loop needs no config), and the Muon optimizer the fast recipe uses."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import Config
from .models import to_muon_norm_  # the rule lives beside FastNet.init_gains, which also uses it


# --------------------------------------------------------------------------- Muon
# Muon: momentum SGD whose update for each convolution's filters is orthogonalised by a
# Newton-Schulz iteration (Keller Jordan, 2024), with the filters kept at a fixed norm; the
# other parameters (norm shifts, mixers, head) take plain Nesterov SGD steps in the same
# optimizer, so one state dict and one schedule cover the whole model.
def orthogonalise(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T for g = U S V^T (g: 2-D), by a quintic Newton-Schulz iteration.

    The coefficients push small singular values up fast rather than converging exactly:
    after 3 steps they land roughly in [0.5, 1.5], which trains as well as exact U V^T
    at a fraction of an SVD's cost.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + eps)                 # top singular value <= 1: inside the basin
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T                              # iterate on the smaller Gram matrix
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Groups with `orthogonal=True` (conv filters [out, in, k, k]): Nesterov momentum on
    the gradient, orthogonalised as an [out, in*k*k] matrix, and the filters rescaled to
    norm sqrt(out) before each step. Batch norm after every convolution makes the network
    blind to the filters' scale, so fixing it keeps the effective step what `lr` says.
    Other groups: Nesterov SGD with weight decay, exactly as torch.optim.SGD does it.
    """

    def __init__(self, params, lr: float = 0.2, momentum: float = 0.6, nesterov: bool = True,
                 weight_decay: float = 0.0, orthogonal: bool = True, ns_steps: int = 3):
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"Muon needs lr > 0 and momentum in [0, 1), got {lr}, {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      weight_decay=weight_decay, orthogonal=orthogonal,
                                      ns_steps=ns_steps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"] and not group["orthogonal"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                buf = state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                g = grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                if group["orthogonal"]:
                    to_muon_norm_(p)
                    g = orthogonalise(g.reshape(len(g), -1).float(), group["ns_steps"]).view_as(p)
                p.add_(g.to(p.dtype), alpha=-group["lr"])


# --------------------------------------------------------------------------- from a config


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "muon":
        return make_muon(cfg, model)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def make_muon(cfg: Config, model: nn.Module) -> Muon:
    """Muon for every trainable conv filter; Nesterov SGD for the head at `head_lr`, for
    the mixers at `mixer_lr` and for everything else (norm shifts) at `bias_lr`. Weight
    decay is given per step and divided by each group's rate, so it does not change when
    a rate is tuned.

    Mixers get their own, much smaller rate: a mixer's gradient sums over every pixel and
    channel of the block's output, and at the norm shifts' rate the gate saturates (every
    weight at 0 or 1) within a few steps (measured: gradient norm ~28 at batch 2,000)."""
    def kind(name: str, p) -> str:
        if p.ndim == 4:
            return "filters"
        return "head" if name.startswith("head.") else "mixer" if ".mixer." in name else "rest"

    trainable = [(kind(n, p), p) for n, p in model.named_parameters() if p.requires_grad]
    group = {k: [p for kk, p in trainable if kk == k] for k in ("filters", "head", "mixer", "rest")}
    sgd = dict(momentum=cfg.momentum, nesterov=True, orthogonal=False)
    groups = [dict(params=group["filters"], lr=cfg.lr, momentum=cfg.muon_momentum, nesterov=True)]
    for k, lr in (("head", cfg.head_lr), ("mixer", cfg.mixer_lr), ("rest", cfg.bias_lr)):
        groups.append(dict(params=group[k], lr=lr, weight_decay=cfg.weight_decay / lr, **sgd))
    return Muon([g for g in groups if g["params"]])


# --------------------------------------------------------------------------- schedules
# A step-wise schedule is a formula: each group's rate at global step `step` of `total`,
# from the group's peak (the rate the config gives it). Nothing of it is stored, so a
# resumed run recomputes its rates from the config and cannot bring back old ones.
def rate_at(schedule: str, step: int, total: int, peak: float, warmup: float) -> float:
    if schedule == "linear":          # airbench: straight down from the peak to 0
        return peak * max(0.0, 1 - step / total)
    if schedule == "cosine":          # half a cosine from the peak to 0
        return peak * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if schedule == "onecycle":        # up from peak/25 over `warmup` of the steps, then down to peak/250,000
        turn = float(warmup * total) - 1            # the step at which the rate peaks
        if step <= turn:
            return (peak - peak / 25.0) * (step / turn) + peak / 25.0
        return (peak / 25.0 / 1e4 - peak) * ((step - turn) / (total - 1 - turn)) + peak
    return peak                       # constant ("plateau" steps on the validation loss instead)


def make_lr_schedule(cfg: Config, optimizer, steps_per_epoch: int):
    """Step -> every group's rate, for the step-wise schedules (None for a constant rate or
    the plateau schedule), with the optimizer set to the first step's rates. The arithmetic
    is torch's LambdaLR and OneCycleLR's, step for step."""
    if cfg.schedule not in ("linear", "cosine", "onecycle"):
        return None
    total = cfg.epochs * steps_per_epoch
    peaks = [group["lr"] for group in optimizer.param_groups]     # the config's rates

    def rates(step: int) -> list[float]:
        return [rate_at(cfg.schedule, step, total, peak, cfg.warmup_fraction) for peak in peaks]
    set_rates(optimizer, rates(0))      # as a torch scheduler does when made: the first step's
    return rates


def make_plateau(cfg: Config, optimizer):
    """The coursework's schedule: the rate x `plateau_factor` after `plateau_patience`
    epochs without a lower validation loss (None for the other schedules)."""
    if cfg.schedule != "plateau":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience)


def set_rates(optimizer, rates: list[float]) -> None:
    for group, lr in zip(optimizer.param_groups, rates):
        group["lr"] = lr
