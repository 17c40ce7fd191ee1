"""NUTS, HMC and random-walk Metropolis against the exact posterior of conjugate Bayesian
linear regression (a Gaussian target with known mean and covariance); chains in worker
processes; the convergence warnings.

Tolerances come from Monte Carlo error: the standard error of a posterior-mean estimate is
sqrt(Σ_ii / ESS_i), and of a covariance estimate sqrt((Σ_ii Σ_jj + Σ_ij²) / ESS) for
Gaussian draws (ESS from ArviZ: of each coordinate for the mean, of each product of
centred coordinates for the covariance). Each check allows
4 standard errors: about a 1-in-16,000 chance per coordinate of a false failure.
"""

import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_bnn import fit, to_inference_data
from pyro_bnn.diagnostics import SamplingWarning
from tests.infer.conjugate import flat_draws


def _check_against_exact(draws: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> None:
    ess = torch.tensor([az.ess(draws[..., i].numpy()) for i in range(draws.shape[-1])])
    flat = draws.reshape(-1, draws.shape[-1])
    se_mean = (cov.diag() / ess).sqrt()
    assert torch.all((flat.mean(0) - mean).abs() < 4 * se_mean), (flat.mean(0), mean, se_mean)
    sample_cov = torch.from_numpy(np.cov(flat.numpy(), rowvar=False))
    var = cov.diag()
    # a covariance estimate is a mean of products of deviations: its ESS is theirs (a
    # chain anti-correlated in x, as fixed-length HMC can be, is not so in x²)
    centred = (draws - draws.reshape(-1, draws.shape[-1]).mean(0)).numpy()
    dims = range(draws.shape[-1])
    ess_products = torch.tensor(
        [[az.ess(centred[..., i] * centred[..., j]) for j in dims] for i in dims]
    )
    se_cov = ((var[:, None] * var[None, :] + cov**2) / ess_products).sqrt()
    assert torch.all((sample_cov - cov).abs() < 4 * se_cov), (sample_cov, cov, se_cov)


def test_nuts_matches_exact_posterior(conjugate):
    post = fit(
        conjugate.model(),
        conjugate.x,
        conjugate.y,
        method="nuts",
        num_chains=2,
        chain_processes=1,
        num_samples=1000,
        warmup_steps=500,
        progress_bar=False,
        seed=0,
    )
    draws = flat_draws(post.draws)
    assert draws.shape == (2, 1000, 3) and len(post.mcmc) == 2
    _check_against_exact(draws, conjugate.mean, conjugate.cov)
    stats = post.sample_stats
    assert stats["diverging"].shape == (2, 1000) and not stats["diverging"].any()
    assert stats["n_steps"].min() >= 1 and np.isfinite(stats["lp"]).all()


def test_hmc_matches_exact_posterior(conjugate):
    post = fit(
        conjugate.model(),
        conjugate.x,
        conjugate.y,
        method="hmc",
        num_steps=3,
        num_samples=1500,
        warmup_steps=500,
        progress_bar=False,
        seed=0,
    )
    _check_against_exact(flat_draws(post.draws), conjugate.mean, conjugate.cov)
    assert post.sample_stats["n_steps"].min() >= 1


def test_mcmc_rejects_options_of_other_methods(conjugate):
    with pytest.raises(ValueError, match=r"'hmc' does not use option.*max_tree_depth"):
        fit(conjugate.model(), conjugate.x, conjugate.y, method="hmc", max_tree_depth=3)


def test_rwm_matches_exact_posterior_and_adapts_to_the_target_acceptance(conjugate):
    """The acceptance rate after warmup is a mean of 4,000 correlated 0/1 draws; with the
    step size frozen at its adapted value it sits within a few points of 0.234."""
    post = fit(conjugate.model(), conjugate.x, conjugate.y, method="rwm", backend="jit",
               num_samples=4000, warmup_steps=2000, progress_bar=False, seed=0)  # fmt: skip
    _check_against_exact(flat_draws(post.draws), conjugate.mean, conjugate.cov)
    accepted = post.sample_stats["accepted"]
    assert accepted.shape == (1, 4000)
    assert abs(accepted.mean() - 0.234) < 0.05
    assert np.ptp(post.sample_stats["step_size"]) == 0  # adaptation stops after warmup


def test_rwm_on_the_model_itself_keeps_the_initial_strategy(conjugate):
    """backend="pyro" runs Pyro's RandomWalkKernel on the model; its start comes from the
    init strategy (Pyro's kernel alone would ignore it)."""
    from pyro.infer.autoguide import init_to_value

    start = {"linear.weight": torch.full((1, 2), 5.0), "linear.bias": torch.full((1,), 5.0)}
    post = fit(conjugate.model(), conjugate.x, conjugate.y, method="rwm", backend="pyro",
               warmup_steps=0, num_samples=1, step_size=1e-6,
               init_strategy=init_to_value(values=start), progress_bar=False, seed=0)  # fmt: skip
    assert torch.allclose(post.draws["linear.weight"], torch.tensor(5.0), atol=1e-3)


def test_chains_in_worker_processes_match_chains_run_here(conjugate):
    """A chain's seed alone decides its draws, so spawning workers changes nothing."""
    options = dict(method="nuts", backend="jit", num_chains=2, num_samples=50, warmup_steps=50,
                   progress_bar=False, seed=3)  # fmt: skip
    here = fit(conjugate.model(), conjugate.x, conjugate.y, chain_processes=1, **options)
    spawned = fit(conjugate.model(), conjugate.x, conjugate.y, chain_processes=2, **options)
    for site, value in here.draws.items():
        torch.testing.assert_close(spawned.draws[site], value, rtol=1e-4, atol=1e-5)
    assert spawned.mcmc == [] and len(here.mcmc) == 2
    assert not np.array_equal(here.draws["linear.bias"][0], here.draws["linear.bias"][1])


class _ModelWithALambda(torch.nn.Module):
    """Pickling fails on the lambda, so the chains cannot go to worker processes."""

    def __init__(self, model):
        super().__init__()
        self.model, self.hook = model, lambda: None

    def forward(self, x, y=None):
        return self.model(x, y)


def test_a_model_that_cannot_be_pickled_runs_its_chains_here_with_a_warning(conjugate):
    with pytest.warns(UserWarning, match="one after another.*cannot be pickled"):
        post = fit(_ModelWithALambda(conjugate.model()), conjugate.x, conjugate.y,
                   method="nuts", backend="jit", num_chains=2, num_samples=10,
                   warmup_steps=10, progress_bar=False, seed=0)  # fmt: skip
    assert post.num_chains == 2 and len(post.mcmc) == 2


class _Funnel(torch.nn.Module):
    """Neal's funnel, v ~ N(0, 3²), z_i ~ N(0, e^v), i = 1..9, beside a data term that does
    not involve them: its neck makes NUTS diverge (Neal 2003; Betancourt & Girolami 2015)."""

    def forward(self, x, y=None):
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        pyro.sample("z", dist.Normal(0.0, (v / 2).exp()).expand([9]).to_event(1))
        with pyro.plate("data", len(x)):
            return pyro.sample("obs", dist.Normal(torch.zeros(len(x)), 1.0), obs=y)


def test_divergences_and_poor_mixing_are_warned_about_and_recorded():
    """Two short chains on the funnel at a low target acceptance: some trajectories diverge
    and the chains cannot agree on v (R-hat > 1.01, ESS < 200)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = fit(_Funnel(), torch.zeros(5, 1), torch.zeros(5), method="nuts", backend="jit",
                   num_chains=2, chain_processes=1, warmup_steps=300, num_samples=300,
                   target_accept_prob=0.6, progress_bar=False, seed=0)  # fmt: skip
    messages = [str(w.message) for w in caught if issubclass(w.category, SamplingWarning)]
    divergences = int(post.sample_stats["diverging"].sum())
    assert divergences > 0 and post.diagnostics["divergences"] == divergences
    assert any(f"{divergences} divergent transitions" in m for m in messages)
    assert any("R-hat" in m for m in messages) and any("bulk ESS" in m for m in messages)
    assert post.warnings == messages
    attrs = to_inference_data(post).sample_stats.attrs
    assert attrs["divergences"] == divergences and list(attrs["warnings"]) == messages
    assert attrs["max_rhat"] == post.diagnostics["max_rhat"] > 1.01


def test_a_well_mixed_run_raises_no_warning(conjugate):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplingWarning)
        post = fit(conjugate.model(), conjugate.x, conjugate.y, method="nuts", backend="jit",
                   num_chains=2, chain_processes=1, num_samples=300, warmup_steps=300,
                   progress_bar=False, seed=0)  # fmt: skip
    assert post.warnings == [] and post.diagnostics["max_rhat"] < 1.01
