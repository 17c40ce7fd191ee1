"""The flat potential equals Pyro's own HMC potential, and its ELBO Pyro's Trace_ELBO."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
)
from pyro.infer.mcmc.util import initialize_model

from pyro_bnn import zoo
from pyro_bnn.infer.elbo import PotentialELBO
from pyro_bnn.potential import Potential, flat_layout

X, Y = torch.randn(20, 3), torch.randn(20)


@pytest.mark.parametrize("backend", ["eager", "jit", "inductor"])
def test_potential_and_gradient_equal_pyro_potential(backend):
    model = zoo.build("mlp-regression", in_features=3, hidden=(4,))
    init, pyro_potential, transforms, _ = initialize_model(model, model_args=(X, Y))
    potential = Potential(model, X, Y, backend=backend)
    for _ in range(3):
        params = {k: (v + 0.3 * torch.randn_like(v)).requires_grad_() for k, v in init.items()}
        expected = pyro_potential(params)
        expected_grads = torch.autograd.grad(expected, list(params.values()))
        unconstrained = {k: transforms[k].inv(v.detach()) for k, v in params.items()}
        theta = potential.layout.flatten(unconstrained).requires_grad_()
        value = potential(theta)
        (grad,) = torch.autograd.grad(value, theta)
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-3)
        flat_expected = torch.cat([g.reshape(-1) for g in expected_grads])
        torch.testing.assert_close(grad, flat_expected, rtol=1e-4, atol=1e-3)
    values = potential.layout.constrain(theta.detach())
    assert set(values) == set(init) and values["precision"] > 0
    # other data of another size retraces
    assert potential(theta, X[:7], Y[:7]).shape == ()
    with pytest.raises(ValueError, match="unknown potential backend"):
        Potential(model, X, Y, backend="xla")


def test_flat_layout_refuses_local_latents():
    def model(x, y=None):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            return pyro.sample("obs", dist.Normal(z, 1.0), obs=y)

    assert flat_layout(model, X, Y) is None
    with pytest.raises(ValueError, match="outside plates"):
        Potential(model, X, Y)


@pytest.mark.parametrize(
    "guide_type", [AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal]
)
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


def test_lowrank_entropy_is_the_distributions():
    model = zoo.build("mlp-regression", in_features=3, hidden=(4,))
    guide = AutoLowRankMultivariateNormal(model, init_scale=0.3, rank=3)
    guide(X, Y)
    with torch.no_grad():
        guide.cov_factor.normal_()
    _, entropy = PotentialELBO(Potential(model, X, Y))._sample(guide)
    expected = guide.get_posterior().entropy()
    torch.testing.assert_close(entropy, expected, rtol=1e-5, atol=1e-4)


def test_map_loss_is_trace_elbo_loss_exactly():
    """A Delta guide has no sampling noise: the potential's loss, with the Jacobian of the
    positive noise precision taken back out, is −log p(y, θ) like Trace_ELBO's."""
    model = zoo.build("mlp-regression", in_features=3, hidden=(4,))
    guide = AutoDelta(model)
    guide(X, Y)
    fast = PotentialELBO(Potential(model, X, Y))
    loss = fast(model, guide, X, Y)
    torch.testing.assert_close(loss, torch.tensor(Trace_ELBO().loss(model, guide, X, Y)))
    loss.backward()
    assert all(p.grad is not None for p in guide.parameters())
