"""``laplace`` against exact answers and against laplace-torch, the reference implementation.

- Exactness: on the conjugate Bayesian linear regression the posterior is Gaussian and the
  GGN is the exact Hessian, so full Laplace is the exact posterior (relative error 1e-4:
  the MAP is an Adam fit in float32, converged on a quadratic); the evidence-tuned prior
  precision is the maximiser of the closed-form evidence log N(y; 0, σ²I + XXᵀ/δ).
- Against laplace-torch (``laplace.Laplace``), at the same MAP weights, prior precision and
  noise: the GLM predictive mean and variance (regression), the probit class
  probabilities (classification) and the log marginal likelihood, within 1e-3 relative.
  laplace-torch computes in float32, whose rounding in the inverse of a precision with a
  condition number of 1e3-1e4 is the 1e-4 scale seen here.
"""

import math

import numpy as np
import pytest
import scipy.optimize
import torch
from pyro.nn import PyroModule
from torch import nn

from pyro_bnn import bayesianize, fit, to_inference_data, zoo
from pyro_bnn.curvature import PointModel
from pyro_bnn.likelihoods import Gaussian
from pyro_bnn.precision import NotPositiveDefinite
from pyro_bnn.priors import GaussianPrior, LaplacePrior, Selector
from tests.infer.conjugate import NOISE_SCALE, make_conjugate

laplace_torch = pytest.importorskip("laplace", reason="laplace-torch is a test dependency")

RELATIVE = 1e-3  # the tolerance against laplace-torch
FAST = dict(num_steps=1500, lr=0.05, final_lr=1e-5, progress_bar=False, seed=0)


def _dense_posterior(post):
    state = post.states[0]
    return state.theta.double(), torch.linalg.inv(state.structure.dense(state.s, state.d))


def _relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    ours, reference = ours.double(), reference.double()
    return float((ours - reference).norm() / reference.norm())


def test_full_laplace_is_the_exact_posterior_of_a_linear_gaussian_model():
    c = make_conjugate()
    post = fit(c.model(), c.x, c.y, method="laplace", hessian_structure="full", **FAST)
    mean, cov = _dense_posterior(post)
    assert _relative(mean, c.mean) < 1e-4
    assert _relative(cov, c.cov) < 1e-4


def test_diagonal_laplace_is_the_inverse_of_the_precision_diagonal():
    c = make_conjugate()
    post = fit(c.model(), c.x, c.y, method="laplace", hessian_structure="diag", **FAST)
    _, cov = _dense_posterior(post)
    exact_precision = torch.linalg.inv(c.cov)
    assert _relative(cov.diagonal(), 1 / exact_precision.diagonal()) < 1e-4
    assert bool((cov - torch.diag(cov.diagonal())).abs().max() == 0)


def _closed_form_evidence(x, y, log_delta: float) -> float:
    design = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    cov = NOISE_SCALE**2 * torch.eye(len(y), dtype=torch.float64)
    cov = cov + design @ design.T / math.exp(log_delta)
    normal = torch.distributions.MultivariateNormal(torch.zeros(len(y), dtype=torch.float64), cov)
    return float(normal.log_prob(y.double()))


def test_marglik_finds_the_prior_precision_that_maximises_the_closed_form_evidence():
    c = make_conjugate()
    best = scipy.optimize.minimize_scalar(
        lambda v: -_closed_form_evidence(c.x, c.y, v), bounds=(-10, 10), method="bounded",
        options=dict(xatol=1e-10),
    )  # fmt: skip
    # each round refits the MAP under the tuned prior; at the fixed point the evidence's
    # gradient in δ is the closed form's (the log joint's gradient in θ vanishes there)
    post = fit(c.model(), c.x, c.y, method="laplace", hessian_structure="full",
               prior_precision="marglik", marglik_rounds=6, **FAST)  # fmt: skip
    tuned = post.states[0].prior_precision["linear.weight"]
    assert tuned == pytest.approx(math.exp(best.x), rel=1e-4)
    # for a linear-Gaussian model the Laplace evidence is exact
    assert post.log_marginal_likelihood == pytest.approx(-best.fun, rel=1e-6)
    assert post.diagnostics["prior_precision[linear.bias]"] == pytest.approx(tuned)


