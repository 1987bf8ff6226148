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
