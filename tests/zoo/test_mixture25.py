"""``gaussian-mixture-25``: the model's potential is the mixture's."""

import math

import torch

from pyro_bnn.potential import flat_potential
from pyro_bnn.zoo.mixture25 import CENTRES, VARIANCE, MixtureOf25, uniform_start


def test_the_target_is_the_equal_mixture_of_25_gaussians():
    """The model's potential at θ is −log Σ_k (1/25) N(θ; μ_k, 0.03 I) (the data term is
    constant in θ), computed here directly."""
    x, y = torch.zeros(3, 1), torch.zeros(3)
    potential = flat_potential(MixtureOf25(), x, y, backend="eager")
    data_term = -torch.distributions.Normal(0.0, 1.0).log_prob(y).sum()
    for theta in (torch.tensor([0.0, 0.0]), torch.tensor([1.0, -3.0]), torch.tensor([4.1, 2.0])):
        squared = ((theta - CENTRES) ** 2).sum(-1)
        log_components = -squared / (2 * VARIANCE) - math.log(2 * math.pi * VARIANCE)
        expected = -(torch.logsumexp(log_components, 0) - math.log(25)) + data_term
        torch.testing.assert_close(potential(theta), expected, rtol=1e-5, atol=1e-4)


def test_uniform_start_covers_the_square():
    starts = torch.stack([uniform_start({}) for _ in range(200)])
    assert starts.shape == (200, 2) and starts.abs().max() <= 10 and starts.abs().max() > 8
