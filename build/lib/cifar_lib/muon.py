"""Muon: momentum SGD whose update for each convolution's filters is orthogonalised by a
Newton-Schulz iteration (Keller Jordan, 2024), with the filters kept at a fixed norm; the
other parameters (norm shifts, mixers, head) take plain Nesterov SGD steps in the same
optimizer, so one state dict and one schedule cover the whole model."""
from __future__ import annotations

import torch


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
                    p.mul_(len(p) ** 0.5 / p.norm())
                    g = orthogonalise(g.reshape(len(g), -1).float(), group["ns_steps"]).view_as(p)
                p.add_(g.to(p.dtype), alpha=-group["lr"])
