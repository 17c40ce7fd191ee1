"""The compiled SVI step: the same objective and the same update as Pyro's ``SVI.step``
with the potential ELBO and ``ClippedAdam``, one graph per batch shape."""

import pyro
import pytest
import torch
from pyro.infer import SVI
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
)
from pyro.optim import ClippedAdam

from pyro_bnn import fit, zoo
from pyro_bnn.infer.compiled_step import CompiledStep, PotentialObjective
from pyro_bnn.infer.elbo import PotentialELBO
from pyro_bnn.potential import Potential

GUIDES = {
    "meanfield": lambda m: AutoDiagonalNormal(m, init_scale=0.1),
    "lowrank": lambda m: AutoLowRankMultivariateNormal(m, init_scale=0.1, rank=2),
    "fullrank": lambda m: AutoMultivariateNormal(m, init_scale=0.1),
    "map": AutoDelta,
}


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = torch.sin(x[:, 0]) + 0.1 * torch.randn(40, generator=g)
    return zoo.build("mlp-regression", in_features=3, hidden=(5,)), x, y


def _run(kind: str, *, compiled: bool, steps: int = 30, backend: str = "jit", particles: int = 1):
    """``steps`` steps from the same start and the same random stream; the losses and the
    final parameters."""
    model, x, y = _problem()
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(1)
        guide = GUIDES[kind](model)
        guide(x, y)
        potential = Potential(model, x, y, backend="jit")
        pyro.set_rng_seed(2)
        if compiled:
            objective = PotentialObjective(guide, potential, num_particles=particles)
            step = CompiledStep(guide, objective, backend=backend)
            losses = [step(x, y, lr=0.05) for _ in range(steps)]
        else:
            loss = PotentialELBO(potential, num_particles=particles)
            svi = SVI(model, guide, ClippedAdam({"lr": 0.05}), loss)
            losses = [svi.step(x, y) for _ in range(steps)]
        params = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}
    return losses, params


@pytest.mark.parametrize("kind", list(GUIDES))
def test_compiled_step_is_pyros_step(kind):
    """Same draws, same ELBO, same ClippedAdam update: the loss sequence and the final
    unconstrained parameters agree within float32 rounding, which the compiled graph may
    reorder (relative 1e-4 after 30 steps; the losses are O(100))."""
    expected_losses, expected = _run(kind, compiled=False)
    losses, params = _run(kind, compiled=True)
    assert losses == pytest.approx(expected_losses, rel=1e-4)
    assert params.keys() == expected.keys()
    for name, value in params.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5)


def test_several_particles_draw_what_the_potential_elbo_draws():
    """Three particles: the same noise rows in the same order, the same averaged loss."""
    expected_losses, expected = _run("lowrank", compiled=False, particles=3)
    losses, params = _run("lowrank", compiled=True, particles=3)
    assert losses == pytest.approx(expected_losses, rel=1e-4)
    for name, value in params.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5)


def test_minibatches_run_through_one_graph(monkeypatch):
    """Batches of one shape share one traced graph: a 40-row fit in batches of 10 traces
    the step once (before the loop), not per batch."""
    traced = []
    build = CompiledStep._compiled

    def counting(self, inputs):
        traced.append(len(self.cache))
        return build(self, inputs)

    monkeypatch.setattr(CompiledStep, "_compiled", counting)
    model, x, y = _problem()
    post = fit(model, x, y, method="meanfield", num_steps=40, batch_size=10,
               progress_bar=False, seed=0, num_draws=2)  # fmt: skip
    assert len(post.losses[0]) == 40
    assert len(traced) == 41 and set(traced[1:]) == {1}  # prepare, then 40 steps


def test_compiled_step_refuses_a_guide_it_does_not_run():
    from pyro.infer.autoguide import AutoNormal

    model, x, y = _problem()
    with pyro.get_param_store().scope():
        guide = AutoNormal(model)
        guide(x, y)
        with pytest.raises(ValueError, match="does not run AutoNormal"):
            PotentialObjective(guide, Potential(model, x, y))


def test_the_inductor_step_is_pyros_step():
    """``backend="inductor"`` compiles the same graph with ``torch.compile`` (seconds)."""
    expected_losses, expected = _run("meanfield", compiled=False)
    losses, params = _run("meanfield", compiled=True, backend="inductor")
    assert losses == pytest.approx(expected_losses, rel=1e-4)
    for name, value in params.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5)


def _run_dvi(*, compiled: bool, steps: int = 30, backend: str = "jit"):
    """``dvi``'s loss on a heteroscedastic MLP whose per-layer prior scales are learned
    (empirical Bayes: the model's own ``pyro.param``), ``steps`` steps from one start on
    alternating halves of the data."""
    from pyro_bnn.infer.dvi import DeterministicELBO, find_network
    from pyro_bnn.infer.svi import ScaleDataPlate
    from pyro_bnn.priors import FanInGaussianPrior

    _, x, y = _problem()
    model = zoo.build("mlp-heteroscedastic", in_features=3, hidden=(5,), link="exp",
                      prior=FanInGaussianPrior(c=1.0, learn="layer"))  # fmt: skip
    scaled = ScaleDataPlate(len(x))(model)
    loss = DeterministicELBO(find_network(model))
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(1)
        guide = AutoDiagonalNormal(scaled, init_scale=0.1)
        guide(x, y)
        halves = [(x[:20], y[:20]), (x[20:], y[20:])]  # minibatches: the data plate scales
        if compiled:
            step = CompiledStep(guide, loss.compiled_objective(guide, x, y), backend=backend)
            losses = [step(*halves[i % 2], lr=0.05) for i in range(steps)]
        else:
            svi = SVI(scaled, guide, ClippedAdam({"lr": 0.05}), loss)
            losses = [svi.step(*halves[i % 2]) for i in range(steps)]
        params = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}
    return losses, params


@pytest.mark.parametrize("backend", ["jit", "inductor"])
def test_the_compiled_dvi_step_is_pyros_step(backend):
    """``dvi``'s deterministic ELBO as the compiled step's objective: the same losses and
    the same parameters as Pyro's ``SVI.step`` with it, the guide's and the model's
    empirical-Bayes scales (which must move), within float32 rounding (relative 1e-4
    after 30 steps)."""
    expected_losses, expected = _run_dvi(compiled=False)
    losses, params = _run_dvi(compiled=True, backend=backend)
    assert losses == pytest.approx(expected_losses, rel=1e-4)
    assert params.keys() == expected.keys()
    assert {k for k in params if k.startswith("prior_scale")} == {
        "prior_scale.net.0",
        "prior_scale.net.2",
    }
    for name, value in params.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-5)
    assert float(params["prior_scale.net.0"]) != pytest.approx(0.0, abs=1e-3)  # log 1 = 0
