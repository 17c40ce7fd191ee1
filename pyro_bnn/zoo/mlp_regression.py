"""``mlp-regression``: a Bayesian MLP with a Gaussian likelihood.

Every weight and bias has the prior given by the prior hook (N(0, 1) by default); the
observation noise is fixed (``noise_scale``) or learned with a prior on its precision
(whose rate is itself learned with ``learn_noise_prior=True``: empirical Bayes).

Example:
    >>> import torch
    >>> model = MLPRegression(in_features=3, hidden=(16,))
    >>> model(torch.randn(5, 3)).shape
    torch.Size([5])
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from pyro_bnn.bayesianize import bayesianize
from pyro_bnn.layers import mlp
from pyro_bnn.likelihoods import Gaussian
from pyro_bnn.priors import GaussianPrior, PriorHook

__all__ = ["MLPRegression"]


class MLPRegression(PyroModule):
    def __init__(
        self,
        *,
        in_features: int,
        hidden: tuple[int, ...] = (50,),
        prior: PriorHook | None = None,
        noise_scale: float | None = None,
        precision_prior: dist.Distribution | None = None,
        learn_noise_prior: bool = False,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.net = mlp(in_features, tuple(hidden), 1, activation=activation)
        bayesianize(self, prior or GaussianPrior(scale=1.0))
        self.likelihood = Gaussian(
            scale=noise_scale, precision_prior=precision_prior, learn_prior=learn_noise_prior
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.likelihood(self.net(x).squeeze(-1), y)
