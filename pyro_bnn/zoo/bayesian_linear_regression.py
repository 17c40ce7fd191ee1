"""``bayesian-linear-regression``: the conjugate reference model.

    w ~ N(0, σ_p² I),  b ~ N(0, σ_p²),  y | x ~ N(x·w + b, σ_n²)

With σ_n known the posterior over (w, b) is Gaussian in closed form
(:func:`exact_posterior`), which is what the inference tests compare against.

Example:
    >>> import torch
    >>> model = BayesianLinearRegression(in_features=2, noise_scale=0.5)
    >>> model(torch.randn(7, 2)).shape
    torch.Size([7])
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample

from pyro_bnn.layers import Linear
from pyro_bnn.likelihoods import Gaussian

__all__ = ["BayesianLinearRegression", "exact_posterior"]


class BayesianLinearRegression(PyroModule):
    def __init__(
        self,
        *,
        in_features: int,
        prior_scale: float = 1.0,
        noise_scale: float | None = 1.0,
        precision_prior: dist.Distribution | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.prior_scale = prior_scale
        self.linear = Linear(in_features, 1)
        self.linear.weight = PyroSample(
            dist.Normal(0.0, prior_scale).expand([1, in_features]).to_event(2)
        )
        self.linear.bias = PyroSample(dist.Normal(0.0, prior_scale).expand([1]).to_event(1))
        if precision_prior is not None:
            noise_scale = None
        self.likelihood = Gaussian(scale=noise_scale, precision_prior=precision_prior)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.likelihood(self.linear(x).squeeze(-1), y)


def exact_posterior(
    x: torch.Tensor, y: torch.Tensor, *, prior_scale: float, noise_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and covariance of ``(w_1, …, w_d, b)`` for known noise.

    Σ = (Xᵀ X / σ_n² + I / σ_p²)⁻¹ and μ = Σ Xᵀ y / σ_n², with X = [x, 1], in float64.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    precision = design.T @ design / noise_scale**2 + torch.eye(design.shape[1]) / prior_scale**2
    covariance = torch.linalg.inv(precision)
    mean = covariance @ design.T @ y / noise_scale**2
    return mean, covariance
