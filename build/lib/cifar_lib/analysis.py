"""What a trained model did on the test set, read back from the predictions saved beside
its record (capture.py writes them): confusion, calibration, confident mistakes."""
from __future__ import annotations

import numpy as np

from .paths import RESULTS_DIR
from .records import run_folder


def load_predictions(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k].astype(np.float32) if npz[k].dtype == np.float16 else npz[k]
                for k in npz.files}


def run_predictions(record: dict, results_dir=RESULTS_DIR) -> dict[str, np.ndarray]:
    """The predictions saved by a final run (one that read the test set)."""
    if "predictions" not in record:
        raise FileNotFoundError(f"run {record['id']} saved no predictions (a tuning run, or "
                                f"one recorded before predictions were kept)")
    preds = load_predictions(run_folder(results_dir, record["profile"], record["config_name"])
                             / record["predictions"])
    if "indices" not in preds and record["config"]["eval_subset"] == 0:
        # The first records kept no indices; they were made on the whole test set, in order.
        preds["indices"] = np.arange(len(preds["labels"]))
    return preds


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
