"""Loaders checked against facts published for the data sets, plus their failure messages."""

import gzip
import hashlib
import io
import shutil
import struct
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from conftest import local_fashion_mnist

from batchlab.datasets import DATASETS, DataError, load_dataset, load_idx_dir, registry, regression_problem
from batchlab.datasets.idx import FILENAMES, parse_idx

MNIST_DIR = Path(registry.__file__).parent / "data" / "mnist"
FASHION_DIR = local_fashion_mnist()  # where batchlab finds it offline ($BATCHLAB_DATA, ...), or None
needs_fashion = pytest.mark.skipif(
    FASHION_DIR is None, reason="no local Fashion-MNIST (set BATCHLAB_DATA, or apt-get install dataset-fashion-mnist)"
)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test may reach the network or find data in the developer's own cache."""
    monkeypatch.setenv("BATCHLAB_OFFLINE", "1")
    monkeypatch.delenv("BATCHLAB_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "SYSTEM_DATA_DIR", tmp_path / "usr-share-datasets")


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


def test_names():
    assert DATASETS == ("mnist", "fashion-mnist", "regression")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("cifar10")


def test_mnist_label_counts(mnist):
    assert torch.bincount(mnist.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist.y_test).tolist() == MNIST_TEST_COUNTS


def test_mnist_shapes_and_dtypes(mnist):
    assert mnist.x_train.shape == (60000, 784) and mnist.x_test.shape == (10000, 784)
    assert mnist.x_train.dtype == torch.float32 and mnist.y_train.dtype == torch.int64
    assert (mnist.n_train, mnist.n_test, mnist.input_dim) == (60000, 10000, 784)
    assert (mnist.num_classes, mnist.task) == (10, "classification")

    images = load_dataset("mnist", flatten=False, dtype=torch.float64, test_subset=10)
    assert images.x_test.shape == (10, 1, 28, 28) and images.x_test.dtype == torch.float64
    assert images.input_dim == 784
    torch.testing.assert_close(images.x_test.flatten(1).float(), mnist.x_test[:10])


def test_mnist_normalisation(mnist):
    assert abs(mnist.x_train.mean().item()) < 0.01
    assert abs(mnist.x_train.std().item() - 1) < 0.01
    raw = load_dataset("mnist", normalize=False, train_subset=1000)
    assert raw.x_train.min().item() == 0.0 and raw.x_train.max().item() == 1.0
    custom = load_dataset("mnist", mean=0.5, std=0.5, train_subset=1000)
    torch.testing.assert_close(custom.x_train, (raw.x_train - 0.5) / 0.5)


@pytest.mark.parametrize("filename", sorted(MNIST_MD5))
def test_mnist_uncompressed_md5(filename):
    with gzip.open(MNIST_DIR / filename) as f:
        assert hashlib.md5(f.read()).hexdigest() == MNIST_MD5[filename]


def test_subsets_are_prefixes(mnist):
    small = load_dataset("mnist", train_subset=500, test_subset=100)
    assert (small.n_train, small.n_test) == (500, 100)
    assert torch.equal(small.x_train, mnist.x_train[:500])
    assert torch.equal(small.y_test, mnist.y_test[:100])


@pytest.mark.parametrize("subset", [{"train_subset": 0}, {"train_subset": 60001}, {"test_subset": -1}])
def test_bad_subset(subset):
    with pytest.raises(DataError, match="subset must be between 1 and"):
        load_dataset("mnist", **subset)


def test_corrupted_file_is_named(tmp_path):
    for path in MNIST_DIR.iterdir():
        shutil.copy(path, tmp_path / path.name)
    damaged = tmp_path / "train-images-idx3-ubyte.gz"
    damaged.chmod(0o644)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        load_idx_dir(tmp_path, "mnist")
    message = str(err.value)
    assert str(damaged) in message and "sha256 mismatch" in message and "\n" not in message


def test_idx_header_checks():
    labels = struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([1, 2, 3])
    assert parse_idx(labels, "ok").tolist() == [1, 2, 3]
    with pytest.raises(DataError, match="bad magic"):
        parse_idx(b"\x00\x00\x0d\x01" + labels[4:], "float-file")
    with pytest.raises(DataError, match="size mismatch"):
        parse_idx(labels[:-1], "short-file")


@needs_fashion
def test_fashion_mnist_from_data_dir():
    ds = load_dataset("fashion-mnist", data_dir=FASHION_DIR, flatten=False)
    assert ds.x_train.shape == (60000, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert abs(ds.x_train.mean().item()) < 0.01 and abs(ds.x_train.std().item() - 1) < 0.01


@needs_fashion
def test_fashion_mnist_from_env_parent(monkeypatch, tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in FILENAMES:
        (folder / name).symlink_to(FASHION_DIR / name)
    monkeypatch.setenv("BATCHLAB_DATA", str(tmp_path))  # the parent: its fashion-mnist/ holds the files
    assert registry.find_fashion_mnist() == folder


def test_fashion_mnist_missing(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz not found" in message and str(tmp_path) in message
    assert "--data-dir" in message and "BATCHLAB_OFFLINE" in message and "\n" not in message


@needs_fashion
def test_fashion_mnist_download_verifies_then_renames(monkeypatch, tmp_path):
    monkeypatch.delenv("BATCHLAB_OFFLINE")
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        return open(FASHION_DIR / url.rsplit("/", 1)[1], "rb")

    monkeypatch.setattr(registry, "urlopen", fake_urlopen)
    cache = tmp_path / "cache" / "batchlab" / "fashion-mnist"
    assert registry.find_fashion_mnist() == cache
    assert sorted(urls) == sorted(registry.FASHION_MNIST_URL + f for f in FILENAMES)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILENAMES)


def test_fashion_mnist_bad_download_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("BATCHLAB_OFFLINE")
    monkeypatch.setattr(registry, "urlopen", lambda url, timeout: io.BytesIO(b"not a dataset"))
    with pytest.raises(DataError, match="sha256 mismatch"):
        registry.find_fashion_mnist()
    assert list((tmp_path / "cache" / "batchlab" / "fashion-mnist").iterdir()) == []


def test_fashion_mnist_unreachable(monkeypatch):
    monkeypatch.delenv("BATCHLAB_OFFLINE")

    def no_network(url, timeout):
        raise URLError("name resolution failed")

    monkeypatch.setattr(registry, "urlopen", no_network)
    with pytest.raises(DataError, match="download failed: .*name resolution failed.*--data-dir"):
        registry.find_fashion_mnist()


def test_regression_shapes_and_determinism():
    ds = load_dataset("regression", seed=3, n=200, d=5, dtype=torch.float64)
    assert ds.x_train.shape == (200, 5) and ds.y_train.shape == (200, 1)
    assert ds.x_test.shape == (200, 5) and ds.y_test.shape == (200, 1)
    assert (ds.task, ds.num_classes, ds.input_dim) == ("regression", None, 5)
    again = load_dataset("regression", seed=3, n=200, d=5, dtype=torch.float64)
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)
    other = load_dataset("regression", seed=4, n=200, d=5, dtype=torch.float64)
    assert not torch.equal(ds.x_train, other.x_train)
    x, y, _, x_test, y_test = regression_problem(3, 200, 5, 0.1)
    assert torch.equal(ds.x_train, x) and torch.equal(ds.y_test, y_test)
    assert load_dataset("regression").x_train.dtype == torch.float32


def test_regression_least_squares_recovers_w_star():
    x, y, w_star, x_test, y_test = regression_problem(seed=0, n=1000, d=10, noise=0.1)
    assert w_star.shape == (10,)
    w_hat = torch.linalg.lstsq(x, y).solution.squeeze(1)
    assert (w_hat - w_star).abs().max().item() < 0.05
    residual = y_test - x_test @ w_star.unsqueeze(1)
    assert abs(residual.std().item() - 0.1) < 0.02  # the test set shares w*
