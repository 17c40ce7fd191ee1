"""The lean leapfrog (``pyro_bnn.infer.leapfrog``) against Pyro's own NUTS and HMC kernels on
the same flat potential, from the same seed.

Tolerance: none. The lean path performs Pyro's float32 operations in Pyro's order (each
product, sum and dot product on the same contiguous tensors, the same potential, the same
random numbers drawn in the same order), so the draws, sampler statistics and gradient
counts are bit for bit Pyro's. A rounding difference (a reordered reduction, a fused
multiply-add) moves a value by about 1e-7 at first, but it does not stay small: it shifts
the adapted step size and, through the accept and U-turn decisions, whole trajectories.
Computing one momentum half-step as an FMA (``torch.add(r, g, alpha=-ε/2)``) moves a
NUTS chain of 300 warmup steps and 300 draws on the conjugate model by 0.14 in the bias
(two posterior sds) at its first draw and by up to 0.34 later: the chains are unrelated.
So no tolerance would tell rounding from a changed algorithm; exact equality does.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC

from pyro_bnn import fit
from pyro_bnn.infer import mcmc
from pyro_bnn.infer.leapfrog import flat_value_and_grad
from tests.infer.test_mcmc import _Funnel

# one compiled potential per backend for the module's conjugate chains (compiling is slow)
_POTENTIALS: dict[str, dict] = {}
KERNELS = {"nuts": (mcmc.NUTSOptions, mcmc.nuts_kernel), "hmc": (mcmc.HMCOptions, mcmc.hmc_kernel)}


def _pyros(build):
    """``build`` (a kernel builder) without the lean leapfrog: Pyro's kernel."""

    def stock(options, *, potential_fn, value_and_grad=None):
        return build(options, potential_fn=potential_fn)

    return stock


def _chain(build, model, x, y, *, options, shared, seed=0):
    pyro.set_rng_seed(seed)
    with pyro.get_param_store().scope():
        return mcmc.run_mcmc_chain(
            model, x, y, name="lean", seed=seed, options=options, shared=shared,
            progress_bar=False, build_kernel=build,
        )  # fmt: skip


def _assert_same_chain(stock, lean) -> None:
    assert stock.draws.keys() == lean.draws.keys()
    for site, value in stock.draws.items():
        assert torch.equal(lean.draws[site], value), site
    assert stock.sample_stats.keys() == lean.sample_stats.keys()
    for name, value in stock.sample_stats.items():
        np.testing.assert_array_equal(lean.sample_stats[name], value, err_msg=name)
    assert lean.timings["gradients"] == stock.timings["gradients"]
    assert lean.diagnostics == stock.diagnostics


@pytest.mark.parametrize("backend", ["jit", "inductor"])
@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_lean_kernel_draws_what_pyros_kernel_draws(conjugate, method, backend):
    """Warmup (step size and diagonal mass matrix adapted) and draws, on the conjugate
    model's compiled potential; HMC with a trajectory length, so its steps per draw vary."""
    options_type, build = KERNELS[method]
    extra = {"trajectory_length": 1.0} if method == "hmc" else {"max_tree_depth": 6}
    options = options_type(num_samples=60, warmup_steps=80, backend=backend, **extra)
    shared = _POTENTIALS.setdefault(backend, {})
    args = (conjugate.model(), conjugate.x, conjugate.y)
    stock = _chain(_pyros(build), *args, options=options, shared=shared)
    lean = _chain(build, *args, options=options, shared=shared)
    assert isinstance(stock.runner.kernel, mcmc.CountingNUTS | mcmc.CountingHMC)
    assert isinstance(lean.runner.kernel, mcmc.FlatNUTS | mcmc.FlatHMC)
    assert lean.runner.kernel._site == "theta"  # the flat path ran, not the fallback
    _assert_same_chain(stock, lean)
    assert stock.draws["linear.bias"].unique().numel() > 10  # the chain moved


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_lean_kernel_diverges_where_pyros_kernel_diverges(method):
    """Neal's funnel at a low target acceptance: diverging trajectories (energies that blow
    up, NaN included) end the same way."""
    options_type, build = KERNELS[method]
    extra = {"num_steps": 8} if method == "hmc" else {}
    options = options_type(num_samples=80, warmup_steps=80, backend="jit",
                           target_accept_prob=0.6, **extra)  # fmt: skip
    shared: dict = {}
    args = (_Funnel(), torch.zeros(5, 1), torch.zeros(5))
    stock = _chain(_pyros(build), *args, options=options, shared=shared, seed=1)
    lean = _chain(build, *args, options=options, shared=shared, seed=1)
    _assert_same_chain(stock, lean)
    if method == "nuts":
        assert stock.sample_stats["diverging"].any()


