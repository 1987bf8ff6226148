"""Batch augmentations on image tensors where they live (CPU or GPU): random crop with
padding, horizontal flip, rotation and cutout, each drawn from an explicit generator so
an epoch's augmentation is reproducible from its seed."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# "altflip": each image is mirrored on alternate epochs (a fixed random half on even
# epochs, the other half on odd ones), so every image is seen both ways every two epochs,
# where random flips leave about a quarter of them unflipped or flipped twice in a row.
AUGMENTATIONS = ("crop", "flip", "altflip", "rotate", "cutout")


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
    """Zero a random size x size square (clipped at the border) in each NCHW image."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), generator=gen, device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=gen, device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return x.masked_fill(inside[:, None], 0)
