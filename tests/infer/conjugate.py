"""A conjugate Bayesian linear regression problem with its exact posterior (test helper)."""

from dataclasses import dataclass

import torch

from pyro_bnn.zoo.bayesian_linear_regression import BayesianLinearRegression, exact_posterior

PRIOR_SCALE = 1.0
NOISE_SCALE = 0.5


@dataclass
class Conjugate:
    x: torch.Tensor
    y: torch.Tensor
    mean: torch.Tensor  # exact posterior mean of (w_1, w_2, b), float64
    cov: torch.Tensor  # exact posterior covariance

    def model(self) -> BayesianLinearRegression:
        return BayesianLinearRegression(
            in_features=2, prior_scale=PRIOR_SCALE, noise_scale=NOISE_SCALE
        )


def make_conjugate() -> Conjugate:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 2, generator=g)
    y = x @ torch.tensor([1.0, -0.5]) + 0.3 + NOISE_SCALE * torch.randn(40, generator=g)
    mean, cov = exact_posterior(x, y, prior_scale=PRIOR_SCALE, noise_scale=NOISE_SCALE)
    return Conjugate(x, y, mean, cov)


def flat_draws(draws: dict[str, torch.Tensor]) -> torch.Tensor:
    """(chain, draw, 3) draws of (w_1, w_2, b)."""
    w, b = draws["linear.weight"], draws["linear.bias"]
    return torch.cat([w.reshape(*w.shape[:2], -1), b], dim=-1).double()
