"""Scoring a model on a split: `predict` gives the logits (optionally with test-time
augmentation), `score` accuracy and loss. Training (per-epoch validation), final runs and
the `evaluate` command all score through `score`, with one evaluation batch size."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .device import Precision

EVAL_BATCH = 500     # images per forward pass when scoring; does not change any result


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


def _accuracy_and_loss(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    return {"loss": F.cross_entropy(logits, labels).item(),
            "acc": (logits.argmax(1) == labels).float().mean().item()}


def score(model, loader, *, precision: Precision, tta: bool = False, tta_shift: int = 0) -> dict:
    """The one way the kit scores a model on a split: {"acc", "loss"}, plus "acc_tta" with
    `tta`; "logits", "logits_tta" (None without `tta`) and "labels" keep the raw outputs
    for whoever saves predictions. Loss is always that of the plain view."""
    logits, labels = predict(model, loader, precision=precision)
    out = {**_accuracy_and_loss(logits, labels), "logits": logits, "labels": labels, "logits_tta": None}
    if tta:
        out["logits_tta"], _ = predict(model, loader, precision=precision, tta=True,
                                       tta_shift=tta_shift)
        out["acc_tta"] = _accuracy_and_loss(out["logits_tta"], labels)["acc"]
    return out