def _copy_to_torch(state, layers) -> nn.Sequential:
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for i, layer in enumerate(net):
            if isinstance(layer, nn.Linear):
                layer.weight.copy_(state.values[f"net.{i}.weight"])
                layer.bias.copy_(state.values[f"net.{i}.bias"])
    return net


@pytest.fixture(scope="module")
def regression():
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, 40)[:, None]
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(40, generator=g)
    return x, y, torch.linspace(-2, 2, 9)[:, None]


@pytest.mark.parametrize("subset", ["all", "last_layer"])
@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_regression_matches_laplace_torch(regression, structure, subset):
    x, y, x_test = regression
    model = zoo.build("mlp-regression", in_features=1, hidden=(8,), noise_scale=0.1)
    post = fit(model, x, y, method="laplace", hessian_structure=structure, subset=subset,
               prior_precision=2.0, num_draws=20, **FAST)  # fmt: skip
    ours = post.predict(x_test)
    net = _copy_to_torch(post.states[0], [nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1)])
    reference = laplace_torch.Laplace(net, "regression", subset_of_weights=subset,
                                      hessian_structure=structure, sigma_noise=0.1,
                                      prior_precision=2.0)  # fmt: skip
    data = torch.utils.data.TensorDataset(x, y[:, None])
    reference.fit(torch.utils.data.DataLoader(data, batch_size=len(x)))
    f_mean, f_var = reference(x_test, pred_type="glm")
    assert _relative(ours.mean, f_mean[:, 0]) < RELATIVE
    assert _relative(ours.epistemic_var, f_var[:, 0, 0]) < RELATIVE
    assert torch.allclose(ours.aleatoric_var, torch.full_like(ours.aleatoric_var, 0.01))
    lml = float(reference.log_marginal_likelihood())
    assert post.log_marginal_likelihood == pytest.approx(lml, rel=RELATIVE)


@pytest.mark.parametrize("subset", ["all", "last_layer"])
@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_classification_matches_laplace_torch(structure, subset):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 1] > 1).long()
    x_test = 2 * torch.randn(7, 2, generator=g)
    model = zoo.build("mlp-classification", in_features=2, hidden=(6,), num_classes=3)
    post = fit(model, x, y, method="laplace", hessian_structure=structure, subset=subset,
               prior_precision=2.0, num_draws=20, **FAST)  # fmt: skip
    net = _copy_to_torch(post.states[0], [nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 3)])
    reference = laplace_torch.Laplace(net, "classification", subset_of_weights=subset,
                                      hessian_structure=structure, prior_precision=2.0)  # fmt: skip
    reference.fit(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=60))
    probs = reference(x_test, pred_type="glm", link_approx="probit")
    assert _relative(post.predict(x_test).probs, probs) < RELATIVE
    lml = float(reference.log_marginal_likelihood())
    assert post.log_marginal_likelihood == pytest.approx(lml, rel=RELATIVE)


def test_empirical_fisher_matches_laplace_torch(regression):
    """laplace-torch's regression empirical Fisher is Σ 2(fₙ − yₙ)²/σ² JₙJₙᵀ: the ½ that turns
    a summed MSE into the Gaussian log-likelihood multiplies the Gram matrix of the MSE's
    gradients once, not squared. The empirical Fisher of the Gaussian log-likelihood is
    Σ (fₙ − yₙ)²/σ⁴ JₙJₙᵀ; the two agree at σ² = ½, where the comparison is made."""
    x, y, x_test = regression
    sigma = 2**-0.5
    model = zoo.build("mlp-regression", in_features=1, hidden=(8,), noise_scale=sigma)
    post = fit(model, x, y, method="laplace", hessian_structure="full", curvature="ef",
               prior_precision=2.0, num_draws=20, **FAST)  # fmt: skip
    net = _copy_to_torch(post.states[0], [nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1)])
    from laplace.curvature import CurvlinopsEF

    reference = laplace_torch.Laplace(net, "regression", subset_of_weights="all",
                                      hessian_structure="full", sigma_noise=sigma,
                                      prior_precision=2.0, backend=CurvlinopsEF)  # fmt: skip
    data = torch.utils.data.TensorDataset(x, y[:, None])
    reference.fit(torch.utils.data.DataLoader(data, batch_size=len(x)))
    _, f_var = reference(x_test, pred_type="glm")
    assert _relative(post.predict(x_test).epistemic_var, f_var[:, 0, 0]) < RELATIVE


