"""Shared fixtures: small CIFAR-10 folders in the official on-disk format, written by the
tests themselves, so every test runs on a fresh clone without data."""
import atexit
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Records and checkpoints that tests do not place themselves go to a temporary folder,
# never into the repository (set before cifar_lib reads its paths).
_SCRATCH = Path(tempfile.mkdtemp(prefix="cifar-lib-tests-"))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
os.environ["CIFAR_RESULTS_DIR"] = str(_SCRATCH / "results")
os.environ["CIFAR_RUNS_DIR"] = str(_SCRATCH / "runs")
os.environ["CIFAR_CHECKPOINT_DIR"] = str(_SCRATCH / "checkpoints")

from cifar_lib import data as cdata  # noqa: E402

LOCAL_COPY = cdata.default_root()
HAS_LOCAL_COPY = (LOCAL_COPY / cdata.FOLDER / "data_batch_1").exists()


def write_batch(path: Path, images: np.ndarray, labels, protocol: int = 2) -> None:
    """A batch file laid out like the official ones: a pickled dict of bytes keys."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    payload = {b"batch_label": b"test batch", b"labels": [int(v) for v in labels],
               b"data": rows, b"filenames": [b"img%d.png" % i for i in range(len(images))]}
    path.write_bytes(pickle.dumps(payload, protocol=protocol))


def make_tiny_cifar(root: Path, per_file: int = 100, seed: int = 0, learnable: bool = False) -> Path:
    """root/cifar-10-batches-py with 5 training batches and a test batch of random images
    (with `learnable`, images whose class sets their mean colour)."""
    rng = np.random.default_rng(seed)
    folder = root / cdata.FOLDER
    folder.mkdir(parents=True)
    for k, name in enumerate(cdata.TRAIN_FILES + [cdata.TEST_FILE]):
        if learnable:
            images, labels = learnable_images(per_file, seed=seed + k)
        else:
            images = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
            labels = np.arange(per_file) % 10
        write_batch(folder / name, images, labels)
    return folder


def learnable_images(n=256, seed=0):
    """Images whose class sets the mean colour: a small real task a model can learn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    palette = np.random.default_rng(1234).integers(30, 225, (10, 3))   # one palette for all
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
def cifar_folder(tmp_path_factory):
    """A CIFAR-10 folder in the official layout with 6,500 training images (enough for the
    standard 5,000-image validation split plus a training set) and 1,300 test images."""
    root = tmp_path_factory.mktemp("cifar")
    make_tiny_cifar(root, per_file=1300, learnable=True)
    return cdata.load_cifar10(root, download=False)


@pytest.fixture(autouse=True)
def _no_real_downloads(monkeypatch):
    # Tests never reach the internet: a download attempt goes to a closed local port.
    monkeypatch.setenv("CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")


def _postgres_bindir() -> Path | None:
    """The server binaries of the newest PostgreSQL installed (Debian puts them outside PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on 127.0.0.1, on a free port, run by its own user, with an
    empty database: the storage many machines would share. Stopped at the end. Its absence
    is a failure, not a skip (.ci/run installs Debian's postgresql)."""
    import pwd
    import socket
    import subprocess

    bindir = _postgres_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)")
    as_user = []
    if os.geteuid() == 0:                       # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        owner = pwd.getpwnam("postgres")
    folder = Path(tempfile.mkdtemp(prefix="kit-postgres-"))
    if as_user:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"

    def run(*cmd):
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "kit", "--auth=trust")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "kit", "optuna")
        yield f"postgresql://kit@127.0.0.1:{port}/optuna"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
