"""IDX files (the MNIST family's format): checksum, decompress, parse.

Every file is verified against a known SHA-256 before it is parsed, so a truncated download or
a damaged install fails loudly with the file's name instead of training on garbage.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# split -> (images file, labels file), the names every MNIST-format distribution uses.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FILENAMES: tuple[str, ...] = tuple(f for pair in IDX_FILES.values() for f in pair)

_UBYTE = 0x08  # IDX type code for unsigned bytes, the only one these data sets use


class DataError(Exception):
    """One-line, user-facing message naming the file and what to do."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_sha256sums(path: Path) -> dict[str, str]:
    """Parse a `sha256sum` listing: `<hex>  <filename>` per line."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read checksum list ({exc.strerror})") from None
    sums = {}
    for line in filter(str.strip, lines):
        digest, _, filename = line.partition(" ")
        sums[filename.strip().lstrip("*")] = digest.lower()
    return sums


def parse_idx(data: bytes, path: Path | str) -> np.ndarray:
    """Decode an uncompressed IDX ubyte file into a read-only uint8 array of its stated shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise DataError(f"{path}: not an IDX ubyte file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != math.prod(dims):
        raise DataError(f"{path}: IDX size mismatch (header says {dims}, {len(data) - header} bytes of data)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


@functools.lru_cache(maxsize=16)
def read_verified_idx(path: str, sha256: str, name: str) -> np.ndarray:
    """Verify, decompress and parse one gz IDX file, once per process per path.

    The array is read-only because it is shared by every later caller.
    """
    if not Path(path).is_file():
        raise DataError(f"{name}: {path} not found")
    if sha256_file(Path(path)) != sha256:
        raise DataError(f"{name}: {path} is corrupted (sha256 mismatch); reinstall batchlab / delete and re-download")
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{name}: {path} cannot be decompressed ({exc})") from None
    return parse_idx(data, path)


def load_idx_dir(
    directory: Path | str, name: str, checksums: Mapping[str, str] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load the four standard files of `directory` as {split: (images [N,H,W], labels [N])}.

    `checksums` maps file name to SHA-256; by default they come from the folder's SHA256SUMS.
    """
    directory = Path(directory)
    if checksums is None:
        checksums = read_sha256sums(directory / "SHA256SUMS")
    splits = {}
    for split, files in IDX_FILES.items():
        arrays = []
        for filename in files:
            if filename not in checksums:
                raise DataError(f"{name}: no checksum for {filename} in {directory}")
            arrays.append(read_verified_idx(str(directory / filename), checksums[filename], name))
        images, labels = arrays
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{name}: {directory / files[0]} and {files[1]} do not match (shapes {images.shape} and {labels.shape})"
            )
        splits[split] = (images, labels)
    return splits
