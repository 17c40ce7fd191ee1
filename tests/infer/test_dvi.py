"""``dvi``: its deterministic ELBO against Pyro's Monte Carlo ``Trace_ELBO`` of the same guide.

The deterministic ELBO is exact when the network's output is exactly Gaussian under the
guide: a linear model, and for the homoscedastic Gaussian any one-hidden-layer ReLU
network (its expected log-likelihood needs only the output's mean and variance, which
moment propagation gets exactly when layer 1's units are independent Gaussians). The
heteroscedastic likelihood needs the two heads jointly Gaussian, which a hidden layer
makes only approximately (central limit over 100 units), so there the tolerance adds 1 %
of the ELBO. Monte Carlo: 200 batches of 100 vectorised particles; the tolerance is 4
standard errors of their mean.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal

from pyro_bnn import fit, zoo
from pyro_bnn.infer.dvi import DeterministicELBO, find_network, predictive_moments
from pyro_bnn.likelihoods import ScaleDataPlate


def _data(rows: int = 30, features: int = 2):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(rows, features, generator=g)
    y = torch.sin(x[:, 0]) + 0.3 * x[:, 1] + 0.2 * torch.randn(rows, generator=g)
    return x, y


def _models():
    gamma = dist.Gamma(torch.tensor(2.0), torch.tensor(0.1))
    return {
        "gaussian-fixed": (zoo.build("mlp-regression", in_features=2, hidden=(100,),
                                     noise_scale=0.3), 0.0),
        "gaussian-learned": (zoo.build("mlp-regression", in_features=2, hidden=(100,),
                                       precision_prior=gamma), 0.0),
        "heteroscedastic-linear": (zoo.build("mlp-heteroscedastic", in_features=2, hidden=(),
                                             link="exp"), 0.0),
        "heteroscedastic-hidden": (zoo.build("mlp-heteroscedastic", in_features=2,
                                             hidden=(100,), link="exp"), 0.01),
    }  # fmt: skip


@pytest.mark.parametrize("case", list(_models()))
def test_deterministic_elbo_equals_the_monte_carlo_elbo(case):
    model, relative = _models()[case]
    x, y = _data()
    scaled = ScaleDataPlate(len(x))(model)
    guide = AutoDiagonalNormal(scaled, init_scale=0.1)
    guide(x, y)
    with torch.no_grad():  # a guide away from its initialisation: random means
        guide.loc.copy_(0.3 * torch.randn(guide.loc.shape))
    exact = DeterministicELBO(find_network(model)).loss(scaled, guide, x, y)
    mc = Trace_ELBO(num_particles=100, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        estimates = torch.tensor([mc.loss(scaled, guide, x, y) for _ in range(200)])
    se = float(estimates.std() / math.sqrt(len(estimates)))
    assert abs(exact - float(estimates.mean())) < 4 * se + relative * abs(exact), (exact, se)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_dvi_fits_a_nonlinear_function(covariance):
    x = torch.linspace(-2, 2, 60)[:, None]
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(60)
    # the full variant's pairs of units cost (width² × quadrature nodes) per row: keep it small
    hidden = (20,) if covariance == "diagonal" else (10,)
    model = zoo.build("mlp-regression", in_features=1, hidden=hidden, noise_scale=0.1)
    post = fit(model, x, y, method="dvi", covariance=covariance, num_steps=1000, lr=0.03,
               num_draws=100, progress_bar=False, chain_processes=1)  # fmt: skip
    mean, var = predictive_moments(post, x)
    # noise sd 0.1: a fitted mean is within a few noise sds of the data on average
    assert float((mean - y).square().mean().sqrt()) < 0.2
    # the predictive variance is the noise plus the weights' share
    assert bool((var > 0.1**2).all())
    drawn = post.predict(x, num_samples=100).mean
    assert float((drawn - mean).abs().max()) < 0.3  # draws come from the same guide


def test_dvi_refuses_what_it_does_not_cover():
    x, y = _data()
    with pytest.raises(ValueError, match="link='exp'"):
        fit(zoo.build("mlp-heteroscedastic", in_features=2), x, y, method="dvi", num_steps=5)
    classifier = zoo.build("mlp-classification", in_features=2, num_classes=2)
    with pytest.raises(ValueError, match="Categorical"):
        fit(classifier, x, (y > 0).long(), method="dvi", num_steps=5)
    tanh = zoo.build("mlp-regression", in_features=2, activation=torch.nn.Tanh)
    with pytest.raises(ValueError, match="Tanh"):
        fit(tanh, x, y, method="dvi", num_steps=5)
    with pytest.raises(ValueError, match="covariance"):
        fit(zoo.build("mlp-regression", in_features=2), x, y, method="dvi", covariance="block")
    pyro.clear_param_store()


def _counted_compiled_steps(monkeypatch) -> list[int]:
    from pyro_bnn.infer import compiled_step

    calls = []
    step = compiled_step.CompiledStep.__call__

    def counting(self, *args, **kwargs):
        calls.append(1)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(compiled_step.CompiledStep, "__call__", counting)
    return calls


def test_dvi_runs_one_compiled_step_unless_backend_is_pyro(monkeypatch):
    """With the default ``backend="jit"`` every step is the compiled graph, and from the
    same seed its losses are Pyro's ``SVI.step``'s on the same ELBO (``backend="pyro"``)
    within float32 rounding (relative 1e-4 over 40 steps of each chain), minibatches of
    10 of 30 rows included (the same start and the same batches). The learned noise
    precision's KL goes through it too."""
    x, y = _data()
    fits = {}
    calls = _counted_compiled_steps(monkeypatch)
    for backend in ("jit", "pyro"):
        model, _ = _models()["gaussian-learned"]
        fits[backend] = fit(model, x, y, method="dvi", num_steps=40, lr=0.02, batch_size=10,
                            num_chains=2, chain_processes=1, num_draws=2, backend=backend,
                            progress_bar=False, seed=0)  # fmt: skip
        if backend == "jit":
            assert len(calls) == 80
    assert len(calls) == 80  # none with backend="pyro"
    for compiled, stepped in zip(fits["jit"].losses, fits["pyro"].losses, strict=True):
        assert compiled == pytest.approx(stepped, rel=1e-4)


def test_dvi_steps_through_pyro_when_its_model_holds_parameters(monkeypatch):
    """A model with parameters of its own modules (a ``PyroParam``; deterministic biases
    left out of the prior) is read through PyroModule, which the compiled step does not
    feed: Pyro's ``SVI.step`` runs it, and the deterministic biases learn."""
    from pyro.nn import PyroParam

    from pyro_bnn.priors import GaussianPrior, Selector

    x, y = _data()
    model = zoo.build("mlp-regression", in_features=2, hidden=(5,), noise_scale=0.3)
    model.offset = PyroParam(torch.zeros(()))
    calls = _counted_compiled_steps(monkeypatch)
    post = fit(model, x, y, method="dvi", num_steps=20, num_draws=2, progress_bar=False)
    assert calls == [] and len(post.losses[0]) == 20
    weights_only = GaussianPrior(select=Selector(parameters=("weight",)))
    model = zoo.build("mlp-regression", in_features=2, hidden=(5,), noise_scale=0.3,
                      prior=weights_only)  # fmt: skip
    start = model.net[0].bias.detach().clone()
    fit(model, x, y, method="dvi", num_steps=20, num_draws=2, progress_bar=False)
    assert calls == []
    assert not torch.equal(model.net[0].bias.detach(), start)
