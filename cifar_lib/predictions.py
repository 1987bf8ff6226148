"""The predictions file a final run saves beside its record, written and read here:
test-set logits and every image's branch weights (study/analysis.py computes confusion,
calibration and confident mistakes from them)."""
from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .blocks import MIXING_BLOCKS
from .device import Precision
from .evaluation import predict
from .models import uncompiled
from .paths import record_folders
from .records import atomic_write_bytes, run_folder


# --------------------------------------------------------------------------- written by a run
@contextmanager
def recording_branch_weights(model: torch.nn.Module):
    """Collect every intermediate block's mixing weights while the model runs eagerly.

    Yields a list with one list of [batch, L] tensors per block, in network order. Hooks
    do not fire inside a torch.compile graph, so pass the uncompiled module.
    """
    blocks = [m for m in model.modules() if isinstance(m, MIXING_BLOCKS)]
    captured: list[list[torch.Tensor]] = [[] for _ in blocks]

    def hook(i):
        def save(module, inputs, _output):
            captured[i].append(module.branch_weights(inputs[0]).float().cpu())
        return save

    handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


def stack_branch_weights(captured: list[list[torch.Tensor]]) -> np.ndarray:
    """[images, blocks, L] from what `recording_branch_weights` collected."""
    if not captured or not all(captured):
        raise ValueError("no branch weights were recorded (did the model run under "
                         "torch.compile? record on the uncompiled module)")
    return np.stack([torch.cat(c).numpy() for c in captured], axis=1)


def branch_weights(model, loader, *, precision: Precision) -> np.ndarray:
    """[images, blocks, L]: one eager pass over `loader` on the uncompiled module."""
    with recording_branch_weights(uncompiled(model)) as captured:
        predict(uncompiled(model), loader, precision=precision)
    return stack_branch_weights(captured)


def save_predictions(path: Path, *, labels, indices, logits, logits_tta=None,
                     branch_weights=None) -> Path:
    """Softmax probabilities (float16), labels, the images' positions in the test set and
    branch weights as one compressed .npz, written atomically: the report draws confusion
    matrices, calibration and mistakes from it."""
    arrays = {"labels": np.asarray(labels, dtype=np.int64),
              "indices": np.asarray(indices, dtype=np.int64),
              "probs": torch.softmax(torch.as_tensor(logits).float(), 1).numpy().astype(np.float16)}
    if logits_tta is not None:
        arrays["probs_tta"] = torch.softmax(torch.as_tensor(logits_tta).float(), 1).numpy().astype(np.float16)
    if branch_weights is not None:
        arrays["branch_weights"] = np.asarray(branch_weights, dtype=np.float16)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


# --------------------------------------------------------------------------- read back
def load_predictions(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k].astype(np.float32) if npz[k].dtype == np.float16 else npz[k]
                for k in npz.files}


def run_predictions(record: dict, results_dir=None) -> dict[str, np.ndarray]:
    """The predictions saved by a final run (one that read the test set), beside its record
    under `results_dir` (default: the study's results/, else one's own runs/)."""
    if "predictions" not in record:
        raise FileNotFoundError(f"run {record['id']} saved no predictions (a tuning run, or "
                                f"one recorded before predictions were kept)")
    paths = [run_folder(f, record["profile"], record["config_name"]) / record["predictions"]
             for f in record_folders(results_dir)]
    preds = load_predictions(next((p for p in paths if p.is_file()), paths[0]))
    if "indices" not in preds and record["config"]["eval_subset"] == 0:
        # The first records kept no indices; they were made on the whole test set, in order.
        preds["indices"] = np.arange(len(preds["labels"]))
    return preds
