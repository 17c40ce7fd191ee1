"""Moment propagation against Monte Carlo over the weights.

A 2-hidden-layer ReLU network (3 → 60 → 20 → 2) with independent Gaussian weights, at four
inputs. Monte Carlo: 100,000 weight draws, float64; the standard error of each output
mean is sd/sqrt(N) and of each covariance entry the sd of the centred products over
sqrt(N). Propagation treats each layer's pre-activations as Gaussian; layer 1's are, and
with 60 units feeding layer 2 its pre-activations are close (central limit), so the
tolerance is 4 standard errors.

The diagonal variant also treats the units of a layer as independent. Units of layer 2
are correlated through the shared layer-1 activations in proportion to the products of
their weight means, so it is held to Monte Carlo where the weight means are small beside
their sds (a posterior near a zero-mean prior), and shown to miss the correlations that
the full variant keeps when the means dominate.
"""

import itertools
import math

import pytest
import torch

from pyro_bnn.moments import linear_moments, relu_covariance, relu_moments

SIZES = (3, 60, 20, 2)
NUM_DRAWS = 100_000


def _layers(mean_scale: float, generator: torch.Generator) -> list[dict]:
    layers = []
    for n_in, n_out in itertools.pairwise(SIZES):
        layers.append(
            dict(
                weight_loc=mean_scale
                * torch.randn(n_out, n_in, generator=generator)
                / math.sqrt(n_in),
                weight_scale=(0.3 + 0.4 * torch.rand(n_out, n_in, generator=generator))
                / math.sqrt(n_in),
                bias_loc=0.1 * torch.randn(n_out, generator=generator, dtype=torch.float64),
                bias_scale=0.1 * torch.rand(n_out, generator=generator, dtype=torch.float64),
            )
        )
    return layers


def _propagate(layers: list[dict], x: torch.Tensor, *, full: bool):
    mean = x
    second = x.new_zeros(*x.shape, x.shape[-1]) if full else torch.zeros_like(x)
    for k, layer in enumerate(layers):
        last = k == len(layers) - 1
        if last and not full:
            second = torch.diag_embed(second)
        mean, second = linear_moments(mean, second, full=full or last, **layer)
        if not last:
            mean, second = (relu_covariance if full else relu_moments)(mean, second)
    return mean, second


def _monte_carlo(layers: list[dict], x: torch.Tensor, generator: torch.Generator):
    outputs = []
    chunk = 10_000
    for _ in range(NUM_DRAWS // chunk):
        h = x.expand(chunk, *x.shape)
        for k, layer in enumerate(layers):
            w = layer["weight_loc"] + layer["weight_scale"] * torch.randn(
                chunk, *layer["weight_loc"].shape, generator=generator, dtype=torch.float64
            )
            b = layer["bias_loc"] + layer["bias_scale"] * torch.randn(
                chunk, *layer["bias_loc"].shape, generator=generator, dtype=torch.float64
            )
            h = h @ w.transpose(-1, -2) + b[:, None]
            if k < len(layers) - 1:
                h = h.relu()
        outputs.append(h)
    f = torch.cat(outputs)
    centred = f - f.mean(0)
    products = centred[..., :, None] * centred[..., None, :]
    return (
        f.mean(0),
        f.std(0) / math.sqrt(NUM_DRAWS),
        products.mean(0),
        products.std(0) / math.sqrt(NUM_DRAWS),
    )


@pytest.fixture(scope="module", params=[0.2, 2.0], ids=["small-means", "large-means"])
def case(request):
    with torch.random.fork_rng():
        torch.set_default_dtype(torch.float64)
        try:
            generator = torch.Generator().manual_seed(0)
            layers = _layers(request.param, generator)
            x = torch.randn(4, SIZES[0], generator=generator, dtype=torch.float64)
            return request.param, layers, x, _monte_carlo(layers, x, generator)
        finally:
            torch.set_default_dtype(torch.float32)


def _errors(case, *, full: bool) -> tuple[float, float]:
    _, layers, x, (mc_mean, se_mean, mc_cov, se_cov) = case
    mean, cov = _propagate(layers, x, full=full)
    return (
        float(((mean - mc_mean) / se_mean).abs().max()),
        float(((cov - mc_cov) / se_cov).abs().max()),
    )


def test_full_covariance_variant_matches_monte_carlo(case):
    mean_z, cov_z = _errors(case, full=True)
    assert mean_z < 4 and cov_z < 4


def test_diagonal_variant_matches_monte_carlo_when_units_are_nearly_independent(case):
    mean_scale = case[0]
    mean_z, cov_z = _errors(case, full=False)
    assert mean_z < 4  # a unit's mean needs only its own variance
    if mean_scale < 1:
        assert cov_z < 4
    else:  # the known limit of the diagonal variant: it drops layer 2's correlations
        assert cov_z > 10


def test_relu_moments_of_a_standard_normal():
    mean, var = relu_moments(torch.tensor(0.0), torch.tensor(1.0))
    # E max(0, z) = 1/sqrt(2π), E max(0, z)² = 1/2
    assert math.isclose(mean, 1 / math.sqrt(2 * math.pi), rel_tol=1e-6)
    assert math.isclose(var, 0.5 - 1 / (2 * math.pi), rel_tol=1e-6)


def test_relu_covariance_of_zero_mean_units_is_the_arc_cosine_kernel():
    rho = 0.6
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
    _, out = relu_covariance(torch.zeros(2, dtype=torch.float64), cov)
    # Cho & Saul (2009): E[x⁺y⁺] = (sin θ + (π − θ) cos θ) / 2π with cos θ = ρ
    theta = math.acos(rho)
    expected = (math.sin(theta) + (math.pi - theta) * rho) / (2 * math.pi) - 1 / (2 * math.pi)
    assert math.isclose(float(out[0, 1]), expected, rel_tol=1e-6)
