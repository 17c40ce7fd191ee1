"""The multiplicative-noise guide under the log-uniform prior (sparse variational dropout)."""

import operator

import torch

from pyro_bnn import fit
from pyro_bnn.guides import AutoMultiplicativeNormal
from pyro_bnn.init import init_to_fan_in
from pyro_bnn.priors import LogUniformPrior
from pyro_bnn.pruning import signal_to_noise
from pyro_bnn.zoo import build


def test_log_uniform_prior_fits_with_the_multiplicative_family():
    """An easy problem (the label is the sign of the first input): the fit must find it,
    and the SNR of a log-uniform weight is 1/√α whatever its θ."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] > 0).long()
    model = build("mlp-classification", in_features=4, num_classes=2, hidden=(16,),
                  prior=LogUniformPrior())  # fmt: skip
    post = fit(model, x, y, method="multiplicative", num_steps=600, lr=0.02,
               init_loc_fn=init_to_fan_in, init_scale=0.1, num_draws=50, progress_bar=False,
               seed=0)  # fmt: skip
    assert isinstance(post.guide, AutoMultiplicativeNormal)
    assert all(torch.isfinite(torch.tensor(post.losses)))
    accuracy = (post.predict(x).probs.argmax(-1) == y).float().mean()
    assert accuracy > 0.9  # a linear boundary; chance is 0.5
    snr = signal_to_noise(post)
    assert set(snr) == {"net.0.weight", "net.2.weight"}  # biases stay deterministic
    with post.pyro_context(), torch.no_grad():
        sqrt_alpha = operator.attrgetter("net.0.weight")(post.guide.scales)
    torch.testing.assert_close(snr["net.0.weight"], 1 / sqrt_alpha)
