"""Tiny MNIST-layout directories (gzipped IDX files) for loader and bench tests."""

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array) -> None:
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(gzip.compress(header + array.tobytes()))


def write_mnist(root: Path, *, name: str = "mnist", n: int = 20, seed: int | None = None):
    """``root/<name>/`` with ``n`` images: a ramp pattern, or random pixels given a seed."""
    directory = root / name
    directory.mkdir(parents=True)
    if seed is None:
        images = np.arange(n * 784).reshape(n, 28, 28) % 253
    else:
        images = np.random.default_rng(seed).integers(0, 256, (n, 28, 28))
    write_idx(directory / "t10k-images-idx3-ubyte.gz", images)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return images
