"""Test-time augmentation, saved predictions, calibration and the live branch weights."""
from pathlib import Path
import numpy as np
import pytest
import torch

from cifar_lib.study.analysis import confident_mistakes, confusion_matrix, reliability
from cifar_lib.predictions import recording_branch_weights, stack_branch_weights
from cifar_lib.blocks import MIXING_BLOCKS
from cifar_lib.config import load_config
from cifar_lib.experiment import run_experiment
from cifar_lib.loaders import TensorLoader
from cifar_lib.models import build_model
from cifar_lib.device import Precision
from cifar_lib.evaluation import predict, tta_views
from cifar_lib.recipe import make_optimizer
from cifar_lib.train import train_one_epoch
from conftest import learnable_images, tiny_dataset


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_tta_views_weights_sum_to_one_and_shift_the_image(shift):
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    views = list(tta_views(x, shift))
    assert len(views) == (6 if shift else 2)
    assert sum(w for w, _ in views) == pytest.approx(1.0)
    assert torch.equal(views[1][1], x.flip(3))
    if shift:
        up_left = views[2][1]   # padded then cut at (0, 0): content moves down-right
        assert torch.equal(up_left[..., shift:, shift:], x[..., :-shift, :-shift])
        down_right = views[4][1]
        assert torch.equal(down_right[..., :-shift, :-shift], x[..., shift:, shift:])


def test_tta_of_a_mirror_and_shift_invariant_model_changes_nothing():
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(3, 10))
    x, y = learnable_images(20)
    # Constant images are unchanged by flips and (reflect-padded) shifts.
    x[:] = x.mean(axis=(1, 2), keepdims=True).astype(np.uint8)
    loader = TensorLoader(x, y, 10)
    precision = Precision("fp32", torch.device("cpu"))
    plain, _ = predict(model, loader, precision=precision)
    tta, _ = predict(model, loader, precision=precision, tta=True, tta_shift=1)
    assert torch.allclose(plain, tta, atol=1e-5)


def test_confusion_matrix_and_confident_mistakes():
    labels = np.array([0, 0, 1, 2, 2])
    probs = np.array([[.9, .1, 0], [.2, .7, .1], [0, 1, 0], [.6, 0, .4], [0, .1, .9]])
    counts = confusion_matrix(labels, probs.argmax(1), num_classes=3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert confident_mistakes(probs, labels, k=5).tolist() == [1, 3]


def test_expected_calibration_error():
    rng = np.random.default_rng(0)
    n = 20000
    labels = np.zeros(n, dtype=int)
    # Confidence c, right with probability c: calibrated, ECE near 0.
    conf = rng.uniform(0.5, 1.0, n)
    right = rng.uniform(size=n) < conf
    probs = np.stack([np.where(right, conf, 1 - conf), np.where(right, 1 - conf, conf)], 1)
    rows, ece = reliability(probs, labels)
    assert ece < 0.02
    assert rows[:, 2].sum() == pytest.approx(1.0)
    # Always 99% sure, right half the time: ECE 0.49.
    probs = np.tile([0.99, 0.01], (n, 1))
    _, ece = reliability(probs, (rng.uniform(size=n) < 0.5).astype(int))
    assert ece == pytest.approx(0.49, abs=0.02)


@pytest.mark.slow
def test_the_deep_recipes_branch_weights_are_live_and_trained():
    """The issue-4 constraint: in the deep recipe's network every block's mixing weights
    depend on the image and are learned (they get gradients and move in training)."""
    torch.manual_seed(0)
    cfg = load_config("deep", "smoke")
    model = build_model(cfg.model, **{**cfg.model_args, "widths": (16, 16, 16, 32, 32)})
    blocks = [m for m in model.modules() if isinstance(m, MIXING_BLOCKS)]
    assert len(blocks) == 5 and all(b.num_convs >= 2 for b in blocks)
    before = [b.mixer.weight.detach().clone() for b in blocks]
    x, y = learnable_images(256)
    loader = TensorLoader(x, y, 64, train=True, augment=("crop", "flip"), normalize=cfg.normalize)
    precision = Precision("fp32", torch.device("cpu"))
    train_one_epoch(model, loader, make_optimizer(cfg, model), precision=precision,
                    scaler=precision.scaler(), label_smoothing=cfg.label_smoothing, progress=False)
    assert all(not torch.equal(b.mixer.weight, w) for b, w in zip(blocks, before))
    with recording_branch_weights(model) as captured:
        predict(model, TensorLoader(x, y, 128, normalize=cfg.normalize), precision=precision)
    weights = stack_branch_weights(captured)
    assert weights.shape == (256, 5, 2)
    assert (weights.std(axis=0) > 1e-4).all()          # varies from image to image
    # ...and the output depends on them: freezing the gate at its mean changes the logits.
    model.eval()
    batch = torch.as_tensor(next(iter(TensorLoader(x, y, 32, normalize=cfg.normalize)))[0])
    live = model(batch)
    block = blocks[2]
    mean = torch.as_tensor(weights[:, 2].mean(0))
    block.branch_weights = lambda inp: mean.expand(len(inp), -1)
    assert not torch.allclose(model(batch), live, atol=1e-4)


@pytest.mark.slow
def test_final_runs_save_predictions_that_match_the_record(tmp_path):
    from cifar_lib.predictions import run_predictions

    cfg = load_config("deep", "smoke", val_size=100, epochs=1,
                      model_args={"widths": [8, 8, 16, 16, 16]})
    record, path = run_experiment(cfg, profile="smoke", data=tiny_dataset(), results_dir=tmp_path,
                                  checkpoint_dir=tmp_path, progress=False)
    preds = run_predictions(record, tmp_path)
    assert preds["probs"].shape == preds["probs_tta"].shape == (100, 10)
    assert preds["indices"].tolist() == list(range(100))
    assert preds["branch_weights"].shape == (100, 5, 2)
    assert (preds["probs"].argmax(1) == preds["labels"]).mean() == pytest.approx(
        record["final"]["test_acc"], abs=0.011)   # float16 probabilities may flip a near-tie
    assert (preds["probs_tta"].argmax(1) == preds["labels"]).mean() == pytest.approx(
        record["final"]["test_acc_tta"], abs=0.011)


def test_history_frame_reads_a_final_run_which_has_no_validation_split():
    """Was: TypeError ('int' and 'NoneType') on any final run's history."""
    import json

    import pytest

    from cifar_lib.study.tables import history_frame

    path = next((Path(__file__).resolve().parents[1] / "results" / "full" / "fast").glob("*.json"))
    record = json.loads(path.read_text())
    frame = history_frame([record])
    assert len(frame) == record["config"]["epochs"] and frame["val_acc"].isna().all()
    assert frame["minutes"].iloc[-1] == pytest.approx(sum(h["train_seconds"] for h in record["history"]) / 60)


def test_branch_names_say_what_each_of_fastnets_branches_is():
    from cifar_lib.blocks import MIXING_BLOCKS
    from cifar_lib.models import build_model
    from cifar_lib.study.analysis import branch_names

    model = build_model("fast", kernel_sizes=(3, 1))
    blocks = [m for m in model.modules() if isinstance(m, MIXING_BLOCKS)]
    names = branch_names({"name": "fast", "args": {"kernel_sizes": [3, 1]}}, len(blocks))
    assert len(names) == len(blocks) and names[0][0].endswith("(frozen)")
    assert not blocks[0].convs[0].weight.requires_grad and blocks[0].convs[1].weight.requires_grad
    assert names[1:] == [[f"{c.kernel_size[0]}×{c.kernel_size[0]}" for c in b.convs] for b in blocks[1:]]
