"""Dataset names -> tensors already on the training device.

Whole data sets fit in device memory (MNIST is 47 MB as bytes), so they are moved once, as
uint8, and converted there; training then indexes them directly instead of using a DataLoader.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import torch

from .idx import FILENAMES, DataError, load_idx_dir
from .synthetic import regression_problem

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "regression")

# Per-pixel mean and std of each training set after scaling to [0, 1].
PIXEL_STATS: dict[str, tuple[float, float]] = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
}
NUM_CLASSES = 10

# Where Debian's `dataset-fashion-mnist` package installs (as <this>/fashion-mnist).
SYSTEM_DATA_DIR = Path("/usr/share/datasets")

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_SHA256: dict[str, str] = {
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
}
DOWNLOAD_TIMEOUT_S = 15


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test tensors on one device.

    Labels are int64 [N] for classification; targets are [N, 1] floats for regression.
    """

    name: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    num_classes: int | None
    task: str  # "classification" | "regression"

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def n_test(self) -> int:
        return self.x_test.shape[0]

    @property
    def input_dim(self) -> int:
        return math.prod(self.x_train.shape[1:])


def load_dataset(
    name: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    data_dir: Path | str | None = None,
    normalize: bool = True,
    mean: float | None = None,
    std: float | None = None,
    flatten: bool = True,
    train_subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    n: int = 1000,
    d: int = 10,
    noise: float = 0.1,
    bias: bool = True,
) -> Dataset:
    """Load `name` (one of DATASETS) onto `device`.

    Image sets: pixels in [0, 1], then (x - mean) / std if `normalize` (defaults: the training
    set's own statistics); `flatten` gives [N, 784] for MLPs, else [N, 1, 28, 28] for CNNs.
    `data_dir` is searched first for data sets not shipped with the package (fashion-mnist).
    Subsets keep the first k examples of a split (the files are already shuffled).
    `seed`, `n`, `d`, `noise` describe the regression problem (see `regression_problem`);
    `bias` is the study's model setting and does not change the data, which by design has no
    true intercept.
    """
    if name == "regression":
        x_train, y_train, _, x_test, y_test = regression_problem(seed, n, d, noise)
        to = dict(device=device, dtype=dtype)
        return Dataset(
            name=name,
            x_train=_first(x_train, train_subset, name, "train").to(**to),
            y_train=_first(y_train, train_subset, name, "train").to(**to),
            x_test=_first(x_test, test_subset, name, "test").to(**to),
            y_test=_first(y_test, test_subset, name, "test").to(**to),
            num_classes=None,
            task="regression",
        )
    if name == "mnist":
        splits = load_idx_dir(_packaged_mnist_dir(), name)
    elif name == "fashion-mnist":
        splits = load_idx_dir(find_fashion_mnist(data_dir), name, FASHION_MNIST_SHA256)
    else:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")

    default_mean, default_std = PIXEL_STATS[name]
    mean = default_mean if mean is None else mean
    std = default_std if std is None else std
    if normalize and not std > 0:
        raise DataError(f"{name}: std must be positive (got {std})")

    def images(pixels: np.ndarray) -> torch.Tensor:
        x = torch.tensor(pixels).to(device).to(dtype).div_(255)  # copy: the cached array is shared
        if normalize:
            x.sub_(mean).div_(std)
        return x.flatten(1) if flatten else x.unsqueeze(1)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.tensor(y, dtype=torch.int64).to(device)

    train_x, train_y = (_first(a, train_subset, name, "train") for a in splits["train"])
    test_x, test_y = (_first(a, test_subset, name, "test") for a in splits["test"])
    return Dataset(
        name=name,
        x_train=images(train_x),
        y_train=labels(train_y),
        x_test=images(test_x),
        y_test=labels(test_y),
        num_classes=NUM_CLASSES,
        task="classification",
    )


def _first(a, k: int | None, name: str, split: str):
    if k is None:
        return a
    if not 1 <= k <= len(a):
        raise DataError(f"{name}: {split} subset must be between 1 and {len(a)} (got {k})")
    return a[:k]


def _packaged_mnist_dir() -> Path:
    return Path(str(resources.files("batchlab.datasets") / "data" / "mnist"))


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "batchlab"


def find_fashion_mnist(data_dir: Path | str | None = None) -> Path:
    """Return the first folder holding all four Fashion-MNIST files, downloading if none does.

    Order: `data_dir`, $BATCHLAB_DATA (each as the folder itself or its fashion-mnist/), the
    Debian package's folder, then the user cache, which is also where a download lands.
    """
    roots = [Path(p) for p in (data_dir, os.environ.get("BATCHLAB_DATA")) if p]
    candidates = [c for root in roots for c in (root, root / "fashion-mnist")]
    cache = user_cache_dir() / "fashion-mnist"
    candidates += [SYSTEM_DATA_DIR / "fashion-mnist", cache]
    for folder in candidates:
        if all((folder / f).is_file() for f in FILENAMES):
            return folder

    if os.environ.get("BATCHLAB_OFFLINE", "") not in ("", "0"):
        reason = "download disabled by BATCHLAB_OFFLINE"
    else:
        try:
            _download_fashion_mnist(cache)
            return cache
        except OSError as exc:  # URLError, timeouts and disk errors are all OSErrors
            reason = "download failed: " + " ".join(str(exc).split())
    existing = next((c for c in candidates if c.is_dir()), None)
    missing = next(f for f in FILENAMES if existing is None or not (existing / f).is_file())
    raise DataError(
        f"fashion-mnist: {missing} not found in {', '.join(map(str, candidates))} ({reason}); "
        "pass --data-dir DIR, set BATCHLAB_DATA, or `apt-get install dataset-fashion-mnist`"
    )


def _download_fashion_mnist(folder: Path) -> None:
    """Fetch missing files into `folder`, renaming each into place only after its hash matches."""
    folder.mkdir(parents=True, exist_ok=True)
    for filename in FILENAMES:
        target = folder / filename
        if target.is_file():
            continue
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
        try:
            digest = hashlib.sha256()
            with (
                os.fdopen(fd, "wb") as out,
                urlopen(FASHION_MNIST_URL + filename, timeout=DOWNLOAD_TIMEOUT_S) as response,
            ):
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != FASHION_MNIST_SHA256[filename]:
                raise DataError(
                    f"fashion-mnist: download of {FASHION_MNIST_URL + filename} is corrupted "
                    "(sha256 mismatch); try again later or pass --data-dir DIR"
                )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
