import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_bnn.bayesianize import bayesianize
from pyro_bnn.priors import (
    FanInGaussianPrior,
    GaussianPrior,
    LaplacePrior,
    LogUniformPrior,
    ScaleMixturePrior,
    Selector,
    fan_in,
)


def _scale(d):
    return float(d.base_dist.scale.unique())


def test_gaussian_prior_global_and_per_layer_scale():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    prior = GaussianPrior(scale=2.0, layer_scales={"2": 0.5})
    assert _scale(prior("0.weight", net[0], net[0].weight)) == 2.0
    assert _scale(prior("2.weight", net[2], net[2].weight)) == 0.5
    assert _scale(prior("2.bias", net[2], net[2].bias)) == 0.5
    d = prior("0.weight", net[0], net[0].weight)
    assert d.event_shape == (4, 3) and d.batch_shape == ()


def test_fan_in_prior_scales_with_inputs():
    conv = nn.Conv2d(3, 8, 5)
    assert fan_in(conv, conv.weight) == 3 * 25
    prior = FanInGaussianPrior(c=2.0)
    assert _scale(prior("weight", conv, conv.weight)) == pytest.approx(2.0 / math.sqrt(75))
    assert _scale(prior("bias", conv, conv.bias)) == pytest.approx(2.0 / math.sqrt(75))


def test_selectors_hide_modules_and_parameters():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    prior = GaussianPrior(select=Selector(hide_modules=("1",), hide_parameters=("bias",)))
    assert prior("0.weight", net[0], net[0].weight) is not None
    assert prior("0.bias", net[0], net[0].bias) is None
    assert prior("1.weight", net[1], net[1].weight) is None
    only_conv = GaussianPrior(select=Selector(module_types=(nn.Conv2d,)))
    assert only_conv("0.weight", net[0], net[0].weight) is None


def test_bad_scale_is_rejected():
    lin = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="positive"):
        GaussianPrior(scale=-1.0)("weight", lin, lin.weight)
    with pytest.raises(ValueError, match="positive"):
        GaussianPrior(scale=float("nan"))("weight", lin, torch.zeros(2))


def test_scale_mixture_log_prob_is_the_direct_mixture_density():
    lin = nn.Linear(3, 2)
    pi, s1, s2 = 0.25, math.exp(-1), math.exp(-7)
    prior = ScaleMixturePrior(pi=pi, sigma1=s1, sigma2=s2)("weight", lin, lin.weight)
    w = torch.tensor([[0.0, 1e-3, -0.5], [2.0, -1e-4, 0.05]], dtype=torch.float64)
    direct = sum(
        math.log(
            pi * math.exp(-(v**2) / (2 * s1**2)) / (s1 * math.sqrt(2 * math.pi))
            + (1 - pi) * math.exp(-(v**2) / (2 * s2**2)) / (s2 * math.sqrt(2 * math.pi))
        )
        for v in w.reshape(-1).tolist()
    )
    assert prior.event_shape == (2, 3)
    assert float(prior.log_prob(w.float())) == pytest.approx(direct, rel=1e-5)
    # draws: a fraction pi comes from the wide component (|w| > 10 σ2 almost surely);
    # 20,000 draws give a standard error of sqrt(pi (1 - pi) / 20,000) = 0.003
    many = ScaleMixturePrior(pi=pi, sigma1=s1, sigma2=s2)("w", lin, torch.zeros(20_000))
    wide = (many.sample().abs() > 10 * s2).double().mean()
    assert abs(float(wide) - pi) < 4 * math.sqrt(pi * (1 - pi) / 20_000)
    with pytest.raises(ValueError, match="pi must be in"):
        ScaleMixturePrior(pi=1.0)


def test_laplace_prior_is_an_l1_penalty():
    lin = nn.Linear(2, 2)
    prior = LaplacePrior(scale=0.5)("weight", lin, lin.weight)
    w = torch.tensor([[1.0, -2.0], [0.0, 0.5]])
    # log p = Σ −|w|/b − log(2b)
    assert float(prior.log_prob(w)) == pytest.approx(-3.5 / 0.5 - 4 * math.log(1.0))


def test_log_uniform_prior_has_a_density_but_refuses_to_sample():
    lin = nn.Linear(2, 2)
    prior = LogUniformPrior()("weight", lin, lin.weight)
    w = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    assert float(prior.log_prob(w)) == pytest.approx(-math.log(1 * 2 * 0.5 * 4))
    with pytest.raises(NotImplementedError, match=r"improper.*cannot be sampled"):
        prior.sample()
    net = nn.Sequential(nn.Linear(2, 1))
    bayesianize(net, LogUniformPrior())
    with pytest.raises(NotImplementedError, match="no prior predictive"):
        pyro.poutine.trace(net).get_trace(torch.zeros(1, 2))
    assert isinstance(prior.base_dist, dist.TorchDistribution)
