"""SWA and SWAG against the stationary distribution of constant-learning-rate SGD.

On the conjugate regression the per-row potential is quadratic: with minibatches drawn
independently each step, SGD without momentum is the linear recursion
θ' = θ − η(A(θ − θ*) + ξ), A the per-row Hessian, ξ the minibatch noise of covariance
C = V/S · (N − S)/(N − 1) (V the per-row gradients' covariance, S rows sampled without
replacement). Its stationary covariance solves the discrete Lyapunov equation
Σ = (I − ηA) Σ (I − ηA)ᵀ + η²C (Mandt, Hoffman & Blei 2017), and its mean is θ*. The rows'
gradients at θ* + δ are gₙ* + Mₙδ (Mₙ = x̃ₙx̃ₙᵀ/σ²), so averaged over the stationary δ,
V = V* + mean(MₙΣMₙ) − M̄ΣM̄, which depends on Σ: the test solves for the fixed point
(the second term adds about 15 % here).

SWAG collects one iterate per epoch (10 steps). Consecutive iterates correlate by at most
ρ = max|eig(I − ηA)|^10; the effective number of iterates for a variance is
T(1 − ρ²)/(1 + ρ²), for a mean T(1 − ρ)/(1 + ρ). Tolerances are 5 such standard errors.
"""

import numpy as np
import pytest
import scipy.linalg
import torch

from pyro_bnn import fit, zoo
from tests.infer.conjugate import NOISE_SCALE, PRIOR_SCALE, make_conjugate

LR, BATCH, EPOCHS = 0.05, 4, 3000


@pytest.fixture(scope="module")
def stationary():
    c = make_conjugate()
    n = len(c.x)
    design = torch.cat([c.x, torch.ones(n, 1)], 1).double()
    hessian = (design.T @ design / NOISE_SCALE**2 + torch.eye(3) / PRIOR_SCALE**2) / n
    residual = design @ c.mean - c.y.double()
    rows = design * residual[:, None] / NOISE_SCALE**2  # each row's gradient at θ*
    v = torch.cov(rows.T, correction=0)
    curvatures = design[:, :, None] * design[:, None, :] / NOISE_SCALE**2  # Mₙ, per row
    step = torch.eye(3, dtype=torch.float64) - LR * hessian
    sigma = torch.zeros(3, 3, dtype=torch.float64)
    for _ in range(20):  # the fixed point Σ = L(C(Σ)): the gradients' spread at θ* + δ
        spread = (curvatures @ sigma @ curvatures).mean(0) - (
            curvatures.mean(0) @ sigma @ curvatures.mean(0))  # fmt: skip
        noise = (v + spread) / BATCH * (n - BATCH) / (n - 1)
        sigma = torch.as_tensor(
            scipy.linalg.solve_discrete_lyapunov(step.numpy(), (LR**2 * noise).numpy())
        )
    rho = float(torch.linalg.eigvalsh(step).abs().max()) ** (n // BATCH)
    post = fit(
        c.model(), c.x, c.y, method="swag", num_steps=2000, lr=0.05, final_lr=1e-4,
        swa_lr=LR, burn_in_lr=LR, momentum=0.0, swa_batch_size=BATCH, burn_in_epochs=20,
        swa_epochs=EPOCHS, rank=EPOCHS // 4, num_draws=10, progress_bar=False, seed=0,
    )  # fmt: skip
    return c, sigma, rho, post.states[0]


def test_swag_diagonal_is_the_sgd_stationary_variance(stationary):
    _, sigma, rho, state = stationary
    effective = EPOCHS * (1 - rho**2) / (1 + rho**2)
    variance = sigma.diagonal()
    se = variance * (2 / effective) ** 0.5
    assert bool(((state.diagonal_variance.double() - variance).abs() < 5 * se).all()), (
        state.diagonal_variance, variance)  # fmt: skip


def test_swag_low_rank_part_is_the_sgd_stationary_covariance(stationary):
    _, sigma, rho, state = stationary
    k = len(state.deviations)
    effective = k * (1 - rho**2) / (1 + rho**2)
    diag = sigma.diagonal()
    se = ((diag[:, None] * diag[None, :] + sigma**2) / effective).sqrt()
    estimate = state.low_rank_covariance.double()
    assert bool(((estimate - sigma).abs() < 5 * se).all()), (estimate, sigma)


def test_swa_recovers_the_minimum(stationary):
    c, sigma, rho, state = stationary
    effective = EPOCHS * (1 - rho) / (1 + rho)
    se = (sigma.diagonal() / effective).sqrt()
    assert bool(((state.mean.double() - c.mean).abs() < 5 * se).all()), (state.mean, c.mean)


def test_swa_is_a_point_and_multiswag_runs_members_as_chains():
    c = make_conjugate()
    options = dict(num_steps=300, swa_epochs=10, burn_in_epochs=2, swa_batch_size=8,
                   progress_bar=False, seed=0)  # fmt: skip
    swa = fit(c.model(), c.x, c.y, method="swa", **options)
    assert swa.draws["linear.weight"].shape == (1, 1, 1, 2)
    multi = fit(c.model(), c.x, c.y, method="multiswag", num_members=2, num_draws=5,
                chain_processes=1, **options)  # fmt: skip
    assert multi.draws["linear.weight"].shape == (2, 5, 1, 2)
    assert not torch.equal(multi.draws["linear.weight"][0], multi.draws["linear.weight"][1])
    with pytest.raises(ValueError, match="num_members"):
        fit(c.model(), c.x, c.y, method="multiswag", num_chains=2, **options)


def test_a_learning_rate_that_diverges_is_reported():
    c = make_conjugate()
    model = zoo.build("mlp-regression", in_features=2, hidden=(8,), noise_scale=0.5)
    with pytest.raises(FloatingPointError, match="swa_lr"):
        fit(model, c.x, c.y * 1e3, method="swag", num_steps=50, swa_lr=1e3, swa_epochs=5,
            burn_in_epochs=1, progress_bar=False, seed=0)  # fmt: skip


def test_draws_are_the_swag_gaussian():
    """Draws of N(θ̄, scale·½(Σ_diag + DDᵀ/(K − 1))): their covariance within 5 se of it."""
    c = make_conjugate()
    post = fit(c.model(), c.x, c.y, method="swag", num_steps=300, swa_epochs=30,
               swa_batch_size=8, num_draws=20_000, scale=0.5, progress_bar=False,
               seed=0)  # fmt: skip
    state = post.states[0]
    cov = 0.5 * 0.5 * (torch.diag(state.diagonal_variance) + state.low_rank_covariance)
    w, b = post.draws["linear.weight"][0], post.draws["linear.bias"][0]
    draws = torch.cat([w.reshape(len(w), -1), b], -1).double()
    sample = torch.from_numpy(np.cov(draws.numpy().T))
    cov = cov.double()
    se = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / len(draws)).sqrt()
    assert bool(((sample - cov).abs() < 5 * se + 1e-12).all())
