"""A config's optimizer and learning-rate schedule, built for one model: the factories
that turn recipe settings into torch objects, so the training loop needs no config."""
from __future__ import annotations

import torch
from torch import nn

from .config import Config
from .muon import Muon


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
    if cfg.schedule == "linear":         # straight down from every group's rate to 0
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))
    return None
