"""CIFAR-10 on disk: find or download it, read it safely, say which copy it is, split it."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .paths import DATA_ROOT

FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
# The official release's checksums (the same list torchvision checks).
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
TRAIN_FILES = [f"data_batch_{k}" for k in range(1, 6)]
TEST_FILE = "test_batch"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGES_PER_BATCH = 10_000
PIXELS = 3 * 32 * 32


class DataError(RuntimeError):
    """The data could not be found, fetched or read; the message says how to fix it."""


# --------------------------------------------------------------------------- reading
# The batch files are pickles. Unpickling runs whatever callables the file names, so we
# never let pickle reach numpy (or anything else): the only globals a CIFAR-10 batch
# needs are numpy's array-reconstruction hooks, and we answer them with inert stand-ins
# that just collect the raw bytes.

class _DType:
    def __init__(self, code, *_):
        code = code.decode() if isinstance(code, bytes) else code
        if code != "u1":
            raise pickle.UnpicklingError(f"array dtype {code!r} is not uint8")

    def __setstate__(self, state):
        pass


class _Array:
    def __init__(self, *_):
        self.shape, self.raw = None, None

    def __setstate__(self, state):
        _version, shape, dtype, _fortran, raw = state
        if not isinstance(dtype, _DType):
            raise pickle.UnpicklingError("array without a uint8 dtype")
        self.shape = tuple(int(s) for s in shape)
        self.raw = raw.encode("latin1") if isinstance(raw, str) else bytes(raw)

    def numpy(self) -> np.ndarray:
        if self.raw is None or len(self.raw) != int(np.prod(self.shape)):
            raise pickle.UnpicklingError(
                f"array payload has {0 if self.raw is None else len(self.raw)} bytes "
                f"for shape {self.shape}")
        return np.frombuffer(self.raw, dtype=np.uint8).reshape(self.shape)


def _latin1_bytes(text, encoding="latin1"):
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError("only latin-1 text may be re-encoded")
    return text.encode("latin1")


class RefusedPickle(pickle.UnpicklingError):
    """The file names a global that a CIFAR-10 batch never contains."""


_ALLOWED = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.multiarray", "_reconstruct"): lambda cls, shape, dtype: _Array(),
    ("numpy._core.multiarray", "_reconstruct"): lambda cls, shape, dtype: _Array(),
    ("numpy", "ndarray"): _Array,
    ("numpy", "dtype"): _DType,
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(
                f"refusing to load global '{module}.{name}': a CIFAR-10 batch holds only a "
                "uint8 array, labels and names, so this file is not one (or was tampered with)"
            ) from None


def _text(v) -> str:
    return v.decode("latin1") if isinstance(v, bytes) else str(v)


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file into (images uint8 [N, 32, 32, 3], labels int64 [N]) without
    executing anything from the file."""
    path = Path(path)
    try:
        raw = _BatchUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except RefusedPickle as e:
        raise DataError(f"{path}: {e}. Nothing from it was run; replace the file with the "
                        "official one.") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            AttributeError, KeyError, UnicodeDecodeError) as e:
        raise DataError(
            f"{path}: not a readable CIFAR-10 batch file ({type(e).__name__}: {e}). "
            f"Expected a pickled dict with 'data' ({IMAGES_PER_BATCH}x{PIXELS} uint8) and "
            "'labels'. The file is truncated or corrupted: delete the folder and download "
            "or rebuild it.") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(raw).__name__}")
    batch = {_text(k): v for k, v in raw.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: batch has keys {sorted(batch)}, expected 'data' and 'labels'")
    if not isinstance(batch["data"], _Array):
        raise DataError(f"{path}: 'data' is not an array")
    try:
        data = batch["data"].numpy()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: {e}") from None
    if data.ndim != 2 or data.shape[1] != PIXELS:
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (N, {PIXELS})")
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{path}: labels must lie in [0, {len(CLASSES) - 1}], "
                        f"found [{labels.min()}, {labels.max()}]")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


# --------------------------------------------------------------------------- finding
def display_path(path) -> str:
    """`path` as a reader should see it: relative to the working directory when it lies
    near it, else with the home folder as ~ (no machine-specific absolute paths in
    saved notebook outputs)."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    relative = Path(os.path.relpath(path, Path.cwd()))
    if relative.parts[:3] != ("..",) * 3:
        return str(relative)
    home = Path.home()
    return "~/" + str(path.relative_to(home)) if path.is_relative_to(home) else f".../{path.name}"


def default_root() -> Path:
    """`CIFAR10_ROOT` if set, else `data/` at the repository root (or working directory)."""
    return DATA_ROOT


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in TRAIN_FILES + [TEST_FILE])


def locate(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The `cifar-10-batches-py` folder under `root` (or `root` itself), downloading the
    official archive into `root` when it is missing and `download` is set."""
    root = Path(root).expanduser() if root is not None else default_root()
    for candidate in (root / FOLDER, root):
        if _complete(candidate):
            return candidate
    if download:
        _download(root)
        if _complete(root / FOLDER):
            return root / FOLDER
    raise DataError(
        f"CIFAR-10 not found in {root / FOLDER}. Fix: let the kit download it (needs "
        f"internet), or put an extracted '{FOLDER}' folder under {root}, or point "
        "--data-root / CIFAR10_ROOT at the folder that holds it.")