def test_lowrank_is_exact_when_the_curvature_has_lower_rank(regression):
    """With 4 rows the GGN of a one-output network has rank ≤ 4: rank-6 Laplace holds it
    all, so its predictive equals full Laplace's (Lanczos converges to 1e-8 here)."""
    x, y, x_test = regression
    x, y = x[::10], y[::10]
    model = zoo.build("mlp-regression", in_features=1, hidden=(8,), noise_scale=0.1)
    options = dict(prior_precision=2.0, num_draws=20, **FAST)
    full = fit(model, x, y, method="laplace", hessian_structure="full", **options)
    low = fit(model, x, y, method="laplace", hessian_structure="lowrank", rank=6, **options)
    assert _relative(low.predict(x_test).epistemic_var, full.predict(x_test).epistemic_var) < 1e-5
    assert low.log_marginal_likelihood == pytest.approx(full.log_marginal_likelihood, rel=1e-6)


def test_draws_have_the_structure_s_covariance():
    """The draws' covariance matches M⁻¹ within Monte Carlo error: entry (i, j) of a
    sample covariance of N Gaussian draws has sd sqrt((Σᵢᵢ Σⱼⱼ + Σᵢⱼ²)/N); 5 sd."""
    c = make_conjugate()
    for structure in ("full", "diag", "kron", "lowrank"):
        options = dict(rank=2) if structure == "lowrank" else {}
        post = fit(c.model(), c.x, c.y, method="laplace", hessian_structure=structure,
                   num_draws=20_000, **options, **FAST)  # fmt: skip
        _, cov = _dense_posterior(post)
        w, b = post.draws["linear.weight"][0], post.draws["linear.bias"][0]
        draws = torch.cat([w.reshape(len(w), -1), b], -1).double()
        sample = torch.cov(draws.T)
        sd = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / len(draws)).sqrt()
        assert bool(((sample - cov).abs() < 5 * sd).all()), structure


def test_glm_band_widens_away_from_the_data(regression):
    x, y, _ = regression
    model = zoo.build("mlp-regression", in_features=1, hidden=(16,), noise_scale=0.1)
    post = fit(model, x, y, method="laplace", num_draws=100, **FAST)
    inside, outside = post.predict(torch.tensor([[0.0]])), post.predict(torch.tensor([[4.0]]))
    assert float(outside.epistemic_var) > 10 * float(inside.epistemic_var)


