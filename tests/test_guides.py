"""The multiplicative-noise guide under the log-uniform prior (sparse variational dropout)."""

import operator

import pyro
import pytest
import torch
from pyro.poutine.messenger import Messenger

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
    assert all(torch.isfinite(torch.tensor(post.losses[0])))
    accuracy = (post.predict(x).probs.argmax(-1) == y).float().mean()
    assert accuracy > 0.9  # a linear boundary; chance is 0.5
    snr = signal_to_noise(post)
    assert set(snr) == {"net.0.weight", "net.2.weight"}  # biases stay deterministic
    with post.pyro_context(), torch.no_grad():
        sqrt_alpha = operator.attrgetter("net.0.weight")(post.guide.scales)
    torch.testing.assert_close(snr["net.0.weight"], 1 / sqrt_alpha)


class Pin(Messenger):
    """Give the named sample sites fixed values, still as latent (unobserved) draws."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg):
        if msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]
            msg["done"] = True


def test_implicit_prior_elbo_is_the_auxiliary_bound():
    """Atanov et al. (2019), eq. 8 / appendix eq. 14: with the guide q(w | θ) r(z | w; ψ),
    −L_aux = −[log p(D | w) + log p(w | z) + log p(z) − log q(w | θ) − log r(z | w; ψ)] at
    one draw (w, z). Pyro's Trace_ELBO loss, with the guide's draws pinned to fixed (w, z),
    must equal this sum computed by hand with torch.distributions; ψ starts at the VAE's
    encoder, so the encoder computes r here."""
    from torch.distributions import Categorical, Normal

    from pyro_bnn.dwp import DeepWeightPrior, KernelVAE
    from pyro_bnn.guides import AutoImplicitPriorNormal
    from pyro_bnn.zoo.dwp_cnn import DWPCNN

    vaes = {
        "*conv1": KernelVAE(kernel_size=7, z_dim=2, hidden=3),
        "*conv2": KernelVAE(kernel_size=5, z_dim=4, hidden=3),
    }
    model = DWPCNN(prior=DeepWeightPrior(vaes), widths=(2, 3), num_classes=3, image_size=20)
    x, y = torch.randn(5, 1, 20, 20), torch.tensor([0, 1, 2, 1, 0])
    guide = AutoImplicitPriorNormal(model, init_scale=0.3)
    guide(x, y)
    layers = {"net.conv1.weight": vaes["*conv1"], "net.conv2.weight": vaes["*conv2"]}
    w = {
        name: 0.2 * torch.randn(model.net.get_submodule(name[4:-7]).weight.shape) for name in layers
    }
    z = {name: torch.randn(*w[name].shape[:2], vae.z_dim) for name, vae in layers.items()}
    pinned = {f"{n}_unconstrained": v for n, v in w.items()} | {f"{n}.z": v for n, v in z.items()}

    loss = pyro.infer.Trace_ELBO().loss(model, Pin(pinned)(guide), x, y)

    with torch.no_grad():
        net = model.net
        h = torch.nn.functional.conv2d(x, w["net.conv1.weight"], net.conv1.bias)
        h = net.pool1(net.act1(h))
        h = torch.nn.functional.conv2d(h, w["net.conv2.weight"], net.conv2.bias)
        logits = net.head(net.flatten(net.pool2(net.act2(h))))
        log_lik = Categorical(logits=logits).log_prob(y).sum()
        bound = log_lik
        for name, vae in layers.items():
            log_p_w = Normal(*vae.decoder(z[name])).log_prob(w[name]).sum()
            log_p_z = Normal(0.0, 1.0).log_prob(z[name]).sum()
            log_q_w = Normal(*guide._get_loc_and_scale(name)).log_prob(w[name]).sum()
            log_r_z = Normal(*vae.encoder(w[name])).log_prob(z[name]).sum()
            bound = bound + log_p_w + log_p_z - log_q_w - log_r_z
    assert loss == pytest.approx(-float(bound), rel=1e-5)


@pytest.mark.parametrize("train_reverse_model", [False, True])
def test_implicit_prior_guide_freezes_or_trains_the_reverse_model(train_reverse_model):
    """Atanov et al.'s code keeps r(z | w) at the VAE's encoder, frozen (the default);
    ``train_reverse_model=True`` makes a copy of it Pyro parameters that SVI trains."""
    from pyro_bnn.dwp import DeepWeightPrior, KernelVAE
    from pyro_bnn.guides import AutoImplicitPriorNormal
    from pyro_bnn.zoo.dwp_cnn import DWPCNN

    pyro.clear_param_store()
    vaes = {
        "*conv1": KernelVAE(kernel_size=7, z_dim=2, hidden=3),
        "*conv2": KernelVAE(kernel_size=5, z_dim=4, hidden=3),
    }
    model = DWPCNN(prior=DeepWeightPrior(vaes), widths=(2, 3), num_classes=3, image_size=20)
    x, y = torch.randn(5, 1, 20, 20), torch.tensor([0, 1, 2, 1, 0])
    guide = AutoImplicitPriorNormal(model, train_reverse_model=train_reverse_model)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO())
    before = {k: v.clone() for k, v in vaes["*conv2"].encoder.state_dict().items()}
    for _ in range(3):
        svi.step(x, y)
    names = list(pyro.get_param_store().keys())
    assert any("reverse_models" in n for n in names) == train_reverse_model
    copy = guide.reverse_models.net.conv2.weight
    moved = any(not torch.equal(before[k], v) for k, v in copy.state_dict().items())
    assert moved == train_reverse_model
    # the prior's own encoder never moves
    assert all(torch.equal(before[k], v) for k, v in vaes["*conv2"].encoder.state_dict().items())
