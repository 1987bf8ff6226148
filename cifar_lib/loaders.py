"""The two input pipelines: a device-resident tensor loader that augments whole batches
(the default), and the classic torchvision Dataset + DataLoader the coursework used."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


# --------------------------------------------------------------------------- augmentations
# Batch augmentations on image tensors where they live (CPU or GPU): random crop with
# padding, horizontal flip, rotation and cutout, each drawn from an explicit generator so
# an epoch's augmentation is reproducible from its seed.
# "altflip": each image is mirrored on alternate epochs (a fixed random half on even
# epochs, the other half on odd ones), so every image is seen both ways every two epochs,
# where random flips leave about a quarter of them unflipped or flipped twice in a row.
AUGMENTATIONS = ("crop", "flip", "altflip", "rotate", "cutout")


def check_augmentations(augment, pipeline: str = "tensor") -> None:
    """The one check of an augmentation list: every name known, and altflip only where a
    pipeline knows the epoch (the tensor one)."""
    unknown = [a for a in augment if a not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; valid: {', '.join(AUGMENTATIONS)}")
    if pipeline == "reference" and "altflip" in augment:
        raise ValueError('altflip needs pipeline = "tensor" (it depends on the epoch)')


def pad_reflect(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Reflect-pad uint8 NHWC images once, so per-batch crops are just gathers."""
    if padding == 0:
        return images
    x = images.permute(0, 3, 1, 2).float()  # reflect padding needs a float tensor
    x = F.pad(x, (padding,) * 4, mode="reflect")
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def random_crop(padded: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """A random size x size window of each padded NHWC image (one gather for the batch)."""
    n, hp, wp, _ = padded.shape
    dev = padded.device
    dy = torch.randint(0, hp - size + 1, (n,), generator=gen, device=dev)
    dx = torch.randint(0, wp - size + 1, (n,), generator=gen, device=dev)
    ar = torch.arange(size, device=dev)
    rows = (dy[:, None] + ar)[:, :, None]
    cols = (dx[:, None] + ar)[:, None, :]
    return padded[torch.arange(n, device=dev)[:, None, None], rows, cols]


def random_flip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each NHWC image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=gen, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(2), images)


