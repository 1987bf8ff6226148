"""Pictures of images for the notebooks: a grid of the data by class, the same images under
each training augmentation, and a model's mistakes with its confidence."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..data import CLASSES
from .plots import _close


def image_grid(images: np.ndarray, titles=None, columns: int = 8, size: float = 1.2,
               title_colors=None):
    """uint8 NHWC images in a grid, with optional titles under each."""
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size * 1.15),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7,
                             color="black" if title_colors is None else title_colors[i])
    fig.tight_layout()
    return _close(fig)


def class_grid(images: np.ndarray, labels: np.ndarray, per_class: int = 8):
    """The first `per_class` images of each class, one class per row."""
    picks = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(CLASSES))])
    fig = image_grid(images[picks], [CLASSES[labels[i]] for i in picks], columns=per_class)
    return fig


def mistakes_grid(images: np.ndarray, probs: np.ndarray, labels: np.ndarray):
    """Images with their predicted class and confidence over the true class (red)."""
    predicted = probs.argmax(1)
    titles = [f"{CLASSES[p]} {100 * probs[i, p]:.0f}%\n(true: {CLASSES[t]})"
              for i, (p, t) in enumerate(zip(predicted, labels))]
    return image_grid(images, titles, columns=8, size=1.35)


def augmentation_examples(images: np.ndarray, variants: dict[str, list[str]], *,
                          crop_padding: int = 4, rotate_degrees: float = 10.0, seed: int = 0):
    """The same images under each augmentation set, one row per set, as training sees them."""
    from ..loaders import TensorLoader

    rows = []
    for augment in variants.values():
        loader = TensorLoader(images, np.zeros(len(images), dtype=np.int64), len(images),
                              train=True, augment=augment, crop_padding=crop_padding,
                              rotate_degrees=rotate_degrees, normalize="half", seed=seed)
        x, _ = loader.batch(0, order=torch.arange(len(images)))
        rows.append(((x * 0.5 + 0.5).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())
    fig, axes = plt.subplots(len(rows), len(images), figsize=(1.2 * len(images), 1.3 * len(rows)),
                             squeeze=False)
    for r, (name, batch) in enumerate(zip(variants, rows)):
        for c, ax in enumerate(axes[r]):
            ax.imshow(batch[c], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return _close(fig)
