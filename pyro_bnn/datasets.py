"""Embedded datasets: synthetic regression with a gap and scikit-learn's bundled sets.

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

__all__ = [
    "DATA_DIR_ENV",
    "GapRegression",
    "Split",
    "data_dir",
    "gap_regression",
    "sklearn_dataset",
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
