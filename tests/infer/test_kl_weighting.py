"""Minibatch KL weighting: the weights of an epoch, and the ELBO terms they scale."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_bnn import fit
from pyro_bnn.infer.kl_weighting import KLWeight, kl_weights
from pyro_bnn.likelihoods import OBS_SITE
from pyro_bnn.zoo import build


@pytest.mark.parametrize("scheme", ["uniform", "blundell"])
@pytest.mark.parametrize("num_batches", [1, 2, 7, 60, 5000])
def test_kl_weights_sum_to_one_over_an_epoch(scheme, num_batches):
    weights = kl_weights(scheme, num_batches)
    assert weights.shape == (num_batches,) and torch.isfinite(weights).all()
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)


def test_blundell_weights_halve_from_one_minibatch_to_the_next():
    weights = kl_weights("blundell", 10)
    assert torch.allclose(weights[:-1] / weights[1:], torch.full((9,), 2.0, dtype=torch.float64))
    assert float(weights[0]) == pytest.approx(2**9 / (2**10 - 1))
    with pytest.raises(ValueError, match="unknown kl_weighting"):
        kl_weights("linear", 3)


def test_kl_weight_scales_prior_and_guide_terms_but_not_the_likelihood():
    model = build("mlp-regression", in_features=2, hidden=(3,), noise_scale=0.5)
    x, y = torch.randn(6, 2), torch.randn(6)
    guide = AutoNormal(model)
    guide(x, y)
    weight = 0.3
    pyro.set_rng_seed(5)
    loss = Trace_ELBO().loss(KLWeight(weight)(model), KLWeight(weight)(guide), x, y)
    pyro.set_rng_seed(5)
    guide_trace = poutine.trace(guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    log_q = sum(s["fn"].log_prob(s["value"]).sum() for s in _latents(guide_trace))
    log_p = sum(s["fn"].log_prob(s["value"]).sum() for s in _latents(model_trace))
    obs = model_trace.nodes[OBS_SITE]
    expected = weight * (log_q - log_p) - obs["fn"].log_prob(obs["value"]).sum()
    assert loss == pytest.approx(float(expected.detach()), rel=1e-5)


def _latents(trace):
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not s["is_observed"]]


def test_fit_with_blundell_weighting_and_local_reparameterization():
    model = build("mlp-regression", in_features=2, hidden=(8,))
    x, y = torch.randn(40, 2), torch.randn(40)
    post = fit(model, x, y, method="meanfield", batch_size=10, num_epochs=3,
               kl_weighting="blundell", local_reparameterization=True, num_draws=5,
               progress_bar=False, seed=0)  # fmt: skip
    assert len(post.losses[0]) == 12 and all(map(lambda v: v == v, post.losses[0]))
    assert post.predict(x[:3]).mean.shape == (3,)
    with pytest.raises(ValueError, match="kl_weighting must be"):
        fit(model, x, y, method="meanfield", kl_weighting="steep", num_steps=1)


def test_blundell_losses_are_judged_per_epoch_not_per_step():
    """Under Blundell weighting a step's loss carries its batch's KL weight M·π_i (from
    about M/2 to about 0 over an epoch), so per step the loss swings by design, as on the
    MNIST bench where the KL of 2.4 M weights dwarfs the data term. Judged per step that
    swing looks like an oscillation; the epoch sums (the ELBO) converge."""
    from pyro_bnn.diagnostics import loss_diagnostics
    from pyro_bnn.infer.kl_weighting import kl_weights
    from pyro_bnn.infer.svi import epoch_losses

    m, epochs = 8, 100
    weights = (m * kl_weights("blundell", m)).tolist()
    kl = [1000.0 * (1 + math.exp(-e / 10)) for e in range(epochs)]  # falls, then flat
    losses = [kl[e] * w + 10.0 for e in range(epochs) for w in weights]
    per_step = loss_diagnostics(losses, method="meanfield")[1]
    assert any("oscillates" in message for message in per_step)
    assert loss_diagnostics(epoch_losses(losses, m), method="meanfield")[1] == []
