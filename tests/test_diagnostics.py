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
        post = fit(model, x, y, method="map", lr=10.0, final_lr=10.0, num_steps=1000,
                   progress_bar=False, seed=0)  # fmt: skip
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


def test_a_runaway_potential_is_named_by_its_cycle():
    from pyro_bnn.diagnostics import potential_diagnostics

    kept = np.concatenate([np.full(10, 50.0), np.full(10, 1e9), np.full(10, 60.0)])
    diagnostics, found = potential_diagnostics(
        1e4, kept, groups=3, dim=100, method="csgld", remedy="lower step_size (now 0.1)"
    )
    assert found == [
        "csgld: the potential ran away in cycle(s) 2: its median over the kept draws (1e+09) "
        "is far above its start (1e+04); lower step_size (now 0.1)"
    ]
    assert diagnostics["potential_start"] == 1e4
    # at the posterior U sits within a few dim/2 of its minimum: started at the mode, a
    # rise of 10·dim is allowed (dim 100: up to 1,000 above a start of 0)
    assert potential_diagnostics(0.0, np.full(20, 900.0), groups=1, dim=100, method="sgld",
                                 remedy="")[1] == []  # fmt: skip


def test_a_noise_scale_is_exploded_above_100_times_the_targets_rms():
    from pyro_bnn.diagnostics import noise_diagnostics

    y = torch.full((20,), 2.0)  # rms 2: the limit is 200
    assert noise_diagnostics(np.array([150.0, 199.0]), y, method="map", remedy="")[1] == []
    diagnostics, found = noise_diagnostics(np.array([1.0, 250.0, np.nan]), y, method="map",
                                           remedy="lower lr")  # fmt: skip
    assert "exploded in 2 of 3 draws" in found[0] and found[0].endswith("lower lr")
    assert diagnostics["noise_exploded_fraction"] == pytest.approx(2 / 3)
    # fewer than 10 rows: a prior may hold the noise anywhere; recorded, not judged
    assert noise_diagnostics(np.array([1e6]), y[:5], method="map", remedy="")[1] == []