def random_rotate(x: torch.Tensor, degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each NCHW float image by a uniform angle in [-degrees, degrees], nearest
    neighbour with zero fill (what torchvision's RandomRotation does by default)."""
    n = x.shape[0]
    theta = (torch.rand(n, generator=gen, device=x.device) * 2 - 1) * math.radians(degrees)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(affine.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero a size x size square around a random centre in each NCHW image (clipped where
    it crosses the border): rows cy - size // 2 to cy - size // 2 + size - 1, likewise columns."""
    n, _, h, w = x.shape
    top = torch.randint(0, h, (n, 1, 1), generator=gen, device=x.device) - size // 2
    left = torch.randint(0, w, (n, 1, 1), generator=gen, device=x.device) - size // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return x.masked_fill(inside[:, None], 0)


NORMALIZATIONS = {
    # The seed's choice: maps [0, 1] to [-1, 1].
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # Per-channel statistics of the CIFAR-10 training set.
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
PIPELINES = ("tensor", "reference")


def _generator(device: torch.device, *seeds: int) -> torch.Generator:
    # One generator per (seed, epoch, batch): any batch can be replayed on its own, which
    # is what makes a resumed run draw exactly the augmentations an unbroken one would.
    mixed = 0
    for s in seeds:
        mixed = (mixed * 1_000_003 + int(s) + 1) % (1 << 63)
    g = torch.Generator(device=device)
    g.manual_seed(mixed)
    return g


class TensorLoader:
    """Iterates (images, labels) batches from uint8 NHWC images held on `device`.

    Augmentation runs on whole batches on the device, so the training loop has no
    per-image Python and no worker processes. Batches come out normalised, float32,
    NCHW in logical shape and channels-last in memory (free: the data is stored NHWC).
    """

    def __init__(self, images, labels, batch_size: int, *, device="cpu", train: bool = False,
                 augment=(), crop_padding: int = 4, rotate_degrees: float = 0.0,
                 cutout_size: int = 0, normalize: str = "half", seed: int = 0,
                 drop_last: bool | None = None):
        check_augmentations(augment)
        self.device = torch.device(device)
        self.images = torch.as_tensor(np.asarray(images), dtype=torch.uint8).to(self.device)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long).to(self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.augment = tuple(augment) if train else ()
        self.rotate_degrees, self.cutout_size = rotate_degrees, cutout_size
        self.drop_last = train if drop_last is None else drop_last
        self.padding = crop_padding if "crop" in self.augment else 0
        self.padded = self._pad(self.images, self.padding)
        mean, std = NORMALIZATIONS[normalize]
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        self.epoch = 0
        # altflip: which images are mirrored on even epochs; odd epochs mirror the others.
        if "altflip" in self.augment:
            self.flipped_on_even = torch.rand(len(self.labels), generator=_generator(
                torch.device("cpu"), seed, -1)).lt(0.5).to(self.device)

    @staticmethod
    def _pad(images: torch.Tensor, padding: int, chunk: int = 5000) -> torch.Tensor:
        if padding == 0:
            return images
        return torch.cat([pad_reflect(images[i:i + chunk], padding)
                          for i in range(0, len(images), chunk)])

    def normalized(self, n: int) -> torch.Tensor:
        """The first n images, normalised, unaugmented, NCHW (for data-dependent init)."""
        return (self.images[:n].permute(0, 3, 1, 2).float() - self.mean) / self.std

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        if not self.train:
            return torch.arange(len(self.labels), device=self.device)
        g = _generator(torch.device("cpu"), self.seed, self.epoch)
        return torch.randperm(len(self.labels), generator=g).to(self.device)

    def batch(self, step: int, order: torch.Tensor | None = None):
        """Batch number `step` of the current epoch, exactly as iteration yields it."""
        order = self.order() if order is None else order
        idx = order[step * self.batch_size:(step + 1) * self.batch_size]
        g = _generator(self.device, self.seed, self.epoch, step)
        if "crop" in self.augment:
            x = random_crop(self.padded[idx], self.images.shape[1], g)
        else:
            x = self.images[idx]
        if "flip" in self.augment:
            x = random_flip(x, g)
        if "altflip" in self.augment:
            flip = self.flipped_on_even[idx] ^ bool(self.epoch % 2)
            x = torch.where(flip[:, None, None, None], x.flip(2), x)
        x = x.permute(0, 3, 1, 2).float()   # NCHW view of NHWC memory = channels-last
        if "rotate" in self.augment and self.rotate_degrees > 0:
            x = random_rotate(x, self.rotate_degrees, g)
        x = (x - self.mean) / self.std
        if "cutout" in self.augment and self.cutout_size > 0:
            x = cutout(x, self.cutout_size, g)
        return x.contiguous(memory_format=torch.channels_last), self.labels[idx]

    def __iter__(self):
        order = self.order()
        for step in range(len(self)):
            yield self.batch(step, order)


# --------------------------------------------------------------------------- reference
class ArrayDataset(Dataset):
    """uint8 NHWC arrays as a torchvision-style dataset of (transformed PIL image, label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.images[i])
        return (self.transform(img) if self.transform else img), int(self.labels[i])


def torchvision_transform(train: bool, augment=(), crop_padding: int = 4,
                          rotate_degrees: float = 0.0, cutout_size: int = 0,
                          normalize: str = "half"):
    """The seed's per-image transform chain (PIL in, normalised tensor out)."""
    from torchvision import transforms as T

    if train:
        check_augmentations(augment, "reference")
    steps = []
    if train and "crop" in augment:
        steps.append(T.RandomCrop(32, padding=crop_padding, padding_mode="reflect"))
    if train and "flip" in augment:
        steps.append(T.RandomHorizontalFlip())
    if train and "rotate" in augment and rotate_degrees > 0:
        steps.append(T.RandomRotation(rotate_degrees))
    mean, std = NORMALIZATIONS[normalize]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if train and "cutout" in augment and cutout_size > 0:
        # RandomErasing with a fixed square is the torchvision spelling of cutout.
        area = cutout_size ** 2 / 1024
        steps.append(T.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0))
    return T.Compose(steps)


def reference_loader(images, labels, batch_size: int, *, train: bool = False, augment=(),
                     crop_padding: int = 4, rotate_degrees: float = 0.0, cutout_size: int = 0,
                     normalize: str = "half", seed: int = 0, num_workers: int = 0) -> DataLoader:
    """The seed's pipeline: per-image PIL transforms in a torch DataLoader."""
    transform = torchvision_transform(train, augment, crop_padding, rotate_degrees,
                                      cutout_size, normalize)
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ArrayDataset(images, labels, transform), batch_size=batch_size,
                      shuffle=train, drop_last=train, num_workers=num_workers, generator=g)


def make_loader(pipeline: str, images, labels, batch_size: int, *, device="cpu",
                train: bool = False, seed: int = 0, num_workers: int = 0, **augment_args):
    """A loader of the named pipeline ('tensor' or 'reference'); `num_workers` are the
    reference DataLoader's worker processes (the tensor pipeline augments on the device)."""
    if pipeline == "tensor":
        return TensorLoader(images, labels, batch_size, device=device, train=train, seed=seed,
                            **augment_args)
    if pipeline == "reference":
        return reference_loader(images, labels, batch_size, train=train, seed=seed,
                                num_workers=num_workers, **augment_args)
    raise ValueError(f"unknown pipeline {pipeline!r}; valid: {', '.join(PIPELINES)}")
