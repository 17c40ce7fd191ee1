"""Local reparameterization: the same output distribution as sampled weights, an ELBO
with the same expectation, and lower gradient variance."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoNormal
from torch import nn

from pyro_bnn.bayesianize import bayesianize
from pyro_bnn.local_reparam import LocalReparameterization, gradient_variance
from pyro_bnn.priors import GaussianPrior
from pyro_bnn.zoo import build


def _randomise(guide):
    with torch.no_grad():
        for p in guide.parameters():
            p.normal_(0, 0.5)


def _outputs(net, guide, x, *, local: bool, n: int) -> torch.Tensor:
    target = LocalReparameterization(guide)(net) if local else net
    outs = []
    with torch.no_grad():
        for _ in range(n):
            guide_trace = poutine.trace(guide).get_trace(x)
            outs.append(poutine.replay(target, trace=guide_trace)(x))
    return torch.stack(outs)


@pytest.mark.parametrize("guide_type", [AutoNormal, AutoDiagonalNormal])
@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_local_outputs_have_the_sampled_weights_mean_and_variance(layer, guide_type):
    """1,500 draws each: means agree within 5 standard errors of their difference and
    variances within 5 standard errors (the sd of a sample variance is about
    var·sqrt(2/(n−1)) for near-Gaussian outputs)."""
    pyro.set_rng_seed(0)
    if layer == "linear":
        net, x = nn.Sequential(nn.Linear(3, 2)), torch.randn(4, 3)
    else:
        net, x = nn.Sequential(nn.Conv2d(2, 3, 3)), torch.randn(2, 2, 5, 5)
    net = bayesianize(net, GaussianPrior())
    guide = guide_type(net)
    guide(x)
    _randomise(guide)
    n = 1500
    sampled = _outputs(net, guide, x, local=False, n=n)
    local = _outputs(net, guide, x, local=True, n=n)
    var_a, var_b = sampled.var(0), local.var(0)
    se_mean = ((var_a + var_b) / n).sqrt()
    assert ((sampled.mean(0) - local.mean(0)).abs() < 5 * se_mean).all()
    se_var = (var_a + var_b) / 2 * math.sqrt(2 / (n - 1)) * math.sqrt(2)
    assert ((var_a - var_b).abs() < 5 * se_var).all()


def test_local_elbo_has_the_same_expectation_and_lower_gradient_variance():
    pyro.set_rng_seed(1)
    model = build("mlp-regression", in_features=3, hidden=(16,), noise_scale=0.5)
    x, y = torch.randn(64, 3), torch.randn(64)
    guide = AutoNormal(model, init_scale=0.3)
    guide(x, y)
    n = 200
    plain = torch.tensor([Trace_ELBO().loss(model, guide, x, y) for _ in range(n)])
    local_model = LocalReparameterization(guide)(model)
    local = torch.tensor([Trace_ELBO().loss(local_model, guide, x, y) for _ in range(n)])
    se = (plain.var() / n + local.var() / n).sqrt()
    assert (plain.mean() - local.mean()).abs() < 4 * se
    # with 64 independent rows, per-row noise averages out: the variance must drop
    without = gradient_variance(model, guide, x, y, local=False, num_repeats=100)
    with_local = gradient_variance(model, guide, x, y, local=True, num_repeats=100)
    assert with_local < 0.7 * without


def test_local_reparameterization_needs_a_mean_field_guide():
    from pyro.infer.autoguide import AutoDelta

    model = build("mlp-regression", in_features=2, hidden=(3,), noise_scale=1.0)
    x, y = torch.randn(4, 2), torch.randn(4)
    guide = AutoDelta(model)
    guide(x, y)
    with pytest.raises(TypeError, match="not a mean-field Gaussian guide"):
        Trace_ELBO().loss(LocalReparameterization(guide)(model), guide, x, y)
