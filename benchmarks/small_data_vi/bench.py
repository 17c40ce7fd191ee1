"""``pyro-bnn bench small-data-vi``: what moves the variational optimum on the demo's data.

The demo's 80 gap-regression points and its network (one hidden layer of 50 ReLU units,
N(0, 4/fan_in) priors), fitted with the library's default SVI schedule under each
variant below; test RMSE, log-likelihood, 95 % coverage and the learned noise sd on the
demo's 200 test points. Each variant is one seeded fit: the figures say which optimum
each objective reaches on this data, not an average.

Example:
    >>> [v.name for v in VARIANTS][:2]
    ['meanfield', 'meanfield, empirical Bayes']
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import torch

from benchmarks import harness
from pyro_bnn import fit, metrics, zoo
from pyro_bnn.datasets import gap_regression
from pyro_bnn.priors import FanInGaussianPrior

__all__ = ["VARIANTS", "Variant", "main", "run_small_data_vi"]


@dataclass(frozen=True)
class Variant:
    """One fit: ``method``, the model's options (``learn`` empirical Bayes, ``noise_scale``
    fixed noise) and ``fit``'s options."""

    name: str
    method: str
    learn: str | None = None
    noise_scale: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


VARIANTS = (
    Variant("meanfield", "meanfield"),
    Variant("meanfield, empirical Bayes", "meanfield", learn="layer"),
    Variant("meanfield, init at the MAP", "meanfield", options={"init": "map"}),
    Variant("meanfield, noise fixed at 0.15 (the truth)", "meanfield", noise_scale=0.15),
    Variant(
        "meanfield, noise fixed at 0.15, init at the MAP",
        "meanfield",
        noise_scale=0.15,
        options={"init": "map"},
    ),
    Variant("meanfield, kl_weight 0.01 (tempered)", "meanfield", options={"kl_weight": 0.01}),
    Variant("lowrank (rank 10)", "lowrank", options={"rank": 10}),
    Variant("lowrank (rank 10), empirical Bayes", "lowrank", learn="layer", options={"rank": 10}),
    Variant(
        "lowrank (rank 10), noise fixed at 0.15", "lowrank", noise_scale=0.15, options={"rank": 10}
    ),
    Variant(
        "lowrank (rank 10), noise fixed at 0.15, init at the MAP",
        "lowrank",
        noise_scale=0.15,
        options={"rank": 10, "init": "map"},
    ),
    Variant("dvi", "dvi"),
    Variant("dvi, empirical Bayes", "dvi", learn="layer"),
    Variant("dvi, noise fixed at 0.15", "dvi", noise_scale=0.15),
)


def _fit_variant(variant: Variant, *, quick: bool, seed: int) -> dict[str, Any]:
    data = gap_regression(seed=seed)
    prior = FanInGaussianPrior(c=2.0, learn=variant.learn)
    model = zoo.build(
        "mlp-regression", in_features=1, hidden=(50,), prior=prior,
        noise_scale=variant.noise_scale,
        learn_noise_prior=variant.learn is not None and variant.noise_scale is None,
    )  # fmt: skip
    options = dict(variant.options, num_draws=200 if quick else 1000)
    if quick:
        options["num_steps"] = 50
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = fit(model, data.x_train, data.y_train, method=variant.method, seed=seed,
                   progress_bar=False, chain_processes=1, **options)  # fmt: skip
    pred = post.predict(data.x_test, num_samples=500, seed=seed)
    lower, upper = pred.interval(0.95)
    return {
        "variant": variant.name,
        "rmse": metrics.rmse(pred.mean, data.y_test),
        "test_ll": metrics.test_log_likelihood(post.log_likelihood(data.x_test, data.y_test)),
        "coverage_95": metrics.coverage(lower, upper, data.y_test),
        "noise_sd": float(pred.aleatoric_var.sqrt().mean()),
        "final_loss": sum(post.losses[0][-100:]) / len(post.losses[0][-100:]),
        "warnings": [str(w.message) for w in caught if "not converged" in str(w.message)],
    }


def format_markdown(document: dict[str, Any]) -> str:
    lines = [
        "# Small-data variational fits (the demo's data)",
        "",
        f"Machine: {document['machine']}. Measured {document['date']}. One seeded fit each.",
        "",
        *harness.table_header(
            "variant", "test RMSE", "test log-lik", "95% coverage", "noise sd", "final −ELBO"
        ),
    ]
    for r in document["records"]:
        lines.append(harness.table_row(
            r["variant"], f"{r['rmse']:.3f}", f"{r['test_ll']:.3f}", f"{r['coverage_95']:.2f}",
            f"{r['noise_sd']:.2f}", f"{r['final_loss']:.1f}",
        ))  # fmt: skip
    return "\n".join(lines) + "\n"


def run_small_data_vi(*, out: Path | None, quick: bool = False, seed: int = 0) -> dict:
    """Fit every variant; write ``results.json`` and ``results.md`` to ``out`` if given."""
    torch.set_num_threads(1)
    variants = VARIANTS[:2] if quick else VARIANTS
    document = {
        "date": date.today().isoformat(),
        "machine": harness.machine(),
        "records": [_fit_variant(v, quick=quick, seed=seed) for v in variants],
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        harness.save(out, document, format_markdown(document))
    return document


def build_parser() -> argparse.ArgumentParser:
    return harness.command("small-data-vi", "variational optima on the demo's small data")


def _command(args: argparse.Namespace) -> int:
    document = run_small_data_vi(out=Path(args.out), quick=args.quick)
    print(format_markdown(document))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return harness.main(build_parser(), _command, argv)
