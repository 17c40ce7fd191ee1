"""``mcdropout``: its predictive against the closed form of Bernoulli masks, its objective
against Gal's, and its errors.

On a one-layer linear model f(x) = Σᵢ Mᵢ zᵢ xᵢ + b with zᵢ ~ Bernoulli(1 − p), the
predictive mean is (1 − p) Σᵢ Mᵢxᵢ + b and the variance p(1 − p) Σᵢ Mᵢ²xᵢ². The sampled
predictive of T mask draws is held to them within 5 standard errors: sqrt(var/T) for the
mean, sqrt((m₄ − var²)/T) for the variance (m₄ the draws' fourth central moment).
"""

import math

import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_bnn import fit, zoo
from pyro_bnn.guides import AutoDropout
from tests.infer.conjugate import make_conjugate

DRAWS = 20_000


def test_predictive_matches_the_bernoulli_closed_form():
    c = make_conjugate()
    p = 0.3
    post = fit(c.model(), c.x, c.y, method="mcdropout", dropout_rate=p, num_steps=1000,
               num_draws=DRAWS, progress_bar=False, seed=0)  # fmt: skip
    with post.pyro_context():
        m = post.guide.linear.weight.detach()[0]
        b = post.guide.linear.bias.detach()
    x = torch.tensor([[1.0, -2.0], [0.5, 0.5], [3.0, 1.0]])
    mean = (1 - p) * x @ m + b
    var = p * (1 - p) * (x**2) @ m**2
    loc = post.replay(x).loc.double()  # (T, rows): f(x) under each mask draw
    centred = loc - loc.mean(0)
    sample_var = centred.pow(2).mean(0)
    m4 = centred.pow(4).mean(0)
    assert bool(((loc.mean(0) - mean).abs() < 5 * (var / DRAWS).sqrt()).all())
    assert bool(((sample_var - var).abs() < 5 * ((m4 - sample_var**2) / DRAWS).sqrt()).all())
    prediction = post.predict(x, num_samples=None)
    assert torch.allclose(prediction.epistemic_var.double(), sample_var, rtol=1e-4)


def test_objective_is_gals_dropout_objective():
    """The ELBO of the dropout guide, averaged over masks, is the data term under the
    masks plus Gal's weight decay (1 − p)/(2σ_p²)‖M‖² and ‖b‖²/(2σ_p²) (up to the prior's
    normalising constant): checked with a shared mask draw, where the two are equal."""
    c = make_conjugate()
    model = c.model()
    guide = AutoDropout(model, dropout_rate=0.5)
    guide(c.x, c.y)
    torch.manual_seed(3)
    loss = Trace_ELBO().loss(model, guide, c.x, c.y)
    torch.manual_seed(3)
    with torch.no_grad():
        draw = guide(c.x, c.y)
    w, b = draw["linear.weight"], draw["linear.bias"]
    residual = c.y - (c.x @ w.T)[:, 0] - b
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    data = (residual**2).sum() / (2 * 0.5**2) + len(c.y) * (math.log(0.5) + half_log_2pi)
    prior = (w**2).sum() / 2 + (b**2).sum() / 2 + 3 * half_log_2pi
    assert loss == pytest.approx(float(data + prior), rel=1e-5)


def test_tau_fixes_a_learned_noise_and_bad_options_are_refused():
    x = torch.linspace(-1, 1, 30)[:, None]
    learned = zoo.build("mlp-regression", in_features=1, hidden=(8,))
    post = fit(learned, x, x[:, 0], method="mcdropout", tau=25.0, num_steps=50, num_draws=7,
               progress_bar=False, seed=0)  # fmt: skip
    assert post.draws["precision"].shape == (1, 7)
    assert float(post.predict(x[:2]).aleatoric_var[0]) == pytest.approx(1 / 25)
    fixed = zoo.build("mlp-regression", in_features=1, hidden=(8,), noise_scale=0.1)
    with pytest.raises(ValueError, match="tau sets the noise precision"):
        fit(fixed, x, x[:, 0], method="mcdropout", tau=25.0, num_steps=5)
    for rate in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"dropout_rate must be in \[0, 1\)"):
            fit(fixed, x, x[:, 0], method="mcdropout", dropout_rate=rate, num_steps=5)