def _download(root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    url = os.environ.get("CIFAR10_URL", URL)
    created = not root.exists()
    archive = root / Path(url).name
    try:
        # Checksum-verified; extracts only after the archive matches ARCHIVE_MD5.
        download_and_extract_archive(url, str(root), md5=ARCHIVE_MD5)
    except Exception as e:  # urllib, socket, ssl and checksum errors all end here
        # Leave nothing half-written behind: a partial archive, or a folder we made.
        if archive.exists() and md5_file(archive) != ARCHIVE_MD5:
            archive.unlink()
        if created and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        raise DataError(
            f"CIFAR-10 not found in {root / FOLDER} and the download from {url} failed: "
            f"{type(e).__name__}: {str(e)[:200]}. Fix: {_download_fix(e, root)}, or put an "
            f"extracted '{FOLDER}' folder under {root}, or point --data-root / CIFAR10_ROOT "
            "at the folder that holds it.") from None


def _download_fix(error: Exception, root: Path) -> str:
    """What to do about a failed download, by what failed (not always the network)."""
    import errno
    import socket
    import urllib.error

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free at least 350 MB on the disk that holds {root} and rerun"
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"make {root} writable (or pick another --data-root) and rerun"
    if isinstance(error, (urllib.error.URLError, socket.timeout, ConnectionError)):
        return "check the internet connection (and any proxy) and rerun"
    if "md5" in str(error).lower() or "integrity" in str(error).lower():
        return "the archive did not match its checksum (a proxy or mirror changed it); rerun, or download it by hand"
    return "rerun; if it fails the same way, this is a bug in the download path, please report it"


# --------------------------------------------------------------------------- identity
def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(*arrays: np.ndarray) -> str:
    """Short content hash of arrays: the same pixels and labels give the same string."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


@dataclass
class CIFAR10:
    """The whole dataset in memory as uint8 NHWC arrays, plus where it came from."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    root: str
    official: bool
    mismatched_files: list[str] = field(default_factory=list)
    fingerprint: str = ""

    @property
    def identity(self) -> dict:
        """What a results record says about the data."""
        return {"official": self.official, "fingerprint": self.fingerprint, "root": self.root,
                "mismatched_files": self.mismatched_files,
                "train_size": int(len(self.train_labels)), "test_size": int(len(self.test_labels))}

    def describe(self) -> str:
        where = display_path(self.root)
        if self.official:
            return f"CIFAR-10 official release (checksums verified) from {where}"
        return (f"CIFAR-10 copy from {where}: NOT the official release "
                f"({len(self.mismatched_files)} file(s) differ from the official checksums, "
                "e.g. the JPEG-rebuilt copy); accuracy is not comparable to published numbers")


def load_cifar10(root: str | os.PathLike | None = None, download: bool = True) -> CIFAR10:
    """Find (or download) CIFAR-10, read it with the restricted reader, and identify it."""
    folder = locate(root, download=download)
    parts = [read_batch(folder / f) for f in TRAIN_FILES]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = read_batch(folder / TEST_FILE)
    names = TRAIN_FILES + [TEST_FILE] + (["batches.meta"] if (folder / "batches.meta").exists() else [])
    mismatched = [f for f in names if md5_file(folder / f) != OFFICIAL_MD5[f]]
    return CIFAR10(train_x, train_y, test_x, test_y, root=str(folder),
                   official=not mismatched, mismatched_files=mismatched,
                   fingerprint=fingerprint(train_x, train_y, test_x, test_y))


# --------------------------------------------------------------------------- splitting
def stratified_split(labels: np.ndarray, val_size: int = 5000, seed: int = 0):
    """Deterministic class-stratified (train_idx, val_idx). Independent of the training
    seed, so every run of every config tunes against the same held-out images."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if val_size % len(classes):
        raise ValueError(f"val_size={val_size} must be a multiple of {len(classes)} classes")
    per_class = val_size // len(classes)
    rng = np.random.default_rng(seed)
    val = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if per_class > len(idx):
            raise ValueError(f"val_size={val_size} asks {per_class} of class {c}, "
                             f"which has only {len(idx)} images")
        val.append(rng.permutation(idx)[:per_class])
    val = np.sort(np.concatenate(val))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


@dataclass
class Splits:
    """uint8 images and labels for train / val / test after subsetting."""
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    test_indices: np.ndarray       # positions in the official test set, for looking images up


def _subset(n_total: int, n: int) -> np.ndarray:
    # A fixed random subset (seed 0), so smoke runs of every config see the same images.
    if n <= 0 or n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(0).permutation(n_total)[:n])


def split_data(data: CIFAR10, val_size: int = 5000, *, final: bool = False, train_subset: int = 0,
               eval_subset: int = 0) -> Splits:
    """The run's images: the fixed validation split held out of training (with `final`,
    all 50,000 train and nothing is validated), then the first `train_subset` /
    `eval_subset` of a fixed shuffle (0: all)."""
    train_idx, val_idx = stratified_split(data.train_labels, val_size)
    if final:       # every choice is made: train on all 50,000, validate on nothing
        train_idx, val_idx = np.sort(np.concatenate([train_idx, val_idx])), val_idx[:0]
    train_idx = train_idx[_subset(len(train_idx), train_subset)]
    val_idx = val_idx[_subset(len(val_idx), eval_subset)]
    test_idx = _subset(len(data.test_labels), eval_subset)
    return Splits(train=(data.train_images[train_idx], data.train_labels[train_idx]),
                  val=(data.train_images[val_idx], data.train_labels[val_idx]),
                  test=(data.test_images[test_idx], data.test_labels[test_idx]),
                  test_indices=test_idx)
