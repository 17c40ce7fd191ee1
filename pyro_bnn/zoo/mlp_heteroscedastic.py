"""``mlp-heteroscedastic``: a Bayesian MLP with two output heads, the mean and the noise
scale of a Gaussian (:class:`~pyro_bnn.likelihoods.HeteroscedasticGaussian`), as in deep
ensembles (Lakshminarayanan et al. 2017): the noise varies with x.

Example:
    >>> import torch
    >>> model = MLPHeteroscedastic(in_features=3, hidden=(16,))
    >>> model(torch.randn(5, 3)).shape
    torch.Size([5])
"""

from __future__ import annotations

import torch
from pyro.nn import PyroModule
from torch import nn

from pyro_bnn.bayesianize import bayesianize
from pyro_bnn.layers import mlp
from pyro_bnn.likelihoods import HeteroscedasticGaussian
from pyro_bnn.priors import GaussianPrior, PriorHook

__all__ = ["MLPHeteroscedastic"]


class MLPHeteroscedastic(PyroModule):
    """``hidden`` layers of ``activation`` units, then 2 outputs: μ(x) and the raw scale,
    σ(x) = softplus(raw) + ``min_scale`` (``link="softplus"``) or the log-variance,
    σ(x)² = exp(raw) (``link="exp"``, which ``dvi`` needs)."""

    def __init__(
        self,
        *,
        in_features: int,
        hidden: tuple[int, ...] = (50,),
        prior: PriorHook | None = None,
        min_scale: float = 1e-3,
        link: str = "softplus",
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.net = mlp(in_features, tuple(hidden), 2, activation=activation)
        bayesianize(self, prior or GaussianPrior(scale=1.0))
        self.likelihood = HeteroscedasticGaussian(min_scale=min_scale, link=link)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.likelihood(self.net(x), y)
