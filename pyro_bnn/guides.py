"""Autoguides beyond Pyro's own.

:class:`AutoMultiplicativeNormal` is the multiplicative-noise family of Molchanov et al.
(2017, sparse variational dropout): w = θ (1 + √α ε), i.e. q(w) = N(θ, α θ²), for the
sites whose prior is the improper log-uniform. Under that prior KL(q ‖ p) depends on α
alone (up to a constant), so it is finite and a weight with large α (SNR |θ|/σ = 1/√α)
can be pruned. Every other site keeps ``AutoNormal``'s own (μ, softplus ρ) Gaussian.

Example:
    >>> import torch
    >>> from pyro_bnn.priors import LogUniformPrior
    >>> from pyro_bnn.init import init_to_fan_in
    >>> from pyro_bnn.zoo import build
    >>> model = build("mlp-regression", in_features=2, hidden=(3,), prior=LogUniformPrior())
    >>> guide = AutoMultiplicativeNormal(model, init_loc_fn=init_to_fan_in, init_scale=0.1)
    >>> _ = guide(torch.randn(4, 2), torch.randn(4))
    >>> loc, scale = guide._get_loc_and_scale("net.0.weight")
    >>> torch.allclose(scale, 0.1 * loc.abs())
    True
"""

from __future__ import annotations

from pyro.infer.autoguide import AutoNormal

from pyro_bnn.priors import ImproperLogUniform, base_distribution

__all__ = ["AutoMultiplicativeNormal"]


class AutoMultiplicativeNormal(AutoNormal):
    """``AutoNormal`` whose log-uniform sites have scale √α |θ| (``init_scale`` is the
    initial √α); its ``scales`` parameters hold √α there."""

    def _get_loc_and_scale(self, name: str):
        loc, scale = super()._get_loc_and_scale(name)
        if isinstance(
            base_distribution(self.prototype_trace.nodes[name]["fn"]), ImproperLogUniform
        ):
            return loc, scale * loc.abs()
        return loc, scale
