import math

import pytest
import torch
from torch import nn

from pyro_bnn.priors import FanInGaussianPrior, GaussianPrior, Selector, fan_in


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