def test_marglik_tunes_a_learned_noise():
    """Data with noise sd 0.3: the evidence-tuned sd lands within 15 % of it (the sd of
    an estimate of σ from 200 residuals is σ/sqrt(400) = 5 %, plus the fit's bias)."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(200, 1, generator=g) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.3 * torch.randn(200, generator=g)
    model = zoo.build("mlp-regression", in_features=1, hidden=(16,))
    post = fit(model, x, y, method="laplace", prior_precision="marglik",
               prior_structure="layerwise", num_draws=100, **FAST)  # fmt: skip
    assert post.diagnostics["noise_scale"] == pytest.approx(0.3, rel=0.15)
    assert bool((post.draws["precision"] == post.diagnostics["noise_scale"] ** -2).all())
    assert float(post.predict(x[:1]).aleatoric_var) == pytest.approx(
        post.diagnostics["noise_scale"] ** 2, rel=1e-5)  # fmt: skip
    assert len([k for k in post.diagnostics if k.startswith("prior_precision[")]) == 4


def test_mc_and_glm_predictives_and_arviz():
    x = torch.linspace(-1, 1, 30)[:, None]
    y = x[:, 0] ** 2
    model = zoo.build("mlp-regression", in_features=1, hidden=(8,), noise_scale=0.1)
    for predictive in ("mc", "glm"):
        post = fit(model, x, y, method="laplace", predictive=predictive, num_draws=50, **FAST)
        idata = to_inference_data(post, x=x, y=y)
        assert idata.log_likelihood["obs"].shape == (1, 50, 30)
        assert np.isfinite(idata.log_likelihood["obs"].values).all()
        assert (post.predictive is None) == (predictive == "mc")


def test_heteroscedastic_and_binary_likelihoods_run():
    x = torch.linspace(-1, 1, 30)[:, None]
    hetero = zoo.build("mlp-heteroscedastic", in_features=1, hidden=(8,))
    post = fit(hetero, x, x[:, 0], method="laplace", num_draws=20, **FAST)
    prediction = post.predict(x[:4])
    assert bool((prediction.epistemic_var > 0).all() & (prediction.aleatoric_var > 0).all())
    binary = zoo.build("mlp-classification", in_features=1, hidden=(8,), num_classes=2,
                       binary=True)  # fmt: skip
    post = fit(binary, x, (x[:, 0] > 0).long(), method="laplace", num_draws=20, **FAST)
    probs = post.predict(x[:4]).probs
    assert torch.allclose(probs.sum(-1), torch.ones(4))


def test_bad_options_and_models_get_clear_errors():
    c = make_conjugate()
    with pytest.raises(ValueError, match="hessian_structure must be"):
        fit(c.model(), c.x, c.y, method="laplace", hessian_structure="block")
    with pytest.raises(ValueError, match="max_full_size"):
        fit(c.model(), c.x, c.y, method="laplace", hessian_structure="full", max_full_size=2)
    plain = zoo.build("mlp-regression", in_features=2, hidden=(4,), noise_scale=0.5)
    first_layer_only = GaussianPrior(scale=1.0, select=Selector(modules=("net.0",)))
    model = zoo.build("mlp-regression", in_features=2, hidden=(4,), noise_scale=0.5,
                      prior=first_layer_only)  # fmt: skip
    with pytest.raises(ValueError, match=r"last layer 'net\.2' has no Bayesian weights"):
        fit(model, c.x, c.y, method="laplace", subset="last_layer")
    with pytest.raises(ValueError, match="prior_precision must be"):
        fit(plain, c.x, c.y, method="laplace", prior_precision="evidence")


def test_a_prior_without_curvature_is_refused_with_a_reason():
    """The Laplace prior's log-density is piecewise linear: it adds no curvature, so the
    posterior precision is singular where the likelihood has none."""
    x = torch.linspace(-1, 1, 3)[:, None]
    model = zoo.build("mlp-regression", in_features=1, hidden=(16,), noise_scale=0.1,
                      prior=LaplacePrior(scale=1.0))  # fmt: skip
    with pytest.raises(NotPositiveDefinite, match="prior_precision=<number>"):
        fit(model, x, x[:, 0], method="laplace", hessian_structure="diag", **FAST)


class _SmallConvNet(PyroModule):
    """A Conv2d (or its Linear equivalent on flattened pixels) + ReLU + Linear regression."""

    def __init__(self, *, conv: bool, kernel: int = 4) -> None:
        super().__init__()
        if conv:
            body = [nn.Conv2d(1, 3, kernel), nn.Flatten()]
        else:
            body = [nn.Flatten(), nn.Linear(16, 3)]
        width = 3 * (5 - kernel) ** 2
        self.net = nn.Sequential(*body, nn.ReLU(), nn.Linear(width, 1))
        bayesianize(self, GaussianPrior(scale=1.0))
        self.likelihood = Gaussian(scale=0.5)

    def forward(self, x, y=None):
        return self.likelihood(self.net(x).squeeze(-1), y)


def test_conv_kfac_reduces_to_the_linear_layers_when_it_has_one_location():
    """A 4×4 kernel on 4×4 images has one output location: the convolution is a Linear
    layer on the flattened pixels, and its KFAC factors are that layer's."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 1, 4, 4, generator=g)
    y = torch.randn(30, generator=g)
    w = torch.randn(3, 1, 4, 4, generator=g)
    shared = {
        "net.0.bias": torch.randn(3, generator=g),
        "net.3.weight": torch.randn(1, 3, generator=g),
        "net.3.bias": torch.zeros(1),
    }
    conv = PointModel(_SmallConvNet(conv=True), {"net.0.weight": w, **shared},
                      ["net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"])  # fmt: skip
    linear_values = {
        "net.1.weight": w.reshape(3, 16),
        "net.1.bias": shared["net.0.bias"],
        "net.3.weight": shared["net.3.weight"],
        "net.3.bias": torch.zeros(1),
    }
    linear = PointModel(_SmallConvNet(conv=False), linear_values, list(linear_values))
    from_conv, from_linear = conv.kron_factors(x, y), linear.kron_factors(x, y)
    for a, b in ((from_conv["net.0"], from_linear["net.1"]), (from_conv["net.3"],
                                                             from_linear["net.3"])):  # fmt: skip
        assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)
        assert a[2] == b[2] == 1


