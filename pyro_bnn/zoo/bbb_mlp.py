"""``bbb-mlp``: the Bayes by Backprop MNIST network of Blundell et al. (2015).

Two hidden ReLU layers of ``width`` units (1200 by default, as in the paper's largest
network) and a categorical likelihood over ``num_classes`` logits. The prior defaults to
the paper's scale mixture π N(0, σ1²) + (1 − π) N(0, σ2²), here with π = 1/2,
σ1 = e⁰, σ2 = e⁻⁶ (a point of the paper's grid); any prior hook may replace it.

Example:
    >>> import torch
    >>> model = bbb_mlp(width=16)
    >>> model(torch.randn(3, 784)).shape
    torch.Size([3])
"""

from __future__ import annotations

import math

from pyro_bnn.priors import PriorHook, ScaleMixturePrior
from pyro_bnn.zoo.mlp_classification import MLPClassification

__all__ = ["bbb_mlp"]


def bbb_mlp(
    *,
    in_features: int = 784,
    num_classes: int = 10,
    width: int = 1200,
    prior: PriorHook | None = None,
) -> MLPClassification:
    return MLPClassification(
        in_features=in_features,
        num_classes=num_classes,
        hidden=(width, width),
        prior=prior or ScaleMixturePrior(pi=0.5, sigma1=1.0, sigma2=math.exp(-6)),
    )
