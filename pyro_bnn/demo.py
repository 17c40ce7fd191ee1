"""``pyro-bnn demo``: nine posteriors on 1-D regression with a gap in the inputs.

Example:
    >>> from pyro_bnn.demo import demo_settings
    >>> sorted(demo_settings(quick=True))[:5]
    ['dvi', 'ensemble', 'laplace', 'lowrank', 'map']
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from pyro_bnn import metrics, zoo
from pyro_bnn.arviz import to_inference_data
from pyro_bnn.datasets import gap_regression
from pyro_bnn.diagnostics import import_arviz
from pyro_bnn.infer import fit
from pyro_bnn.plots import plot_predictive_band
from pyro_bnn.priors import FanInGaussianPrior

__all__ = ["DEMO_MODELS", "DEMO_PRIOR", "DemoRow", "demo_settings", "format_table", "run_demo"]

# N(0, 4/fan_in): a prior predictive of order one for a 50-unit ReLU layer
DEMO_PRIOR = FanInGaussianPrior(c=2.0)
# the README's advice for Gaussian VI on small data when the noise is known (here it is:
# gap_regression's noise sd) is to fix it and start at the MAP; at their defaults these
# methods explain the data as noise (``pyro-bnn bench small-data-vi``)
GAP_NOISE = 0.15
DEMO_MODELS = {"meanfield": {"noise_scale": GAP_NOISE}, "lowrank": {"noise_scale": GAP_NOISE}}


def demo_settings(*, quick: bool) -> dict[str, dict]:
    """Options of each method: the library's defaults (the SVI methods' schedule and
    convergence check), or a ``quick`` run; ``meanfield`` and ``lowrank`` start at the
    MAP, on a model whose noise is fixed at the data's (:data:`DEMO_MODELS`)."""
    steps = dict(num_steps=600) if quick else {}
    svi = dict(steps, num_draws=200 if quick else 1000)
    return {
        "map": dict(steps),
        "meanfield": dict(svi, init="map"),
        "lowrank": dict(svi, rank=10, init="map"),
        "dvi": dict(svi),
        "laplace": dict(svi),
        "ensemble": dict(steps, num_members=3 if quick else 5),
        "multiswag": dict(steps, num_members=2 if quick else 3),
        "mcdropout": dict(svi),
        "nuts": dict(
            warmup_steps=60 if quick else 300,
            num_samples=60 if quick else 300,
            max_tree_depth=5 if quick else 7,
        ),
    }


@dataclass
class DemoRow:
    method: str
    wall_s: float
    rmse: float
    test_ll: float
    coverage_95: float
    std_in_gap: float
    std_outside: float


def format_table(rows: list[DemoRow]) -> str:
    header = (
        "| method | wall s | test RMSE | test log-lik | 95% coverage | "
        "mean std in gap | mean std outside |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.wall_s:.1f} | {r.rmse:.3f} | {r.test_ll:.3f} | "
            f"{r.coverage_95:.2f} | {r.std_in_gap:.3f} | {r.std_outside:.3f} |"
        )
    return "\n".join(lines)


def run_demo(
    *, out: Path, quick: bool = False, seed: int = 0, progress_bar: bool = True
) -> list[DemoRow]:
    """Fit every method, write figures, netCDF and ArviZ summaries to ``out``; return the table."""
    out.mkdir(parents=True, exist_ok=True)
    az = import_arviz()
    data = gap_regression(seed=seed)
    grid = torch.linspace(-5, 5, 300)[:, None]
    in_gap = data.in_gap(data.x_test)
    rows = []
    settings = demo_settings(quick=quick)
    rows_of_plots = -(-len(settings) // 3)
    fig, axes = plt.subplots(
        rows_of_plots, 3, figsize=(15, 3.2 * rows_of_plots), sharex=True, sharey=True
    )
    for ax in axes.flat[len(settings) :]:
        ax.set_visible(False)
    for ax, (method, options) in zip(axes.flat, settings.items(), strict=False):
        model = zoo.build("mlp-regression", in_features=1, hidden=(50,), prior=DEMO_PRIOR,
                          **DEMO_MODELS.get(method, {}))  # fmt: skip
        post = fit(
            model,
            data.x_train,
            data.y_train,
            method=method,
            seed=seed,
            progress_bar=progress_bar,
            **options,
        )
        pred = post.predict(data.x_test, num_samples=500, seed=seed)
        lower, upper = pred.interval(0.95)
        log_lik = post.log_likelihood(data.x_test, data.y_test)
        rows.append(
            DemoRow(
                method=method,
                wall_s=post.wall_time,
                rmse=metrics.rmse(pred.mean, data.y_test),
                test_ll=metrics.test_log_likelihood(log_lik),
                coverage_95=metrics.coverage(lower, upper, data.y_test),
                std_in_gap=float(pred.std[in_gap].mean()),
                std_outside=float(pred.std[~in_gap].mean()),
            )
        )
        band = post.predict(grid, num_samples=500, seed=seed)
        plot_predictive_band(
            grid, band, x_train=data.x_train, y_train=data.y_train, title=method, ax=ax
        )
        single, single_ax = plt.subplots(figsize=(6, 3.5))
        plot_predictive_band(
            grid, band, x_train=data.x_train, y_train=data.y_train, title=method, ax=single_ax
        )
        single.tight_layout()
        single.savefig(out / f"predictive_{method}.png", dpi=100)
        plt.close(single)
        with warnings.catch_warnings():
            if post.num_draws < 2:  # the demo does not run LOO on the MAP point
                warnings.simplefilter("ignore", UserWarning)
            idata = to_inference_data(post, x_new=grid, seed=seed)
        idata.to_netcdf(str(out / f"{method}.nc"))
        # R-hat needs several chains (ArviZ logs a shape note for one): one chain gets the
        # statistics only
        with warnings.catch_warnings():
            if post.num_draws < 2:  # a MAP point: spreads are undefined, not worth a warning
                warnings.simplefilter("ignore", RuntimeWarning)
            summary = az.summary(idata, kind="all" if post.num_chains > 1 else "stats")
        summary.to_csv(out / f"summary_{method}.csv")
    fig.tight_layout()
    fig.savefig(out / "predictive_all.png", dpi=100)
    plt.close(fig)
    table = format_table(rows)
    (out / "table.md").write_text(table + "\n")
    return rows