def test_conv_kfac_with_several_locations_fits_and_predicts():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 1, 4, 4, generator=g)
    y = x.mean((1, 2, 3))
    post = fit(_SmallConvNet(conv=True, kernel=3), x, y, method="laplace", num_draws=20, **FAST)
    factors = {b.kind for b in post.states[0].structure.blocks}
    assert factors == {"kron", "bias"}
    prediction = post.predict(x[:5])
    assert bool(torch.isfinite(prediction.std).all() & (prediction.epistemic_var > 0).all())


def test_chains_in_worker_processes_keep_their_gaussians():
    """Each chain's Laplace state travels back from its worker, so the linearised
    predictive and the evidence work for chains run elsewhere (a mixture of Laplaces)."""
    c = make_conjugate()
    post = fit(c.model(), c.x, c.y, method="laplace", hessian_structure="full", num_chains=2,
               chain_processes=2, num_draws=10, **FAST)  # fmt: skip
    assert post.runners == [] and len(post.states) == 2
    assert len(post.log_marginal_likelihood) == 2
    assert post.predict(c.x[:3]).epistemic_var.shape == (3,)


def test_a_non_gaussian_prior_enters_by_its_own_curvature():
    """Under a scale-mixture prior the prior term of the precision is −d²/dw² log p(w) at
    each weight, computed here by hand: π N(w; 0, σ1²) + (1 − π) N(w; 0, σ2²)."""
    from pyro_bnn.priors import ScaleMixturePrior

    pi, s1, s2 = 0.5, 1.0, 0.3
    model = zoo.build("mlp-regression", in_features=1, hidden=(4,), noise_scale=0.1,
                      prior=ScaleMixturePrior(pi=pi, sigma1=s1, sigma2=s2))  # fmt: skip
    g = torch.Generator().manual_seed(0)
    values = {
        "net.0.weight": torch.randn(4, 1, generator=g),
        "net.0.bias": torch.randn(4, generator=g),
        "net.2.weight": torch.randn(1, 4, generator=g),
        "net.2.bias": torch.randn(1, generator=g),
    }
    point = PointModel(model, values, list(values))
    w = point.theta.double()
    normal = [torch.distributions.Normal(0.0, s) for s in (s1, s2)]
    density = pi * normal[0].log_prob(w).exp() + (1 - pi) * normal[1].log_prob(w).exp()
    first = sum(c * n.log_prob(w).exp() * (-w / n.scale**2)
                for c, n in zip((pi, 1 - pi), normal, strict=True))  # fmt: skip
    second = sum(c * n.log_prob(w).exp() * (w**2 / n.scale**4 - 1 / n.scale**2)
                 for c, n in zip((pi, 1 - pi), normal, strict=True))  # fmt: skip
    expected = -(second / density - (first / density) ** 2)
    x = torch.zeros(1, 1)
    assert torch.allclose(point.prior_curvature(x, full=False), expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(point.prior_curvature(x, full=True), torch.diag(expected), atol=1e-5)
