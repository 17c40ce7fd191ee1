"""Plots: 1-D predictive bands (matplotlib); ArviZ handles the diagnostics plots.

Example:
    >>> import torch
    >>> from pyro_bnn.posterior import Prediction
    >>> pred = Prediction(samples=torch.randn(50, 3), mean=torch.zeros(3), std=torch.ones(3))
    >>> ax = plot_predictive_band(torch.arange(3.0), pred)
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes

from pyro_bnn.posterior import Prediction

__all__ = ["plot_predictive_band"]


def plot_predictive_band(
    x_grid: torch.Tensor,
    prediction: Prediction,
    *,
    x_train: torch.Tensor | None = None,
    y_train: torch.Tensor | None = None,
    level: float = 0.95,
    title: str = "",
    ax: Axes | None = None,
) -> Axes:
    """Predictive mean and central ``level`` band over a 1-D input grid, with the data."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    grid = x_grid.reshape(-1).cpu().numpy()
    lower, upper = prediction.interval(level)
    ax.fill_between(
        grid,
        lower.cpu().numpy(),
        upper.cpu().numpy(),
        alpha=0.3,
        label=f"{level:.0%} predictive interval",
    )
    ax.plot(grid, prediction.mean.cpu().numpy(), lw=2, label="predictive mean")
    if x_train is not None and y_train is not None:
        ax.scatter(
            x_train.reshape(-1).cpu().numpy(),
            y_train.cpu().numpy(),
            s=8,
            c="k",
            label="training data",
        )
    ax.set(xlabel="x", ylabel="y", title=title)
    ax.legend(loc="upper left", fontsize=8)
    return ax
