"""SNR pruning removes exactly the lowest-|mu|/sigma weights, and the result predicts."""

import pytest
import torch
from pyro.infer.autoguide import AutoDiagonalNormal

from pyro_bnn import fit
from pyro_bnn.meanfield import site_loc_scale
from pyro_bnn.pruning import prune_by_snr, pruned_fraction, signal_to_noise
from pyro_bnn.zoo import build


@pytest.fixture(scope="module")
def posterior():
    x, y = torch.randn(40, 3), torch.randn(40)
    return fit(build("mlp-regression", in_features=3, hidden=(10,)), x, y, method="meanfield",
               num_steps=50, num_draws=20, progress_bar=False, seed=0)  # fmt: skip


def test_snr_is_mean_over_sd_of_the_guide(posterior):
    snr = signal_to_noise(posterior)
    assert set(snr) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    assert isinstance(posterior.guide, AutoDiagonalNormal)
    with posterior.pyro_context():
        loc, scale = site_loc_scale(posterior.guide, "net.0.weight")
    torch.testing.assert_close(snr["net.0.weight"], (loc.abs() / scale).detach())


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.9, 1.0])
def test_pruning_removes_the_lowest_snr_weights(posterior, fraction):
    pruned = prune_by_snr(posterior, fraction)
    snr = torch.cat([v.reshape(-1) for v in signal_to_noise(posterior).values()])
    zero = torch.cat([(pruned.draws[n] == 0).all(dim=(0, 1)).reshape(-1) for n in
                      signal_to_noise(posterior)])  # fmt: skip
    assert int(zero.sum()) == round(fraction * snr.numel())
    assert pruned_fraction(pruned) == pytest.approx(round(fraction * snr.numel()) / snr.numel())
    if 0 < fraction < 1:  # every removed weight has SNR at most every kept one's
        assert snr[zero].max() <= snr[~zero].min()
    # the kept weights are untouched; the noise precision is not a network weight
    kept = ~(pruned.draws["net.0.weight"] == 0)
    assert torch.equal(pruned.draws["net.0.weight"][kept], posterior.draws["net.0.weight"][kept])
    assert torch.equal(pruned.draws["precision"], posterior.draws["precision"])
    prediction = pruned.predict(torch.randn(5, 3))
    assert prediction.mean.shape == (5,) and torch.isfinite(prediction.mean).all()


def test_pruning_needs_a_mean_field_guide():
    x, y = torch.randn(10, 2), torch.randn(10)
    post = fit(build("mlp-regression", in_features=2, hidden=(3,)), x, y, method="nuts",
               num_samples=5, warmup_steps=5, backend="jit", progress_bar=False)  # fmt: skip
    with pytest.raises(TypeError, match="mean-field Gaussian guide"):
        prune_by_snr(post, 0.5)
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\]"):
        prune_by_snr(post, 1.5)
