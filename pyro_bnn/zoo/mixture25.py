"""``gaussian-mixture-25``: the 2-D mixture of 25 Gaussians of Zhang et al. (2020, §5.1).

A sampling target rather than a network: 25 equally weighted Gaussians with covariance
0.03·I centred on the grid {−4, −2, 0, 2, 4}² (the authors' ``experiments/mog25.m``),
written as a Pyro model whose only latent is the 2-D position θ. Its data term does not
involve θ, so the posterior of θ is the mixture itself: a test of how many modes a
sampler visits (``pyro-bnn bench modes``, tutorial 4). :func:`uniform_start` is the
authors' start, uniform on [−10, 10]².

Example:
    >>> import torch
    >>> from pyro import poutine
    >>> trace = poutine.trace(MixtureOf25()).get_trace(torch.zeros(3, 1))
    >>> tuple(trace.nodes["theta"]["value"].shape), len(CENTRES)
    ((2,), 25)
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints

__all__ = ["CENTRES", "VARIANCE", "MixtureOf25", "uniform_start"]

CENTRES = torch.tensor([[2.0 * i, 2.0 * j] for i in range(-2, 3) for j in range(-2, 3)])
VARIANCE = 0.03


class _Mixture(dist.MixtureSameFamily):
    """Pyro's mixture with its support stated as the plane (the default support has no
    transform to the unconstrained space, which the samplers need)."""

    support = constraints.real_vector


class MixtureOf25(nn.Module):
    """θ ~ the 25-Gaussian mixture; ``obs`` ~ N(0, 1) on the rows of ``x``, independent of
    θ (the data plate every model here has), so the posterior of θ is the mixture."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        components = dist.Normal(CENTRES, math.sqrt(VARIANCE)).to_event(1)
        mixture = _Mixture(dist.Categorical(logits=torch.zeros(25)), components)
        pyro.sample("theta", mixture)
        with pyro.plate("data", len(x)):
            return pyro.sample("obs", dist.Normal(torch.zeros(len(x)), 1.0), obs=y)


def uniform_start(site: dict) -> torch.Tensor:
    """The authors' start for θ: uniform on [−10, 10]² (an ``init_strategy``)."""
    return torch.rand(2) * 20 - 10
