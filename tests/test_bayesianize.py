import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn

from pyro_bnn import GaussianPrior, Selector, bayesianize
from pyro_bnn.bayesianize import bayesian_parameter_names
from pyro_bnn.layers import Linear


def test_linear_and_conv_become_sample_sites():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    bayesianize(net, GaussianPrior())
    assert isinstance(net, PyroModule)
    assert isinstance(net[3], Linear)
    trace = poutine.trace(net).get_trace(torch.randn(5, 1, 8, 8))
    shapes = {n: tuple(s["value"].shape) for n, s in trace.nodes.items() if s["type"] == "sample"}
    assert shapes == {
        "0.weight": (4, 1, 3, 3),
        "0.bias": (4,),
        "3.weight": (2, 144),
        "3.bias": (2,),
    }
    assert bayesian_parameter_names(net) == ["0.weight", "0.bias", "3.weight", "3.bias"]


def test_hidden_parameters_stay_deterministic():
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    bayesianize(net, GaussianPrior(select=Selector(hide_modules=("1",))))
    trace = poutine.trace(net).get_trace(torch.randn(4, 2))
    samples = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
    params = [n for n, s in trace.nodes.items() if s["type"] == "param"]
    assert samples == ["0.weight", "0.bias"]
    assert set(params) == {"1.weight", "1.bias"}
    assert isinstance(net[1].weight, torch.Tensor)


def test_batched_linear_matches_per_draw():
    layer = Linear(3, 2)
    layer.weight = pyro.nn.PyroSample(
        pyro.distributions.Normal(0.0, 1.0).expand([2, 3]).to_event(2)
    )
    x, w = torch.randn(5, 3), torch.randn(4, 1, 2, 3)  # (draws, data-plate slot, out, in)
    with pyro.plate("draws", 4, dim=-2), poutine.condition(data={"weight": w}):
        batched = layer(x)
    assert batched.shape == (4, 5, 2)
    for i in range(4):
        torch.testing.assert_close(batched[i], x @ w[i, 0].T + layer.bias)


def test_bayesian_layers_survive_pickling_as_themselves():
    """Chains run in spawned workers get a pickled model: its layers must stay pyro_bnn's
    (batched draws, the layer_output effect that local reparameterization and dvi use),
    not turn back into Pyro's PyroModule[nn.Linear]."""
    import pickle

    import torch

    from pyro_bnn.layers import Conv2d, Linear
    from pyro_bnn.priors import GaussianPrior

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 1))
    bayesianize(net, GaussianPrior())
    copy = pickle.loads(pickle.dumps(net))
    assert type(copy[0]) is Conv2d and type(copy[2]) is Linear
    assert sorted(copy[2]._pyro_samples) == ["bias", "weight"]
    assert copy(torch.randn(5, 1, 4, 4)).shape == (5, 1)
