import pickle

import numpy as np
import pytest

from cifar_lib import data as cdata
from conftest import HAS_LOCAL_COPY, LOCAL_COPY, Evil, make_tiny_cifar, write_batch


@pytest.mark.parametrize("protocol", [2, 4])
def test_reads_official_format_batch(tmp_path, protocol):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    labels = [3, 1, 4, 1, 5, 9, 2]
    write_batch(tmp_path / "b", images, labels, protocol=protocol)
    x, y = cdata.read_batch(tmp_path / "b")
    assert x.dtype == np.uint8 and x.shape == (7, 32, 32, 3)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_loads_a_folder_and_reports_it_unofficial(tiny_cifar):
    d = cdata.load_cifar10(tiny_cifar.parent, download=False)
    assert d.train_images.shape == (500, 32, 32, 3) and d.test_images.shape == (100, 32, 32, 3)
    assert d.official is False
    assert set(d.mismatched_files) == set(cdata.TRAIN_FILES + [cdata.TEST_FILE])
    assert "NOT the official release" in d.describe()
    again = cdata.load_cifar10(tiny_cifar, download=False)   # the folder itself works too
    assert again.fingerprint == d.fingerprint


def test_matching_checksums_mean_official(tiny_cifar, monkeypatch):
    sums = {f: cdata.md5_file(tiny_cifar / f) for f in cdata.TRAIN_FILES + [cdata.TEST_FILE]}
    monkeypatch.setattr(cdata, "OFFICIAL_MD5", sums)
    d = cdata.load_cifar10(tiny_cifar.parent, download=False)
    assert d.official is True and d.mismatched_files == []
    assert "official release" in d.describe()


def test_fingerprint_changes_with_one_pixel(tmp_path):
    a = make_tiny_cifar(tmp_path / "a")
    b = make_tiny_cifar(tmp_path / "b")
    x, y = cdata.read_batch(b / "test_batch")
    x = x.copy()
    x[0, 0, 0, 0] ^= 1
    write_batch(b / "test_batch", x, y)
    fa = cdata.load_cifar10(a, download=False).fingerprint
    fb = cdata.load_cifar10(b, download=False).fingerprint
    assert fa != fb


if HAS_LOCAL_COPY:
    # Defined only where the JPEG-rebuilt copy exists (CI builds it), so it never skips.
    def test_local_copy_loads_as_not_official():
        check_local_copy(cdata.load_cifar10(LOCAL_COPY, download=False))


def check_local_copy(local_copy):
    assert local_copy.official is False
    assert local_copy.train_images.shape == (50000, 32, 32, 3)
    assert local_copy.test_images.shape == (10000, 32, 32, 3)
    assert np.bincount(local_copy.test_labels).tolist() == [1000] * 10
    # the official order: the first labels of data_batch_1
    assert local_copy.train_labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]



def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(cdata.DataError, match="refusing to load global"):
        cdata.read_batch(path)
    assert not marker.exists()


def test_object_array_in_pickle_is_refused(tmp_path):
    path = tmp_path / "b"
    arr = np.array([object()] * 3, dtype=object)
    path.write_bytes(pickle.dumps({b"data": arr, b"labels": [0]}, protocol=2))
    with pytest.raises(cdata.DataError, match="not uint8|refusing"):
        cdata.read_batch(path)


def test_truncated_file_names_the_file(tiny_cifar):
    path = tiny_cifar / "data_batch_3"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(cdata.DataError, match="data_batch_3.*truncated or corrupted"):
        cdata.load_cifar10(tiny_cifar, download=False)


def test_wrong_shape_and_bad_labels_are_named(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(cdata.DataError, match=r"shape \(2, 100\), expected \(N, 3072\)"):
        cdata.read_batch(path)
    write_batch(path, np.zeros((2, 32, 32, 3), np.uint8), [0, 10])
    with pytest.raises(cdata.DataError, match=r"labels must lie in \[0, 9\]"):
        cdata.read_batch(path)
    write_batch(path, np.zeros((2, 32, 32, 3), np.uint8), [0])
    with pytest.raises(cdata.DataError, match="1 labels for 2 images"):
        cdata.read_batch(path)


def test_missing_data_offline_names_folder_and_fix(tmp_path):
    with pytest.raises(cdata.DataError) as err:
        cdata.load_cifar10(tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / cdata.FOLDER) in msg
    assert "download" in msg and "--data-root" in msg and "CIFAR10_ROOT" in msg
    assert not (tmp_path / "nowhere").exists()   # nothing left behind


@pytest.mark.parametrize("error, fix", [
    (OSError(28, "No space left on device"), "free at least 350 MB"),
    (ConnectionResetError(104, "Connection reset by peer"), "check the internet connection"),
    (RuntimeError("File not found or corrupted: md5 mismatch"), "did not match its checksum"),
    (TypeError("an API change"), "this is a bug in the download path"),
])
def test_a_failed_download_names_the_real_error_and_its_fix(tmp_path, monkeypatch, error, fix):
    import torchvision.datasets.utils as tv_utils

    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fail)
    with pytest.raises(cdata.DataError) as err:
        cdata.load_cifar10(tmp_path / "fresh", download=True)
    msg = str(err.value)
    assert f"{type(error).__name__}: {error}" in msg and fix in msg
    assert ("internet" in msg) == ("internet" in fix)        # not every failure is the network
    assert not (tmp_path / "fresh").exists()                  # the folder it made is gone


def test_stratified_split_is_disjoint_stratified_deterministic():
    labels = np.repeat(np.arange(10), 300)
    np.random.default_rng(0).shuffle(labels)
    train, val = cdata.stratified_split(labels, val_size=500)
    assert len(np.intersect1d(train, val)) == 0
    assert len(train) + len(val) == len(labels)
    assert np.bincount(labels[val]).tolist() == [50] * 10
    train2, val2 = cdata.stratified_split(labels, val_size=500)
    np.testing.assert_array_equal(val, val2)
    _, val3 = cdata.stratified_split(labels, val_size=500, seed=1)
    assert not np.array_equal(val, val3)
    with pytest.raises(ValueError, match="multiple of 10"):
        cdata.stratified_split(labels, val_size=55)
