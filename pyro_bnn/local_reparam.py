"""The local reparameterization trick (Kingma, Salimans & Welling 2015) as a Pyro effect.

Under a mean-field Gaussian posterior a Linear layer's pre-activation b = x Wᵀ + c is
Gaussian per unit, with mean x μ_Wᵀ + μ_c and variance x² σ_W²ᵀ + σ_c² (for Conv2d the
same with convolutions). Sampling b directly, one draw per data point, instead of one
weight matrix per minibatch, gives independent noise per row and so lower-variance
gradients.

Each Bayesian layer computes its output through the effectful operation
:func:`pyro_bnn.layers.layer_output`. With no handler it uses the sampled weights, as usual. Inside
:class:`LocalReparameterization` it draws the output from (μ, σ) of the guide. The
weight sites are still sampled and replayed in the model, so the ELBO keeps its
log p(w) − log q(w) term (the KL estimate, or the analytic KL of
``TraceMeanField_ELBO``); only the likelihood term uses the local draws.

Example:
    >>> import torch, pyro
    >>> from pyro.infer import Trace_ELBO
    >>> from pyro.infer.autoguide import AutoNormal
    >>> from pyro_bnn.zoo import build
    >>> model = build("mlp-regression", in_features=2, hidden=(3,))
    >>> guide = AutoNormal(model)
    >>> x, y = torch.randn(8, 2), torch.randn(8)
    >>> loss = Trace_ELBO().loss(LocalReparameterization(guide)(model), guide, x, y)
"""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger

from pyro_bnn.meanfield import site_loc_scale

__all__ = ["LocalReparameterization"]


class LocalReparameterization(Messenger):
    """Draw the outputs of Bayesian Linear and Conv2d layers from the mean-field ``guide``
    (``AutoNormal`` or ``AutoDiagonalNormal``) instead of from sampled weights.

    Wrap the model for training, ``SVI(LocalReparameterization(guide)(model), guide, …)``;
    prediction samples weights as usual.
    """

    def __init__(self, guide) -> None:
        super().__init__()
        self.guide = guide

    def _loc_scale(self, module, name: str, attribute: str):
        if attribute not in getattr(module, "_pyro_samples", {}):
            value = getattr(module, attribute)  # a deterministic parameter, or None
            return value, None
        getattr(module, attribute)  # keep the site in the model: log p(w) − log q(w)
        with self.guide._pyro_context:
            return site_loc_scale(self.guide, f"{name}.{attribute}" if name else attribute)

    def _pyro_layer_output(self, msg) -> None:
        module, x = msg["args"]
        name = msg["name"]
        if x.dim() != module.unbatched_input_dim:
            raise ValueError(
                f"local reparameterization runs one draw at a time; {name} got input "
                f"{tuple(x.shape)} (vectorised particles are not supported)"
            )
        w_loc, w_scale = self._loc_scale(module, name, "weight")
        b_loc, b_scale = self._loc_scale(module, name, "bias")
        mean = module.functional(x, w_loc, b_loc)
        b_var = None if b_scale is None else b_scale.pow(2)
        w_var = torch.zeros_like(w_loc) if w_scale is None else w_scale.pow(2)
        var = module.functional(x.pow(2), w_var, b_var)
        msg["value"] = mean + var.clamp_min(1e-16).sqrt() * torch.randn_like(mean)
        msg["done"] = True


def gradient_variance(
    model, guide, x: torch.Tensor, y: torch.Tensor, *, local: bool, num_repeats: int = 100
) -> float:
    """Mean over the guide's parameters of the variance, across ``num_repeats`` draws on
    the same batch, of the gradient of the data term −log p(y | w) (one weight draw from
    the guide), with (``local``) or without local reparameterization. The ratio of the
    two is the variance reduction. The KL term is left out: local reparameterization
    does not change it, and its Monte Carlo noise would hide the difference.
    """
    from pyro import poutine

    from pyro_bnn.likelihoods import OBS_SITE

    target = LocalReparameterization(guide)(model) if local else model
    guide(x, y)
    params = [p for p in guide.parameters() if p.requires_grad]
    grads = []
    for _ in range(num_repeats):
        guide_trace = poutine.trace(guide).get_trace(x, y)
        model_trace = poutine.trace(poutine.replay(target, trace=guide_trace)).get_trace(x, y)
        obs = model_trace.nodes[OBS_SITE]
        loss = -obs["fn"].log_prob(obs["value"]).sum()
        grad = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        grads.append(torch.cat([g.reshape(-1) for g in grad]))
    return float(torch.stack(grads).var(0).mean())
