"""The convergence checks every method shares: the loss history's, and where warnings point."""

import math
import warnings

import numpy as np
import pytest
import torch

from pyro_bnn import ConvergenceWarning, fit, zoo
from pyro_bnn.diagnostics import loss_diagnostics, mixing_diagnostics


def test_a_converged_noisy_loss_passes():
    rng = np.random.default_rng(0)
    losses = [100 * math.exp(-t / 50) + 10 + rng.normal() for t in range(2000)]
    assert loss_diagnostics(losses, method="map")[1] == []


def test_a_loss_still_falling_is_flagged():
    rng = np.random.default_rng(0)
    losses = [1000 * math.exp(-t / 400) + rng.normal() for t in range(1000)]
    found = loss_diagnostics(losses, method="meanfield")[1]
    assert len(found) == 1 and "still falling" in found[0]


def test_a_runaway_loss_is_flagged():
    losses = [1500 + 10 * t for t in range(1000)]
    diagnostics, found = loss_diagnostics(losses, method="map")
    assert "ran away" in found[0] and diagnostics["loss_last_tenth"] > 1500


def test_a_diverging_fit_warns_at_the_callers_line_and_records_it():
    x = torch.randn(60, 2)
    y = x.sum(-1)
    model = zoo.build("mlp-regression", in_features=2, hidden=(16,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = fit(model, x, y, method="map", lr=10.0, num_steps=1000, progress_bar=False, seed=0)
    ours = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert ours and post.warnings and "loss_last_tenth" in post.diagnostics
    assert ours[0].filename == __file__  # the user's line, not the library's


def test_one_draw_per_chain_says_rhat_does_not_apply():
    draws = {"w": torch.zeros(3, 1, 2)}
    diagnostics, found = mixing_diagnostics(draws, {}, method="ensemble", warn=True)
    assert "not applicable" in diagnostics["rhat_ess"] and found == []


@pytest.mark.parametrize("n", [5, 39])
def test_short_histories_are_not_judged(n):
    assert loss_diagnostics(list(range(n)), method="map") == ({}, [])
