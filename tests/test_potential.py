"""The flat potential equals Pyro's own HMC potential, and its ELBO Pyro's Trace_ELBO."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal
from pyro.infer.mcmc.util import initialize_model

from pyro_bnn import zoo
from pyro_bnn.infer.elbo import PotentialELBO
from pyro_bnn.potential import Potential, flat_layout

X, Y = torch.randn(20, 3), torch.randn(20)


@pytest.mark.parametrize("jit", [False, True])
def test_potential_equals_pyro_potential(jit):
    model = zoo.build("mlp-regression", in_features=3, hidden=(4,))
    init, pyro_potential, transforms, _ = initialize_model(model, model_args=(X, Y))
    potential = Potential(model, X, Y, jit=jit)
    for _ in range(3):
        params = {k: v + 0.3 * torch.randn_like(v) for k, v in init.items()}
        theta = potential.layout.flatten({k: transforms[k].inv(v) for k, v in params.items()})
        torch.testing.assert_close(potential(theta), pyro_potential(params), rtol=1e-5, atol=1e-3)
    values = potential.layout.constrain(theta)
    assert set(values) == set(init) and values["precision"] > 0
    # other data of another size retraces
    assert potential(theta, X[:7], Y[:7]).shape == ()


def test_flat_layout_refuses_local_latents():
    def model(x, y=None):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            return pyro.sample("obs", dist.Normal(z, 1.0), obs=y)

    assert flat_layout(model, X, Y) is None
    with pytest.raises(ValueError, match="outside plates"):
        Potential(model, X, Y)


@pytest.mark.parametrize("guide_type", [AutoDiagonalNormal, AutoMultivariateNormal])
def test_potential_elbo_estimates_trace_elbo(guide_type):
    """Both are unbiased estimates of the same −ELBO: their means over 400 draws agree
    within 4 standard errors of the difference."""
    model = zoo.build("mlp-regression", in_features=3, hidden=(4,))
    guide = guide_type(model, init_scale=0.1)
    guide(X, Y)
    fast = PotentialELBO(Potential(model, X, Y))
    a = torch.tensor([float(fast(model, guide, X, Y)) for _ in range(400)])
    b = torch.tensor([Trace_ELBO().loss(model, guide, X, Y) for _ in range(400)])
    se = (a.var() / 400 + b.var() / 400).sqrt()
    assert (a.mean() - b.mean()).abs() < 4 * se
