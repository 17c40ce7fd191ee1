"""NUTS and HMC against the exact posterior of conjugate Bayesian linear regression.

Tolerances come from Monte Carlo error: the standard error of a posterior-mean estimate is
sqrt(Σ_ii / ESS_i), and of a covariance estimate sqrt((Σ_ii Σ_jj + Σ_ij²) / ESS) for
Gaussian draws (ESS: the smallest bulk ESS over coordinates, from ArviZ). Each check allows
4 standard errors: about a 1-in-16,000 chance per coordinate of a false failure.
"""

import arviz as az
import numpy as np
import pytest
import torch

from pyro_bnn import fit
from tests.infer.conjugate import flat_draws


def _check_against_exact(draws: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> None:
    ess = torch.tensor([az.ess(draws[..., i].numpy()) for i in range(draws.shape[-1])])
    flat = draws.reshape(-1, draws.shape[-1])
    se_mean = (cov.diag() / ess).sqrt()
    assert torch.all((flat.mean(0) - mean).abs() < 4 * se_mean), (flat.mean(0), mean, se_mean)
    sample_cov = torch.from_numpy(np.cov(flat.numpy(), rowvar=False))
    var = cov.diag()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / ess.min()).sqrt()
    assert torch.all((sample_cov - cov).abs() < 4 * se_cov), (sample_cov, cov, se_cov)


def test_nuts_matches_exact_posterior(conjugate):
    post = fit(
        conjugate.model(),
        conjugate.x,
        conjugate.y,
        method="nuts",
        num_chains=2,
        num_samples=1000,
        warmup_steps=500,
        progress_bar=False,
        seed=0,
    )
    draws = flat_draws(post.draws)
    assert draws.shape == (2, 1000, 3)
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
        num_steps=5,
        num_samples=1500,
        warmup_steps=500,
        progress_bar=False,
        seed=0,
    )
    _check_against_exact(flat_draws(post.draws), conjugate.mean, conjugate.cov)
    assert post.sample_stats["n_steps"].min() >= 1


def test_mcmc_rejects_options_of_other_methods(conjugate):
    with pytest.raises(ValueError, match=r"unknown option.*max_tree_depth.*'hmc'"):
        fit(conjugate.model(), conjugate.x, conjugate.y, method="hmc", max_tree_depth=3)
