import numpy as np
import torch

from cifar_lib import loaders as aug
from cifar_lib.loaders import TensorLoader, make_loader


def _images(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10


def test_eval_loader_normalises_in_order_and_is_channels_last():
    x, y = _images(10)
    loader = TensorLoader(x, y, 4, normalize="half")
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    first, labels = batches[0]
    assert first.is_contiguous(memory_format=torch.channels_last)
    expected = torch.tensor(x[:4]).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(first, expected)
    assert labels.tolist() == y[:4].tolist()


def test_crop_without_padding_room_is_identity_and_with_padding_shifts():
    x = torch.tensor(_images(8)[0])
    g = torch.Generator().manual_seed(0)
    assert torch.equal(aug.random_crop(x, 32, g), x)
    padded = aug.pad_reflect(x, 4)
    assert padded.shape == (8, 40, 40, 3)
    torch.testing.assert_close(padded[:, 4:36, 4:36], x)
    crops = aug.random_crop(padded, 32, g)
    assert crops.shape == x.shape
    # every crop is some window of its own padded image
    for i in range(8):
        assert any(torch.equal(crops[i], padded[i, dy:dy + 32, dx:dx + 32])
                   for dy in range(9) for dx in range(9))


def test_flip_mirrors_about_half_the_images():
    x = torch.tensor(_images(200)[0])
    out = aug.random_flip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(1)) for i in range(200)]
    kept = [torch.equal(out[i], x[i]) for i in range(200)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 70 < sum(flipped) < 130


def test_rotation_turns_each_image_by_its_drawn_angle_as_torchvision_does():
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    x = torch.rand(6, 3, 32, 32)
    torch.testing.assert_close(aug.random_rotate(x, 0.0, torch.Generator().manual_seed(0)), x)
    rotated = aug.random_rotate(x, 30.0, torch.Generator().manual_seed(0))
    # The same generator's first draw is each image's angle, uniform in [-30, 30] degrees.
    angles = (torch.rand(6, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 30.0
    assert angles.abs().max() > 5                      # the check below is not of ~0 degrees
    for image, turned, angle in zip(x, rotated, angles):
        expected = TF.rotate(image, float(angle), interpolation=InterpolationMode.NEAREST)
        torch.testing.assert_close(turned, expected)


def _zeroed_boxes(images: torch.Tensor) -> list[tuple[int, int, int]]:
    """(zeroed pixels, box height, box width) of each image's all-channel zeros."""
    out = []
    for zero in (images == 0).all(1):
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        out.append((int(zero.sum()), height, width))
    return out


def test_cutout_zeroes_size_by_size_pixels_in_both_pipelines():
    from PIL import Image

    # Tensor pipeline: an 8x8 square around a random centre, clipped at the border.
    x = torch.full((400, 3, 32, 32), 0.7)
    boxes = _zeroed_boxes(aug.cutout(x, 8, torch.Generator().manual_seed(0)))
    for pixels, height, width in boxes:
        assert pixels == height * width and height <= 8 and width <= 8    # a filled box
    inside = [pixels for pixels, height, width in boxes if (height, width) == (8, 8)]
    assert len(inside) > 200 and set(inside) == {64}
    # Reference pipeline (torchvision's RandomErasing): always the whole 8x8 square.
    transform = aug.torchvision_transform(True, ("cutout",), cutout_size=8)
    image = Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
    assert {b for b in _zeroed_boxes(torch.stack([transform(image) for _ in range(50)]))} == {(64, 8, 8)}


def test_training_batches_are_reproducible_from_seed_and_step():
    x, y = _images(64)
    args = dict(train=True, augment=("crop", "flip", "rotate", "cutout"), rotate_degrees=10,
                cutout_size=8)
    a = TensorLoader(x, y, 16, seed=3, **args)
    b = TensorLoader(x, y, 16, seed=3, **args)
    c = TensorLoader(x, y, 16, seed=4, **args)
    for loader in (a, b, c):
        loader.set_epoch(2)
    batches_a, batches_b, batches_c = list(a), list(b), list(c)
    assert len(batches_a) == 4
    for (xa, ya), (xb, yb) in zip(batches_a, batches_b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(batches_a[0][0], batches_c[0][0])
    # any single batch can be regenerated on its own (what resuming relies on)
    xs, ys = a.batch(2)
    assert torch.equal(xs, batches_a[2][0]) and torch.equal(ys, batches_a[2][1])
    # a new epoch draws a new order
    a.set_epoch(3)
    assert not torch.equal(next(iter(a))[1], batches_a[0][1])


def test_reference_pipeline_yields_the_same_shapes_and_scale():
    x, y = _images(20)
    ref = make_loader("reference", x, y, 8, train=True, augment=("crop", "flip", "rotate"),
                      rotate_degrees=10)
    xb, yb = next(iter(ref))
    assert xb.shape == (8, 3, 32, 32) and yb.shape == (8,)
    assert -1.0 <= xb.min() and xb.max() <= 1.0
    plain = make_loader("reference", x, y, 20)
    expected = next(iter(TensorLoader(x, y, 20)))[0]
    torch.testing.assert_close(next(iter(plain))[0], expected)


def test_num_workers_reaches_the_reference_dataloader():
    """Was (D10): `num_workers` was validated but never reached the DataLoader."""
    import torch

    from cifar_lib.config import load_config
    from cifar_lib.experiment import make_loaders
    from conftest import tiny_dataset

    cfg = load_config("seed_improved", "smoke", pipeline="reference", num_workers=2, val_size=100)
    _, train_loader, val_loader = make_loaders(cfg, tiny_dataset(), 0, torch.device("cpu"))
    assert train_loader.num_workers == 2 and val_loader.num_workers == 2
