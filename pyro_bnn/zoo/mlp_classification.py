"""``mlp-classification``: a Bayesian MLP classifier on logits.

A categorical likelihood over ``num_classes`` classes, or, with ``binary=True``, a
Bernoulli likelihood on a single logit.

Example:
    >>> import torch
    >>> model = MLPClassification(in_features=4, num_classes=3, hidden=(8,))
    >>> model(torch.randn(6, 4)).shape
    torch.Size([6])
"""

from __future__ import annotations

import torch
from pyro.nn import PyroModule
from torch import nn

from pyro_bnn.bayesianize import bayesianize
from pyro_bnn.layers import mlp
from pyro_bnn.likelihoods import Bernoulli, Categorical
from pyro_bnn.priors import GaussianPrior, PriorHook

__all__ = ["MLPClassification"]


class MLPClassification(PyroModule):
    def __init__(
        self,
        *,
        in_features: int,
        num_classes: int,
        hidden: tuple[int, ...] = (50,),
        prior: PriorHook | None = None,
        binary: bool = False,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if binary and num_classes != 2:
            raise ValueError("binary=True needs num_classes=2")
        self.in_features = in_features
        self.num_classes = num_classes
        self.binary = binary
        self.net = mlp(
            in_features, tuple(hidden), 1 if binary else num_classes, activation=activation
        )
        bayesianize(self, prior or GaussianPrior(scale=1.0))
        self.likelihood = Bernoulli() if binary else Categorical()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.net(x)
        return self.likelihood(logits.squeeze(-1) if self.binary else logits, y)
