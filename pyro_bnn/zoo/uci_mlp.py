"""``uci-mlp``: the model of the UCI regression benchmark (card: ``uci_mlp.md`` beside this module).

One hidden layer of ReLU units (50; 100 for protein), every weight and bias
N(0, c²/fan_in) (:class:`~pyro_bnn.priors.FanInGaussianPrior`, ``prior_scale`` = c chosen
on a validation split), and the observation noise learned under a Gamma prior on its
precision: the standardised targets' noise σ = precision^(-1/2) is a latent like any
weight, for every inference method.

Example:
    >>> import torch
    >>> model = uci_mlp(in_features=13)
    >>> model(torch.randn(4, 13)).shape
    torch.Size([4])
    >>> [name for name, _ in model.named_parameters()]
    []
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyro_bnn.priors import FanInGaussianPrior
from pyro_bnn.zoo.mlp_heteroscedastic import MLPHeteroscedastic
from pyro_bnn.zoo.mlp_regression import MLPRegression

__all__ = ["uci_mlp"]


def uci_mlp(
    *,
    in_features: int,
    hidden: int = 50,
    prior_scale: float = 1.0,
    precision_prior: tuple[float, float] = (1.0, 0.01),
    likelihood: str = "gaussian",
    learn_prior: str | None = None,
) -> MLPRegression | MLPHeteroscedastic:
    """``precision_prior``: (concentration, rate) of the Gamma prior on 1/σ² (standardised y).

    The default Gamma(1, 0.01) has mean 100 (σ = 0.1) and a density that falls by e only
    at precision 100: weak over the range UCI noise levels take (σ from 0.03 to 0.8).
    ``likelihood="heteroscedastic"`` gives the network a second head for the noise scale
    σ(x) (the deep-ensemble model of Lakshminarayanan et al.), with no precision prior;
    ``likelihood="heteroscedastic-exp"`` makes that head the log-variance (Wu et al.'s
    model, which ``dvi`` needs). ``learn_prior``: empirical Bayes, ``"global"`` or
    ``"layer"`` learned prior scales (:class:`~pyro_bnn.priors.ScaledPrior`), and for the
    Gaussian likelihood the precision prior's rate.
    """
    prior = FanInGaussianPrior(c=prior_scale, learn=learn_prior)
    if likelihood in ("heteroscedastic", "heteroscedastic-exp"):
        link = "exp" if likelihood == "heteroscedastic-exp" else "softplus"
        return MLPHeteroscedastic(in_features=in_features, hidden=(hidden,), prior=prior, link=link)
    if likelihood != "gaussian":
        raise ValueError(
            "likelihood must be 'gaussian', 'heteroscedastic' or 'heteroscedastic-exp', "
            f"got {likelihood!r}"
        )
    concentration, rate = precision_prior
    return MLPRegression(
        in_features=in_features,
        hidden=(hidden,),
        prior=prior,
        precision_prior=dist.Gamma(torch.tensor(float(concentration)), torch.tensor(float(rate))),
        learn_noise_prior=learn_prior is not None,
    )
