"""What the report and notebook 5 compute from a final run's saved predictions: confusion,
calibration and the most confident mistakes."""
from __future__ import annotations

import numpy as np


def confident_mistakes(probs: np.ndarray, labels: np.ndarray, k: int = 16) -> np.ndarray:
    """Positions of the k wrong predictions made with the highest confidence."""
    wrong = np.flatnonzero(probs.argmax(1) != labels)
    return wrong[np.argsort(-probs[wrong].max(1), kind="stable")[:k]]


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(labels * num_classes + predicted,
                       minlength=num_classes ** 2).reshape(num_classes, num_classes)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15):
    """Per confidence bin: (mean confidence, accuracy, share of images), equal-width bins on
    [0, 1]; empty bins are left out. Also returns the expected calibration error, the
    share-weighted mean of |accuracy - confidence| over bins."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append((confidence[inside].mean(), correct[inside].mean(), inside.mean()))
    rows = np.array(rows)
    ece = float(np.sum(rows[:, 2] * np.abs(rows[:, 1] - rows[:, 0])))
    return rows, ece


def branch_names(model: dict, blocks: int) -> list[list[str]]:
    """What each block's branches are, for figures: a record's `model` entry (name and
    args) and the number of mixing blocks. FastNet's first block holds the frozen patch-
    whitening filters and a learned branch of the same size; its other blocks, one branch
    per kernel size. Other models' branches are all 3×3 convolutions."""
    args = model.get("args", {})
    if model["name"] == "fast":
        w = args.get("whiten_kernel", 2)
        rest = [f"{k}×{k}" for k in args.get("kernel_sizes", (3, 1))]
        return [[f"{w}×{w} whitening (frozen)", f"{w}×{w} learned"]] + [rest] * (blocks - 1)
    convs = args.get("num_convs", 2 if model["name"] == "deep" else 3)
    return [[f"3×3 #{l + 1}" for l in range(convs)]] * blocks