def _gaussian(theta: torch.Tensor) -> torch.Tensor:
    scale = torch.linspace(0.5, 2.0, theta.shape[-1])
    return 0.5 * ((theta / scale) ** 2).sum() + torch.where(theta[0] > 2.5, torch.inf, 0.0)


@pytest.mark.parametrize("full_mass", [False, True])
def test_lean_kernel_on_a_plain_potential_function(full_mass):
    """Outside ``fit``: a potential written by hand (its gradient by autograd), with an
    infinite wall; a dense mass matrix runs Pyro's own tree code, with the same draws."""
    options = mcmc.NUTSOptions(num_samples=50, warmup_steps=50, full_mass=full_mass)

    def run(lean: bool) -> torch.Tensor:
        kernel = mcmc.nuts_kernel(
            options,
            potential_fn=lambda params: _gaussian(params["theta"]),
            value_and_grad=flat_value_and_grad(_gaussian) if lean else None,
        )
        pyro.set_rng_seed(0)
        runner = MCMC(kernel, num_samples=50, warmup_steps=50, disable_progbar=True,
                      initial_params={"theta": torch.zeros(4)})  # fmt: skip
        runner.run()
        assert (getattr(kernel, "_site", None) == "theta") is (lean and not full_mass)
        return runner.get_samples()["theta"]

    assert torch.equal(run(lean=True), run(lean=False))


@pytest.mark.filterwarnings("ignore::pyro_bnn.diagnostics.SamplingWarning")  # 5 draws
def test_fit_takes_the_lean_kernel_unless_the_backend_is_pyro(conjugate):
    args = (conjugate.model(), conjugate.x, conjugate.y)
    settings = dict(method="nuts", num_samples=5, warmup_steps=5, progress_bar=False, seed=0)
    lean = fit(*args, backend="jit", **settings)
    pyros = fit(*args, backend="pyro", **settings)
    assert type(lean.mcmc[0].kernel) is mcmc.FlatNUTS
    assert type(pyros.mcmc[0].kernel) is mcmc.CountingNUTS


def test_value_and_grad_reads_the_fused_gradient(conjugate, monkeypatch):
    """The fused potential's gradient, as autograd returns it to Pyro's ``potential_grad``,
    without a backward pass."""
    from pyro_bnn.potential import Potential, _FusedEnergy

    potential = Potential(conjugate.model(), conjugate.x, conjugate.y, backend="inductor")
    theta = torch.randn(potential.layout.size)
    leaf = theta.clone().requires_grad_()
    expected = potential(leaf)
    if type(expected.grad_fn) is not _FusedEnergy._backward_cls:
        pytest.skip("torch.compile failed here: the potential fell back to the JIT")
    (expected_grad,) = torch.autograd.grad(expected, leaf)

    def no_backward(*args, **kwargs):
        raise AssertionError("autograd.grad called")

    monkeypatch.setattr(torch.autograd, "grad", no_backward)
    value, grad = flat_value_and_grad(potential)(theta)
    assert torch.equal(value, expected.detach()) and torch.equal(grad, expected_grad)
    assert not value.requires_grad and not grad.requires_grad


def _raises(theta: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("singular U")


def test_a_registered_numerical_error_is_a_nan_energy_as_in_pyro():
    """Pyro's integrator turns a 'singular' error into a NaN energy and zero gradient."""
    kernel = mcmc.nuts_kernel(mcmc.NUTSOptions(), potential_fn=_raises, value_and_grad=_raises)
    value, grad = kernel._potential_and_grad(torch.ones(3))
    assert torch.isnan(value) and torch.equal(grad, torch.zeros(3))
    assert kernel.num_gradients == 1
    with pytest.raises(ValueError, match="other"):
        mcmc.nuts_kernel(
            mcmc.NUTSOptions(), potential_fn=_raises, value_and_grad=_other_error
        )._potential_and_grad(torch.ones(3))


def _other_error(theta: torch.Tensor) -> torch.Tensor:
    raise ValueError("other")


def test_bernoulli_draws_as_pyro_sample_does():
    """The subtree coin: torch.bernoulli on the probability uses the random numbers that
    pyro.sample of a Bernoulli uses."""
    probs = torch.rand(200)
    pyro.set_rng_seed(5)
    expected = [pyro.sample("coin", dist.Bernoulli(probs=p)) for p in probs]
    pyro.set_rng_seed(5)
    assert [torch.bernoulli(p) for p in probs] == expected
