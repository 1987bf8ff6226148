"""Shared fixtures: tiny CIFAR-10 folders in the official on-disk format, and the local
copy when it has been built."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from cifar_lib import data as cdata

LOCAL_COPY = cdata.default_root()


def write_batch(path: Path, images: np.ndarray, labels, protocol: int = 2) -> None:
    """A batch file laid out like the official ones: a pickled dict of bytes keys."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    payload = {b"batch_label": b"test batch", b"labels": [int(v) for v in labels],
               b"data": rows, b"filenames": [b"img%d.png" % i for i in range(len(images))]}
    path.write_bytes(pickle.dumps(payload, protocol=protocol))


def make_tiny_cifar(root: Path, per_file: int = 100, seed: int = 0) -> Path:
    """root/cifar-10-batches-py with 5 training batches and a test batch of random images."""
    rng = np.random.default_rng(seed)
    folder = root / cdata.FOLDER
    folder.mkdir(parents=True)
    for name in cdata.TRAIN_FILES + [cdata.TEST_FILE]:
        images = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
        labels = np.arange(per_file) % 10
        write_batch(folder / name, images, labels)
    return folder


def learnable_images(n=256, seed=0):
    """Images whose class sets the mean colour: a small real task a model can learn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    palette = rng.integers(30, 225, (10, 3))
    images = palette[labels][:, None, None, :] + rng.normal(0, 25, (n, 32, 32, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def tiny_dataset(seed=0) -> cdata.CIFAR10:
    x, y = learnable_images(600, seed)
    return cdata.CIFAR10(x[:500], y[:500], x[500:], y[500:], root="memory", official=False,
                         mismatched_files=["all"], fingerprint="tiny")


class Evil:
    """Unpickling this runs `touch marker`: a stand-in for a file that carries code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def tiny_cifar(tmp_path):
    return make_tiny_cifar(tmp_path)


@pytest.fixture(scope="session")
def local_copy():
    if not (LOCAL_COPY / cdata.FOLDER / "data_batch_1").exists():
        pytest.skip(f"local CIFAR-10 copy not built in {LOCAL_COPY} "
                    "(python ../shared/cifar10/build_batches.py data)")
    return cdata.load_cifar10(LOCAL_COPY, download=False)


@pytest.fixture(autouse=True)
def _no_real_downloads(monkeypatch):
    # Tests never reach the internet: a download attempt goes to a closed local port.
    monkeypatch.setenv("CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
