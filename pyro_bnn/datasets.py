"""Datasets: synthetic regression with a gap, scikit-learn's bundled sets, UCI splits.

Example:
    >>> data = gap_regression(seed=0)
    >>> data.x_train.shape[1], bool(data.in_gap(data.x_train).any())
    (1, False)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyro_bnn.idx import read_idx

__all__ = [
    "DATA_DIR_ENV",
    "GapRegression",
    "Split",
    "bbb_curve",
    "data_dir",
    "gap_regression",
    "mnist",
    "sklearn_dataset",
    "uci",
    "uci_num_splits",
]

DATA_DIR_ENV = "PYRO_BNN_DATA"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The real-data directory: ``path``, else ``$PYRO_BNN_DATA``, else ``../shared/data``."""
    return Path(path or os.environ.get(DATA_DIR_ENV) or Path("..") / "shared" / "data")


@dataclass(frozen=True)
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass(frozen=True)
class GapRegression(Split):
    """1-D regression with no training inputs in (−gap, gap)."""

    gap: float

    def in_gap(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].abs() < self.gap


def _truth(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(1.5 * x) + 0.3 * x


def gap_regression(
    *,
    num_train: int = 80,
    num_test: int = 200,
    noise: float = 0.15,
    gap: float = 1.5,
    extent: float = 4.0,
    seed: int = 0,
) -> GapRegression:
    """y = sin(1.5x) + 0.3x + ε, ε ~ N(0, noise²); training x uniform on
    [−extent, −gap] ∪ [gap, extent], test x uniform on [−extent, extent] (gap included)."""
    g = torch.Generator().manual_seed(seed)
    side = torch.where(torch.rand(num_train, generator=g) < 0.5, -1.0, 1.0)
    x_train = side * (gap + (extent - gap) * torch.rand(num_train, generator=g))
    x_test = (2 * torch.rand(num_test, generator=g) - 1) * extent
    y_train = _truth(x_train) + noise * torch.randn(num_train, generator=g)
    y_test = _truth(x_test) + noise * torch.randn(num_test, generator=g)
    return GapRegression(x_train[:, None], y_train, x_test[:, None], y_test, gap=gap)


def bbb_curve(
    *, num_train: int = 100, num_test: int = 300, noise_var: float = 0.02, seed: int = 0
) -> Split:
    """The regression curve of Blundell et al. 2015 (section 5.2):
    y = x + 0.3 sin 2π(x + ε) + 0.3 sin 4π(x + ε) + ε with ε ~ N(0, ``noise_var``).

    Training x is uniform on [0, 0.5], as in the paper's figure; test x is uniform on
    [−0.2, 1.2], so most of it lies outside the data, where the band should widen.
    """
    g = torch.Generator().manual_seed(seed)

    def curve(x: torch.Tensor) -> torch.Tensor:
        eps = noise_var**0.5 * torch.randn(x.shape, generator=g)
        return (
            x
            + 0.3 * torch.sin(2 * torch.pi * (x + eps))
            + 0.3 * torch.sin(4 * torch.pi * (x + eps))
            + eps
        )

    x_train = 0.5 * torch.rand(num_train, generator=g)
    x_test = -0.2 + 1.4 * torch.rand(num_test, generator=g)
    return Split(x_train[:, None], curve(x_train), x_test[:, None], curve(x_test))


def sklearn_dataset(name: str, *, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """``digits``, ``diabetes`` or ``breast_cancer`` from scikit-learn, standardised with
    training statistics (regression targets too), split with a fixed seed."""
    from sklearn import datasets as skd
    from sklearn.model_selection import train_test_split

    loaders = {
        "digits": skd.load_digits,
        "diabetes": skd.load_diabetes,
        "breast_cancer": skd.load_breast_cancer,
    }
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(loaders)}")
    x, y = loaders[name](return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed)
    mean, std = x_tr.mean(0), x_tr.std(0)
    std[std == 0] = 1.0
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    if name == "diabetes":
        y_mean, y_std = y_tr.mean(), y_tr.std()
        y_tr, y_te = (y_tr - y_mean) / y_std, (y_te - y_mean) / y_std
        as_y = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
    else:
        as_y = lambda v: torch.as_tensor(np.asarray(v), dtype=torch.long)  # noqa: E731
    as_x = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
    return Split(as_x(x_tr), as_y(y_tr), as_x(x_te), as_y(y_te))


UCI_FILES = (
    "data.txt",
    "index_features.txt",
    "index_target.txt",
    "n_splits.txt",
    "index_train_<K>.txt",
    "index_test_<K>.txt",
)


@dataclass(frozen=True)
class UCISplit(Split):
    """One standard split, standardised with training statistics.

    Predictions in standardised units map back with ``y * y_std + y_mean``; RMSE scales by
    ``y_std`` and log-densities shift by −log ``y_std`` (see :mod:`pyro_bnn.metrics`).
    """

    name: str
    split: int
    x_mean: torch.Tensor
    x_std: torch.Tensor
    y_mean: float
    y_std: float


def _read(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"missing {what} file {path}; a UCI dataset directory holds "
            f"{', '.join(UCI_FILES)} (0-based indices)"
        )
    return np.loadtxt(path, ndmin=1)


def _uci_root(name: str, root: str | os.PathLike | None) -> Path:
    directory = data_dir(root) / "uci" / name
    if not directory.is_dir():
        raise FileNotFoundError(
            f"no UCI dataset directory {directory}; expected {', '.join(UCI_FILES)} there "
            f"(set --data-dir or ${DATA_DIR_ENV} to the folder that holds uci/)"
        )
    return directory


def uci_num_splits(name: str, *, data_dir: str | os.PathLike | None = None) -> int:
    """Number of standard splits of ``name`` (its ``n_splits.txt``)."""
    return int(_read(_uci_root(name, data_dir) / "n_splits.txt", "split count")[0])


def _standardise(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0)
    return mean, np.where(std > 0, std, 1.0)  # constant columns are left centred, unscaled


def uci(name: str, split: int, *, data_dir: str | os.PathLike | None = None) -> UCISplit:
    """Split ``split`` of UCI dataset ``name`` (Hernández-Lobato & Adams 2015 layout).

    Reads ``<data_dir>/uci/<name>/``; ``data_dir`` defaults to ``$PYRO_BNN_DATA`` or
    ``../shared/data``. Inputs and target are standardised with the training rows.
    """
    root = _uci_root(name, data_dir)
    table = _read(root / "data.txt", "data")
    if table.ndim != 2:
        raise ValueError(f"{root / 'data.txt'} must be a whitespace-separated table")
    features = _read(root / "index_features.txt", "feature index").astype(int)
    target = int(_read(root / "index_target.txt", "target index")[0])
    train = _read(root / f"index_train_{split}.txt", f"split {split} train index").astype(int)
    test = _read(root / f"index_test_{split}.txt", f"split {split} test index").astype(int)
    for what, index, size in (
        ("feature", features, table.shape[1]),
        ("target", [target], table.shape[1]),
        ("train", train, len(table)),
        ("test", test, len(table)),
    ):
        if len(index) and (min(index) < 0 or max(index) >= size):
            raise ValueError(f"{name}: {what} indices outside 0..{size - 1} in {root}")
    x, y = table[:, features], table[:, target]
    x_mean, x_std = _standardise(x[train])
    y_mean, y_std = float(y[train].mean()), float(y[train].std() or 1.0)
    as_t = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
    return UCISplit(
        x_train=as_t((x[train] - x_mean) / x_std),
        y_train=as_t((y[train] - y_mean) / y_std),
        x_test=as_t((x[test] - x_mean) / x_std),
        y_test=as_t((y[test] - y_mean) / y_std),
        name=name,
        split=split,
        x_mean=as_t(x_mean),
        x_std=as_t(x_std),
        y_mean=y_mean,
        y_std=y_std,
    )


def _subdir(name: str, root: str | os.PathLike | None) -> Path:
    return data_dir(root) / name


MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def mnist(
    name: str = "mnist",
    *,
    data_dir: str | os.PathLike | None = None,
    num_train: int = 8000,
    seed: int = 0,
    pixel_scale: float = 126.0,
    flatten: bool = True,
) -> Split:
    """The 10,000 images of ``<data_dir>/<name>/`` (``mnist`` or ``notmnist``) as a fixed
    train/test split: a permutation seeded by ``seed``, its first ``num_train`` images for
    training and the rest for testing. Pixels are divided by ``pixel_scale`` (126 as in
    Blundell et al. 2015); ``flatten`` gives (n, 784), else (n, 1, 28, 28).
    """
    root = _subdir(name, data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"no image directory {root}; expected {', '.join(MNIST_FILES)} there "
            f"(set --data-dir or ${DATA_DIR_ENV} to the folder that holds {name}/)"
        )
    paths = [root / f for f in MNIST_FILES]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"missing {path}; {root} must hold {', '.join(MNIST_FILES)}")
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{root}: images {images.shape} and labels {labels.shape} do not match")
    if not 0 < num_train < len(images):
        raise ValueError(f"num_train must be in 1..{len(images) - 1}, got {num_train}")
    order = np.random.default_rng(seed).permutation(len(images))
    x = torch.as_tensor(images[order], dtype=torch.float32) / pixel_scale
    x = x.reshape(len(x), -1) if flatten else x[:, None]
    y = torch.as_tensor(labels[order].astype(np.int64))
    return Split(x[:num_train], y[:num_train], x[num_train:], y[num_train:])
